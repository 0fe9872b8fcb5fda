#include "controlplane/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/codegen/service_type.h>

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/admin_server.h"
#include "common/log.h"
#include "controlplane/access_services.h"
#include "controlplane/access_store.h"
#include "controlplane/agent_service.h"
#include "controlplane/auth.h"
#include "controlplane/config_service.h"
#include "controlplane/db_workers.h"
#include "controlplane/distributor.h"
#include "controlplane/fleet_service.h"
#include "controlplane/fleet_store.h"
#include "controlplane/metrics.h"
#include "controlplane/migrations.h"
#include "controlplane/pg.h"
#include "controlplane/revocation_enforcer.h"
#include "controlplane/server_tls.h"
#include "controlplane/store.h"

namespace flexgate::cp {

// Members are declared in dependency order: destruction runs bottom-up, so the gRPC server (and
// with it every stream) goes before the services, workers and stores it uses.
struct CpServer::Impl {
  CpOptions options;
  CpMetrics metrics;
  std::unique_ptr<PgPool> pool;
  std::unique_ptr<ConfigStore> store;
  std::unique_ptr<AccessStore> access;
  std::unique_ptr<Authenticator> auth;
  std::unique_ptr<FleetStore> fleet;
  std::unique_ptr<RevocationEnforcer> revocations;
  std::unique_ptr<Distributor> distributor;
  std::unique_ptr<DbWorkers> workers;
  std::unique_ptr<grpc::Service> config_service;
  std::unique_ptr<grpc::Service> agent_service;
  std::unique_ptr<grpc::Service> fleet_service;
  std::vector<std::unique_ptr<grpc::Service>> access_services;
  std::unique_ptr<grpc::Server> grpc_server;
  std::unique_ptr<AdminServer> admin;
  int grpc_port = 0;
  std::atomic<bool> migrated{false};
  std::atomic<bool> shutting_down{false};
  bool stopped = false;
};

namespace {

// Connects and migrates, retrying an unreachable database until `wait` has passed: in a fresh
// deployment the database often starts after the control plane.
absl::Status MigrateWithRetry(PgPool& pool, absl::Duration wait) {
  auto migrations = OrderMigrations(EmbeddedMigrations());
  if (!migrations.ok()) return migrations.status();
  const absl::Time deadline = absl::Now() + wait;
  absl::Duration backoff = absl::Milliseconds(100);
  for (;;) {
    absl::Status s;
    auto conn = pool.Acquire();
    if (conn.ok()) {
      auto report = ApplyMigrations(**conn, *migrations);
      if (report.ok()) {
        FG_LOG_INFO("schema ready", {{"schema_version", report->latest_version},
                                     {"applied", report->applied}});
        return absl::OkStatus();
      }
      s = report.status();
    } else {
      s = conn.status();
    }
    if (!absl::IsUnavailable(s) || absl::Now() + backoff > deadline) return s;
    FG_LOG_WARN("database not ready, retrying",
                {{"error", std::string(s.message())},
                 {"retry_ms", absl::ToInt64Milliseconds(backoff)}});
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

// "<hostname>:<port>" from --listen; with port 0 (chosen at bind time, after the services
// exist) "<hostname>:pid-<pid>", still unique per running replica.
std::string DefaultReplicaId(const std::string& configured, const std::string& listen) {
  if (!configured.empty()) return configured;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "cp");
  std::string port = listen.substr(listen.rfind(':') + 1);
  if (port.empty() || port == "0") return absl::StrCat(host, ":pid-", getpid());
  return absl::StrCat(host, ":", port);
}

}  // namespace

CpServer::CpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CpServer::~CpServer() { Shutdown(); }

int CpServer::grpc_port() const { return impl_->grpc_port; }
int CpServer::admin_port() const { return impl_->admin ? impl_->admin->port() : 0; }

absl::StatusOr<std::unique_ptr<CpServer>> CpServer::Start(const CpOptions& options) {
  if (options.database_url.empty()) {
    return absl::InvalidArgumentError(
        "no database: pass --database-url or set FLEXGATE_DATABASE_URL");
  }
  // TLS files are checked before anything else, so a typo fails fast and names the flag.
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  std::string transport = "plaintext";
  std::string tls_subject;
  if (!options.tls_cert_file.empty() || !options.tls_key_file.empty() ||
      !options.tls_client_ca_file.empty()) {
    auto tls = LoadServerTls(
        {options.tls_cert_file, options.tls_key_file, options.tls_client_ca_file});
    if (!tls.ok()) return tls.status();
    grpc::SslServerCredentialsOptions ssl(
        tls->client_ca_pem.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                   : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_key_cert_pairs.push_back({tls->private_key_pem, tls->cert_chain_pem});
    ssl.pem_root_certs = tls->client_ca_pem;
    credentials = grpc::SslServerCredentials(ssl);
    transport = tls->client_ca_pem.empty() ? "tls" : "mtls";
    tls_subject = tls->subject;
  }

  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  m.options = options;
  m.pool = std::make_unique<PgPool>(
      PgPool::Options{options.database_url, std::max(1, options.db_pool_size)});
  m.store = std::make_unique<ConfigStore>(m.pool.get());
  m.access = std::make_unique<AccessStore>(m.pool.get());
  m.auth = std::make_unique<Authenticator>(m.pool.get());
  m.fleet = std::make_unique<FleetStore>(m.pool.get(), options.agent_stale_after);
  FG_LOG_INFO("starting", {{"database", RedactDatabaseUrl(options.database_url)},
                           {"pool_size", options.db_pool_size}});

  absl::Status s = MigrateWithRetry(*m.pool, options.database_wait);
  if (!s.ok()) return s;
  auto generated = m.store->Bootstrap(options.bootstrap_admin_key);
  if (!generated.ok()) return generated.status();
  if (generated->has_value()) {
    // Printed once, as a plain line outside the JSON log: the only time the key is visible.
    std::string line = absl::StrCat(
        "\nNo admin key existed, so one was created for tenant \"", kDefaultTenant,
        "\". It is shown only now:\n\n    ", **generated,
        "\n\nUse it as flexctl --token (or FLEXGATE_TOKEN).\n\n");
    std::fputs(line.c_str(), stderr);
    std::fflush(stderr);
    FG_LOG_INFO("generated bootstrap admin key", {{"tenant", kDefaultTenant}});
  }
  m.migrated.store(true);

  m.revocations = std::make_unique<RevocationEnforcer>(m.access.get(), m.auth.get(), &m.metrics,
                                                       options.revocation_check_interval);
  m.revocations->Start();
  m.distributor = std::make_unique<Distributor>(options.database_url, m.store.get(), &m.metrics,
                                                m.revocations.get());
  s = m.distributor->Start();
  if (!s.ok()) return s;
  m.workers = std::make_unique<DbWorkers>(m.store.get(), &m.metrics, options.db_workers);

  m.config_service = CreateConfigService(
      {m.store.get(), m.auth.get(), &m.metrics, m.access.get(), m.fleet.get()});
  m.access_services =
      CreateAccessServices({m.access.get(), m.auth.get(), m.revocations.get()});
  m.fleet_service = CreateFleetService({m.fleet.get(), m.auth.get()});
  m.agent_service = CreateAgentService({m.store.get(), m.auth.get(), m.distributor.get(),
                                        m.workers.get(), &m.metrics, m.revocations.get(),
                                        DefaultReplicaId(options.replica_id, options.listen)});

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, credentials, &m.grpc_port);
  builder.RegisterService(m.config_service.get());
  builder.RegisterService(m.fleet_service.get());
  builder.RegisterService(m.agent_service.get());
  for (auto& service : m.access_services) builder.RegisterService(service.get());
  // Agents keep their streams open for days; keepalive finds dead peers behind NATs.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  m.grpc_server = builder.BuildAndStart();
  if (m.grpc_server == nullptr || m.grpc_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen));
  }

