// Test support for everything that talks to a real flexgate-cp process: starting one on a test
// database (LaunchCp), a handle with a gRPC stub per service (CpProcess), a fake agent that speaks
// AgentService.Connect on a real stream (FakeAgent), fresh databases on the shared test
// PostgreSQL, a one-route config, and readers for the admin port.
//
// Two layers, so programs that are not Catch2 tests can use the first:
//   - LaunchCp reports errors as absl::Status (the fleet simulator and the integration Stack use
//     it; it lives in cp_launch.cc, which has no Catch2 in it).
//   - Everything else fails the calling Catch2 test with REQUIRE, as a test's own helper would.
//
// Tests link flexgate_cp_test_support; it includes grpcpp, so only files that talk gRPC anyway
// include this header.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "flexgate/v1/agent.grpc.pb.h"
#include "flexgate/v1/audit_service.grpc.pb.h"
#include "flexgate/v1/config_service.grpc.pb.h"
#include "flexgate/v1/fleet_service.grpc.pb.h"
#include "flexgate/v1/tenant_service.grpc.pb.h"
#include "tests/harness/proc/process.h"

namespace flexgate::testing {

// ---------------------------------------------------------------------------------------------
// Launching (absl::Status errors; no Catch2)

struct CpLaunchOptions {
  std::string database_url;
  // FLEXGATE_BOOTSTRAP_ADMIN_KEY. Empty: the variable is removed from the environment, so a new
  // installation generates a key and prints it once.
  std::string bootstrap_key;
  // --listen; a restart passes the port the first start reported, so agents find it again.
  std::string listen = "127.0.0.1:0";
  // --shutdown-grace in seconds; unset leaves the program's default.
  std::optional<int> shutdown_grace_seconds = 2;
  // Appended last: --replica-id, --agent-stale-after, TLS flags, ...
  std::vector<std::string> extra_args;
  // Where the log goes (ProcessOptions::stdout_path); empty: a temp file removed with the Process.
  std::string log_path;
  // How long to wait for the log lines that report the ports.
  absl::Duration start_timeout = absl::Seconds(30);
};

// The options most tests want: a database and a bootstrap key, everything else as above.
inline CpLaunchOptions LaunchOptions(std::string database_url, std::string bootstrap_key) {
  CpLaunchOptions o;
  o.database_url = std::move(database_url);
  o.bootstrap_key = std::move(bootstrap_key);
  return o;
}

// The ports flexgate-cp reported in its "listening" log lines.
struct CpPorts {
  uint16_t grpc = 0;
  uint16_t admin = 0;
};

// The command line and environment LaunchCp starts flexgate-cp with (for tests that run it to
// completion instead, e.g. to see it refuse a flag).
ProcessOptions CpProcessOptions(const CpLaunchOptions& options);

// Starts flexgate-cp (the build's binary, --admin on port 0, FLEXGATE_DATABASE_URL removed from
// the environment so only `database_url` counts) and waits until it reports both ports. On
// failure the status carries the log's tail; a child that did start is terminated.
absl::StatusOr<std::unique_ptr<Process>> LaunchCp(const CpLaunchOptions& options,
                                                  CpPorts* ports);

// ---------------------------------------------------------------------------------------------
// Catch2 helpers (REQUIRE on failure)

// A fresh database on the shared test PostgreSQL (the CTest fixture "postgres"); `prefix` names
// it after the suite.
std::string FreshDatabase(const std::string& prefix);

// One cluster "web" with the endpoint 127.0.0.1:`port`. With routes == 1, one route "all" on
// prefix "/"; with more, routes "r<n>" ... "r1" on prefixes "/r<n>/" first, then "all".
flexgate::v1::Config RouteConfig(uint32_t port, int routes = 1);

// A running flexgate-cp and one insecure channel to it with a stub for every service. Tests
// derive from it to add the calls they make often. Destruction closes the channel first (an open
// client connection would hold a graceful shutdown for its whole grace period), then SIGTERM.
class CpProcess {
 public:
  // Starts the process and connects; REQUIREs that it came up.
  explicit CpProcess(CpLaunchOptions options);
  virtual ~CpProcess();
  CpProcess(const CpProcess&) = delete;
  CpProcess& operator=(const CpProcess&) = delete;

