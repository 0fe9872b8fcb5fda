// HealthChecker: the proxy's active HTTP health checks. One checker per ProxyServer, on its own
// thread and libuv loop, probes every endpoint of every cluster that has `health_check` set, and
// publishes the set of failing endpoints to the workers as an immutable HealthSnapshot whenever
// a verdict changes. Workers never wait for it and never lock on the request path: they swap the
// snapshot in from their inbox and skip failing endpoints when they pick one.
//
// Probes are HTTP/1.1 GETs with `Connection: close`; only the status line is read. For a cluster
// with upstream TLS the probe runs through a TLS session of the cluster's own client context
// with the endpoint's SNI name, so CA, name verification and client certificate are exactly the
// data path's: an endpoint whose handshake would fail for requests fails its checks too.
// Thread-safety: every public method may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "dataplane/proxy/route_table.h"
#include "dataplane/proxy/worker.h"

namespace flexgate::dataplane::internal {

class HealthChecker {
 public:
  using Publish = std::function<void(std::shared_ptr<const HealthSnapshot>)>;

  // `publish` runs on the checker's thread each time the set of failing endpoints changes.
  explicit HealthChecker(Publish publish);
  ~HealthChecker();  // Stop()s
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  absl::Status Start();
  // Checks the endpoints of `table` from now on. Endpoints present before and after keep their
  // verdict and counters (keyed by cluster name and endpoint address).
  void SetTable(std::shared_ptr<const RouteTable> table);
  // Stops probing, closes everything and joins the thread. Idempotent.
  void Stop();
  // After Stop: whether the loop closed with no handle left open.
  bool loop_closed_cleanly() const { return loop_close_result_ == 0; }

  uint64_t probes() const { return probes_.load(std::memory_order_relaxed); }
  uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }

  struct Target;
  struct Probe;
  struct ProbeIo;  // the probes' libuv and TLS callbacks (a nested type: it reports results)

 private:
  static void OnAsync(uv_async_t* a);
  void ApplyTable(std::shared_ptr<const RouteTable> table);
  void StartProbe(Target* t);
  void OnResult(Target* t, bool ok);
  void PublishNow();
  void Shutdown();

  Publish publish_;
  uv_loop_t loop_;
  uv_async_t async_;
  std::thread thread_;
  bool started_ = false;
  bool joined_ = false;
  int loop_close_result_ = -1;
  std::atomic<uint64_t> probes_{0};
  std::atomic<uint64_t> failures_{0};

  absl::Mutex mu_;
  std::shared_ptr<const RouteTable> pending_table_ ABSL_GUARDED_BY(mu_);
  bool has_pending_table_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;

  // Loop thread only: targets by HealthSnapshot::Key.
  absl::flat_hash_map<std::string, Target*> targets_;
  bool shut_down_ = false;
};

}  // namespace flexgate::dataplane::internal
