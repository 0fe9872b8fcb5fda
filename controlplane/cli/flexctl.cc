#include "controlplane/cli/flexctl.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/canonical.h"
#include "common/config_loader.h"
#include "common/validator.h"
#include "flexgate/v1/config_service.grpc.pb.h"
#include "google/protobuf/util/json_util.h"

namespace flexgate::cli {
namespace {

using flexgate::v1::Config;
using flexgate::v1::ConfigService;
using flexgate::v1::Diagnostic;
using google::protobuf::RepeatedPtrField;

constexpr absl::string_view kUsage = R"(usage: flexctl [global options] COMMAND [command options]

Commands:
  validate FILE     Check a config (YAML or JSON; "-" = stdin). Offline with the shared
                    validator, or the control plane's dry-run when --server is given.
  apply FILE        Store FILE as the tenant's next config version.
      --base-version N   refuse (conflict) unless the live version is still N (0 = none yet)
      --message TEXT     change description recorded with the version
  get               Print the live config as YAML (or JSON with --output json).
      --version N        a given version instead of the live one
  versions          List config versions, newest first.
      --limit N          at most N versions

Global options:
  --server HOST:PORT     flexgate-cp gRPC address (default $FLEXGATE_SERVER)
  --token KEY            API key (default $FLEXGATE_TOKEN), sent as "authorization: Bearer KEY"
  --tenant NAME          tenant, for keys that span tenants
  --output table|json    output format (default table)
  --timeout DURATION     per-request deadline such as 15s (default 15s)
  -h, --help             this text

Exit status: 0 success or valid; 1 refused or invalid; 2 could not run (bad usage, unreadable
or malformed file, server unreachable).
)";

// --- Argument parsing ----------------------------------------------------------------------

// Which command accepts which option; global options are accepted everywhere.
bool OptionAllowed(absl::string_view command, absl::string_view option) {
  if (option == "--base-version" || option == "--message") return command == "apply";
  if (option == "--version") return command == "get";
  if (option == "--limit") return command == "versions";
  return true;
}

bool TakesValue(absl::string_view option) {
  return option == "--server" || option == "--token" || option == "--tenant" ||
         option == "--output" || option == "-o" || option == "--timeout" ||
         option == "--base-version" || option == "--message" || option == "-m" ||
         option == "--version" || option == "--limit";
}

absl::Status ParseUint(absl::string_view option, const std::string& value, uint64_t* out) {
  if (!absl::SimpleAtoi(value, out)) {
    return absl::InvalidArgumentError(
        absl::StrCat(option, " needs a non-negative integer, got \"", value, "\""));
  }
  return absl::OkStatus();
}

// --- Output --------------------------------------------------------------------------------

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.add_whitespace = true;
  // CI reads fields such as "valid": false, which proto3 JSON would otherwise omit.
  options.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

std::string ShortHash(const std::string& hash) { return hash.substr(0, 12); }

// One diagnostic per line as "path: code: message"; non-errors say what they are.
void PrintDiagnostics(const RepeatedPtrField<Diagnostic>& diagnostics, std::ostream& os) {
  for (const Diagnostic& d : diagnostics) {
    os << (d.path().empty() ? "(config)" : d.path()) << ": " << d.code() << ": " << d.message();
    if (d.severity() == Diagnostic::WARNING) os << " (warning)";
    if (d.severity() == Diagnostic::INFO) os << " (info)";
    os << "\n";
  }
}

int CountErrors(const RepeatedPtrField<Diagnostic>& diagnostics) {
  int n = 0;
  for (const Diagnostic& d : diagnostics) n += d.severity() == Diagnostic::ERROR ? 1 : 0;
  return n;
}

std::string FormatTimestamp(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(t.seconds()),
                          absl::UTCTimeZone());
}

// --- Talking to the control plane -----------------------------------------------------------

class Client {
 public:
  explicit Client(const Invocation& inv)
      : inv_(inv),
        stub_(ConfigService::NewStub(
            grpc::CreateChannel(inv.server, grpc::InsecureChannelCredentials()))) {}

  // A fresh context per call: metadata and deadline.
  std::unique_ptr<grpc::ClientContext> Context() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!inv_.token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", inv_.token));
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + inv_.timeout));
    return ctx;
  }

  ConfigService::Stub& stub() { return *stub_; }

 private:
  const Invocation& inv_;
  std::unique_ptr<ConfigService::Stub> stub_;
};

