// flexgate-cp: the control plane server. A thin wrapper over CpServer: flags, logging, signals.
//
//   flexgate-cp --listen HOST:PORT --admin HOST:PORT --database-url postgresql://...
//
//   [--tls-cert-file FILE --tls-key-file FILE [--tls-client-ca-file FILE]]
//
// Environment: FLEXGATE_DATABASE_URL (when --database-url is not given),
// FLEXGATE_BOOTSTRAP_ADMIN_KEY (the first admin key of a new installation).
// SIGTERM or SIGINT: graceful shutdown, exit 0. Start-up failure: exit 1. Bad usage: exit 2.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "controlplane/server.h"

namespace {

constexpr char kUsage[] =
    "usage: flexgate-cp --listen HOST:PORT --admin HOST:PORT --database-url URL [options]\n"
    "\n"
    "  --listen HOST:PORT       gRPC address (default 127.0.0.1:9090; port 0 = any free port)\n"
    "  --admin HOST:PORT        admin HTTP address: /health/live, /health/ready, /metrics\n"
    "                           (default 127.0.0.1:9091)\n"
    "  --database-url URL       PostgreSQL URL (default: $FLEXGATE_DATABASE_URL)\n"
    "  --db-pool-size N         PostgreSQL connections for RPCs (default 8)\n"
    "  --db-workers N           threads writing agent-stream events (default 2)\n"
    "  --database-wait SECONDS  keep retrying an unreachable database at start (default 30)\n"
    "  --shutdown-grace SECONDS time in-flight RPCs get on SIGTERM (default 5)\n"
    "  --agent-stale-after SECONDS  an agent silent this long (no heartbeat) is shown as\n"
    "                           stale by FleetService (default 30)\n"
    "  --revocation-check-interval SECONDS  how often open agent streams' tokens are\n"
    "                           re-checked for revocations this replica was not told of\n"
    "                           (default 5; 0 = only after a lost database connection)\n"
    "  --replica-id ID          this replica's name in the fleet view (default HOST:PORT)\n"
    "  --tls-cert-file FILE     serve gRPC over TLS with this PEM certificate chain\n"
    "  --tls-key-file FILE      ... and this PEM private key (both or neither; default plaintext)\n"
    "  --tls-client-ca-file FILE  require client certificates signed by these PEM roots (mTLS)\n"
    "  --log-level LEVEL        debug|info|warn|error (default info)\n"
    "\n"
    "FLEXGATE_BOOTSTRAP_ADMIN_KEY: an admin key of tenant \"default\" to create at start. Without\n"
    "it, a new installation prints a generated admin key once on stderr.\n";

int UsageError(const std::string& msg) {
  std::fprintf(stderr, "flexgate-cp: %s\n\n%s", msg.c_str(), kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Abseil's deadlock detection (on by default in non-NDEBUG builds of the library, and Debian
  // ships it that way) builds a lock graph on every Mutex acquisition: about 5% of the control
  // plane's CPU with 10,000 agent streams. Lock order is documented per class instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  flexgate::cp::CpOptions options;
  flexgate::LogLevel level = flexgate::LogLevel::kInfo;
  if (const char* url = std::getenv("FLEXGATE_DATABASE_URL")) options.database_url = url;
  if (const char* key = std::getenv("FLEXGATE_BOOTSTRAP_ADMIN_KEY"); key && *key) {
    options.bootstrap_admin_key = key;
  }

  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    std::string value;
    size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      return UsageError(absl::StrCat(arg, " needs a value"));
    }
    auto as_int = [&](int* out) {
      return absl::SimpleAtoi(value, out) && *out >= 0;
    };
    int n = 0;
    if (arg == "--listen") {
      options.listen = value;
    } else if (arg == "--admin") {
      options.admin = value;
    } else if (arg == "--database-url") {
      options.database_url = value;
    } else if (arg == "--db-pool-size") {
      if (!as_int(&n) || n < 1) return UsageError("--db-pool-size must be a positive number");
      options.db_pool_size = n;
    } else if (arg == "--db-workers") {
      if (!as_int(&n) || n < 1) return UsageError("--db-workers must be a positive number");
      options.db_workers = n;
    } else if (arg == "--database-wait") {
      if (!as_int(&n)) return UsageError("--database-wait must be a number of seconds");
      options.database_wait = absl::Seconds(n);
    } else if (arg == "--shutdown-grace") {
      if (!as_int(&n)) return UsageError("--shutdown-grace must be a number of seconds");
      options.shutdown_grace = absl::Seconds(n);
    } else if (arg == "--agent-stale-after") {
      if (!as_int(&n) || n < 1) return UsageError("--agent-stale-after must be a positive number of seconds");
      options.agent_stale_after = absl::Seconds(n);
    } else if (arg == "--revocation-check-interval") {
      if (!as_int(&n)) {
        return UsageError("--revocation-check-interval must be a number of seconds");
      }
      options.revocation_check_interval = absl::Seconds(n);
    } else if (arg == "--replica-id") {
      options.replica_id = value;
    } else if (arg == "--tls-cert-file") {
      options.tls_cert_file = value;
    } else if (arg == "--tls-key-file") {
      options.tls_key_file = value;
    } else if (arg == "--tls-client-ca-file") {
      options.tls_client_ca_file = value;
    } else if (arg == "--log-level") {
      if (value == "debug") level = flexgate::LogLevel::kDebug;
      else if (value == "info") level = flexgate::LogLevel::kInfo;
      else if (value == "warn") level = flexgate::LogLevel::kWarn;
      else if (value == "error") level = flexgate::LogLevel::kError;
      else return UsageError("--log-level must be debug, info, warn or error");
    } else {
      return UsageError(absl::StrCat("unknown flag ", arg));
    }
  }
  flexgate::InitLogging("cp", level);

  // Block the shutdown signals before any thread starts, so every thread inherits the mask and
  // only sigwait below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto server = flexgate::cp::CpServer::Start(options);
  if (!server.ok()) {
    FG_LOG_ERROR("start failed", {{"error", std::string(server.status().message())}});
    return 1;
  }
  int sig = 0;
  sigwait(&signals, &sig);
  FG_LOG_INFO("signal received", {{"signal", sig}});
  (*server)->Shutdown();
  server->reset();
  return 0;
}
