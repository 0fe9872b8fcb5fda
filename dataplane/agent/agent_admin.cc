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

// Every request-path counter, exported by /metrics and /stats alike: a new ProxyStats field
// needs one line here and nowhere else.
struct ProxyCounter {
  const char* stats_name;  // /stats
  const char* metric;      // /metrics
  const char* help;
  bool gauge;
  uint64_t dataplane::ProxyStats::*field;
};
using PS = dataplane::ProxyStats;
constexpr ProxyCounter kProxyCounters[] = {
    {"downstream_connections_total", "flexgate_downstream_connections_total",
     "Downstream connections accepted.", false, &PS::downstream_connections_total},
    {"downstream_connections_active", "flexgate_downstream_connections_active",
     "Downstream connections open now.", true, &PS::downstream_connections_active},
    {"requests_total", "flexgate_requests_total", "Requests received.", false, &PS::requests_total},
    {"upstream_connections_total", "flexgate_upstream_connections_total",
     "Upstream connections opened.", false, &PS::upstream_connections_total},
    {"upstream_connect_failures", "flexgate_upstream_connect_failures_total",
     "Upstream connection attempts that failed.", false, &PS::upstream_connect_failures},
    {"upstream_requests_total", "flexgate_upstream_requests_total", "Requests sent upstream.",
     false, &PS::upstream_requests_total},
    {"bytes_received", "flexgate_downstream_bytes_received_total", "Bytes received from clients.",
     false, &PS::bytes_received},
    {"bytes_sent", "flexgate_downstream_bytes_sent_total", "Bytes sent to clients.", false,
     &PS::bytes_sent},
    {"upstream_timeouts", "flexgate_upstream_timeouts_total",
     "Upstream connect and request timeouts.", false, &PS::upstream_timeouts},
    {"upstream_retries", "flexgate_upstream_retries_total", "Upstream retries.", false,
     &PS::upstream_retries},
    {"bad_requests", "flexgate_bad_requests_total",
     "Malformed or oversized requests answered 4xx and closed.", false, &PS::bad_requests},
    {"route_table_swaps", "flexgate_route_table_swaps_total",
     "Route tables swapped in, summed over workers.", false, &PS::route_table_swaps},
    {"upstream_per_try_timeouts", "flexgate_upstream_per_try_timeouts_total",
     "Upstream attempts cut by a retry policy's per-try timeout.", false,
     &PS::upstream_per_try_timeouts},
    {"retry_budget_exhausted", "flexgate_retry_budget_exhausted_total",
     "Retries refused because the retry budget was spent.", false, &PS::retry_budget_exhausted},
    {"outlier_ejections", "flexgate_outlier_ejections_total",
     "Upstream endpoints ejected by passive outlier detection.", false, &PS::outlier_ejections},
    {"circuit_breaker_rejections", "flexgate_circuit_breaker_rejections_total",
     "Requests answered 503 by a circuit breaker.", false, &PS::circuit_breaker_rejections},
    {"upgrades_total", "flexgate_upgrades_total", "Protocol upgrades (websocket) tunnelled.", false,
     &PS::upgrades_total},
    {"upgrades_active", "flexgate_upgrades_active", "Upgraded tunnels open now.", true,
     &PS::upgrades_active},
    {"health_checks_total", "flexgate_health_checks_total", "Active health check probes sent.",
     false, &PS::health_checks_total},
    {"health_check_failures", "flexgate_health_check_failures_total",
     "Active health check probes that failed.", false, &PS::health_check_failures},
    {"downstream_tls_handshakes", "flexgate_downstream_tls_handshakes_total",
     "Client TLS handshakes completed.", false, &PS::downstream_tls_handshakes},
    {"downstream_tls_handshake_failures", "flexgate_downstream_tls_handshake_failures_total",
     "Client TLS handshakes that failed (including plain HTTP sent to a TLS listener).", false,
     &PS::downstream_tls_handshake_failures},
    {"upstream_tls_failures", "flexgate_upstream_tls_failures_total",
     "Upstream TLS failures, certificate verification included.", false,
     &PS::upstream_tls_failures},
    {"tls_certificate_reloads", "flexgate_tls_certificate_reloads_total",
     "Listener certificate sets reloaded (SIGHUP).", false, &PS::tls_certificate_reloads},
    {"tls_certificate_reload_failures", "flexgate_tls_certificate_reload_failures_total",
     "Listener certificate reloads refused; the previous certificates kept serving.", false,
     &PS::tls_certificate_reload_failures},
};

struct ResponseClass {
  const char* label;
  uint64_t dataplane::ProxyStats::*field;
};
constexpr ResponseClass kResponseClasses[] = {
    {"1xx", &PS::responses_1xx}, {"2xx", &PS::responses_2xx}, {"3xx", &PS::responses_3xx},
    {"4xx", &PS::responses_4xx}, {"5xx", &PS::responses_5xx},
};

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
      for (const ProxyCounter& c : kProxyCounters) {
        out.push_back(Single(c.metric, c.help, c.gauge ? G : C, s.*c.field));
      }
      MetricFamily responses =
          Family("flexgate_responses_total", "Responses sent, by status class.", C);
      for (const ResponseClass& r : kResponseClasses) {
        AddValue(responses, s.*r.field, {{"class", r.label}});
      }
      out.push_back(std::move(responses));
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
    for (const ProxyCounter& c : kProxyCounters) line(c.stats_name, s.*c.field);
    for (const ResponseClass& r : kResponseClasses) {
      absl::StrAppend(&out, "responses_", r.label, ": ", s.*r.field, "\n");
    }
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
