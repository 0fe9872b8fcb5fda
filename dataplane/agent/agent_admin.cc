#include "dataplane/agent/agent_admin.h"

#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/config_loader.h"
#include "common/log.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace flexgate::agent {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

constexpr const char* kJson = "application/json";

std::string Rfc3339(absl::Time t) {
  // UTC with a "Z" and milliseconds: what log pipelines and humans both parse.
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

// {"version":7,"hash":"…","source":"cache","since":"…"} without the closing brace, so callers can
// append more members.
std::string SnapshotJsonPrefix(const ServedSnapshot& s) {
  std::string out = absl::StrCat("{\"version\":", s.version, ",\"hash\":");
  AppendJsonString(out, s.hash);
  out += ",\"source\":";
  AppendJsonString(out, SourceName(s.source));
  out += ",\"since\":";
  AppendJsonString(out, Rfc3339(s.since));
  absl::StrAppend(&out, ",\"apply_duration_ms\":", absl::ToDoubleMilliseconds(s.apply_duration));
  return out;
}

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void AddValue(MetricFamily& f, double value, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f.type == MetricType::Counter) m.counter.value = value;
  else m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

MetricFamily Single(std::string name, std::string help, MetricType type, double value) {
  MetricFamily f = Family(std::move(name), std::move(help), type);
  AddValue(f, value);
  return f;
}

class AgentMetricsCollector final : public prometheus::Collectable {
 public:
  AgentMetricsCollector(const AgentState* state, ProxyStatsFn stats)
      : state_(state), stats_(std::move(stats)) {}

  std::vector<MetricFamily> Collect() const override {
    std::vector<MetricFamily> out;
    const auto C = MetricType::Counter;
    const auto G = MetricType::Gauge;
    if (stats_) {
      dataplane::ProxyStats s = stats_();
      out.push_back(Single("flexgate_downstream_connections_total",
                           "Downstream connections accepted.", C, s.downstream_connections_total));
      out.push_back(Single("flexgate_downstream_connections_active",
                           "Downstream connections open now.", G, s.downstream_connections_active));
      out.push_back(Single("flexgate_requests_total", "Requests received.", C, s.requests_total));
      MetricFamily responses =
          Family("flexgate_responses_total", "Responses sent, by status class.", C);
      AddValue(responses, s.responses_1xx, {{"class", "1xx"}});
      AddValue(responses, s.responses_2xx, {{"class", "2xx"}});
      AddValue(responses, s.responses_3xx, {{"class", "3xx"}});
      AddValue(responses, s.responses_4xx, {{"class", "4xx"}});
      AddValue(responses, s.responses_5xx, {{"class", "5xx"}});
      out.push_back(std::move(responses));
      out.push_back(Single("flexgate_upstream_connections_total", "Upstream connections opened.",
                           C, s.upstream_connections_total));
      out.push_back(Single("flexgate_upstream_connect_failures_total",
                           "Upstream connection attempts that failed.", C,
                           s.upstream_connect_failures));
      out.push_back(Single("flexgate_upstream_requests_total", "Requests sent upstream.", C,
                           s.upstream_requests_total));
      out.push_back(Single("flexgate_downstream_bytes_received_total",
                           "Bytes received from clients.", C, s.bytes_received));
      out.push_back(Single("flexgate_downstream_bytes_sent_total", "Bytes sent to clients.", C,
                           s.bytes_sent));
      out.push_back(Single("flexgate_upstream_timeouts_total",
                           "Upstream connect and request timeouts.", C, s.upstream_timeouts));
      out.push_back(Single("flexgate_upstream_retries_total", "Upstream retries.", C,
                           s.upstream_retries));
      out.push_back(Single("flexgate_bad_requests_total",
                           "Malformed or oversized requests answered 4xx and closed.", C,
                           s.bad_requests));
      out.push_back(Single("flexgate_route_table_swaps_total",
                           "Route tables swapped in, summed over workers.", C,
                           s.route_table_swaps));
      out.push_back(Single("flexgate_upstream_per_try_timeouts_total",
                           "Upstream attempts cut by a retry policy's per-try timeout.", C,
                           s.upstream_per_try_timeouts));
      out.push_back(Single("flexgate_retry_budget_exhausted_total",
                           "Retries refused because the retry budget was spent.", C,
                           s.retry_budget_exhausted));
      out.push_back(Single("flexgate_outlier_ejections_total",
                           "Upstream endpoints ejected by passive outlier detection.", C,
                           s.outlier_ejections));
      out.push_back(Single("flexgate_circuit_breaker_rejections_total",
                           "Requests answered 503 by a circuit breaker.", C,
                           s.circuit_breaker_rejections));
      out.push_back(Single("flexgate_upgrades_total", "Protocol upgrades (websocket) tunnelled.",
                           C, s.upgrades_total));
      out.push_back(Single("flexgate_upgrades_active", "Upgraded tunnels open now.", G,
                           s.upgrades_active));
      out.push_back(Single("flexgate_health_checks_total", "Active health check probes sent.", C,
                           s.health_checks_total));
      out.push_back(Single("flexgate_health_check_failures_total",
                           "Active health check probes that failed.", C,
                           s.health_check_failures));
      out.push_back(Single("flexgate_downstream_tls_handshakes_total",
                           "Client TLS handshakes completed.", C, s.downstream_tls_handshakes));
      out.push_back(Single("flexgate_downstream_tls_handshake_failures_total",
                           "Client TLS handshakes that failed (including plain HTTP sent to a "
                           "TLS listener).",
                           C, s.downstream_tls_handshake_failures));
      out.push_back(Single("flexgate_upstream_tls_failures_total",
                           "Upstream TLS failures, certificate verification included.", C,
                           s.upstream_tls_failures));
    }

    std::shared_ptr<const ServedSnapshot> served = state_->served();
    out.push_back(Single("flexgate_agent_ready", "1 when a snapshot is served and not draining.",
                         G, state_->ready() ? 1 : 0));
    out.push_back(Single("flexgate_agent_snapshot_version", "Version of the served snapshot.", G,
                         served ? static_cast<double>(served->version) : 0));
    out.push_back(Single("flexgate_agent_snapshot_apply_duration_seconds",
                         "Time from receipt of the served snapshot to every worker serving it.",
                         G, served ? absl::ToDoubleSeconds(served->apply_duration) : 0));
    out.push_back(Single("flexgate_agent_snapshot_loaded_timestamp_seconds",
                         "Unix time at which the served snapshot took effect.", G,
                         served ? absl::ToDoubleSeconds(served->since - absl::UnixEpoch()) : 0));
    MetricFamily source = Family("flexgate_agent_snapshot_source",
                                 "1 for the source of the served snapshot.", G);
    for (SnapshotSource s : {SnapshotSource::kFile, SnapshotSource::kCache,
                             SnapshotSource::kControlPlane}) {
      AddValue(source, served && served->source == s ? 1 : 0, {{"source", SourceName(s)}});
    }
    out.push_back(std::move(source));
    out.push_back(Single("flexgate_agent_snapshots_applied_total", "Snapshots applied.", C,
                         state_->snapshots_applied.load(std::memory_order_relaxed)));
    out.push_back(Single("flexgate_agent_snapshots_rejected_total",
                         "Snapshots rejected (NACKed or skipped).", C,
                         state_->snapshots_rejected.load(std::memory_order_relaxed)));
    out.push_back(Single("flexgate_agent_control_plane_connected",
                         "1 while the control-plane stream is up.", G,
                         state_->control_plane_connected() ? 1 : 0));
    out.push_back(Single("flexgate_agent_control_plane_connects_total",
                         "Control-plane streams established.", C,
                         state_->control_plane_connects.load(std::memory_order_relaxed)));
    out.push_back(Single("flexgate_agent_control_plane_disconnects_total",
                         "Control-plane streams lost or failed to start.", C,
                         state_->control_plane_disconnects.load(std::memory_order_relaxed)));
    out.push_back(Single("flexgate_agent_cache_writes_total",
                         "Snapshots written to the last-known-good cache.", C,
                         state_->cache_writes.load(std::memory_order_relaxed)));
    out.push_back(Single("flexgate_agent_cache_errors_total",
                         "Last-known-good cache problems (unreadable, corrupt, write failures).",
                         C, state_->cache_errors.load(std::memory_order_relaxed)));
    return out;
  }

 private:
  const AgentState* state_;
  ProxyStatsFn stats_;
};

AdminResponse Json(int status, std::string body) {
  body.push_back('\n');
  return AdminResponse{status, kJson, std::move(body)};
}

AdminResponse Ready(const AgentState& state) {
  std::shared_ptr<const ServedSnapshot> served = state.served();
  if (state.draining()) return Json(503, R"({"ready":false,"reason":"draining"})");
  if (!served) return Json(503, R"({"ready":false,"reason":"no snapshot loaded"})");
  std::string body = SnapshotJsonPrefix(*served);
  absl::StrAppend(&body, ",\"ready\":true,\"control_plane_connected\":",
                  state.control_plane_connected() ? "true" : "false", "}");
  return Json(200, std::move(body));
}

AdminResponse ConfigDump(const AgentState& state) {
  std::shared_ptr<const ServedSnapshot> served = state.served();
  if (!served) return Json(503, R"({"error":"no snapshot loaded"})");
  std::string body = SnapshotJsonPrefix(*served);
  body += ",\"config\":";
  body += MessageToJson(*served->config, /*pretty=*/false);
  body += "}";
  return Json(200, std::move(body));
}

AdminResponse Stats(const AgentState& state, const ProxyStatsFn& stats) {
  std::string out;
  auto line = [&out](const char* name, uint64_t v) { absl::StrAppend(&out, name, ": ", v, "\n"); };
  if (stats) {
    dataplane::ProxyStats s = stats();
    line("downstream_connections_total", s.downstream_connections_total);
    line("downstream_connections_active", s.downstream_connections_active);
    line("requests_total", s.requests_total);
    line("responses_1xx", s.responses_1xx);
    line("responses_2xx", s.responses_2xx);
    line("responses_3xx", s.responses_3xx);
    line("responses_4xx", s.responses_4xx);
    line("responses_5xx", s.responses_5xx);
    line("upstream_connections_total", s.upstream_connections_total);
    line("upstream_connect_failures", s.upstream_connect_failures);
    line("upstream_requests_total", s.upstream_requests_total);
    line("bytes_received", s.bytes_received);
    line("bytes_sent", s.bytes_sent);
    line("upstream_timeouts", s.upstream_timeouts);
    line("upstream_retries", s.upstream_retries);
    line("bad_requests", s.bad_requests);
    line("route_table_swaps", s.route_table_swaps);
    line("upstream_per_try_timeouts", s.upstream_per_try_timeouts);
    line("retry_budget_exhausted", s.retry_budget_exhausted);
    line("outlier_ejections", s.outlier_ejections);
    line("circuit_breaker_rejections", s.circuit_breaker_rejections);
    line("upgrades_total", s.upgrades_total);
    line("upgrades_active", s.upgrades_active);
    line("health_checks_total", s.health_checks_total);
    line("health_check_failures", s.health_check_failures);
    line("downstream_tls_handshakes", s.downstream_tls_handshakes);
    line("downstream_tls_handshake_failures", s.downstream_tls_handshake_failures);
    line("upstream_tls_failures", s.upstream_tls_failures);
  }
  std::shared_ptr<const ServedSnapshot> served = state.served();
  line("agent.ready", state.ready() ? 1 : 0);
  line("agent.snapshot_version", served ? served->version : 0);
  line("agent.snapshots_applied", state.snapshots_applied.load());
  line("agent.snapshots_rejected", state.snapshots_rejected.load());
  line("agent.control_plane_connected", state.control_plane_connected() ? 1 : 0);
  line("agent.control_plane_connects", state.control_plane_connects.load());
  line("agent.control_plane_disconnects", state.control_plane_disconnects.load());
  line("agent.cache_writes", state.cache_writes.load());
  line("agent.cache_errors", state.cache_errors.load());
  return AdminResponse{200, "text/plain; charset=utf-8", std::move(out)};
}

}  // namespace

std::unique_ptr<prometheus::Collectable> NewAgentMetricsCollector(const AgentState* state,
                                                                  ProxyStatsFn stats) {
  return std::make_unique<AgentMetricsCollector>(state, std::move(stats));
}

std::string RenderPrometheusText(const prometheus::Collectable& collectable) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, collectable.Collect());
  return out.str();
}

void RegisterAgentAdminHandlers(AdminServer* admin, const AgentState* state, ProxyStatsFn stats) {
  admin->Handle("/health/live", [](const AdminRequest&) {
    return AdminResponse{200, "text/plain; charset=utf-8", "live\n"};
  });
  admin->Handle("/health/ready", [state](const AdminRequest&) { return Ready(*state); });
  admin->Handle("/config_dump", [state](const AdminRequest&) { return ConfigDump(*state); });
  admin->Handle("/stats", [state, stats](const AdminRequest&) { return Stats(*state, stats); });
  // The collector lives as long as the handler (shared by the copies std::function makes).
  std::shared_ptr<prometheus::Collectable> collector = NewAgentMetricsCollector(state, stats);
  admin->Handle("/metrics", [collector](const AdminRequest&) {
    return AdminResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                         RenderPrometheusText(*collector)};
  });
}

}  // namespace flexgate::agent