// Prints a failed RPC and returns the exit status it maps to: refusals (the server understood
// and said no) are 1, failures to get an answer at all are 2.
int ReportRpcError(const grpc::Status& s, const Invocation& inv, std::ostream& err) {
  const std::string& msg = s.error_message();
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      err << "flexctl: cannot reach flexgate-cp at " << inv.server << ": " << msg << "\n";
      return kExitCannotRun;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      err << "flexctl: no answer from flexgate-cp at " << inv.server << " within "
          << absl::FormatDuration(inv.timeout) << "\n";
      return kExitCannotRun;
    case grpc::StatusCode::ABORTED:
      err << "conflict: " << msg << "\n";
      return kExitRefused;
    case grpc::StatusCode::INVALID_ARGUMENT:
      err << "refused: " << msg << "\n";
      return kExitRefused;
    case grpc::StatusCode::UNAUTHENTICATED:
      err << "unauthenticated: " << msg << " (set --token or FLEXGATE_TOKEN)\n";
      return kExitRefused;
    case grpc::StatusCode::PERMISSION_DENIED:
      err << "permission denied: " << msg << "\n";
      return kExitRefused;
    case grpc::StatusCode::NOT_FOUND:
      err << "not found: " << msg << "\n";
      return kExitRefused;
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      err << "refused: " << msg << "\n";
      return kExitRefused;
    case grpc::StatusCode::UNIMPLEMENTED:
      err << "flexctl: flexgate-cp at " << inv.server << " does not implement this call: " << msg
          << "\n";
      return kExitCannotRun;
    default:
      err << "flexctl: server error (code " << static_cast<int>(s.error_code()) << "): " << msg
          << "\n";
      return kExitCannotRun;
  }
}

// Reads FILE ("-" = stdin) as a config. Any failure is "could not run" (exit 2).
absl::StatusOr<Config> ReadConfig(const std::string& file) {
  if (file == "-") {
    std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    auto config = ParseConfig(text);
    if (!config.ok()) {
      return absl::Status(config.status().code(),
                          absl::StrCat("<stdin>: ", config.status().message()));
    }
    return config;
  }
  return LoadConfigFile(file);
}

bool RequireServer(const Invocation& inv, std::ostream& err) {
  if (!inv.server.empty()) return true;
  err << "flexctl: " << inv.command << " needs a control plane: pass --server HOST:PORT or set "
      << "FLEXGATE_SERVER\n";
  return false;
}

// --- Commands -------------------------------------------------------------------------------

// Prints a validation result (offline or from the server) and returns its exit status.
int PrintValidation(const v1::ValidateResponse& r, const Invocation& inv, std::ostream& out) {
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(r) << "\n";
    return r.valid() ? kExitOk : kExitRefused;
  }
  PrintDiagnostics(r.diagnostics(), out);
  if (r.valid()) {
    out << "valid (hash " << ShortHash(r.hash()) << ")";
    if (r.unchanged()) out << ", identical to live version " << r.live_version();
    out << "\n";
    return kExitOk;
  }
  int errors = CountErrors(r.diagnostics());
  out << "invalid: " << errors << (errors == 1 ? " error" : " errors") << "\n";
  return kExitRefused;
}

