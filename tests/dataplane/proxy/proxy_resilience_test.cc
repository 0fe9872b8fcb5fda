// Upstream resilience over real sockets: retries (conditions, idempotency, per-try timeout,
// budget), passive outlier ejection, active health checks and circuit breakers.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "proxy_test_env.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::dataplane::test {
namespace {

using flexgate::testing::HttpGet;

// A loopback port with nothing listening (bound, then closed): connects are refused at once.
uint16_t DeadPort() { return flexgate::testing::FreePort(); }

std::string WithDead(std::string yaml) {
  return absl::StrReplaceAll(yaml, {{"{DEAD}", absl::StrCat(DeadPort())},
                                    {"{DEAD2}", absl::StrCat(DeadPort())}});
}

// Sends `n` requests at once, each on its own connection; returns the responses in order of
// the requests (status 0 = transport error).
std::vector<HttpResponse> Concurrent(ProxyEnv& env, int n, const std::string& path) {
  std::vector<HttpResponse> out(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      auto c = HttpClient::Connect("127.0.0.1", env.port());
      if (!c.ok()) return;
      auto r = c->Get(path);
      if (r.ok()) out[static_cast<size_t>(i)] = *r;
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

TEST_CASE("retry on connect failure reaches the live endpoint") {
  ProxyEnv env("", {}, 1);
  env.Publish(WithDead(R"(
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1, port: {DEAD} }, { address: 127.0.0.1, port: {P0} }]
routes:
  - name: r
    match: { path: { prefix: / } }
    cluster: c
    retry: { attempts: 2, retry_on: [connect-failure] }
)"));
  HttpClient c = env.Client();
  // Round robin alternates, so half of these first try the dead endpoint.
  for (int i = 0; i < 6; ++i) {
    auto r = c.Get("/x");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(r->Header("x-upstream") == "u0");
  }
  // Every failed connect was retried (a retry moves the round-robin cursor too, so how many
  // requests meet the dead endpoint first depends on the schedule).
  ProxyStats st = env.proxy().CollectStats();
  CHECK(st.upstream_retries >= 3);
  CHECK(st.upstream_retries == st.upstream_connect_failures);
}

TEST_CASE("without a retry policy a connect failure is answered 503") {
  ProxyEnv env("", {}, 1);
  env.Publish(WithDead(R"(
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1, port: {DEAD} }]
routes:
  - { name: r, match: { path: { prefix: / } }, cluster: c }
)"));
  auto r = env.Client().Get("/x");
  REQUIRE(r.ok());
  CHECK(r->status == 503);
  CHECK(absl::StrContains(r->body, "upstream connect error"));
  CHECK(env.proxy().CollectStats().upstream_retries == 0);
}

TEST_CASE("5xx answers are retried only when the policy says so") {
  ProxyEnv env("", {}, 1);
  env.up(1).SetHealthStatus(503);  // u1's /health answers 503, u0's 200
  const std::string base = R"(
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1, port: {P0} }, { address: 127.0.0.1, port: {P1} }]
routes:
  - name: r
    match: { path: { prefix: / } }
    cluster: c
)";
  SECTION("retry_on 5xx: every answer is u0's 200") {
    env.Publish(base + "    retry: { attempts: 3, retry_on: [5xx] }\n");
    HttpClient c = env.Client();
    for (int i = 0; i < 6; ++i) {
      auto r = c.Get("/health");
      REQUIRE(r.ok());
      CHECK(r->status == 200);
      CHECK(r->Header("x-upstream") == "u0");
    }
    CHECK(env.proxy().CollectStats().upstream_retries >= 3);
  }
  SECTION("retriable-status lists other codes only: the 503 comes through") {
    env.Publish(base +
                "    retry: { attempts: 3, retry_on: [retriable-status], retriable_statuses: [409] }\n");
    HttpClient c = env.Client();
    int n503 = 0;
    for (int i = 0; i < 6; ++i) {
      auto r = c.Get("/health");
      REQUIRE(r.ok());
      if (r->status == 503) ++n503;
    }
    CHECK(n503 == 3);
    CHECK(env.proxy().CollectStats().upstream_retries == 0);
  }
  SECTION("retriable-status with 503 listed retries it") {
    env.Publish(base +
                "    retry: { attempts: 2, retry_on: [retriable-status], retriable_statuses: [503] }\n");
    HttpClient c = env.Client();
    for (int i = 0; i < 4; ++i) {
      auto r = c.Get("/health");
      REQUIRE(r.ok());
      CHECK(r->status == 200);
    }
    CHECK(env.proxy().CollectStats().upstream_retries >= 2);
  }
  SECTION("no retry policy: half the answers are 503") {
    env.Publish(base);
    HttpClient c = env.Client();
    int n503 = 0;
    for (int i = 0; i < 6; ++i) {
      auto r = c.Get("/health");
      REQUIRE(r.ok());
      if (r->status == 503) ++n503;
    }
    CHECK(n503 == 3);
  }
}

