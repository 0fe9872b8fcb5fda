// ProxyServer implementation: binds the SO_REUSEPORT listeners, owns the worker threads, and
// fans route tables and drain requests out to them.
#include "dataplane/proxy/proxy_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/proxy/health_checker.h"
#include "dataplane/proxy/worker.h"

namespace flexgate::dataplane {
namespace {

using internal::TableUpdate;
using internal::Worker;

absl::Status ParseListenAddress(const std::string& address, sockaddr_storage* out,
                                socklen_t* len) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("listen address \"", address, "\" needs host:port"));
  }
  std::string host = address.substr(0, colon);
  uint32_t port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("listen address \"", address, "\": bad port"));
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) host = "0.0.0.0";
  std::memset(out, 0, sizeof(*out));
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    *len = sizeof(sockaddr_in6);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address \"", address, "\": host must be an IP literal"));
  }
  return absl::OkStatus();
}

// A bound (not yet listening) socket with SO_REUSEPORT, so that every worker gets its own
// accept queue on the same port and the kernel spreads connections over them.
absl::StatusOr<int> BindReusePort(const sockaddr_storage& addr, socklen_t len) {
  int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  int one = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    int e = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("setsockopt: ", std::strerror(e)));
  }
  if (addr.ss_family == AF_INET6) {
    ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    int e = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("bind: ", std::strerror(e)));
  }
  return fd;
}

uint16_t BoundPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

class ProxyServerImpl final : public ProxyServer {
 public:
  explicit ProxyServerImpl(ProxyServerOptions options) : options_(std::move(options)) {}
  ~ProxyServerImpl() override { Drain(absl::ZeroDuration()); }

  absl::Status Start() override {
    absl::MutexLock lock(&mu_);
    if (state_ != State::kCreated) return absl::FailedPreconditionError("already started");
    std::vector<std::unique_ptr<Worker>> workers;
    for (int i = 0; i < options_.workers; ++i) {
      auto w = std::make_unique<Worker>(i, options_.limits);
      absl::Status s = w->Init();
      if (!s.ok()) return s;
      w->SetInitialTable(current_);
      workers.push_back(std::move(w));
    }
    std::vector<uint16_t> ports;
    for (size_t li = 0; li < options_.listen_addresses.size(); ++li) {
      const std::string& address = options_.listen_addresses[li];
      std::shared_ptr<const tls::TlsServerContext> tls =
          li < options_.listen_tls.size() ? options_.listen_tls[li] : nullptr;
      sockaddr_storage addr;
      socklen_t len;
      absl::Status s = ParseListenAddress(address, &addr, &len);
      if (!s.ok()) return s;
      uint16_t port = 0;
      for (auto& w : workers) {
        // Port 0: the first worker's bind picks the port, the others join it.
        if (port != 0) {
          if (addr.ss_family == AF_INET) {
            reinterpret_cast<sockaddr_in*>(&addr)->sin_port = htons(port);
          } else {
            reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port = htons(port);
          }
        }
        absl::StatusOr<int> fd = BindReusePort(addr, len);
        if (!fd.ok()) {
          return absl::Status(fd.status().code(),
                              absl::StrCat("listen ", address, ": ", fd.status().message()));
        }
        if (port == 0) port = BoundPort(*fd);
        s = w->AddListener(*fd, tls);
        if (!s.ok()) return s;
      }
      ports.push_back(port);
    }
    workers_ = std::move(workers);
    ports_ = std::move(ports);
    // One health checker for all workers; it posts verdicts to each worker's inbox.
    std::vector<Worker*> targets;
    for (auto& w : workers_) targets.push_back(w.get());
    health_ = std::make_unique<internal::HealthChecker>(
        [targets](std::shared_ptr<const internal::HealthSnapshot> snap) {
          for (Worker* w : targets) w->PostHealth(snap);
        });
    absl::Status hs = health_->Start();
    if (!hs.ok()) return hs;
    health_->SetTable(current_);
    for (auto& w : workers_) {
      Worker* raw = w.get();
      threads_.emplace_back([raw] { raw->Run(); });
    }
    state_ = State::kRunning;
    return absl::OkStatus();
  }

  uint16_t listen_port(size_t i) const override {
    absl::MutexLock lock(&mu_);
    return i < ports_.size() ? ports_[i] : 0;
  }

