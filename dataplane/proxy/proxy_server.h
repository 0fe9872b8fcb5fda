// ProxyServer: the agent's request path. N worker threads, each with its own uv_loop_t, its own
// SO_REUSEPORT listener per configured address, its own upstream connection pools and counters.
//
// Thread-safety: every public method may be called from any non-worker thread (the control
// thread, the admin thread, main). Nothing on the request path takes a lock.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dataplane/proxy/route_table.h"

namespace flexgate::tls {
class TlsServerContext;
}

namespace flexgate::dataplane {

struct ProxyLimits {
  uint32_t max_header_bytes = 64 * 1024;
  uint64_t max_body_bytes = 0;  // 0 = unlimited
  absl::Duration header_timeout = absl::Seconds(15);
  absl::Duration idle_timeout = absl::Seconds(60);
  absl::Duration request_timeout = absl::Seconds(60);
  absl::Duration connect_timeout = absl::Seconds(5);
};

struct ProxyServerOptions {
  // "host:port" each; port 0 picks a free port (the same one on every worker).
  std::vector<std::string> listen_addresses;
  // TLS per listen address, by index: listen_tls[i] serves listen_addresses[i]. A missing or
  // null entry means plain HTTP. Contexts are built by the caller off the worker loops (they
  // read certificate files) and shared by every worker, which only creates sessions from them;
  // ReloadListenerCertificates swaps their certificates in place.
  std::vector<std::shared_ptr<tls::TlsServerContext>> listen_tls;
  int workers = 1;
  ProxyLimits limits;
};

// Counters merged over every worker at read time.
struct ProxyStats {
  uint64_t downstream_connections_total = 0;
  uint64_t downstream_connections_active = 0;
  uint64_t requests_total = 0;
  uint64_t responses_1xx = 0, responses_2xx = 0, responses_3xx = 0, responses_4xx = 0,
           responses_5xx = 0;
  uint64_t upstream_connections_total = 0;
  uint64_t upstream_connect_failures = 0;
  uint64_t upstream_requests_total = 0;
  uint64_t bytes_received = 0;
  uint64_t bytes_sent = 0;
  uint64_t route_table_swaps = 0;
  uint64_t upstream_timeouts = 0;  // connect and request timeouts
  uint64_t upstream_retries = 0;
  uint64_t bad_requests = 0;       // malformed or oversized requests answered 4xx and closed
  uint64_t upstream_per_try_timeouts = 0;   // attempts cut by a retry policy's per_try_timeout
  uint64_t retry_budget_exhausted = 0;      // retries refused because of the retry budget
  uint64_t outlier_ejections = 0;           // endpoints ejected by passive outlier detection
  uint64_t circuit_breaker_rejections = 0;  // requests answered 503 by a circuit breaker
  uint64_t upgrades_total = 0;              // protocol upgrades (websocket) tunnelled
  uint64_t upgrades_active = 0;             // tunnels open now
  uint64_t health_checks_total = 0;         // active health check probes sent
  uint64_t health_check_failures = 0;       // probes that failed (error, timeout, bad status)
  uint64_t downstream_tls_handshakes = 0;         // client TLS handshakes completed
  uint64_t downstream_tls_handshake_failures = 0; // client TLS handshakes that failed
  uint64_t upstream_tls_failures = 0;  // upstream TLS handshakes that failed (incl. verification)
  uint64_t tls_certificate_reloads = 0;          // listener certificate sets reloaded
  uint64_t tls_certificate_reload_failures = 0;  // listener reloads refused (old set kept)
};

class ProxyServer {
 public:
  static absl::StatusOr<std::unique_ptr<ProxyServer>> Create(ProxyServerOptions options);
  virtual ~ProxyServer() = default;

  // Binds every listener and starts the worker threads. Until a route table is published the
  // workers answer 503 ("no route table loaded").
  virtual absl::Status Start() = 0;

  // The bound port of listener `i` (after Start; useful with port 0).
  virtual uint16_t listen_port(size_t i) const = 0;

  // Publishes `table` to every worker (uv_async_send). `done` runs exactly once, on an arbitrary
  // thread, after every worker has swapped to the new table; requests already in flight finish on
  // the table they started with.
  virtual void UpdateRouteTable(std::shared_ptr<const RouteTable> table,
                                std::function<void()> done) = 0;

  // The most recently published table (nullptr before the first).
  virtual std::shared_ptr<const RouteTable> current_route_table() const = 0;

  // Stops accepting, lets in-flight requests finish until `deadline` passes, then closes
  // everything and joins the workers. Idempotent.
  virtual void Drain(absl::Duration deadline) = 0;

  virtual ProxyStats CollectStats() const = 0;

  // Re-reads the certificate and key files of every TLS listener (disk I/O: call from a control
  // thread, never a worker). Each listener is reloaded on its own and all or nothing: when its
  // files load and check out, new handshakes on it present the new certificates at once, while
  // connections already established keep theirs; otherwise it keeps serving what it served.
  // Returns OK when every TLS listener reloaded (also when there is none), else an error naming
  // each listener that did not and why. Counted in tls_certificate_reloads and
  // tls_certificate_reload_failures. Safe to call at any time, from any non-worker thread.
  virtual absl::Status ReloadListenerCertificates() = 0;

  // After Drain: true when every worker loop closed with nothing left open (uv_loop_close == 0).
  // Tests assert it; a false here means a leaked handle.
  virtual bool LoopsClosedCleanly() const = 0;
};

}  // namespace flexgate::dataplane