int CmdValidate(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto config = ReadConfig(inv.args[0]);
  if (!config.ok()) {
    err << "flexctl: cannot read config: " << config.status().message() << "\n";
    return kExitCannotRun;
  }
  if (inv.server.empty()) {
    // Offline: the same validator the control plane and the agent run.
    v1::ValidateResponse r;
    for (auto& d : ValidateConfig(*config)) *r.add_diagnostics() = std::move(d);
    r.set_valid(CountErrors(r.diagnostics()) == 0);
    r.set_hash(ConfigHash(*config));
    return PrintValidation(r, inv, out);
  }
  Client client(inv);
  v1::ValidateRequest req;
  req.set_tenant(inv.tenant);
  *req.mutable_config() = std::move(*config);
  v1::ValidateResponse resp;
  auto ctx = client.Context();
  grpc::Status s = client.stub().Validate(ctx.get(), req, &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  return PrintValidation(resp, inv, out);
}

int CmdApply(const Invocation& inv, std::ostream& out, std::ostream& err) {
  if (!RequireServer(inv, err)) return kExitCannotRun;
  auto config = ReadConfig(inv.args[0]);
  if (!config.ok()) {
    err << "flexctl: cannot read config: " << config.status().message() << "\n";
    return kExitCannotRun;
  }
  Client client(inv);
  v1::ApplyRequest req;
  req.set_tenant(inv.tenant);
  *req.mutable_config() = std::move(*config);
  if (inv.base_version.has_value()) req.set_base_version(*inv.base_version);
  req.set_message(inv.message);
  v1::ApplyResponse resp;
  auto ctx = client.Context();
  grpc::Status s = client.stub().Apply(ctx.get(), req, &resp);
  if (!s.ok()) {
    int code = ReportRpcError(s, inv, err);
    // A refused apply may carry its diagnostics as a serialized ApplyResponse in the status
    // details; print them one per line like validate does.
    // Skipped when the message already lists them.
    v1::ApplyResponse details;
    if (!s.error_details().empty() && details.ParseFromString(s.error_details()) &&
        details.diagnostics_size() > 0 &&
        !absl::StrContains(s.error_message(), details.diagnostics(0).path())) {
      PrintDiagnostics(details.diagnostics(), err);
    }
    return code;
  }
  if (CountErrors(resp.diagnostics()) > 0 && resp.version() == 0) {
    // A server that reports refusal in the response body rather than the status.
    PrintDiagnostics(resp.diagnostics(), err);
    err << "invalid: the config was not applied\n";
    return kExitRefused;
  }
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(resp) << "\n";
    return kExitOk;
  }
  PrintDiagnostics(resp.diagnostics(), out);
  if (resp.unchanged()) {
    out << "unchanged: live version " << resp.version() << " has the same content (hash "
        << ShortHash(resp.hash()) << ")\n";
  } else {
    out << "applied version " << resp.version() << " (hash " << ShortHash(resp.hash()) << ")\n";
  }
  return kExitOk;
}

int CmdGet(const Invocation& inv, std::ostream& out, std::ostream& err) {
  if (!RequireServer(inv, err)) return kExitCannotRun;
  Client client(inv);
  v1::GetRequest req;
  req.set_tenant(inv.tenant);
  req.set_version(inv.version);
  v1::GetResponse resp;
  auto ctx = client.Context();
  grpc::Status s = client.stub().Get(ctx.get(), req, &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  const v1::ConfigVersion& v = resp.version();
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(v) << "\n";
    return kExitOk;
  }
  // YAML comments keep the output a valid config file: `flexctl get > f && flexctl apply f`.
  out << "# version " << v.version() << ", hash " << v.hash() << "\n";
  out << "# created " << FormatTimestamp(v.created_at());
  if (!v.author().empty()) out << " by " << v.author();
  out << "\n";
  if (!v.message().empty()) out << "# message: " << v.message() << "\n";
  out << MessageToYaml(v.config());
  return kExitOk;
}

int CmdVersions(const Invocation& inv, std::ostream& out, std::ostream& err) {
  if (!RequireServer(inv, err)) return kExitCannotRun;
  Client client(inv);
  v1::ListVersionsResponse all;
  std::string token;
  do {
    v1::ListVersionsRequest req;
    req.set_tenant(inv.tenant);
    uint32_t want = inv.limit == 0 ? 100 : inv.limit - static_cast<uint32_t>(all.versions_size());
    req.set_page_size(std::min<uint32_t>(want, 100));
    req.set_page_token(token);
    v1::ListVersionsResponse page;
    auto ctx = client.Context();
    grpc::Status s = client.stub().ListVersions(ctx.get(), req, &page);
    if (!s.ok()) return ReportRpcError(s, inv, err);
    for (auto& v : *page.mutable_versions()) {
      if (inv.limit != 0 && all.versions_size() >= static_cast<int>(inv.limit)) break;
      *all.add_versions() = std::move(v);
    }
    token = page.next_page_token();
  } while (!token.empty() &&
           (inv.limit == 0 || all.versions_size() < static_cast<int>(inv.limit)));

  if (inv.output == OutputFormat::kJson) {
    out << ToJson(all) << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"VERSION", "HASH", "CREATED", "AUTHOR", "MESSAGE"}};
  for (const auto& v : all.versions()) {
    rows.push_back({absl::StrCat(v.version()), ShortHash(v.hash()), FormatTimestamp(v.created_at()),
                    v.author().empty() ? "-" : v.author(), v.message()});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i]);
      if (i + 1 < row.size()) line.append(width[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  }
  return kExitOk;
}

}  // namespace

std::string Usage() { return std::string(kUsage); }

