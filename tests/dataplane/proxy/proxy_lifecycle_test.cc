// Route table swaps under load, upstream failures and timeouts, and graceful drain.
#include <atomic>
#include <chrono>
#include <thread>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "proxy_test_env.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::dataplane::test {
namespace {

std::string RouteTo(const std::string& cluster, const std::string& extra_routes = "") {
  return absl::StrReplaceAll(std::string(R"(
clusters:
  - name: c0
    endpoints: [{ address: 127.0.0.1, port: {P0} }]
  - name: c1
    endpoints: [{ address: 127.0.0.1, port: {P1} }]
routes:
EXTRA  - { name: all, match: { path: { prefix: / } }, cluster: CLUSTER }
)"),
                             {{"CLUSTER", cluster}, {"EXTRA", extra_routes}});
}

// A loopback port with nothing listening (bound, then closed): connects are refused at once.
uint16_t DeadPort() { return flexgate::testing::FreePort(); }

TEST_CASE("before any table the proxy answers 503") {
  ProxyEnv env("");
  auto r = env.Client().Get("/");
  REQUIRE(r.ok());
  CHECK(r->status == 503);
  CHECK(r->body == "no route table loaded\n");
  env.Publish(kDefaultConfig);
  r = env.Client().Get("/");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
}

TEST_CASE("table swaps while requests are in flight drop nothing") {
  ProxyEnv env(RouteTo("c0"));
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, bad{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 3; ++t) {
    clients.emplace_back([&, t] {
      auto c = HttpClient::Connect("127.0.0.1", env.port());
      if (!c.ok()) {
        ++bad;
        return;
      }
      int i = 0;
      while (!stop.load()) {
        // Mix keep-alive requests, slow ones and bodies.
        HttpRequest req;
        if (i % 5 == 0) req.path = "/slow?ms=20";
        if (i % 3 == 0) {
          req.method = "POST";
          req.body = std::string(1000 + t, 'b');
        }
        auto r = c->RoundTrip(req);
        if (r.ok() && r->status == 200) {
          ++ok;
        } else {
          ++bad;
          auto again = HttpClient::Connect("127.0.0.1", env.port());
          if (again.ok()) *c = *std::move(again);
        }
        ++i;
      }
    });
  }
  // A slow request that starts on version 1 (c0) finishes there after the swaps.
  std::thread slow([&] {
    auto r = flexgate::testing::HttpGet(env.port(), "/slow?ms=400");
    CHECK(r.ok());
    if (r.ok()) {
      CHECK(r->status == 200);
      CHECK(r->Header("x-upstream") == "u0");
    }
  });
  REQUIRE(flexgate::testing::HttpGet(env.port(), "/warm").ok());
  absl::SleepFor(absl::Milliseconds(50));  // let the slow request reach the upstream
  for (int v = 2; v < 42; ++v) {
    env.Publish(RouteTo(v % 2 == 0 ? "c1" : "c0"), static_cast<uint64_t>(v));
  }
  env.Publish(RouteTo("c1"), 100);
  slow.join();
  stop = true;
  for (auto& t : clients) t.join();
  CHECK(bad.load() == 0);
  CHECK(ok.load() > 0);
  auto r = env.Client().Get("/final");
  REQUIRE(r.ok());
  CHECK(r->Header("x-upstream") == "u1");
  CHECK(env.proxy().current_route_table()->version() == 100);
  CHECK(env.proxy().CollectStats().route_table_swaps >= 2);
}

TEST_CASE("upstream down, reset, and timeouts give 503/502/504 quickly") {
  ProxyEnv env(R"(
clusters:
  - name: c0
    endpoints: [{ address: 127.0.0.1, port: {P0} }]
  - name: dead
    endpoints: [{ address: 127.0.0.1, port: )" + std::to_string(DeadPort()) + R"( }]
routes:
  - { name: dead, match: { path: { prefix: /dead } }, cluster: dead }
  - { name: short, match: { path: { prefix: /slow } }, cluster: c0, timeout: 0.2s }
  - { name: all, match: { path: { prefix: / } }, cluster: c0 }
)");
  HttpClient c = env.Client();
  auto start = std::chrono::steady_clock::now();
  auto r = c.Get("/dead");
  REQUIRE(r.ok());
  CHECK(r->status == 503);
  CHECK(r->body.find("upstream connect error") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));

  r = c.Get("/drop");  // the upstream closes without answering
  REQUIRE(r.ok());
  CHECK(r->status == 502);

