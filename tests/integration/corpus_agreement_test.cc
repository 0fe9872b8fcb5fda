// Issue 4: "the agent's own validation agrees with Validate on every case". For every file of
// tests/configs/invalid and tests/configs/valid:
//  - the control plane's Validate RPC (a real flexgate-cp over PostgreSQL) gives a verdict and a
//    set of ERROR diagnostics (code, path);
//  - the agent's apply path gives its own: the very SnapshotApplier the agent runs on every
//    snapshot (hash check, validator with the agent's capability list, CompileRouteTable, swap on
//    real ProxyServer workers), with the agent's ValidationOptions;
//  - both verdicts and both ERROR sets are equal, every config the validator accepts compiles
//    and is served, and each file's "# expect: <code> <path>" lines appear in the control
//    plane's diagnostics. The control plane's hash equals the agent's for every config.
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/canonical.h"
#include "common/config_loader.h"
#include "common/validator.h"
#include "dataplane/agent/agent_state.h"
#include "dataplane/agent/route_publisher.h"
#include "dataplane/agent/snapshot_applier.h"
#include "dataplane/proxy/proxy_server.h"
#include "dataplane/proxy/route_table.h"
#include "tests/harness/proc/test_util.h"
#include "tests/configs/corpus.h"
#include "tests/integration/fault_support.h"
#include "tests/integration/http_probe.h"
#include "tests/integration/stack.h"

namespace flexgate::testing {
namespace {

namespace fs = std::filesystem;
namespace corpus = flexgate::testing::corpus;
using flexgate::v1::Diagnostic;
using CodePath = std::pair<std::string, std::string>;

// "# expect: <code> <path>" header lines.
std::vector<CodePath> Expectations(const std::string& text) {
  std::vector<CodePath> out;
  for (const std::string& rest : corpus::HeaderValues(text, "expect")) {
    size_t space = rest.find(' ');
    if (space == std::string::npos) {
      out.emplace_back(rest, "");
    } else {
      out.emplace_back(rest.substr(0, space), rest.substr(space + 1));
    }
  }
  return out;
}

std::set<CodePath> ErrorSet(const google::protobuf::RepeatedPtrField<Diagnostic>& diags) {
  std::set<CodePath> out;
  for (const auto& d : diags) {
    if (d.severity() == Diagnostic::ERROR) out.emplace(d.code(), d.path());
  }
  return out;
}

// The agent reports a rejection as FormatDiagnostics lines in the status message
// ("error: <path>: <code>: <message>"); recover the (code, path) of the ERROR lines.
std::set<CodePath> ErrorSetFromMessage(absl::string_view message) {
  std::set<CodePath> out;
  for (absl::string_view line : absl::StrSplit(message, '\n')) {
    if (!absl::ConsumePrefix(&line, "error: ")) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(": ", 2));
    if (parts.size() < 2) continue;
    out.emplace(std::string(parts[1]), std::string(parts[0]));
  }
  return out;
}

std::string Show(const std::set<CodePath>& s) {
  if (s.empty()) return "(none)";
  return absl::StrJoin(s, ", ", [](std::string* out, const CodePath& cp) {
    absl::StrAppend(out, cp.first, "@", cp.second);
  });
}

// The agent's side: real workers, the production publisher, and the agent's applier, as
// flexgate-agent wires them (dataplane/agent/agent.cc).
class AgentApplyPath {
 public:
  static std::unique_ptr<AgentApplyPath> Create() {
    auto path = std::unique_ptr<AgentApplyPath>(new AgentApplyPath());
    dataplane::ProxyServerOptions options;
    options.listen_addresses = {"127.0.0.1:0"};
    options.workers = 1;
    auto proxy = dataplane::ProxyServer::Create(options);
    if (!proxy.ok()) FAIL("ProxyServer::Create: " << proxy.status().ToString());
    path->proxy_ = *std::move(proxy);
    if (absl::Status s = path->proxy_->Start(); !s.ok()) FAIL("ProxyServer::Start: " << s);
    path->publisher_ = agent::NewProxyRoutePublisher(path->proxy_.get());
    // The agent's validation options: the capability check on, with everything this build
    // enforces (flexgate-agent without the test-only --disable-capability).
    ValidationOptions validation;
    validation.check_capabilities = true;
    validation.capabilities = AgentCapabilities();
    path->applier_ = std::make_unique<agent::SnapshotApplier>(path->publisher_.get(),
                                                              &path->state_, validation);
    return path;
  }
  ~AgentApplyPath() {
    if (proxy_) proxy_->Drain(absl::Seconds(5));
  }