absl::StatusOr<Invocation> ParseArgs(const std::vector<std::string>& args, const Environment& env) {
  Invocation inv;
  inv.server = env.server;
  inv.token = env.token;

  // Options are collected first and checked against the command once it is known, so they may
  // appear on either side of it.
  std::vector<std::pair<std::string, std::string>> options;
  std::vector<std::string> positionals;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      inv.help = true;
      continue;
    }
    if (a == "--") {
      positionals.insert(positionals.end(), args.begin() + static_cast<long>(i) + 1, args.end());
      break;
    }
    if (a.size() > 1 && a[0] == '-') {
      std::string name = a, value;
      size_t eq = a.find('=');
      if (eq != std::string::npos && absl::StartsWith(a, "--")) {
        name = a.substr(0, eq);
        value = a.substr(eq + 1);
      } else if (TakesValue(a)) {
        if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat(a, " needs a value"));
        value = args[++i];
      }
      if (!TakesValue(name)) return absl::InvalidArgumentError(absl::StrCat("unknown option ", name));
      options.emplace_back(name, value);
      continue;
    }
    positionals.push_back(a);
  }
  if (inv.help) return inv;
  if (positionals.empty()) return absl::InvalidArgumentError("no command given");
  inv.command = positionals[0];
  inv.args.assign(positionals.begin() + 1, positionals.end());
  if (inv.command == "help") {
    inv.help = true;
    return inv;
  }

  size_t want_args;
  if (inv.command == "validate" || inv.command == "apply") {
    want_args = 1;
  } else if (inv.command == "get" || inv.command == "versions") {
    want_args = 0;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown command \"", inv.command, "\""));
  }
  if (inv.args.size() != want_args) {
    return absl::InvalidArgumentError(
        want_args == 1 ? absl::StrCat(inv.command, " needs exactly one FILE argument")
                       : absl::StrCat(inv.command, " takes no arguments, got \"", inv.args[0], "\""));
  }

  for (const auto& [name, value] : options) {
    if (!OptionAllowed(inv.command, name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " is not an option of ", inv.command));
    }
    if (name == "--server") {
      inv.server = value;
    } else if (name == "--token") {
      inv.token = value;
    } else if (name == "--tenant") {
      inv.tenant = value;
    } else if (name == "--output" || name == "-o") {
      if (value == "table") {
        inv.output = OutputFormat::kTable;
      } else if (value == "json") {
        inv.output = OutputFormat::kJson;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("--output must be table or json, got \"", value, "\""));
      }
    } else if (name == "--timeout") {
      if (!absl::ParseDuration(value, &inv.timeout) || inv.timeout <= absl::ZeroDuration()) {
        return absl::InvalidArgumentError(
            absl::StrCat("--timeout needs a duration such as 15s, got \"", value, "\""));
      }
    } else if (name == "--base-version") {
      uint64_t v;
      if (auto st = ParseUint(name, value, &v); !st.ok()) return st;
      inv.base_version = v;
    } else if (name == "--message" || name == "-m") {
      inv.message = value;
    } else if (name == "--version") {
      if (auto st = ParseUint(name, value, &inv.version); !st.ok()) return st;
    } else if (name == "--limit") {
      uint64_t v;
      if (auto st = ParseUint(name, value, &v); !st.ok()) return st;
      if (v > UINT32_MAX) return absl::InvalidArgumentError("--limit is too large");
      inv.limit = static_cast<uint32_t>(v);
    }
  }
  return inv;
}

int Run(const Invocation& inv, std::ostream& out, std::ostream& err) {
  if (inv.help) {
    out << Usage();
    return kExitOk;
  }
  if (inv.command == "validate") return CmdValidate(inv, out, err);
  if (inv.command == "apply") return CmdApply(inv, out, err);
  if (inv.command == "get") return CmdGet(inv, out, err);
  if (inv.command == "versions") return CmdVersions(inv, out, err);
  err << "flexctl: unknown command \"" << inv.command << "\"\n";
  return kExitCannotRun;
}

int RunFlexctl(const std::vector<std::string>& args, const Environment& env, std::ostream& out,
               std::ostream& err) {
  auto inv = ParseArgs(args, env);
  if (!inv.ok()) {
    err << "flexctl: " << inv.status().message() << "\n"
        << "Run 'flexctl --help' for usage.\n";
    return kExitCannotRun;
  }
  return Run(*inv, out, err);
}

}  // namespace flexgate::cli
