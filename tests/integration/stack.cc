#include "tests/integration/stack.h"

#include <csignal>
#include <cstdio>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/controlplane/cp_test_support.h"
#include "tests/harness/proc/test_postgres.h"
#include "tests/integration/http_probe.h"

namespace flexgate::testing {
namespace {

using probe::HttpConnection;
using probe::HttpGet;
using probe::HttpRequest;
using probe::HttpResponse;

constexpr absl::Duration kStartTimeout = absl::Seconds(30);

absl::StatusOr<uint16_t> ParsePort(const absl::StatusOr<std::string>& text) {
  if (!text.ok()) return text.status();
  int port = 0;
  if (!absl::SimpleAtoi(*text, &port) || port <= 0 || port > 65535) {
    return absl::InternalError(absl::StrCat("bad port in log: ", *text));
  }
  return static_cast<uint16_t>(port);
}

std::string RandomKey() {
  std::random_device rd;
  std::string key = "fgk_test_";
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) key.push_back(hex[rd() % 16]);
  return key;
}

absl::Status MissingBinary(absl::string_view name) {
  return absl::FailedPreconditionError(
      absl::StrCat(name, " is not built (expected at ", BinaryPath(name), ")"));
}

}  // namespace

absl::StatusOr<Upstream> StartUpstream(const std::string& name, const TempDir& logs) {
  if (!BinaryExists("flexgate-test-upstream")) return MissingBinary("flexgate-test-upstream");
  absl::Status last;
  // FreePort can race with another process; a lost race shows as an early exit, so retry.
  for (int attempt = 0; attempt < 3; ++attempt) {
    Upstream u;
    u.name = name;
    u.port = FreePort();
    ProcessOptions o;
    o.args = {BinaryPath("flexgate-test-upstream"), "--listen",
              absl::StrCat("127.0.0.1:", u.port), "--name", name};
    o.stdout_path = logs.File(absl::StrCat("upstream-", name, "-", attempt, ".log"));
    auto p = Process::Start(std::move(o));
    if (!p.ok()) return p.status();
    u.process = std::move(*p);
    bool up = WaitFor(
        [&] {
          auto r = HttpGet(u.port, "/ping", absl::Seconds(2));
          return (r.ok() && r->status == 200) || !u.process->Running();
        },
        kStartTimeout);
    if (up && u.process->Running()) return u;
    last = absl::UnavailableError(absl::StrCat("upstream ", name, " did not start on port ",
                                               u.port, ": ", u.process->LogTail()));
  }
  return last;
}

