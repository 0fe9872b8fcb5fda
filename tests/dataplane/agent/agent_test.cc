// The whole agent in-process with its real workers: static mode, control-plane mode against the
// in-test control plane, cold start from the last-known-good cache with no control plane, a
// corrupt cache, reload, and graceful drain. Upstreams are real HTTP servers on loopback.
#include <filesystem>
#include <fstream>
#include <thread>

#include <catch2/catch.hpp>

#include "common/canonical.h"
#include "common/config_loader.h"
#include "dataplane/agent/agent.h"
#include "fake_control_plane.h"
#include "temp_dir.h"
#include "tests/harness/http/http_client.h"
#include "tests/harness/http/test_upstream.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::agent {
namespace {

namespace v1 = flexgate::v1;
using flexgate::testing::HttpGet;
using flexgate::testing::TestUpstream;
using flexgate::testing::WaitFor;
using testing::AckFor;
using testing::FakeControlPlane;
using testing::IsHello;
using testing::TempDir;

std::string ConfigYaml(uint16_t upstream_port, const std::string& cluster_ref = "web") {
  return "clusters:\n"
         "  - name: web\n"
         "    endpoints:\n"
         "      - { address: 127.0.0.1, port: " + std::to_string(upstream_port) + " }\n"
         "routes:\n"
         "  - name: all\n"
         "    match: { path: { prefix: \"/\" } }\n"
         "    cluster: " + cluster_ref + "\n";
}

v1::Snapshot SnapshotFor(uint64_t version, const std::string& nonce, uint16_t upstream_port) {
  auto config = ParseConfig(ConfigYaml(upstream_port));
  REQUIRE(config.ok());
  v1::Snapshot s;
  s.set_version(version);
  s.set_nonce(nonce);
  s.set_hash(ConfigHash(*config));
  *s.mutable_config() = *config;
  return s;
}

std::unique_ptr<TestUpstream> Upstream(const std::string& name) {
  auto up = TestUpstream::Start(name);
  REQUIRE(up.ok());
  return *std::move(up);
}

AgentOptions BaseOptions() {
  AgentOptions o;
  o.listen_addresses = {"127.0.0.1:0"};
  o.admin_address = "127.0.0.1:0";
  o.workers = 2;
  o.drain_timeout = absl::Seconds(5);
  o.control_plane.heartbeat_interval = absl::Milliseconds(200);
  o.control_plane.reconnect_base = absl::Milliseconds(20);
  o.control_plane.reconnect_max = absl::Milliseconds(200);
  return o;
}

AgentOptions ControlPlaneOptions(const std::string& address, const std::string& cache_dir) {
  AgentOptions o = BaseOptions();
  o.control_plane.address = address;
  o.control_plane.token = "tok";
  o.cache_dir = cache_dir;
  o.labels = {{"zone", "test"}};
  return o;
}

std::unique_ptr<Agent> StartAgent(AgentOptions options) {
  auto agent = Agent::Create(std::move(options));
  REQUIRE(agent.ok());
  absl::Status s = (*agent)->Start();
  INFO(s.ToString());
  REQUIRE(s.ok());
  return *std::move(agent);
}

// The body an upstream named `name` sends for GET `path`.
std::string Body(const std::string& name, const std::string& path) {
  return name + " GET " + path + "\n";
}

int Status(uint16_t port, const std::string& path) {
  auto r = HttpGet(port, path);
  return r.ok() ? r->status : 0;
}

TEST_CASE("static config file: the agent serves traffic and is ready") {
  auto up = Upstream("alpha");
  TempDir dir;
  std::ofstream(dir.file("config.yaml")) << ConfigYaml(up->port());
  AgentOptions o = BaseOptions();
  o.config_file = dir.file("config.yaml");
  auto agent = StartAgent(o);

  auto ready = HttpGet(agent->admin_port(), "/health/ready");
  REQUIRE(ready.ok());
  CHECK(ready->status == 200);
  CHECK_THAT(ready->body, Catch::Contains("\"source\":\"file\""));
  for (int i = 0; i < 5; ++i) {
    auto r = HttpGet(agent->proxy_port(0), "/hello");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(r->body == Body("alpha", "/hello"));
  }
  auto metrics = HttpGet(agent->admin_port(), "/metrics");
  REQUIRE(metrics.ok());
  CHECK_THAT(metrics->body, Catch::Contains("flexgate_responses_total{class=\"2xx\"} 5"));

  SECTION("reload switches to the new file; an invalid file keeps the old table") {
    auto beta = Upstream("beta");
    std::ofstream(dir.file("config.yaml"), std::ios::trunc) << ConfigYaml(beta->port());
    REQUIRE(agent->ReloadConfigFile().ok());
    auto r = HttpGet(agent->proxy_port(0), "/x");
    REQUIRE(r.ok());
    CHECK(r->body == Body("beta", "/x"));

    std::ofstream(dir.file("config.yaml"), std::ios::trunc) << ConfigYaml(up->port(), "nope");
    absl::Status s = agent->ReloadConfigFile();
    CHECK_FALSE(s.ok());
    CHECK_THAT(std::string(s.message()), Catch::Contains("unknown_cluster"));
    auto still = HttpGet(agent->proxy_port(0), "/y");
    REQUIRE(still.ok());
    CHECK(still->body == Body("beta", "/y"));
  }
  agent->Shutdown();
}

TEST_CASE("an invalid static config stops start-up with every diagnostic and binds nothing") {
  TempDir dir;
  std::ofstream(dir.file("bad.yaml")) << ConfigYaml(8081, "missing");
  AgentOptions o = BaseOptions();
  o.config_file = dir.file("bad.yaml");
  auto agent = Agent::Create(o);
  REQUIRE(agent.ok());
  absl::Status s = (*agent)->Start();
  REQUIRE_FALSE(s.ok());
  CHECK_THAT(std::string(s.message()), Catch::Contains("routes[0].cluster"));
  CHECK_THAT(std::string(s.message()), Catch::Contains("unknown_cluster"));
  CHECK((*agent)->admin_port() == 0);
  CHECK((*agent)->proxy_port(0) == 0);
}

TEST_CASE("control plane: not ready until the first snapshot, then serving, cached and ACKed") {
  auto up = Upstream("alpha");
  FakeControlPlane cp;
  TempDir dir;
  auto agent = StartAgent(ControlPlaneOptions(cp.address(), dir.file("cache")));

  auto hello = cp.WaitFor(IsHello());
  REQUIRE(hello);
  CHECK(hello->hello().labels().at("zone") == "test");
  CHECK(hello->hello().agent_id().rfind("agent-", 0) == 0);  // generated and persisted
  CHECK(Status(agent->admin_port(), "/health/ready") == 503);
  CHECK(Status(agent->proxy_port(0), "/") == 503);  // no route table yet

  cp.Send(SnapshotFor(1, "n1", up->port()));
  auto ack = cp.WaitFor(AckFor("n1"));
  REQUIRE(ack);
  // An Ack means every worker serves the version: no waiting needed here.
  auto r = HttpGet(agent->proxy_port(0), "/after-ack");
  REQUIRE(r.ok());
  CHECK(r->body == Body("alpha", "/after-ack"));
  auto ready = HttpGet(agent->admin_port(), "/health/ready");
  REQUIRE(ready.ok());
  CHECK(ready->status == 200);
  CHECK_THAT(ready->body, Catch::Contains("\"source\":\"control_plane\""));
  CHECK_THAT(ready->body, Catch::Contains("\"version\":1"));
  CHECK_THAT(ready->body, Catch::Contains("\"control_plane_connected\":true"));
  agent->Shutdown();
}

TEST_CASE("restart with the control plane down: serves the cached version at once") {
  auto up = Upstream("alpha");
  TempDir dir;
  std::string agent_id;
  {
    FakeControlPlane cp;
    auto agent = StartAgent(ControlPlaneOptions(cp.address(), dir.file("cache")));
    auto hello = cp.WaitFor(IsHello());
    REQUIRE(hello);
    agent_id = hello->hello().agent_id();
    cp.Send(SnapshotFor(4, "n4", up->port()));
    REQUIRE(cp.WaitFor(AckFor("n4")));
    agent->Shutdown();
  }
  // The control plane is gone: nothing listens at its old address any more.
  uint16_t dead = flexgate::testing::FreePort();
  absl::Time t0 = absl::Now();
  auto agent = StartAgent(ControlPlaneOptions("127.0.0.1:" + std::to_string(dead),
                                              dir.file("cache")));
  auto ready = HttpGet(agent->admin_port(), "/health/ready");
  REQUIRE(ready.ok());
  CHECK(ready->status == 200);
  CHECK(absl::Now() - t0 < absl::Seconds(1));
  CHECK_THAT(ready->body, Catch::Contains("\"source\":\"cache\""));
  CHECK_THAT(ready->body, Catch::Contains("\"version\":4"));
  auto r = HttpGet(agent->proxy_port(0), "/cached");
  REQUIRE(r.ok());
  CHECK(r->body == Body("alpha", "/cached"));
  CHECK(agent->state().agent_id() == agent_id);  // same identity across restarts

  SECTION("when a control plane appears, Hello reports the cached version and it reconciles") {
    // (A fresh fake at a new address: the agent under test keeps retrying the dead one, so this
    // runs a second agent on the same cache to show Hello carries the cached version.)
    agent->Shutdown();
    agent.reset();
    FakeControlPlane cp;
    auto again = StartAgent(ControlPlaneOptions(cp.address(), dir.file("cache")));
    auto hello = cp.WaitFor(IsHello());
    REQUIRE(hello);
    CHECK(hello->hello().applied_version() == 4);
    v1::Snapshot same = SnapshotFor(4, "again", up->port());
    CHECK(hello->hello().applied_hash() == same.hash());
    cp.Send(same);
    REQUIRE(cp.WaitFor(AckFor("again")));
    CHECK(again->state().served()->source == SnapshotSource::kControlPlane);
    again->Shutdown();
  }
}

TEST_CASE("a corrupt cache is reported and the control plane supplies the config") {
  auto up = Upstream("alpha");
  TempDir dir;
  {
    FakeControlPlane cp;
    auto agent = StartAgent(ControlPlaneOptions(cp.address(), dir.file("cache")));
    REQUIRE(cp.WaitFor(IsHello()));
    cp.Send(SnapshotFor(2, "n2", up->port()));
    REQUIRE(cp.WaitFor(AckFor("n2")));
    agent->Shutdown();
  }
  // Scribble over every file of the store.
  for (const auto& entry : std::filesystem::directory_iterator(dir.file("cache") + "/snapshots")) {
    if (!entry.is_regular_file()) continue;
    auto size = std::filesystem::file_size(entry.path());
    std::ofstream(entry.path(), std::ios::binary | std::ios::trunc) << std::string(size, '#');
  }
  FakeControlPlane cp;
  auto agent = StartAgent(ControlPlaneOptions(cp.address(), dir.file("cache")));
  CHECK(agent->state().cache_errors >= 1);
  CHECK(agent->state().served() == nullptr);
  auto hello = cp.WaitFor(IsHello());
  REQUIRE(hello);
  CHECK(hello->hello().applied_version() == 0);
  cp.Send(SnapshotFor(3, "n3", up->port()));
  REQUIRE(cp.WaitFor(AckFor("n3")));
  CHECK(Status(agent->admin_port(), "/health/ready") == 200);
  CHECK(Status(agent->proxy_port(0), "/") == 200);
  agent->Shutdown();
}

TEST_CASE("graceful drain: readiness turns 503 at once and the in-flight request completes") {
  auto up = Upstream("alpha");
  TempDir dir;
  std::ofstream(dir.file("config.yaml")) << ConfigYaml(up->port());
  AgentOptions o = BaseOptions();
  o.config_file = dir.file("config.yaml");
  auto agent = StartAgent(o);
  uint16_t port = agent->proxy_port(0);

  std::optional<int> slow_status;
  std::thread client([&] {
    auto r = HttpGet(port, "/slow?ms=1000");
    slow_status = r.ok() ? r->status : 0;
  });
  REQUIRE(WaitFor([&] { return up->requests() >= 1 || up->connections() >= 1; },
                  absl::Seconds(5)));
  uint16_t admin = agent->admin_port();
  std::thread stopper([&] { agent->Shutdown(); });
  // While the request is still in flight, load balancers are already told to go away.
  CHECK(WaitFor([&] { return Status(admin, "/health/ready") == 503; }, absl::Seconds(1)));
  stopper.join();
  client.join();
  CHECK(slow_status == 200);
  CHECK(Status(port, "/") == 0);  // no longer accepting
}

}  // namespace
}  // namespace flexgate::agent
