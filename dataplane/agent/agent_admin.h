// The agent's admin endpoints on a common AdminServer:
//   /health/live   200 while the process runs
//   /health/ready  200 once a snapshot is served (503 before, and while draining); JSON body with
//                  version, hash, source (control_plane | cache | file) and since
//   /config_dump   the served config as JSON, with version, hash, source and since
//   /stats         plain-text counters, one "name: value" per line
//   /metrics       Prometheus text: the workers' counters merged at scrape time plus agent gauges
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/admin_server.h"
#include "dataplane/agent/agent_state.h"
#include "dataplane/proxy/proxy_server.h"

namespace prometheus {
class Collectable;
}

namespace flexgate::agent {

// Reads the request path's counters (ProxyServer::CollectStats in production).
using ProxyStatsFn = std::function<dataplane::ProxyStats()>;

// A prometheus::Collectable over the agent: calls `stats` and reads `state` at every scrape, so
// the request path keeps plain per-worker counters and nothing is shared per request.
// `state` must outlive the collector.
std::unique_ptr<prometheus::Collectable> NewAgentMetricsCollector(const AgentState* state,
                                                                  ProxyStatsFn stats);

// Prometheus text exposition of a collector.
std::string RenderPrometheusText(const prometheus::Collectable& collectable);

// Registers the endpoints above. Call before AdminServer::Start; `state` must outlive `admin`.
void RegisterAgentAdminHandlers(AdminServer* admin, const AgentState* state, ProxyStatsFn stats);

}  // namespace flexgate::agent