  void UpdateRouteTable(std::shared_ptr<const RouteTable> table,
                        std::function<void()> done) override {
    auto update = std::make_shared<TableUpdate>();
    update->table = table;
    update->done = std::move(done);
    {
      absl::MutexLock lock(&mu_);
      current_ = table;
      if (health_) health_->SetTable(table);
      if (state_ == State::kRunning) {
        // +1 held by this function so that `done` cannot run before every post was made.
        update->remaining.store(static_cast<int>(workers_.size()) + 1);
        for (auto& w : workers_) w->PostTable(update);
      } else {
        update->remaining.store(1);
      }
    }
    update->Arrive();
  }

  std::shared_ptr<const RouteTable> current_route_table() const override {
    absl::MutexLock lock(&mu_);
    return current_;
  }

  void Drain(absl::Duration deadline) override {
    std::vector<std::thread> threads;
    {
      absl::MutexLock lock(&mu_);
      if (state_ == State::kCreated) state_ = State::kDrained;
      if (state_ != State::kRunning) return;
      state_ = State::kDraining;
      // The checker goes first: it posts into the workers' inboxes.
      if (health_) health_->Stop();
      for (auto& w : workers_) w->PostDrain(deadline);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
    absl::MutexLock lock(&mu_);
    state_ = State::kDrained;
  }

  ProxyStats CollectStats() const override {
    ProxyStats out;
    absl::MutexLock lock(&mu_);
    for (const auto& w : workers_) w->stats().AddTo(out);
    out.tls_certificate_reloads = certificate_reloads_.load(std::memory_order_relaxed);
    out.tls_certificate_reload_failures =
        certificate_reload_failures_.load(std::memory_order_relaxed);
    if (health_) {
      out.health_checks_total = health_->probes();
      out.health_check_failures = health_->failures();
    }
    return out;
  }

  absl::Status ReloadListenerCertificates() override {
    // No lock of ours is needed: options_ is immutable and each context serializes its own
    // reloads. Workers keep accepting meanwhile; they see each listener's new certificates from
    // their next accepted connection on.
    std::vector<std::string> errors;
    absl::StatusCode code = absl::StatusCode::kOk;
    for (size_t i = 0; i < options_.listen_tls.size(); ++i) {
      const std::shared_ptr<tls::TlsServerContext>& ctx = options_.listen_tls[i];
      if (ctx == nullptr) continue;
      absl::Status s = ctx->ReloadCertificates();
      if (s.ok()) {
        certificate_reloads_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      certificate_reload_failures_.fetch_add(1, std::memory_order_relaxed);
      if (code == absl::StatusCode::kOk) code = s.code();
      errors.push_back(absl::StrCat("listener ", options_.listen_addresses[i], ": ", s.message()));
    }
    if (errors.empty()) return absl::OkStatus();
    return absl::Status(code, absl::StrJoin(errors, "; "));
  }

  bool LoopsClosedCleanly() const override {
    absl::MutexLock lock(&mu_);
    for (const auto& w : workers_) {
      if (w->loop_close_result() != 0) return false;
    }
    return !health_ || health_->loop_closed_cleanly();
  }

 private:
  enum class State { kCreated, kRunning, kDraining, kDrained };
  const ProxyServerOptions options_;
  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kCreated;
  std::vector<std::unique_ptr<Worker>> workers_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<uint16_t> ports_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const RouteTable> current_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<internal::HealthChecker> health_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> certificate_reloads_{0};
  std::atomic<uint64_t> certificate_reload_failures_{0};
};

}  // namespace

absl::StatusOr<std::unique_ptr<ProxyServer>> ProxyServer::Create(ProxyServerOptions options) {
  if (options.workers <= 0) {
    unsigned n = std::thread::hardware_concurrency();
    options.workers = n == 0 ? 1 : static_cast<int>(n);
  }
  if (options.listen_addresses.empty()) {
    return absl::InvalidArgumentError("at least one listen address is required");
  }
  if (options.listen_tls.size() > options.listen_addresses.size()) {
    return absl::InvalidArgumentError("more listener TLS settings than listen addresses");
  }
  for (const auto& a : options.listen_addresses) {
    sockaddr_storage addr;
    socklen_t len;
    absl::Status s = ParseListenAddress(a, &addr, &len);
    if (!s.ok()) return s;
  }
  return std::unique_ptr<ProxyServer>(new ProxyServerImpl(std::move(options)));
}

}  // namespace flexgate::dataplane
