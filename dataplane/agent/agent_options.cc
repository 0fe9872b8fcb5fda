#include "dataplane/agent/agent_options.h"

#include <algorithm>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/capabilities.h"
#include "common/config_loader.h"
#include "flexgate/v1/bootstrap.pb.h"

namespace flexgate::agent {
namespace {

constexpr int kMaxWorkers = 1024;

absl::Status Bad(std::string message) { return absl::InvalidArgumentError(std::move(message)); }

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::StatusOr<absl::Duration> ParseDurationFlag(const std::string& flag, const std::string& text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration()) {
    return Bad(absl::StrCat(flag, ": \"", text, "\" is not a duration such as 5s or 250ms"));
  }
  return d;
}

absl::Status ParseLabel(const std::string& text, std::map<std::string, std::string>* labels) {
  size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0) {
    return Bad(absl::StrCat("--label: \"", text, "\" is not of the form key=value"));
  }
  (*labels)[text.substr(0, eq)] = text.substr(eq + 1);
  return absl::OkStatus();
}

absl::StatusOr<LogLevel> ParseLogLevel(const std::string& text) {
  if (text == "debug") return LogLevel::kDebug;
  if (text == "info") return LogLevel::kInfo;
  if (text == "warn") return LogLevel::kWarn;
  if (text == "error") return LogLevel::kError;
  return Bad(absl::StrCat("--log-level: \"", text, "\" is not one of debug, info, warn, error"));
}

// Copies the bootstrap file into options. Flags applied afterwards override these values.
absl::Status ApplyBootstrap(const flexgate::v1::Bootstrap& b, AgentOptions* o) {
  for (const auto& l : b.listeners()) {
    std::vector<tls::CertificateSpec> certs;
    for (const auto& c : l.tls().certificates()) {
      if (c.cert_file().empty() || c.key_file().empty()) {
        return Bad(absl::StrCat("bootstrap: listener \"", l.name(),
                                "\": every TLS certificate needs cert_file and key_file"));
      }
      certs.push_back({{c.server_names().begin(), c.server_names().end()}, c.cert_file(),
                       c.key_file()});
    }
    if (!l.tls().client_ca_file().empty() && certs.empty()) {
      return Bad(absl::StrCat("bootstrap: listener \"", l.name(),
                              "\": client_ca_file needs TLS certificates on the listener"));
    }
    o->listen_addresses.push_back(l.address());
    o->listener_tls.push_back(std::move(certs));
    o->listener_client_ca.push_back(l.tls().client_ca_file());
  }
  if (!b.admin_address().empty()) o->admin_address = b.admin_address();
  const auto& cp = b.control_plane();
  o->control_plane.address = cp.address();
  o->control_plane.token = cp.token();
  o->control_plane.tls = cp.tls();
  o->control_plane.ca_file = cp.ca_file();
  o->control_plane.cert_file = cp.cert_file();
  o->control_plane.key_file = cp.key_file();
  o->control_plane.server_name = cp.server_name();
  o->cache_dir = b.cache_dir();
  for (const auto& [k, v] : b.labels()) o->labels[k] = v;
  o->workers = static_cast<int>(std::min<uint32_t>(b.workers(), kMaxWorkers + 1));
  o->config_file = b.config_file();
  o->agent_id = b.agent_id();
  if (b.has_limits()) {
    const auto& l = b.limits();
    if (l.max_header_bytes() != 0) o->limits.max_header_bytes = l.max_header_bytes();
    if (l.max_body_bytes() != 0) o->limits.max_body_bytes = l.max_body_bytes();
    if (l.has_header_timeout()) o->limits.header_timeout = FromProto(l.header_timeout());
    if (l.has_idle_timeout()) o->limits.idle_timeout = FromProto(l.idle_timeout());
    if (l.has_request_timeout()) o->limits.request_timeout = FromProto(l.request_timeout());
    if (l.has_drain_timeout()) o->drain_timeout = FromProto(l.drain_timeout());
  }
  return absl::OkStatus();
}

// Flags that take a value. Boolean flags are handled separately.
const char* const kValueFlags[] = {
    "--config",          "--listen",           "--admin",          "--workers",
    "--control-plane",   "--token",            "--cache-dir",      "--label",
    "--agent-id",        "--bootstrap",        "--cp-ca-file",     "--cp-cert-file",
    "--cp-key-file",     "--cp-server-name",   "--drain-timeout",  "--log-level",
    "--heartbeat-interval", "--reconnect-max-backoff", "--max-header-bytes",
    "--max-body-bytes",     "--disable-capability",
};
const char* const kBoolFlags[] = {"--cp-tls", "--help", "-h", "--version"};

bool IsValueFlag(const std::string& name) {
  return std::any_of(std::begin(kValueFlags), std::end(kValueFlags),
                     [&](const char* f) { return name == f; });
}
bool IsBoolFlag(const std::string& name) {
  return std::any_of(std::begin(kBoolFlags), std::end(kBoolFlags),
                     [&](const char* f) { return name == f; });
}

}  // namespace

