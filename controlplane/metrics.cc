#include "controlplane/metrics.h"

#include "prometheus/text_serializer.h"

namespace flexgate::cp {
namespace {

prometheus::Counter& NewCounter(prometheus::Registry& r, const std::string& name,
                                const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
}

}  // namespace

CpMetrics::CpMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      connected_agents(prometheus::BuildGauge()
                           .Name("flexgate_cp_connected_agents")
                           .Help("Agent streams connected to this replica")
                           .Register(*registry_)
                           .Add({})),
      applies(NewCounter(*registry_, "flexgate_cp_applies_total", "Config versions stored")),
      applies_unchanged(NewCounter(*registry_, "flexgate_cp_applies_unchanged_total",
                                   "Applies whose content equalled the live version")),
      applies_rejected(NewCounter(*registry_, "flexgate_cp_applies_rejected_total",
                                  "Applies refused: invalid config, stale base version, access")),
      validate_calls(NewCounter(*registry_, "flexgate_cp_validate_calls_total",
                                "Validate (dry-run) calls")),
      snapshot_sends(NewCounter(*registry_, "flexgate_cp_snapshot_sends_total",
                                "Snapshots written to agent streams")),
      acks(NewCounter(*registry_, "flexgate_cp_acks_total", "Snapshot ACKs from agents")),
      nacks(NewCounter(*registry_, "flexgate_cp_nacks_total", "Snapshot NACKs from agents")),
      stale_replies(NewCounter(*registry_, "flexgate_cp_stale_replies_total",
                               "ACKs or NACKs ignored because their nonce was stale")),
      late_replies(NewCounter(*registry_, "flexgate_cp_late_replies_total",
                              "ACKs or NACKs of an earlier snapshot than the last one sent, "
                              "recorded for the version they answer")),
      notifications(NewCounter(*registry_, "flexgate_cp_config_notifications_total",
                               "New-version notifications received from PostgreSQL")),
      listener_reconnects(NewCounter(*registry_, "flexgate_cp_listener_reconnects_total",
                                     "Reconnects of the LISTEN connection")),
      revoked_streams(NewCounter(*registry_, "flexgate_cp_revoked_streams_total",
                                 "Agent streams ended because their credential was revoked")),
      revocation_notifications(
          NewCounter(*registry_, "flexgate_cp_revocation_notifications_total",
                     "Revocation notifications received from PostgreSQL")),
      revocation_checks(NewCounter(*registry_, "flexgate_cp_revocation_checks_total",
                                   "Re-checks of open agent streams' credentials")),
      db_event_batches(NewCounter(*registry_, "flexgate_cp_db_event_batches_total",
                                  "Batches of agent-stream events written to PostgreSQL")),
      convergence_seconds(
          prometheus::BuildHistogram()
              .Name("flexgate_cp_convergence_seconds")
              .Help("Commit of a config version to an agent's first ACK of it (seconds)")
              .Register(*registry_)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                               1, 2.5, 5, 10, 30, 60})) {}

std::string CpMetrics::Serialize() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace flexgate::cp
