// Agent: flexgate-agent as a library object, so tests run the same code the binary runs.
// Wires the admin server, the ProxyServer workers, the initial snapshot (static file or
// last-known-good cache), and the control-plane client, and tears them down in a graceful order.
//
// Thread-safety: Start and Shutdown are called from one thread (main, or a test).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dataplane/agent/agent_options.h"
#include "dataplane/agent/agent_state.h"

namespace flexgate::agent {

// The agent's version string (Hello.agent_version, --version).
const char* AgentVersion();

class Agent {
 public:
  static absl::StatusOr<std::unique_ptr<Agent>> Create(AgentOptions options);
  virtual ~Agent() = default;

  // Starts the admin server, the workers, serves the initial snapshot, and connects to the
  // control plane. Errors (the caller exits 1): a bind failure, a static config file that does
  // not load or validate (the message lists every diagnostic), unreadable TLS files. On error
  // nothing keeps running.
  virtual absl::Status Start() = 0;

  // Graceful stop: /health/ready turns 503, the control-plane client stops, workers stop
  // accepting and finish in-flight requests up to the drain timeout, the admin server stops.
  // Idempotent.
  virtual void Shutdown() = 0;

  // Static mode: reloads the config file (SIGHUP). On error the agent keeps its current table.
  virtual absl::Status ReloadConfigFile() = 0;

  // Re-reads the certificate and key files of every TLS listener (SIGHUP, in every mode) and
  // logs the outcome: per listener, the certificates now served, or why the reload was refused
  // (that listener then keeps serving its previous certificates). New handshakes use the new
  // certificates; established connections are untouched. Returns OK when every TLS listener
  // reloaded, or when there is none. Call from the thread that called Start, after Start.
  virtual absl::Status ReloadListenerCertificates() = 0;

  // How many listeners serve TLS.
  virtual size_t tls_listener_count() const = 0;

  virtual uint16_t proxy_port(size_t listener) const = 0;
  virtual uint16_t admin_port() const = 0;
  virtual const AgentState& state() const = 0;
};

}  // namespace flexgate::agent