  start = std::chrono::steady_clock::now();
  r = c.Get("/slow?ms=3000");
  REQUIRE(r.ok());
  CHECK(r->status == 504);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));

  // Still serving, on a fresh connection too.
  CHECK(env.Client().Get("/ok")->status == 200);
  ProxyStats s = env.proxy().CollectStats();
  CHECK(s.upstream_connect_failures >= 1);
  CHECK(s.upstream_timeouts >= 1);
}

TEST_CASE("connect timeout gives 503") {
  // A connect to it hangs until the proxy's connect timeout fires.
  BlackholeListener blackhole;
  ProxyLimits limits;
  limits.connect_timeout = absl::Milliseconds(200);
  ProxyEnv env(R"(
clusters:
  - name: full
    endpoints: [{ address: 127.0.0.1, port: )" + std::to_string(blackhole.port()) + R"( }]
routes:
  - { name: all, match: { path: { prefix: / } }, cluster: full }
)", limits);
  auto start = std::chrono::steady_clock::now();
  auto r = env.Client().Get("/");
  REQUIRE(r.ok());
  CHECK(r->status == 503);
  INFO(r->body);
  CHECK(r->body.find("timeout") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(3));
}

TEST_CASE("drain finishes in-flight requests, then stops cleanly") {
  auto env = std::make_unique<ProxyEnv>();
  HttpClient idle = env->Client();
  REQUIRE(idle.Get("/idle").ok());
  std::atomic<int> status{0};
  std::string connection;
  uint64_t before = env->up(0).requests();
  std::thread inflight([&] {
    auto c = HttpClient::Connect("127.0.0.1", env->port());
    REQUIRE(c.ok());
    auto r = c->Get("/slow?ms=300");
    if (r.ok()) {
      status = r->status;
      connection = r->Header("connection");
    }
  });
  REQUIRE(WaitUntil([&] { return env->up(0).requests() > before; }));
  uint16_t port = env->port();
  env->proxy().Drain(absl::Seconds(5));
  inflight.join();
  CHECK(status.load() == 200);
  CHECK(connection == "close");
  CHECK(idle.WaitForClose(absl::Seconds(1)));  // idle keep-alive connections were closed
  CHECK(env->proxy().LoopsClosedCleanly());
  CHECK_FALSE(HttpClient::Connect("127.0.0.1", port).ok());  // no longer accepting
}

TEST_CASE("drain deadline cuts off requests that do not finish") {
  ProxyEnv env;
  std::thread inflight([&] {
    auto c = HttpClient::Connect("127.0.0.1", env.port());
    REQUIRE(c.ok());
    auto r = c->Get("/slow?ms=5000");
    CHECK_FALSE(r.ok());  // cut off: the connection closes without a response
  });
  REQUIRE(WaitUntil([&] { return env.up(0).requests() > 0; }));
  auto start = std::chrono::steady_clock::now();
  env.proxy().Drain(absl::Milliseconds(200));
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
  inflight.join();
}

TEST_CASE("an endpoint whose host name does not resolve is skipped and alone answers 503") {
  // ".invalid" never resolves (RFC 6761), so this holds on any machine, online or not.
  ProxyEnv env(R"(
clusters:
  - name: mixed
    endpoints: [{ address: no-such-host.invalid, port: 80 }, { address: 127.0.0.1, port: {P0} }]
  - name: dead
    endpoints: [{ address: no-such-host.invalid, port: 80 }]
routes:
  - { name: dead, match: { path: { prefix: /dead } }, cluster: dead }
  - { name: all, match: { path: { prefix: / } }, cluster: mixed }
)");
  const auto& clusters = env.proxy().current_route_table()->clusters();
  REQUIRE(clusters.size() == 2);
  CHECK(clusters[0].endpoints[0].from_hostname);
  CHECK(clusters[0].endpoints[0].addr_len == 0);
  CHECK(clusters[0].endpoints[0].key == "unresolved:no-such-host.invalid:80");
  CHECK_FALSE(clusters[0].endpoints[1].from_hostname);

  HttpClient c = env.Client();
  for (int i = 0; i < 6; ++i) {  // round robin would pick the unresolved endpoint every other time
    auto r = c.Get("/x");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(r->body == "u0 GET /x\n");
  }
  auto r = env.Client().Get("/dead");
  REQUIRE(r.ok());
  CHECK(r->status == 503);
  CHECK(absl::StrContains(r->body, "unresolved:no-such-host.invalid:80 has no address"));
  r = c.Get("/still-serving");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
}

}  // namespace
}  // namespace flexgate::dataplane::test