  // A call context with `key` as its bearer token (none when empty), `request_id` as
  // x-request-id (none when empty), and a 20 s deadline.
  static std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key,
                                                  const std::string& request_id = "");

  // ConfigService.Apply of `cfg` with `key`; REQUIREs success.
  flexgate::v1::ApplyResponse Apply(const flexgate::v1::Config& cfg, const std::string& key);

  // Closes the channel and sends SIGTERM; true when the process then exited 0.
  bool Stop();

  std::string address() const;
  const std::string& bootstrap_key() const { return bootstrap_key_; }

  std::unique_ptr<Process> proc;
  int grpc_port = 0;
  int admin_port = 0;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<flexgate::v1::ConfigService::Stub> config;
  std::unique_ptr<flexgate::v1::FleetService::Stub> fleet;
  std::unique_ptr<flexgate::v1::TenantService::Stub> tenants;
  std::unique_ptr<flexgate::v1::KeyService::Stub> keys;
  std::unique_ptr<flexgate::v1::AuditService::Stub> audit;
  std::unique_ptr<flexgate::v1::AgentService::Stub> agents;

 private:
  void CloseChannel();
  std::string bootstrap_key_;
};

// What a fake agent reports as its apply duration in every Ack.
inline constexpr absl::Duration kFakeApplyDuration = absl::Milliseconds(7);

// One AgentService.Connect stream that the test drives by hand. Not thread-safe.
class FakeAgent {
 public:
  // Where the agent's credential travels: the authorization metadata, or Hello.token.
  enum class TokenIn { kMetadata, kHello };

  // Opens the stream (60 s deadline) and sends `hello`. A refused stream shows at the first read
  // (Next fails the test; Read returns false; FinishStatus says why).
  FakeAgent(CpProcess& cp, flexgate::v1::Hello hello, const std::string& key,
            TokenIn token_in = TokenIn::kMetadata);
  ~FakeAgent();  // Close()
  FakeAgent(const FakeAgent&) = delete;
  FakeAgent& operator=(const FakeAgent&) = delete;

  // The next message, which must be a snapshot (REQUIRE). Its arrival also proves the control
  // plane has recorded the Hello.
  flexgate::v1::Snapshot Next();
  // The next message; false when the stream ended.
  bool Read(flexgate::v1::ControlMessage* msg);

  // Ack of `s` (its version, nonce and hash) reporting kFakeApplyDuration.
  void Ack(const flexgate::v1::Snapshot& s);
  // An Ack with the version and nonce given, and no hash (stale or forged replies).
  void AckWithNonce(uint64_t version, const std::string& nonce);
  void Nack(const flexgate::v1::Snapshot& s, uint64_t current, const std::string& error);
  void Heartbeat(uint64_t version, const std::string& hash);

  // Cancels and finishes the stream, as an agent that goes away. Idempotent.
  void Close();
  // Reads to the end of the stream and returns how the control plane ended it.
  grpc::Status FinishStatus();

 private:
  void Write(const flexgate::v1::AgentMessage& m);

  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<flexgate::v1::AgentMessage,
                                           flexgate::v1::ControlMessage>>
      stream_;
  bool finished_ = false;
};

// The body of GET `path` on 127.0.0.1:`port` ("" when nothing answered), and its status (0 then).
std::string AdminBody(int port, const std::string& path);
int AdminStatus(int port, const std::string& path);

// A sample's value in the Prometheus text format, e.g. "flexgate_cp_nacks_total" or
// "flexgate_cp_convergence_seconds_bucket{le=\"60\"}"; -1 when absent.
double MetricValue(const std::string& text, const std::string& sample);
// The same, read from the admin port's /metrics.
double CpMetric(int admin_port, const std::string& sample);

}  // namespace flexgate::testing