  auto admin = AdminServer::Create(options.admin);
  if (!admin.ok()) return admin.status();
  m.admin = std::move(admin).value();
  Impl* raw = &m;
  m.admin->Handle("/health/live", [](const AdminRequest&) {
    return AdminResponse{200, "text/plain; charset=utf-8", "live\n"};
  });
  m.admin->Handle("/health/ready", [raw](const AdminRequest&) {
    // Never does I/O here: the listener's connection state stands for database reachability.
    if (raw->shutting_down.load()) return AdminResponse{503, "text/plain; charset=utf-8", "shutting down\n"};
    if (!raw->migrated.load()) return AdminResponse{503, "text/plain; charset=utf-8", "migrating\n"};
    if (!raw->distributor->listening()) {
      return AdminResponse{503, "text/plain; charset=utf-8", "database unreachable\n"};
    }
    return AdminResponse{200, "text/plain; charset=utf-8", "ready\n"};
  });
  m.admin->Handle("/metrics", [raw](const AdminRequest&) {
    return AdminResponse{200, "text/plain; version=0.0.4; charset=utf-8", raw->metrics.Serialize()};
  });
  s = m.admin->Start();
  if (!s.ok()) return s;

  FG_LOG_INFO("listening", {{"grpc_port", m.grpc_port},
                            {"admin_port", static_cast<int>(m.admin->port())},
                            {"listen", options.listen},
                            {"admin", options.admin},
                            {"transport", transport}});
  if (transport == "plaintext") {
    // Agent tokens and API keys travel in call metadata: fine on loopback or behind a TLS
    // terminator, not on an open network.
    FG_LOG_INFO("gRPC listener is plaintext; pass --tls-cert-file and --tls-key-file for TLS");
  } else {
    FG_LOG_INFO("gRPC listener serves TLS",
                {{"certificate", tls_subject},
                 {"client_certificates", transport == "mtls" ? "required" : "not requested"}});
  }
  return std::unique_ptr<CpServer>(new CpServer(std::move(impl)));
}

void CpServer::Shutdown() {
  Impl& m = *impl_;
  if (m.stopped) return;
  m.stopped = true;
  m.shutting_down.store(true);
  FG_LOG_INFO("shutting down");
  // One budget for the whole shutdown: RPCs and streams first, then the database writes their
  // ends caused (batched; what does not fit is dropped and repaired by the agents' next Hello).
  const absl::Time deadline = absl::Now() + m.options.shutdown_grace;
  if (m.grpc_server) {
    if (auto* health = m.grpc_server->GetHealthCheckService()) health->Shutdown();
    // Agent streams never end on their own: end them now so agents reconnect to another replica,
    // then give unary RPCs the grace period.
    m.distributor->CloseAll();
    m.grpc_server->Shutdown(std::chrono::system_clock::now() +
                            absl::ToChronoMilliseconds(m.options.shutdown_grace));
    m.grpc_server->Wait();
  }
  if (m.distributor) m.distributor->Stop();
  if (m.revocations) m.revocations->Stop();
  if (m.workers) {
    // A short floor, so the disconnects of a quick shutdown are still written.
    m.workers->Shutdown(std::max(deadline, absl::Now() + absl::Milliseconds(500)));
    m.workers.reset();
  }
  if (m.admin) m.admin->Stop();
  FG_LOG_INFO("stopped");
}

}  // namespace flexgate::cp
