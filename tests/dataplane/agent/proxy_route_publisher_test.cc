// The production RoutePublisher's background re-resolution of host-name endpoints, driven by a
// fake resolver against a real ProxyServer (one worker) and real upstreams on loopback addresses:
// a name that does not resolve is skipped and retried at the short interval; once it resolves the
// table is republished and traffic reaches the upstream through the name; when the name moves,
// traffic moves with it. The refresh thread sleeps until a refresh is due, wakes early for a
// Publish that brings that time forward, and stops promptly when the publisher is destroyed.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/config_loader.h"
#include "dataplane/agent/proxy_route_publisher.h"
#include "dataplane/proxy/proxy_server.h"
#include "dataplane/proxy/route_table.h"
#include "tests/harness/http/http_client.h"
#include "tests/harness/http/test_upstream.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::agent {
namespace {

using dataplane::ProxyServer;
using dataplane::ResolvedAddress;
using flexgate::testing::HttpGet;
using flexgate::testing::TestUpstream;
using flexgate::testing::WaitFor;

// A resolver whose answers the test sets: an IPv4 literal per name, or failure (the default).
// Counts the lookups of each name. Thread-safe: the publisher calls it from its own thread.
class FakeResolver {
 public:
  void Set(const std::string& host, const std::string& ipv4) {
    absl::MutexLock lock(&mu_);
    answers_[host] = ipv4;
  }
  void Fail(const std::string& host) {
    absl::MutexLock lock(&mu_);
    answers_.erase(host);
  }
  int calls(const std::string& host) const {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(host);
    return it == calls_.end() ? 0 : it->second;
  }
  dataplane::HostResolver resolver() {
    return [this](const std::string& host) { return Resolve(host); };
  }

 private:
  absl::StatusOr<ResolvedAddress> Resolve(const std::string& host) {
    absl::MutexLock lock(&mu_);
    ++calls_[host];
    auto it = answers_.find(host);
    if (it == answers_.end()) return absl::NotFoundError(absl::StrCat(host, ": no such host"));
    ResolvedAddress out;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&out.addr);
    v4->sin_family = AF_INET;
    if (inet_pton(AF_INET, it->second.c_str(), &v4->sin_addr) != 1) {
      return absl::InternalError("bad test address");
    }
    out.len = sizeof(sockaddr_in);
    return out;
  }

  mutable absl::Mutex mu_;
  std::map<std::string, std::string> answers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> calls_ ABSL_GUARDED_BY(mu_);
};

flexgate::v1::Config Parse(const std::string& yaml) {
  auto config = flexgate::ParseConfig(yaml);
  INFO(config.status().ToString());
  REQUIRE(config.ok());
  return *config;
}

// One cluster "svc": an IP literal endpoint on `literal_port` and the host name `host` on
// `name_port`, balanced round robin.
flexgate::v1::Config ServiceConfig(uint16_t literal_port, const std::string& host,
                                   uint16_t name_port) {
  return Parse(absl::StrCat("clusters:\n"
                            "  - name: svc\n"
                            "    endpoints:\n"
                            "      - { address: 127.0.0.1, port: ", literal_port, " }\n"
                            "      - { address: ", host, ", port: ", name_port, " }\n"
                            "routes:\n"
                            "  - { name: all, match: { path: { prefix: / } }, cluster: svc }\n"));
}

// A ProxyServer with one worker on 127.0.0.1:0, drained (and checked for leaks) at the end.
class OneWorkerProxy {
 public:
  OneWorkerProxy() {
    dataplane::ProxyServerOptions opts;
    opts.listen_addresses = {"127.0.0.1:0"};
    opts.workers = 1;
    auto proxy = ProxyServer::Create(opts);
    REQUIRE(proxy.ok());
    proxy_ = *std::move(proxy);
    REQUIRE(proxy_->Start().ok());
  }
  ~OneWorkerProxy() {
    proxy_->Drain(absl::Seconds(2));
    CHECK(proxy_->LoopsClosedCleanly());
  }
  ProxyServer* get() { return proxy_.get(); }
  uint16_t port() const { return proxy_->listen_port(0); }

  // The upstream that answered GET / on a fresh connection ("" when it failed or was not 200).
  std::string AnsweredBy() {
    auto r = HttpGet(port(), "/");
    if (!r.ok() || r->status != 200) return "";
    return r->Header("x-upstream");
  }

 private:
  std::unique_ptr<ProxyServer> proxy_;
};

// The production publisher on `proxy`, resolving through `dns`, retrying unresolved names every
// 50 ms.
std::unique_ptr<RoutePublisher> StartPublisher(OneWorkerProxy& proxy, FakeResolver& dns,
                                               absl::Duration refresh) {
  ProxyRoutePublisherOptions options;
  options.refresh = refresh;
  options.retry_unresolved = absl::Milliseconds(50);
  options.resolver = dns.resolver();
  return NewProxyRoutePublisher(proxy.get(), std::move(options));
}

absl::Status PublishAndWait(RoutePublisher& publisher, const flexgate::v1::Config& config,
                            uint64_t version) {
  absl::Notification swapped;
  absl::Status s = publisher.Publish(config, version, absl::StrCat("h", version),
                                     [&] { swapped.Notify(); });
  if (!s.ok()) return s;
  if (!swapped.WaitForNotificationWithTimeout(absl::Seconds(10))) {
    return absl::DeadlineExceededError("workers did not swap");
  }
  return absl::OkStatus();
}