absl::Status CheckHostPort(const std::string& address) {
  std::string host, port;
  if (!address.empty() && address[0] == '[') {
    size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return Bad(absl::StrCat("\"", address, "\" is not HOST:PORT"));
    }
    port = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string::npos) return Bad(absl::StrCat("\"", address, "\" is not HOST:PORT"));
    port = address.substr(colon + 1);
  }
  uint32_t value = 0;
  if (!absl::SimpleAtoi(port, &value) || value > 65535) {
    return Bad(absl::StrCat("\"", address, "\" has no valid port (0..65535)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<AgentOptions> ParseAgentFlags(const std::vector<std::string>& args,
                                             const EnvLookup& env) {
  // Pass 1: split into (flag, value) pairs and find --bootstrap, so the file is applied first
  // wherever it appears on the command line.
  std::vector<std::pair<std::string, std::string>> flags;
  std::string bootstrap_file;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (!absl::StartsWith(arg, "-")) {
      return Bad(absl::StrCat("unexpected argument \"", arg, "\" (flags start with --)"));
    }
    std::string name = arg, value;
    bool has_value = false;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (IsBoolFlag(name)) {
      if (has_value) return Bad(absl::StrCat(name, " takes no value"));
      flags.emplace_back(name, "");
      continue;
    }
    if (!IsValueFlag(name)) return Bad(absl::StrCat("unknown flag ", name, " (see --help)"));
    if (!has_value) {
      if (i + 1 >= args.size()) return Bad(absl::StrCat(name, " needs a value"));
      value = args[++i];
    }
    if (name == "--bootstrap") {
      bootstrap_file = value;
    } else {
      flags.emplace_back(name, value);
    }
  }

  AgentOptions o;
  if (!bootstrap_file.empty()) {
    flexgate::v1::Bootstrap bootstrap;
    if (absl::Status s = LoadMessageFile(bootstrap_file, &bootstrap); !s.ok()) {
      return Bad(absl::StrCat("--bootstrap ", bootstrap_file, ": ", s.message()));
    }
    if (absl::Status s = ApplyBootstrap(bootstrap, &o); !s.ok()) return s;
  }
  if (const char* token = env("FLEXGATE_TOKEN"); token != nullptr && *token != '\0') {
    o.control_plane.token = token;
  }

  // Pass 2: flags override the file. Repeatable list flags replace the file's list as a whole
  // (--listen) or merge per key (--label).
  bool listen_from_flags = false;
  for (const auto& [name, value] : flags) {
    if (name == "--help" || name == "-h") {
      o.show_help = true;
    } else if (name == "--version") {
      o.show_version = true;
    } else if (name == "--config") {
      o.config_file = value;
    } else if (name == "--listen") {
      if (!listen_from_flags) {
        o.listen_addresses.clear();
        o.listener_tls.clear();  // flags describe plain listeners only
        o.listener_client_ca.clear();
      }
      listen_from_flags = true;
      o.listen_addresses.push_back(value);
    } else if (name == "--admin") {
      o.admin_address = value;
    } else if (name == "--workers") {
      int n = 0;
      if (!absl::SimpleAtoi(value, &n) || n < 0 || n > kMaxWorkers) {
        return Bad(absl::StrCat("--workers: \"", value, "\" is not a number in 0..", kMaxWorkers,
                                " (0 = one per core)"));
      }
      o.workers = n;
    } else if (name == "--control-plane") {
      o.control_plane.address = value;
    } else if (name == "--token") {
      o.control_plane.token = value;
    } else if (name == "--cache-dir") {
      o.cache_dir = value;
    } else if (name == "--label") {
      if (absl::Status s = ParseLabel(value, &o.labels); !s.ok()) return s;
    } else if (name == "--agent-id") {
      o.agent_id = value;
    } else if (name == "--cp-tls") {
      o.control_plane.tls = true;
    } else if (name == "--cp-ca-file") {
      o.control_plane.ca_file = value;
    } else if (name == "--cp-cert-file") {
      o.control_plane.cert_file = value;
    } else if (name == "--cp-key-file") {
      o.control_plane.key_file = value;
    } else if (name == "--cp-server-name") {
      o.control_plane.server_name = value;
    } else if (name == "--drain-timeout") {
      auto d = ParseDurationFlag(name, value);
      if (!d.ok()) return d.status();
      o.drain_timeout = *d;
    } else if (name == "--heartbeat-interval") {
      auto d = ParseDurationFlag(name, value);
      if (!d.ok()) return d.status();
      if (*d < absl::Milliseconds(100)) return Bad("--heartbeat-interval: must be at least 100ms");
      o.control_plane.heartbeat_interval = *d;
    } else if (name == "--reconnect-max-backoff") {
      auto d = ParseDurationFlag(name, value);
      if (!d.ok()) return d.status();
      if (*d < absl::Milliseconds(10)) return Bad("--reconnect-max-backoff: must be at least 10ms");
      o.control_plane.reconnect_max = *d;
      o.control_plane.reconnect_base = std::min(o.control_plane.reconnect_base, *d);
    } else if (name == "--max-header-bytes") {
      uint32_t n = 0;
      if (!absl::SimpleAtoi(value, &n) || n < 1024) {
        return Bad(absl::StrCat("--max-header-bytes: \"", value, "\" is not a number >= 1024"));
      }
      o.limits.max_header_bytes = n;
    } else if (name == "--max-body-bytes") {
      uint64_t n = 0;
      if (!absl::SimpleAtoi(value, &n)) {
        return Bad(absl::StrCat("--max-body-bytes: \"", value, "\" is not a number (0 = no limit)"));
      }
      o.limits.max_body_bytes = n;
    } else if (name == "--disable-capability") {
      // Hidden (not in --help): narrows the agent's capabilities for tests of the NACK path.
      if (!IsKnownFeature(value)) {
        return Bad(absl::StrCat("--disable-capability: \"", value, "\" is not a known feature"));
      }
      o.disabled_capabilities.insert(value);
    } else if (name == "--log-level") {
      auto level = ParseLogLevel(value);
      if (!level.ok()) return level.status();
      o.log_level = *level;
    }
  }
  if (o.show_help || o.show_version) return o;

  // Defaults and cross-checks.
  if (o.listen_addresses.empty()) o.listen_addresses.push_back("0.0.0.0:8080");
  if (o.admin_address.empty()) o.admin_address = "127.0.0.1:9901";
  for (const auto& a : o.listen_addresses) {
    if (absl::Status s = CheckHostPort(a); !s.ok()) return Bad(absl::StrCat("--listen: ", s.message()));
  }
  if (absl::Status s = CheckHostPort(o.admin_address); !s.ok()) {
    return Bad(absl::StrCat("--admin: ", s.message()));
  }
  if (o.workers > kMaxWorkers) return Bad(absl::StrCat("workers: at most ", kMaxWorkers));
  if (o.workers == 0) o.workers = std::max(1u, std::thread::hardware_concurrency());

  ControlPlaneOptions& cp = o.control_plane;
  if (!cp.ca_file.empty() || !cp.cert_file.empty() || !cp.key_file.empty()) cp.tls = true;
  if (cp.cert_file.empty() != cp.key_file.empty()) {
    return Bad("--cp-cert-file and --cp-key-file go together (mTLS needs both)");
  }
  if (o.config_file.empty() && cp.address.empty()) {
    return Bad("nothing to serve: give --config FILE (static mode) or --control-plane HOST:PORT");
  }
  if (!o.config_file.empty() && !cp.address.empty()) {
    return Bad("--config (static mode) and --control-plane exclude each other");
  }
  if (!cp.address.empty()) {
    if (absl::Status s = CheckHostPort(cp.address); !s.ok()) {
      return Bad(absl::StrCat("--control-plane: ", s.message()));
    }
    if (cp.token.empty()) {
      return Bad("--control-plane needs a token: --token TOKEN or FLEXGATE_TOKEN");
    }
  }
  return o;
}

std::string AgentUsage() {
  return R"(flexgate-agent: the FlexGate data plane (HTTP/1.1 reverse proxy).

Static mode (no control plane):
  flexgate-agent --config FILE [--listen HOST:PORT]... [--admin HOST:PORT] [--workers N]

Under a control plane:
  flexgate-agent --control-plane HOST:PORT --token TOKEN [--cache-dir DIR]
                 [--label KEY=VALUE]... [--agent-id ID] [--listen ...] [--admin ...]

Flags (a --bootstrap FILE may carry the same settings; flags override it):
  --bootstrap FILE            flexgate.v1.Bootstrap as YAML or JSON
  --config FILE               serve this flexgate.v1.Config (YAML or JSON); no control plane
  --listen HOST:PORT          proxy listener, repeatable (default 0.0.0.0:8080)
  --admin HOST:PORT           admin endpoints (default 127.0.0.1:9901)
  --workers N                 worker threads; 0 = one per core (default)
  --control-plane HOST:PORT   flexgate-cp address
  --token TOKEN               agent enrollment token (or env FLEXGATE_TOKEN)
  --cp-tls                    use TLS to the control plane (system trust store)
  --cp-ca-file FILE           CA bundle to verify the control plane (implies --cp-tls)
  --cp-cert-file FILE         client certificate for mTLS (with --cp-key-file)
  --cp-key-file FILE          client private key for mTLS
  --cp-server-name NAME       name to verify in the control plane's certificate
  --cache-dir DIR             last-known-good snapshot cache and persisted agent id
  --label KEY=VALUE           agent label, repeatable
  --agent-id ID               stable agent id (default: generated once, kept in --cache-dir)
  --heartbeat-interval DUR    heartbeat period to the control plane (default 5s)
  --reconnect-max-backoff DUR cap of the reconnect backoff (default 30s)
  --drain-timeout DUR         graceful drain on SIGTERM/SIGINT (default 15s)
  --max-header-bytes N        request head limit (default 65536)
  --max-body-bytes N          request body limit; 0 = none (default)
  --log-level LEVEL           debug, info, warn or error (default info)
  --help, --version

Exit status: 0 after a graceful drain, 1 when the agent could not start (such as an invalid
config), 2 for bad flags.
)";
}

}  // namespace flexgate::agent
