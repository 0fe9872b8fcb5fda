// The production RoutePublisher: the only file of the agent library that reaches into the
// request path's compiler and workers.
//
// Host-name endpoints are resolved when a table is compiled, on the calling (control) thread.
// Names change and may not resolve at all when a cached config is loaded during a DNS outage,
// so a background thread re-compiles the last published config while it has host names and
// publishes the result whenever an endpoint's address changed. Publishing and re-resolving take
// one mutex, so a refresh never replaces a newer table with an older config. The thread sleeps
// until the next refresh is due; a Publish (which may bring that time forward) and shutdown wake
// it early.
#include "dataplane/agent/proxy_route_publisher.h"

#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "dataplane/agent/route_publisher.h"
#include "dataplane/proxy/proxy_server.h"
#include "dataplane/proxy/route_table.h"

namespace flexgate::agent {
namespace {

// What the workers' upstream connections depend on: every endpoint's resolved key, in order.
// Empty when the table has no host-name endpoints (nothing to refresh).
std::string ResolvedFingerprint(const dataplane::RouteTable& table, bool* any_unresolved) {
  std::string out;
  bool hostnames = false;
  *any_unresolved = false;
  for (const auto& cluster : table.clusters()) {
    for (const auto& ep : cluster.endpoints) {
      hostnames |= ep.from_hostname;
      *any_unresolved |= ep.addr_len == 0;
      out += ep.key;
      out.push_back('\n');
    }
  }
  return hostnames ? out : std::string();
}

class ProxyRoutePublisher final : public RoutePublisher {
 public:
  ProxyRoutePublisher(dataplane::ProxyServer* proxy, ProxyRoutePublisherOptions options)
      : proxy_(proxy),
        refresh_(options.refresh),
        retry_unresolved_(options.retry_unresolved),
        compile_options_{std::move(options.resolver)} {
    thread_ = std::thread([this] { RefreshLoop(); });
  }

  ~ProxyRoutePublisher() override {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    thread_.join();
  }

  absl::Status Publish(const flexgate::v1::Config& config, uint64_t version, std::string hash,
                       std::function<void()> done) override {
    absl::MutexLock lock(&mu_);
    auto table = dataplane::CompileRouteTable(config, version, hash, compile_options_);
    if (!table.ok()) return table.status();
    Remember(config, version, std::move(hash), **table);
    ++generation_;  // wakes the refresh thread: the next refresh may now be due sooner
    proxy_->UpdateRouteTable(*std::move(table), std::move(done));
    return absl::OkStatus();
  }

 private:
  void Remember(const flexgate::v1::Config& config, uint64_t version, std::string hash,
                const dataplane::RouteTable& table) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    bool unresolved = false;
    fingerprint_ = ResolvedFingerprint(table, &unresolved);
    if (fingerprint_.empty()) {
      config_.reset();  // no host names: nothing to refresh
      return;
    }
    config_ = std::make_shared<const flexgate::v1::Config>(config);
    version_ = version;
    hash_ = std::move(hash);
    next_refresh_ = absl::Now() + (unresolved ? retry_unresolved_ : refresh_);
  }

  void RefreshLoop() {
    mu_.Lock();
    while (!stopping_) {
      // Sleep until the refresh is due (indefinitely while there is nothing to refresh), or until
      // a Publish or shutdown changes the picture; then look again.
      const uint64_t seen = generation_;
      auto woken = [this, seen]() ABSL_NO_THREAD_SAFETY_ANALYSIS {  // runs under mu_
        return stopping_ || generation_ != seen;
      };
      if (config_ == nullptr) {
        mu_.Await(absl::Condition(&woken));
        continue;
      }
      if (absl::Now() < next_refresh_) {
        mu_.AwaitWithDeadline(absl::Condition(&woken), next_refresh_);
        continue;
      }
      // Resolve without the lock: a slow DNS server must not delay a snapshot being published.
      std::shared_ptr<const flexgate::v1::Config> config = config_;
      uint64_t version = version_;
      std::string hash = hash_;
      mu_.Unlock();
      auto table = dataplane::CompileRouteTable(*config, version, hash, compile_options_);
      mu_.Lock();
      if (config != config_) continue;  // a newer config was published meanwhile
      if (!table.ok()) {  // cannot happen for a config that compiled once; do not spin
        next_refresh_ = absl::Now() + refresh_;
        continue;
      }
      bool unresolved = false;
      std::string fingerprint = ResolvedFingerprint(**table, &unresolved);
      next_refresh_ = absl::Now() + (unresolved ? retry_unresolved_ : refresh_);
      if (fingerprint == fingerprint_) continue;
      fingerprint_ = std::move(fingerprint);
      FG_LOG_INFO("endpoint addresses changed; republishing",
                  {{"version", version}, {"unresolved", unresolved}});
      proxy_->UpdateRouteTable(*std::move(table), [] {});
    }
    mu_.Unlock();
  }

  dataplane::ProxyServer* const proxy_;
  const absl::Duration refresh_;
  const absl::Duration retry_unresolved_;
  // Only the resolver; read by both threads, never changed.
  const dataplane::CompileOptions compile_options_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // Publish calls so far
  std::shared_ptr<const flexgate::v1::Config> config_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  std::string hash_ ABSL_GUARDED_BY(mu_);
  std::string fingerprint_ ABSL_GUARDED_BY(mu_);
  absl::Time next_refresh_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace

std::unique_ptr<RoutePublisher> NewProxyRoutePublisher(dataplane::ProxyServer* proxy,
                                                       ProxyRoutePublisherOptions options) {
  return std::make_unique<ProxyRoutePublisher>(proxy, std::move(options));
}

std::unique_ptr<RoutePublisher> NewProxyRoutePublisher(dataplane::ProxyServer* proxy,
                                                       absl::Duration refresh,
                                                       absl::Duration retry_unresolved) {
  ProxyRoutePublisherOptions options;
  options.refresh = refresh;
  options.retry_unresolved = retry_unresolved;
  return NewProxyRoutePublisher(proxy, std::move(options));
}

}  // namespace flexgate::agent
