// AgentOptions: everything flexgate-agent needs to start, merged from the bootstrap file
// (flexgate.v1.Bootstrap, --bootstrap FILE), the environment (FLEXGATE_TOKEN) and the command
// line, in that order of increasing precedence. The flag names are part of the product
// (DESIGN.md section 8); add to them, never rename.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/tls/tls.h"
#include "dataplane/proxy/proxy_server.h"

namespace flexgate::agent {

struct ControlPlaneOptions {
  std::string address;  // host:port; empty = no control plane
  std::string token;
  // TLS to the control plane. `tls` is implied by any of the file settings below.
  bool tls = false;
  std::string ca_file;      // empty with tls = the system's trust store
  std::string cert_file;    // client certificate for mTLS (with key_file)
  std::string key_file;
  std::string server_name;  // name to verify instead of the host part of `address`

  absl::Duration heartbeat_interval = absl::Seconds(5);
  absl::Duration reconnect_base = absl::Milliseconds(250);
  absl::Duration reconnect_max = absl::Seconds(30);
  // A stream that stayed up at least this long resets the reconnect backoff.
  absl::Duration stable_after = absl::Seconds(10);
  absl::Duration keepalive_time = absl::Seconds(30);
  absl::Duration keepalive_timeout = absl::Seconds(10);
};

struct AgentOptions {
  std::vector<std::string> listen_addresses;  // "host:port" each
  // TLS certificates per listen address, by index (an empty or missing entry = plain HTTP).
  // Filled from the bootstrap's listeners; --listen flags replace the listeners and clear it.
  std::vector<std::vector<tls::CertificateSpec>> listener_tls;
  // Parallel to listener_tls: the client CA file of a mutual-TLS listener, else empty.
  std::vector<std::string> listener_client_ca;
  std::string admin_address;
  int workers = 0;  // resolved: never 0 after parsing
  std::string config_file;  // static mode when set
  ControlPlaneOptions control_plane;
  std::string cache_dir;  // last-known-good cache and the persisted agent id; empty = none
  std::map<std::string, std::string> labels;
  std::string agent_id;
  dataplane::ProxyLimits limits;
  absl::Duration drain_timeout = absl::Seconds(15);
  LogLevel log_level = LogLevel::kInfo;
  // Features this agent claims NOT to enforce (names from common/capabilities.h), removed from
  // its Hello capabilities and from the capability check before each apply. For tests only:
  // the hidden flag --disable-capability NAME (repeatable) lets an integration test make a real
  // agent reject a config the control plane accepts, to exercise the NACK path end to end.
  std::set<std::string> disabled_capabilities;

  // Informational requests: print and exit 0.
  bool show_help = false;
  bool show_version = false;

  bool static_mode() const { return !config_file.empty(); }
};

// Looks up an environment variable; returns nullptr when unset. Injected so tests control it.
using EnvLookup = std::function<const char*(const char*)>;

// Parses argv[1..] (not the program name). Errors are INVALID_ARGUMENT with a message naming the
// flag or file at fault; the caller prints it and exits 2. The bootstrap file, when given, is read
// here (NOT_FOUND / INVALID_ARGUMENT from the loader are reported as INVALID_ARGUMENT too).
absl::StatusOr<AgentOptions> ParseAgentFlags(const std::vector<std::string>& args,
                                             const EnvLookup& env);

// The --help text.
std::string AgentUsage();

// Splits "host:port", "[v6]:port" or ":port" and checks the port is numeric (0 allowed).
absl::Status CheckHostPort(const std::string& address);

}  // namespace flexgate::agent