// Two upstreams on one port at two loopback addresses, as one service name seen before and after
// it moved. The port comes from the first bind; the second bind at the other address can only
// fail if another process holds that port there, so try a few ports.
struct MovingService {
  std::unique_ptr<TestUpstream> before;  // 127.0.0.2:port
  std::unique_ptr<TestUpstream> after;   // 127.0.0.3:port
  uint16_t port = 0;
};

MovingService StartMovingService() {
  MovingService s;
  for (int attempt = 0; attempt < 5 && s.after == nullptr; ++attempt) {
    auto before = TestUpstream::Start("B", "127.0.0.2:0");
    REQUIRE(before.ok());
    uint16_t port = (*before)->port();
    auto after = TestUpstream::Start("C", absl::StrCat("127.0.0.3:", port));
    if (!after.ok()) continue;
    s.before = *std::move(before);
    s.after = *std::move(after);
    s.port = port;
  }
  REQUIRE(s.after != nullptr);
  return s;
}

TEST_CASE("A host name that fails is skipped and retried then published when it resolves and followed when it moves") {
  auto literal = TestUpstream::Start("A");
  REQUIRE(literal.ok());
  MovingService svc = StartMovingService();
  FakeResolver dns;
  OneWorkerProxy proxy;
  auto publisher = StartPublisher(proxy, dns, /*refresh=*/absl::Seconds(1));

  // The name does not resolve: the table still compiles, the endpoint is skipped, every request
  // goes to the literal endpoint.
  REQUIRE(PublishAndWait(*publisher, ServiceConfig((*literal)->port(), "svc.test", svc.port), 7)
              .ok());
  {
    auto table = proxy.get()->current_route_table();
    REQUIRE(table != nullptr);
    const auto& ep = table->clusters()[0].endpoints[1];
    CHECK(ep.from_hostname);
    CHECK(ep.addr_len == 0);
    CHECK(ep.resolve_error == "svc.test: no such host");
  }
  for (int i = 0; i < 6; ++i) CHECK(proxy.AnsweredBy() == "A");
  // Retried at the short interval: five more lookups take ~250 ms at 50 ms, five seconds at the
  // 1 s refresh period.
  const int failed_calls = dns.calls("svc.test");
  CHECK(WaitFor([&] { return dns.calls("svc.test") >= failed_calls + 5; }, absl::Seconds(3)));
  CHECK(svc.before->requests() == 0);

  // It resolves: republished (the same version), and traffic reaches B through the name.
  dns.Set("svc.test", "127.0.0.2");
  CHECK(WaitFor([&] { return proxy.AnsweredBy() == "B"; }, absl::Seconds(5)));
  {
    auto table = proxy.get()->current_route_table();
    CHECK(table->version() == 7);
    CHECK(table->clusters()[0].endpoints[1].key == absl::StrCat("127.0.0.2:", svc.port));
  }
  // Now every name resolves: the refresh period is the long one (at most one lookup per second).
  const int resolved_calls = dns.calls("svc.test");
  absl::SleepFor(absl::Milliseconds(400));  // measuring that nothing happens: nothing to await
  CHECK(dns.calls("svc.test") <= resolved_calls + 1);

  // The name moves: republished at the next refresh, and traffic follows. With one worker the
  // first answer from C means the new table is in place, so B never answers again.
  dns.Set("svc.test", "127.0.0.3");
  CHECK(WaitFor([&] { return proxy.AnsweredBy() == "C"; }, absl::Seconds(5)));
  const uint64_t b_requests = svc.before->requests();
  int by_c = 0;
  for (int i = 0; i < 6; ++i) {
    std::string who = proxy.AnsweredBy();
    CHECK((who == "A" || who == "C"));
    by_c += who == "C" ? 1 : 0;
  }
  CHECK(by_c >= 2);
  CHECK(svc.before->requests() == b_requests);
  CHECK(proxy.get()->current_route_table()->clusters()[0].endpoints[1].key ==
        absl::StrCat("127.0.0.3:", svc.port));
}

TEST_CASE("The refresh thread wakes for a Publish that is due sooner and stops promptly during a long wait") {
  FakeResolver dns;
  dns.Set("far.test", "127.0.0.1");
  OneWorkerProxy proxy;
  auto publisher = StartPublisher(proxy, dns, /*refresh=*/absl::Hours(1));

  // Everything resolves: the next refresh is an hour away; only Publish itself looked up.
  REQUIRE(PublishAndWait(*publisher, ServiceConfig(1, "far.test", 2), 1).ok());
  CHECK(dns.calls("far.test") == 1);

  // A newer config with a name that fails: its retry is due in 50 ms, not in an hour, so the
  // sleeping thread must be woken by the Publish.
  REQUIRE(PublishAndWait(*publisher, ServiceConfig(1, "down.test", 2), 2).ok());
  CHECK(WaitFor([&] { return dns.calls("down.test") >= 4; }, absl::Seconds(5)));

  // Back to a name that resolves: retries stop (the thread sleeps for the hour).
  REQUIRE(PublishAndWait(*publisher, ServiceConfig(1, "far.test", 2), 3).ok());
  // (One lookup of down.test may already have been under way when the Publish landed.)
  const int down_calls = dns.calls("down.test");
  absl::SleepFor(absl::Milliseconds(300));  // measuring that nothing happens: nothing to await
  CHECK(dns.calls("down.test") <= down_calls + 1);
  CHECK(dns.calls("far.test") == 2);

  // Destroying the publisher in the middle of that wait returns at once.
  const absl::Time start = absl::Now();
  publisher.reset();
  CHECK(absl::Now() - start < absl::Seconds(1));
}

}  // namespace
}  // namespace flexgate::agent
