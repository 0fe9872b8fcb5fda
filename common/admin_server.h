// AdminServer: a small HTTP/1.1 server for operational endpoints (/health/live, /health/ready,
// /metrics, /config_dump, /stats), used by both flexgate-agent and flexgate-cp.
//
// Runs its own uv_loop_t on its own thread; handlers run on that thread and must not block for
// long (they read snapshots of state, never do I/O). One request per connection is enough for
// probes and scrapers, but keep-alive is honoured.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace flexgate {

struct AdminResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct AdminRequest {
  std::string method;
  std::string path;   // without the query string
  std::string query;  // without the '?'
};

using AdminHandler = std::function<AdminResponse(const AdminRequest&)>;

class AdminServer {
 public:
  // `address` is "host:port"; port 0 picks a free port.
  static absl::StatusOr<std::unique_ptr<AdminServer>> Create(std::string address);
  virtual ~AdminServer() = default;

  // Registers an exact-path handler. Call before Start.
  virtual void Handle(std::string path, AdminHandler handler) = 0;

  // Binds and starts the thread. Unknown paths get 404.
  virtual absl::Status Start() = 0;
  virtual uint16_t port() const = 0;

  // Closes the listener and joins the thread. Idempotent.
  virtual void Stop() = 0;
};

}  // namespace flexgate
