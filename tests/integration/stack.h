// Stack: the whole product on loopback for integration tests, as real processes: a fresh
// database on the shared test PostgreSQL, flexgate-cp, flexgate-test-upstream processes named
// A, B, ..., and flexgate-agent under the control plane; plus flexctl run against it.
//
// Everything binds port 0 or a free port, logs to files under the stack's temp dir, and is
// terminated (agent first, control plane last) when the Stack is destroyed, which also prints
// the tail of every log to stdout (shown by `ctest --output-on-failure` when a test fails).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "tests/harness/proc/process.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::testing {

// An upstream that answers every path with 200, body "NAME <method> <path>\n".
struct Upstream {
  std::string name;
  uint16_t port = 0;
  std::unique_ptr<Process> process;
};

// Starts flexgate-test-upstream on a free port and waits until it answers.
absl::StatusOr<Upstream> StartUpstream(const std::string& name, const TempDir& logs);

// Ports a flexgate-agent reported in its "listening" / "admin listening" log lines.
struct AgentPorts {
  uint16_t listen = 0;
  uint16_t admin = 0;
};

// Starts flexgate-agent with `args` (plus --listen/--admin on port 0) and waits for its admin
// port to answer /health/live. The log goes to `log_name` in `logs`; a restarted agent needs a
// fresh name, since logs are appended to and the port lines of the old run would match first.
absl::StatusOr<AgentPorts> StartAgent(std::vector<std::string> args, const TempDir& logs,
                                      std::unique_ptr<Process>* agent,
                                      absl::string_view log_name = "agent.log");

// A minimal config: clusters "a", "b", ... (one per upstream port) and one route "all" on
// prefix "/" to cluster `route_to`.
std::string RouteConfigYaml(const std::vector<uint16_t>& upstream_ports, absl::string_view route_to);

struct StackOptions {
  int upstreams = 2;
  bool agent = true;
  int agent_workers = 2;
  // Extra agent flags, e.g. --reconnect-max-backoff or --heartbeat-interval for fault tests.
  // Kept for RestartAgent.
  std::vector<std::string> agent_args = {};
};

class Stack {
 public:
  static absl::StatusOr<std::unique_ptr<Stack>> Start(StackOptions options = {});
  ~Stack();

  const std::string& admin_key() const { return admin_key_; }
  const std::string& database_url() const { return database_url_; }
  std::string cp_address() const;
  uint16_t agent_port() const { return agent_ports_.listen; }
  uint16_t agent_admin_port() const { return agent_ports_.admin; }
  std::vector<uint16_t> upstream_ports() const;
  Process& cp() { return *cp_; }
  Process& agent() { return *agent_; }
  const TempDir& dir() const { return dir_; }

  // Runs flexctl with this stack's --server and --token first, then `args`.
  absl::StatusOr<CommandResult> Flexctl(std::vector<std::string> args);

  // Writes RouteConfigYaml(upstream ports, route_to) to the temp dir and returns the path.
  std::string WriteRouteConfig(absl::string_view file_name, absl::string_view route_to);

  // Terminates the agent and then the control plane (SIGTERM, graceful drain) and returns how
  // each ended: {agent, cp}. Idempotent.
  std::pair<ExitStatus, ExitStatus> Shutdown();

  // The tails of every process log, for failure messages.
  std::string Logs() const;

  // --- Fault injection (tests/integration/fault_*_test.cc) ---

  uint16_t grpc_port() const { return grpc_port_; }
  // The agent's --cache-dir (RocksDB snapshot cache and agent id).
  std::string agent_cache_dir() const { return dir_.File("agent-cache"); }

  // Kills the control plane with SIGKILL (no drain, streams cut) and reaps it.
  absl::Status KillCp();
  // Starts the control plane again on the same gRPC port and database (a fresh admin port) and
  // waits until it reports its port. The old process, if still running, is terminated first.
  absl::Status RestartCp();

  // Stops the agent (SIGTERM, graceful drain) and returns how it ended. Idempotent.
  ExitStatus StopAgent();
  // Starts the agent again with the same flags and cache dir plus `extra_args`, on new ports
  // (agent_port() and agent_admin_port() follow). Returns once /health/live answers.
  absl::Status RestartAgent(std::vector<std::string> extra_args = {});

 private:
  Stack() : dir_("flexgate-it") {}
  // Starts flexgate-cp on grpc_port_ (0 the first time) and records the port it reports.
  absl::Status StartCp();

  TempDir dir_;
  std::string admin_key_;
  std::string database_url_;
  uint16_t grpc_port_ = 0;
  std::unique_ptr<Process> cp_;
  std::vector<Upstream> upstreams_;
  std::unique_ptr<Process> agent_;
  AgentPorts agent_ports_;
  std::vector<std::string> agent_args_;  // as first started, without --listen/--admin
  int cp_starts_ = 0;
  int agent_starts_ = 0;
  // Processes replaced by a restart, kept for their logs.
  std::vector<std::unique_ptr<Process>> retired_;
};

}  // namespace flexgate::testing
