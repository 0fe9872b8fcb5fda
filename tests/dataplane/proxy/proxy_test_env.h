// Shared set-up for proxy tests: test upstreams, a ProxyServer on port 0, and config helpers.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "absl/synchronization/notification.h"
#include "common/config_loader.h"
#include "dataplane/proxy/proxy_server.h"
#include "dataplane/proxy/route_table.h"
#include "tests/harness/http/http_client.h"
#include "tests/harness/http/test_upstream.h"

namespace flexgate::dataplane::test {

using flexgate::testing::HttpClient;
using flexgate::testing::HttpRequest;
using flexgate::testing::HttpResponse;
using flexgate::testing::TestUpstream;

// Polls `predicate` until it holds or `timeout` passes.
inline bool WaitUntil(const std::function<bool()>& predicate,
                      absl::Duration timeout = absl::Seconds(5)) {
  absl::Time deadline = absl::Now() + timeout;
  while (!predicate()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// Config text with {P0}, {P1}, ... replaced by the upstreams' ports.
inline std::shared_ptr<const RouteTable> CompileYaml(const std::string& yaml,
                                                     const std::vector<uint16_t>& ports,
                                                     uint64_t version = 1) {
  std::vector<std::pair<std::string, std::string>> repl;
  for (size_t i = 0; i < ports.size(); ++i) {
    repl.emplace_back("{P" + std::to_string(i) + "}", std::to_string(ports[i]));
  }
  std::string text = absl::StrReplaceAll(yaml, repl);
  auto config = flexgate::ParseConfig(text);
  INFO(config.status().ToString());
  REQUIRE(config.ok());
  auto table = CompileRouteTable(*config, version, "h");
  INFO(table.status().ToString());
  REQUIRE(table.ok());
  return *table;
}

// Two upstreams (u0, u1) in clusters c0 and c1; everything to c0 by default.
constexpr char kDefaultConfig[] = R"(
clusters:
  - name: c0
    endpoints: [{ address: 127.0.0.1, port: {P0} }]
  - name: c1
    endpoints: [{ address: 127.0.0.1, port: {P1} }]
routes:
  - { name: all, match: { path: { prefix: / } }, cluster: c0 }
)";

// A listening socket on 127.0.0.1 and a free port (stored in *port), with the given backlog.
inline int ListenLoopback(int backlog, uint16_t* port, int type = SOCK_STREAM) {
  int fd = ::socket(AF_INET, type, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(::listen(fd, backlog) == 0);
  socklen_t len = sizeof(a);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  *port = ntohs(a.sin_port);
  return fd;
}

// A loopback listener whose accept queue is full: the kernel drops further SYNs, so a connect to
// it stays pending until the connector's own timeout. (Outside addresses are no good for this:
// sandboxes may intercept them.) Closes everything it opened on destruction.
class BlackholeListener {
 public:
  BlackholeListener() {
    listen_fd_ = ListenLoopback(0, &port_);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port_);
    for (int i = 0; i < 3; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
      fillers_.push_back(fd);
    }
  }
  ~BlackholeListener() {
    for (int fd : fillers_) ::close(fd);
    ::close(listen_fd_);
  }
  BlackholeListener(const BlackholeListener&) = delete;
  BlackholeListener& operator=(const BlackholeListener&) = delete;

  uint16_t port() const { return port_; }

 private:
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::vector<int> fillers_;
};

class ProxyEnv {
 public:
  explicit ProxyEnv(const std::string& yaml = kDefaultConfig, ProxyLimits limits = {},
                    int workers = 2, int upstreams = 2) {
    for (int i = 0; i < upstreams; ++i) {
      auto up = TestUpstream::Start("u" + std::to_string(i));
      REQUIRE(up.ok());
      ports_.push_back((*up)->port());
      ups_.push_back(*std::move(up));
    }
    ProxyServerOptions opts;
    opts.listen_addresses = {"127.0.0.1:0"};
    opts.workers = workers;
    opts.limits = limits;
    auto proxy = ProxyServer::Create(opts);
    REQUIRE(proxy.ok());
    proxy_ = *std::move(proxy);
    if (!yaml.empty()) Publish(yaml);
    REQUIRE(proxy_->Start().ok());
    port_ = proxy_->listen_port(0);
    REQUIRE(port_ != 0);
  }
  ~ProxyEnv() {
    proxy_->Drain(absl::Seconds(2));
    CHECK(proxy_->LoopsClosedCleanly());
  }

  // Compiles and publishes; returns once every worker has swapped.
  void Publish(const std::string& yaml, uint64_t version = 1) {
    absl::Notification done;
    proxy_->UpdateRouteTable(CompileYaml(yaml, ports_, version), [&] { done.Notify(); });
    REQUIRE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  }

  HttpClient Client() {
    auto c = HttpClient::Connect("127.0.0.1", port_, absl::Seconds(10));
    REQUIRE(c.ok());
    return *std::move(c);
  }

  ProxyServer& proxy() { return *proxy_; }
  TestUpstream& up(int i) { return *ups_[static_cast<size_t>(i)]; }
  uint16_t port() const { return port_; }
  const std::vector<uint16_t>& upstream_ports() const { return ports_; }

 private:
  std::vector<std::unique_ptr<TestUpstream>> ups_;
  std::vector<uint16_t> ports_;
  std::unique_ptr<ProxyServer> proxy_;
  uint16_t port_ = 0;
};

}  // namespace flexgate::dataplane::test