TEST_CASE("POST is never retried; PUT with a small body is, with its body") {
  ProxyEnv env("", {}, 1);
  env.Publish(WithDead(R"(
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1, port: {DEAD} }, { address: 127.0.0.1, port: {P0} }]
routes:
  - name: r
    match: { path: { prefix: / } }
    cluster: c
    retry: { attempts: 3, retry_on: [connect-failure, 5xx] }
)"));
  HttpClient c = env.Client();
  HttpRequest post;
  post.method = "POST";
  post.path = "/echo";
  post.body = "payload";
  int failed = 0;
  for (int i = 0; i < 4; ++i) {
    auto r = c.RoundTrip(post);
    REQUIRE(r.ok());
    if (r->status == 503) {
      ++failed;
    } else {
      CHECK(r->body == "payload");
    }
  }
  CHECK(failed == 2);  // the dead endpoint's turns
  CHECK(env.proxy().CollectStats().upstream_retries == 0);

  HttpRequest put = post;
  put.method = "PUT";
  put.body = std::string(20000, 'p');
  put.chunked = true;
  put.chunk_size = 3000;
  for (int i = 0; i < 4; ++i) {
    auto r = c.RoundTrip(put);
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(r->body == put.body);
  }
  CHECK(env.proxy().CollectStats().upstream_retries >= 2);
}

TEST_CASE("per-try timeout cuts slow attempts, and the retry budget caps retries") {
  ProxyEnv env("", {}, 1);
  env.Publish(R"(
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1, port: {P0} }, { address: 127.0.0.1, port: {P1} }]
routes:
  - name: r
    match: { path: { prefix: / } }
    cluster: c
    timeout: 5s
    retry: { attempts: 2, retry_on: [5xx], per_try_timeout: 0.15s, budget_percent: 10 }
)");
  SECTION("a single slow request: two attempts, then 504") {
    absl::Time start = absl::Now();
    auto r = env.Client().Get("/slow?ms=1000");
    REQUIRE(r.ok());
    CHECK(r->status == 504);
    CHECK(absl::Now() - start < absl::Seconds(1));
    ProxyStats st = env.proxy().CollectStats();
    CHECK(st.upstream_per_try_timeouts == 2);
    CHECK(st.upstream_retries == 1);
  }
  SECTION("ten at once: at most 3 retries in flight (the budget's floor)") {
    auto rs = Concurrent(env, 10, "/slow?ms=1000");
    for (const auto& r : rs) CHECK(r.status == 504);
    ProxyStats st = env.proxy().CollectStats();
    CHECK(st.upstream_retries <= 4);
    CHECK(st.upstream_retries >= 1);
    CHECK(st.retry_budget_exhausted >= 6);
  }
}

TEST_CASE("outlier detection ejects an endpoint after consecutive connect failures") {
  ProxyEnv env("", {}, 1);
  env.Publish(WithDead(R"(
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1, port: {DEAD} }, { address: 127.0.0.1, port: {P0} }]
    outlier_detection: { consecutive_connect_failures: 2, base_ejection_time: 30s, max_ejection_percent: 50 }
routes:
  - { name: r, match: { path: { prefix: / } }, cluster: c }
)"));
  HttpClient c = env.Client();
  int failures = 0;
  for (int i = 0; i < 4; ++i) {
    auto r = c.Get("/");
    REQUIRE(r.ok());
    if (r->status != 200) ++failures;
  }
  CHECK(failures == 2);
  CHECK(env.proxy().CollectStats().outlier_ejections == 1);
  // Ejected: everything goes to the live endpoint now.
  for (int i = 0; i < 10; ++i) {
    auto r = c.Get("/");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
  }
}

TEST_CASE("outlier detection on consecutive 5xx, bounded by max_ejection_percent") {
  ProxyEnv env("", {}, 1, 3);
  env.up(1).SetHealthStatus(500);
  env.up(2).SetHealthStatus(500);
  env.Publish(R"(
clusters:
  - name: c
    endpoints:
      - { address: 127.0.0.1, port: {P0} }
      - { address: 127.0.0.1, port: {P1} }
      - { address: 127.0.0.1, port: {P2} }
    outlier_detection: { consecutive_5xx: 2, base_ejection_time: 30s, max_ejection_percent: 34 }
routes:
  - { name: r, match: { path: { prefix: / } }, cluster: c }
)");
  HttpClient c = env.Client();
  for (int i = 0; i < 30; ++i) REQUIRE(c.Get("/health").ok());
  // u1 and u2 both fail, but only one of three endpoints (34%) may be ejected at a time.
  CHECK(env.proxy().CollectStats().outlier_ejections == 1);
  int n500 = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = c.Get("/health");
    REQUIRE(r.ok());
    if (r->status == 500) ++n500;
  }
  CHECK(n500 == 5);  // the one failing endpoint still in rotation gets every other request
}

TEST_CASE("active health checks take failing endpoints out, and back in") {
  ProxyEnv env("", {}, 2);
  env.Publish(R"(
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1, port: {P0} }, { address: 127.0.0.1, port: {P1} }]
    health_check: { path: /health, interval: 0.05s, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 2 }
