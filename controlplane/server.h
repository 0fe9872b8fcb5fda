// CpServer: one flexgate-cp replica — database pool and migrations, bootstrap, the config
// listener (Distributor), the gRPC server (ConfigService, AgentService, health, reflection) and
// the admin HTTP port. main.cc is a thin wrapper over it, so tests start the code that ships.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace flexgate::cp {

struct CpOptions {
  std::string listen = "127.0.0.1:9090";  // gRPC; port 0 picks a free port
  std::string admin = "127.0.0.1:9091";   // HTTP admin; port 0 picks a free port
  std::string database_url;
  // Hash of this key becomes an admin key of tenant "default" (FLEXGATE_BOOTSTRAP_ADMIN_KEY).
  std::optional<std::string> bootstrap_admin_key;
  int db_pool_size = 8;
  int db_workers = 2;
  // How long start-up keeps retrying an unreachable database before it gives up.
  absl::Duration database_wait = absl::Seconds(30);
  // How long a graceful shutdown waits for RPCs and streams to end before cancelling them.
  absl::Duration shutdown_grace = absl::Seconds(5);
  // FleetService: an agent marked connected that has sent nothing (heartbeats included) for
  // this long is STALE. Three default heartbeat intervals.
  absl::Duration agent_stale_after = absl::Seconds(30);
  // How often the credentials of the open agent streams are re-checked against the database, in
  // case a revocation notification was missed (it is also done whenever the LISTEN connection
  // comes back). Zero = only then. One query per check, whatever the number of streams.
  absl::Duration revocation_check_interval = absl::Seconds(5);
  // Recorded with each agent stream and ACK, so operators see which replica an agent is on.
  // "" = "<hostname>:<grpc port>".
  std::string replica_id;
  // gRPC over TLS when both are set (PEM files); plaintext otherwise. The admin port stays plain
  // HTTP either way: it serves health and metrics to the local orchestrator and scraper.
  std::string tls_cert_file;
  std::string tls_key_file;
  // With TLS: require a client certificate signed by one of these roots (mTLS). Empty = none.
  std::string tls_client_ca_file;
};

class CpServer {
 public:
  // Migrates, bootstraps and starts serving. Blocking until ready or failed.
  static absl::StatusOr<std::unique_ptr<CpServer>> Start(const CpOptions& options);
  ~CpServer();  // Shutdown() if not yet done.

  int grpc_port() const;
  int admin_port() const;

  // Graceful: readiness goes down, agent streams are told to reconnect elsewhere, in-flight RPCs
  // get `shutdown_grace`, then everything stops. Idempotent; call from one thread.
  void Shutdown();

  struct Impl;

 private:
  explicit CpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexgate::cp
