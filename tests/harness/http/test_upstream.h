// TestUpstream: an in-process HTTP/1.1 upstream server for tests and the demo, on its own libuv
// loop and thread. The same server backs the `flexgate-test-upstream` program.
//
// Behaviour (every response carries `x-upstream: NAME`; keep-alive and pipelining honoured):
//   any path            200, body "NAME <METHOD> <path>\n"
//   POST/PUT any path   200, body = the request body (content-length or chunked request)
//   /64k                200, a 65,536-byte body
//   /chunked            200, a chunked body of several chunks ("NAME chunk i\n")
//   /big?kb=N           200, an N KiB body sent chunked (streaming / back-pressure tests)
//   /status/NNN         status NNN, body "NAME status NNN\n" (none for 1xx/204/304)
//   /slow?ms=N          the default response, sent after N milliseconds
//   /trickle?step=N     status 299 with repeated and empty headers, the whole response sent N
//                       bytes (default 3) at a time, one piece every 2 ms
//   /headers            200, the request head as received ("name: value" lines)
//   /close              200 with `connection: close`, then closes
//   /drop               closes the connection without answering
//   /health             status set by SetHealthStatus (default 200), body "NAME health NNN\n"
//   /ws                 with `Upgrade: websocket` (and Connection: upgrade): 101 Switching
//                       Protocols, then every byte received is echoed back (no websocket
//                       framing: the proxy tunnels raw bytes). Without the upgrade: as any path.
//
// TLS mode (StartTls): the same behaviour over HTTPS.
//
// Thread-safety: the accessors may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace flexgate::tls {
class TlsServerContext;
}

namespace flexgate::testing {

class TestUpstream {
 public:
  // `address` is "host:port"; port 0 picks a free port.
  static absl::StatusOr<std::unique_ptr<TestUpstream>> Start(std::string name,
                                                             std::string address = "127.0.0.1:0");
  // The same server speaking HTTPS: every connection is a TLS server session of `tls` (built by
  // the caller, e.g. from a TestPki certificate), with close_notify before each close.
  static absl::StatusOr<std::unique_ptr<TestUpstream>> StartTls(
      std::string name, std::shared_ptr<const tls::TlsServerContext> tls,
      std::string address = "127.0.0.1:0");
  ~TestUpstream();  // stops the server (closes every connection, joins the thread)

  uint16_t port() const;
  const std::string& name() const;
  // Connections accepted and requests answered so far.
  uint64_t connections() const;
  uint64_t requests() const;
  // The head (request line and headers, as received) of the most recent request.
  std::string last_request_head() const;
  // What /health answers from now on, and how many /health requests were answered.
  void SetHealthStatus(int status);
  uint64_t health_requests() const;

  // Closes the listener and every connection, and waits for the loop to end. Idempotent.
  void Stop();

  struct Impl;

 private:
  static absl::StatusOr<std::unique_ptr<TestUpstream>> StartImpl(
      std::string name, std::string address, std::shared_ptr<const tls::TlsServerContext> tls);
  explicit TestUpstream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexgate::testing