routes:
  - { name: r, match: { path: { prefix: / } }, cluster: c }
)");
  REQUIRE(WaitUntil([&] { return env.up(1).health_requests() >= 1; }));
  // The check path fails on u1; regular traffic to u1 would still succeed, so only the health
  // checker can be the reason it stops getting requests.
  env.up(1).SetHealthStatus(503);
  uint64_t checks_before = env.proxy().CollectStats().health_check_failures;
  REQUIRE(WaitUntil([&] {
    return env.proxy().CollectStats().health_check_failures >= checks_before + 2;
  }));
  // Give the workers a moment to take the verdict from their inbox: wait until a request goes
  // to u0 three times in a row, then require that 20 more all do.
  REQUIRE(WaitUntil([&] {
    for (int i = 0; i < 3; ++i) {
      auto r = HttpGet(env.port(), "/");
      if (!r.ok() || r->Header("x-upstream") != "u0") return false;
    }
    return true;
  }));
  uint64_t u1_before = env.up(1).requests() - env.up(1).health_requests();
  for (int i = 0; i < 20; ++i) {
    auto r = HttpGet(env.port(), "/");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(r->Header("x-upstream") == "u0");
  }
  CHECK(env.up(1).requests() - env.up(1).health_requests() == u1_before);

  SECTION("all endpoints failing: fail open") {
    env.up(0).SetHealthStatus(503);
    uint64_t f = env.proxy().CollectStats().health_check_failures;
    REQUIRE(WaitUntil([&] { return env.proxy().CollectStats().health_check_failures >= f + 4; }));
    REQUIRE(WaitUntil([&] {
      auto r = HttpGet(env.port(), "/");
      return r.ok() && r->status == 200 && r->Header("x-upstream") == "u1";
    }));
  }
  SECTION("recovery brings the endpoint back") {
    env.up(1).SetHealthStatus(200);
    REQUIRE(WaitUntil([&] {
      auto r = HttpGet(env.port(), "/");
      return r.ok() && r->Header("x-upstream") == "u1";
    }));
  }
}

// How many of `rs` succeeded, and how many were refused with 503 naming `breaker`.
std::pair<int, int> CountOverflow(const std::vector<HttpResponse>& rs, const std::string& breaker) {
  int ok = 0, overflow = 0;
  for (const auto& r : rs) {
    if (r.status == 200) ++ok;
    if (r.status == 503 && absl::StrContains(r.body, breaker)) ++overflow;
  }
  return {ok, overflow};
}

TEST_CASE("circuit breakers answer 503 with a clear body") {
  ProxyEnv env("", {}, 1);
  SECTION("max_requests") {
    env.Publish(R"(
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1, port: {P0} }]
    circuit_breakers: { max_requests: 2 }
routes:
  - { name: r, match: { path: { prefix: / } }, cluster: c }
)");
    auto [ok, overflow] = CountOverflow(Concurrent(env, 4, "/slow?ms=400"),
                                        "circuit breaker max_requests");
    CHECK(ok == 2);
    CHECK(overflow == 2);
    CHECK(env.proxy().CollectStats().circuit_breaker_rejections == 2);
  }
  SECTION("max_connections") {
    env.Publish(R"(
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1, port: {P0} }]
    circuit_breakers: { max_connections: 1 }
routes:
  - { name: r, match: { path: { prefix: / } }, cluster: c }
)");
    auto [ok, overflow] = CountOverflow(Concurrent(env, 3, "/slow?ms=400"),
                                        "circuit breaker max_connections");
    CHECK(ok == 1);
    CHECK(overflow == 2);
    // The one connection is pooled and reused: sequential requests keep working.
    HttpClient c = env.Client();
    for (int i = 0; i < 3; ++i) {
      auto r = c.Get("/");
      REQUIRE(r.ok());
      CHECK(r->status == 200);
    }
  }
}

TEST_CASE("circuit breaker max_pending_requests bounds requests waiting for a connect") {
  // A connect to it stays pending until the connect timeout.
  BlackholeListener blackhole;
  {
    ProxyEnv env("", {}, 1);
    env.Publish(absl::StrReplaceAll(R"(
clusters:
  - name: c
    connect_timeout: 0.4s
    endpoints: [{ address: 127.0.0.1, port: {BLACKHOLE} }]
    circuit_breakers: { max_pending_requests: 1 }
routes:
  - { name: r, match: { path: { prefix: / } }, cluster: c }
)",
                                    {{"{BLACKHOLE}", absl::StrCat(blackhole.port())}}));
    HttpClient first = env.Client();
    REQUIRE(first.Send(HttpRequest{}).ok());
    // Wait until the first request's connect is under way, then a second one overflows.
    REQUIRE(WaitUntil([&] { return env.proxy().CollectStats().upstream_requests_total == 1; }));
    auto second = env.Client().Get("/");
    REQUIRE(second.ok());
    CHECK(second->status == 503);
    CHECK(absl::StrContains(second->body, "max_pending_requests"));
    auto r = first.ReadResponse();
    REQUIRE(r.ok());
    CHECK(r->status == 503);
    CHECK(absl::StrContains(r->body, "connect timeout"));
    CHECK(env.proxy().CollectStats().circuit_breaker_rejections == 1);
  }
}

}  // namespace
}  // namespace flexgate::dataplane::test
