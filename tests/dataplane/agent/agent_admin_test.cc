// The agent's admin endpoints over real sockets: readiness follows the served snapshot and
// draining, /config_dump shows what is served and where it came from, /stats and /metrics merge
// the request path's counters at read time.
#include <atomic>

#include <catch2/catch.hpp>

#include "common/admin_server.h"
#include "common/canonical.h"
#include "common/config_loader.h"
#include "dataplane/agent/agent_admin.h"
#include "prometheus/collectable.h"
#include "test_http_client.h"

namespace flexgate::agent {
namespace {

using testing::HttpGet;

std::shared_ptr<const ServedSnapshot> Served(uint64_t version, SnapshotSource source) {
  auto config = ParseConfig(R"({"clusters":[{"name":"web","endpoints":[{"address":"127.0.0.1","port":8081}]}],
    "routes":[{"name":"all","match":{"path":{"prefix":"/"}},"cluster":"web"}]})");
  REQUIRE(config.ok());
  auto s = std::make_shared<ServedSnapshot>();
  s->version = version;
  s->hash = ConfigHash(*config);
  s->source = source;
  s->since = absl::FromUnixSeconds(1700000000);
  s->apply_duration = absl::Milliseconds(12);
  s->config = std::make_shared<const flexgate::v1::Config>(*config);
  return s;
}

struct Fixture {
  AgentState state;
  std::atomic<uint64_t> requests{0};
  std::unique_ptr<AdminServer> admin;

  Fixture() {
    auto server = AdminServer::Create("127.0.0.1:0");
    REQUIRE(server.ok());
    admin = *std::move(server);
    RegisterAgentAdminHandlers(admin.get(), &state, [this] {
      dataplane::ProxyStats s;
      s.requests_total = requests.load();
      s.responses_2xx = requests.load() - 1;
      s.responses_5xx = 1;
      s.downstream_connections_active = 3;
      return s;
    });
    REQUIRE(admin->Start().ok());
  }
  uint16_t port() const { return admin->port(); }
};

TEST_CASE("live always; ready only once a snapshot is served and until draining") {
  Fixture f;
  CHECK(HttpGet(f.port(), "/health/live").status == 200);
  auto before = HttpGet(f.port(), "/health/ready");
  CHECK(before.status == 503);
  CHECK_THAT(before.body, Catch::Contains("no snapshot loaded"));

  f.state.SetServed(Served(7, SnapshotSource::kCache));
  auto ready = HttpGet(f.port(), "/health/ready");
  CHECK(ready.status == 200);
  CHECK_THAT(ready.headers, Catch::Contains("application/json"));
  CHECK_THAT(ready.body, Catch::Contains("\"version\":7"));
  CHECK_THAT(ready.body, Catch::Contains("\"source\":\"cache\""));
  CHECK_THAT(ready.body, Catch::Contains("\"since\":\"2023-11-14T22:13:20.000Z\""));
  CHECK_THAT(ready.body, Catch::Contains("\"hash\":\"" + f.state.served()->hash + "\""));

  f.state.SetDraining();
  auto draining = HttpGet(f.port(), "/health/ready");
  CHECK(draining.status == 503);
  CHECK_THAT(draining.body, Catch::Contains("draining"));
  CHECK(HttpGet(f.port(), "/health/live").status == 200);
}

TEST_CASE("/config_dump shows the served config with version, hash, source and since") {
  Fixture f;
  CHECK(HttpGet(f.port(), "/config_dump").status == 503);
  f.state.SetServed(Served(12, SnapshotSource::kControlPlane));
  auto dump = HttpGet(f.port(), "/config_dump");
  CHECK(dump.status == 200);
  CHECK_THAT(dump.body, Catch::Contains("\"version\":12"));
  CHECK_THAT(dump.body, Catch::Contains("\"source\":\"control_plane\""));
  CHECK_THAT(dump.body, Catch::Contains("\"config\":{"));
  CHECK_THAT(dump.body, Catch::Contains("\"clusters\""));
  CHECK_THAT(dump.body, Catch::Contains("8081"));
}

TEST_CASE("/stats and /metrics read the workers' counters at request time") {
  Fixture f;
  f.state.SetServed(Served(3, SnapshotSource::kFile));
  f.state.snapshots_rejected = 2;
  f.requests = 10;
  auto stats = HttpGet(f.port(), "/stats");
  CHECK(stats.status == 200);
  CHECK_THAT(stats.body, Catch::Contains("requests_total: 10\n"));
  CHECK_THAT(stats.body, Catch::Contains("responses_5xx: 1\n"));
  CHECK_THAT(stats.body, Catch::Contains("agent.snapshot_version: 3\n"));
  CHECK_THAT(stats.body, Catch::Contains("agent.snapshots_rejected: 2\n"));

  f.requests = 41;  // no caching between scrapes
  auto metrics = HttpGet(f.port(), "/metrics");
  CHECK(metrics.status == 200);
  CHECK_THAT(metrics.headers, Catch::Contains("text/plain; version=0.0.4"));
  CHECK_THAT(metrics.body, Catch::Contains("# TYPE flexgate_requests_total counter"));
  CHECK_THAT(metrics.body, Catch::Contains("flexgate_requests_total 41"));
  CHECK_THAT(metrics.body, Catch::Contains("flexgate_responses_total{class=\"2xx\"} 40"));
  CHECK_THAT(metrics.body, Catch::Contains("flexgate_downstream_connections_active 3"));
  CHECK_THAT(metrics.body, Catch::Contains("flexgate_agent_snapshot_version 3"));
  CHECK_THAT(metrics.body, Catch::Contains("flexgate_agent_snapshot_source{source=\"file\"} 1"));
  CHECK_THAT(metrics.body, Catch::Contains("flexgate_agent_snapshot_source{source=\"cache\"} 0"));
  CHECK_THAT(metrics.body, Catch::Contains("flexgate_agent_snapshot_apply_duration_seconds 0.012"));
  CHECK_THAT(metrics.body, Catch::Contains("flexgate_agent_ready 1"));
}

TEST_CASE("the collector works without a request path (stats function absent)") {
  AgentState state;
  auto collector = NewAgentMetricsCollector(&state, nullptr);
  std::string text = RenderPrometheusText(*collector);
  CHECK_THAT(text, Catch::Contains("flexgate_agent_ready 0"));
  CHECK_THAT(text, !Catch::Contains("flexgate_requests_total"));
}

}  // namespace
}  // namespace flexgate::agent