absl::StatusOr<AgentPorts> StartAgent(std::vector<std::string> args, const TempDir& logs,
                                      std::unique_ptr<Process>* agent,
                                      absl::string_view log_name) {
  if (!BinaryExists("flexgate-agent")) return MissingBinary("flexgate-agent");
  ProcessOptions o;
  o.args = {BinaryPath("flexgate-agent"), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"};
  o.args.insert(o.args.end(), args.begin(), args.end());
  o.stdout_path = logs.File(log_name);
  auto p = Process::Start(std::move(o));
  if (!p.ok()) return p.status();
  *agent = std::move(*p);
  AgentPorts ports;
  auto listen = ParsePort(
      (*agent)->WaitForLogMatch(R"re("msg":"listening".*"port":(\d+))re", kStartTimeout));
  if (!listen.ok()) return listen.status();
  auto admin = ParsePort(
      (*agent)->WaitForLogMatch(R"re("msg":"admin listening".*"port":(\d+))re", kStartTimeout));
  if (!admin.ok()) return admin.status();
  ports.listen = *listen;
  ports.admin = *admin;
  bool live = WaitFor(
      [&] {
        auto r = HttpGet(ports.admin, "/health/live", absl::Seconds(2));
        return r.ok() && r->status == 200;
      },
      kStartTimeout);
  if (!live) {
    return absl::UnavailableError(
        absl::StrCat("agent /health/live never answered 200: ", (*agent)->LogTail()));
  }
  return ports;
}

std::string RouteConfigYaml(const std::vector<uint16_t>& upstream_ports,
                            absl::string_view route_to) {
  std::string yaml = "clusters:\n";
  for (size_t i = 0; i < upstream_ports.size(); ++i) {
    absl::StrAppend(&yaml, "  - name: ", std::string(1, static_cast<char>('a' + i)), "\n",
                    "    endpoints:\n", "      - { address: 127.0.0.1, port: ", upstream_ports[i],
                    " }\n");
  }
  absl::StrAppend(&yaml,
                  "routes:\n"
                  "  - name: all\n"
                  "    match: { path: { prefix: \"/\" } }\n"
                  "    cluster: ",
                  route_to, "\n");
  return yaml;
}

absl::StatusOr<std::unique_ptr<Stack>> Stack::Start(StackOptions options) {
  auto stack = std::unique_ptr<Stack>(new Stack());
  for (absl::string_view bin : {"flexgate-cp", "flexctl"}) {
    if (!BinaryExists(bin)) return MissingBinary(bin);
  }
  auto pg = TestPostgres::Shared();
  if (!pg.ok()) return pg.status();
  auto db = (*pg)->CreateDatabase("it");
  if (!db.ok()) return db.status();
  stack->database_url_ = *db;
  stack->admin_key_ = RandomKey();

  // The control plane binds port 0 and reports the ports it got.
  if (absl::Status s = stack->StartCp(); !s.ok()) return s;

  for (int i = 0; i < options.upstreams; ++i) {
    auto u = StartUpstream(std::string(1, static_cast<char>('A' + i)), stack->dir_);
    if (!u.ok()) return u.status();
    stack->upstreams_.push_back(std::move(*u));
  }

  stack->agent_args_ = {"--control-plane", stack->cp_address(), "--token", stack->admin_key_,
                        "--cache-dir", stack->agent_cache_dir(), "--workers",
                        absl::StrCat(options.agent_workers)};
  stack->agent_args_.insert(stack->agent_args_.end(), options.agent_args.begin(),
                            options.agent_args.end());
  if (options.agent) {
    auto ports = StartAgent(stack->agent_args_, stack->dir_, &stack->agent_);
    if (!ports.ok()) return ports.status();
    stack->agent_ports_ = *ports;
    ++stack->agent_starts_;
  }
  return stack;
}

absl::Status Stack::StartCp() {
  // The first start binds port 0; a restart takes the same port again, as a real deployment's
  // address stays the same, so agents reconnect to where they were.
  CpLaunchOptions o;
  o.database_url = database_url_;
  o.bootstrap_key = admin_key_;
  o.listen = absl::StrCat("127.0.0.1:", grpc_port_);
  o.shutdown_grace_seconds = std::nullopt;  // the program's own default, as deployed
  o.log_path =
      dir_.File(cp_starts_ == 0 ? std::string("cp.log") : absl::StrCat("cp-", cp_starts_, ".log"));
  o.start_timeout = kStartTimeout;
  ++cp_starts_;
  CpPorts ports;
  auto cp = LaunchCp(o, &ports);
  if (!cp.ok()) return cp.status();
  if (cp_ != nullptr) retired_.push_back(std::move(cp_));
  cp_ = std::move(*cp);
  if (grpc_port_ != 0 && ports.grpc != grpc_port_) {
    return absl::InternalError(absl::StrCat("control plane came back on port ", ports.grpc,
                                            " instead of ", grpc_port_));
  }
  grpc_port_ = ports.grpc;
  return absl::OkStatus();
}

absl::Status Stack::KillCp() {
  if (cp_ == nullptr) return absl::FailedPreconditionError("no control plane");
  if (absl::Status s = cp_->Signal(SIGKILL); !s.ok()) return s;
  if (!cp_->Wait(absl::Seconds(10)).has_value()) {
    return absl::DeadlineExceededError("control plane did not die of SIGKILL");
  }
  return absl::OkStatus();
}

absl::Status Stack::RestartCp() {
  if (cp_ != nullptr && cp_->Running()) cp_->Terminate(absl::Seconds(10));
  return StartCp();
}

ExitStatus Stack::StopAgent() {
  if (agent_ == nullptr) return ExitStatus{};
  return agent_->Terminate(absl::Seconds(10));
}

absl::Status Stack::RestartAgent(std::vector<std::string> extra_args) {
  if (agent_ != nullptr) {
    agent_->Terminate(absl::Seconds(10));
    retired_.push_back(std::move(agent_));
  }
  std::vector<std::string> args = agent_args_;
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  auto ports = StartAgent(std::move(args), dir_, &agent_,
                          absl::StrCat("agent-", agent_starts_, ".log"));
  ++agent_starts_;
  if (!ports.ok()) return ports.status();
  agent_ports_ = *ports;
  return absl::OkStatus();
}

Stack::~Stack() {
  Shutdown();
  // CTest shows a test's output only when it fails (--output-on-failure): the logs of every
  // process are then right there, and cost nothing otherwise.
  std::printf("%s", Logs().c_str());
  std::fflush(stdout);
  upstreams_.clear();
}

std::string Stack::cp_address() const { return absl::StrCat("127.0.0.1:", grpc_port_); }

std::vector<uint16_t> Stack::upstream_ports() const {
  std::vector<uint16_t> ports;
  for (const auto& u : upstreams_) ports.push_back(u.port);
  return ports;
}

absl::StatusOr<CommandResult> Stack::Flexctl(std::vector<std::string> args) {
  ProcessOptions o;
  o.args = {BinaryPath("flexctl"), "--server", cp_address(), "--token", admin_key_};
  o.args.insert(o.args.end(), args.begin(), args.end());
  // The developer's own settings must not leak into the test.
  o.unset_env = {"FLEXGATE_SERVER", "FLEXGATE_TOKEN"};
  return RunCommand(std::move(o), absl::Seconds(60));
}

std::string Stack::WriteRouteConfig(absl::string_view file_name, absl::string_view route_to) {
  return dir_.WriteFile(file_name, RouteConfigYaml(upstream_ports(), route_to));
}

std::pair<ExitStatus, ExitStatus> Stack::Shutdown() {
  ExitStatus agent, cp;
  if (agent_ != nullptr) agent = agent_->Terminate(absl::Seconds(10));
  if (cp_ != nullptr) cp = cp_->Terminate(absl::Seconds(10));
  return {agent, cp};
}

std::string Stack::Logs() const {
  std::string out;
  for (const auto& p : retired_) {
    absl::StrAppend(&out, "=== (earlier run) ", p->name(), " ===\n", p->LogTail(2000), "\n");
  }
  if (cp_ != nullptr) absl::StrAppend(&out, "=== flexgate-cp ===\n", cp_->LogTail(3000), "\n");
  if (agent_ != nullptr) {
    absl::StrAppend(&out, "=== flexgate-agent ===\n", agent_->LogTail(3000), "\n");
  }
  for (const auto& u : upstreams_) {
    absl::StrAppend(&out, "=== upstream ", u.name, " ===\n", u.process->LogTail(1000), "\n");
  }
  return out;
}

}  // namespace flexgate::testing