  absl::StatusOr<absl::Duration> Apply(const flexgate::v1::Config& config, uint64_t version) {
    return applier_->Apply(config, version, ConfigHash(config),
                           agent::SnapshotSource::kControlPlane, absl::Now());
  }
  const agent::AgentState& state() const { return state_; }
  uint16_t port() const { return proxy_->listen_port(0); }

 private:
  AgentApplyPath() = default;
  std::unique_ptr<dataplane::ProxyServer> proxy_;
  std::unique_ptr<agent::RoutePublisher> publisher_;
  agent::AgentState state_;
  std::unique_ptr<agent::SnapshotApplier> applier_;
};

// What both sides said about one corpus file.
struct FileResult {
  std::string name;  // "invalid/01_unknown_cluster.yaml"
  bool invalid_dir = false;
  std::vector<CodePath> expectations;
  flexgate::v1::ValidateResponse cp;
  std::string local_hash;
  // The agent's apply: OK, rejected by its validator (with the ERROR set), or failed after
  // validation (compile or publish) with `agent_error`.
  bool agent_applied = false;
  bool agent_validator_rejected = false;
  std::set<CodePath> agent_errors;
  std::string agent_error;
  bool served_unchanged_on_error = true;
};

constexpr absl::string_view kValidatorRejection = "config rejected by the agent's validator:";

// Runs every corpus file through a real control plane's Validate and the agent's apply path.
// Fails the calling test (REQUIRE) only when the machinery itself does not work.
std::vector<FileResult> RunCorpus() {
  // The control plane and one real flexgate-agent: the agent announces its capabilities in its
  // Hello, so Validate checks each config against what the fleet can enforce, as it does for
  // operators. Validate never writes, so the agent is never sent any of these configs.
  auto started = Stack::Start({.upstreams = 0, .agent = true});
  if (!started.ok()) FAIL("stack did not start: " << started.status().ToString());
  Stack& stack = **started;
  CpClient cp(stack.cp_address(), stack.admin_key());
  const bool known = WaitFor(
      [&] {
        auto agents = cp.ListAgents();
        return agents.ok() && agents->agents_size() == 1 &&
               agents->agents(0).capabilities_size() > 0;
      },
      absl::Seconds(30));
  if (!known) FAIL("the control plane never recorded the agent's capabilities");
  auto agent = AgentApplyPath::Create();

  std::vector<FileResult> results;
  uint64_t next_version = 1;
  for (const char* subdir : {"invalid", "valid"}) {
    const std::vector<fs::path> corpus = corpus::Files(subdir);
    CHECK(corpus.size() >= (std::string(subdir) == "invalid" ? 30u : 3u));
    for (const fs::path& file : corpus) {
      FileResult r;
      r.name = absl::StrCat(subdir, "/", file.filename().string());
      r.invalid_dir = std::string(subdir) == "invalid";
      INFO("file: " << r.name);
      r.expectations = Expectations(corpus::Read(file));
      auto config = LoadConfigFile(file.string());
      INFO("load: " << config.status().ToString());
      REQUIRE(config.ok());
      r.local_hash = ConfigHash(*config);

      auto verdict = cp.Validate(*config);
      INFO("Validate: " << verdict.status().ToString());
      REQUIRE(verdict.ok());
      r.cp = *std::move(verdict);

      const uint64_t before = agent->state().served() ? agent->state().served()->version : 0;
      auto applied = agent->Apply(*config, next_version);
      if (applied.ok()) {
        r.agent_applied = true;
        CHECK(agent->state().served()->version == next_version);
        ++next_version;
      } else {
        r.agent_error = std::string(applied.status().message());
        r.agent_validator_rejected =
            applied.status().code() == absl::StatusCode::kInvalidArgument &&
            absl::StartsWith(r.agent_error, kValidatorRejection);
        if (r.agent_validator_rejected) r.agent_errors = ErrorSetFromMessage(r.agent_error);
        const uint64_t after = agent->state().served() ? agent->state().served()->version : 0;
        r.served_unchanged_on_error = after == before;
      }
      results.push_back(std::move(r));
    }
  }
  // The worker still answers after all of it.
  if (agent->state().served() != nullptr) {
    auto r = probe::HttpGet(agent->port(), "/", absl::Seconds(5));
    CHECK(r.ok());
  }
  return results;
}

TEST_CASE("The agent's own validation agrees with the control plane's Validate on every corpus "
          "file") {
  const std::vector<FileResult> results = RunCorpus();
  int expectations = 0, invalid = 0;
  for (const FileResult& r : results) {
    INFO("file: " << r.name);
    const std::set<CodePath> cp_errors = ErrorSet(r.cp.diagnostics());
    INFO("control plane: valid=" << r.cp.valid() << " errors " << Show(cp_errors));
    INFO("agent: " << (r.agent_applied ? std::string("applied") : r.agent_error));
    CHECK(r.cp.valid() == cp_errors.empty());
    CHECK(r.cp.hash() == r.local_hash);
    // The agent's validator accepts exactly what Validate accepts, with the same ERRORs.
    const bool agent_valid = !r.agent_validator_rejected;
    CHECK(agent_valid == r.cp.valid());
    CHECK(r.agent_errors == (r.agent_validator_rejected ? cp_errors : std::set<CodePath>{}));
    if (r.agent_validator_rejected) CHECK_FALSE(r.agent_errors.empty());
    CHECK(r.served_unchanged_on_error);  // a rejection changes nothing the agent serves

    // The file's own expectations, in the control plane's answer.
    if (r.invalid_dir) {
      ++invalid;
      CHECK_FALSE(r.expectations.empty());  // every case names what it must produce
    } else {
      // A valid file is refused only for what this fleet's agents do not enforce.
      for (const CodePath& error : cp_errors) CHECK(error.first == "unsupported_feature");
    }
    for (const CodePath& expect : r.expectations) {
      ++expectations;
      INFO("expect: " << expect.first << " " << expect.second);
      const bool found =
          std::any_of(r.cp.diagnostics().begin(), r.cp.diagnostics().end(), [&](const Diagnostic& d) {
            return d.code() == expect.first && d.path() == expect.second;
          });
      CHECK(found);
    }
  }
  CHECK(invalid >= 30);
  std::printf("corpus_agreement: %zu files (%d invalid), %d expectations checked\n",
              results.size(), invalid, expectations);
}

// "Valid" must mean "an agent would serve it": every config Validate accepts for this fleet
// compiles into a RouteTable and is swapped in by the workers, and every config the validator
// accepts at all (capabilities aside) compiles.
TEST_CASE("Every corpus config the validator accepts compiles and is served by the agent") {
  const std::vector<FileResult> results = RunCorpus();
  int accepted = 0, served = 0, compiled = 0;
  for (const FileResult& r : results) {
    INFO("file: " << r.name);
    const auto config = LoadConfigFile(std::string(FLEXGATE_CONFIGS_DIR) + "/" + r.name);
    REQUIRE(config.ok());
    if (IsValid(ValidateConfig(*config))) {
      auto table = dataplane::CompileRouteTable(*config, 1, r.local_hash);
      INFO("compile: " << table.status().ToString());
      CHECK(table.ok());
      if (table.ok()) ++compiled;
    }
    if (!r.cp.valid()) continue;
    ++accepted;
    INFO("agent: " << (r.agent_applied ? std::string("applied") : r.agent_error));
    CHECK(r.agent_applied);
    if (r.agent_applied) ++served;
  }
  CHECK(accepted >= 3);
  CHECK(compiled >= 5);
  std::printf("corpus_agreement: %d accepted configs, %d compiled and served, %d compiled\n",
              accepted, served, compiled);
}

}  // namespace
}  // namespace flexgate::testing
