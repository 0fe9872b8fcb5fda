// flexctl's config commands over ConfigService: validate, apply, get, versions, diff, rollback.
#include <algorithm>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/canonical.h"
#include "common/config_loader.h"
#include "common/validator.h"
#include "controlplane/cli/client.h"
#include "controlplane/cli/commands.h"
#include "controlplane/cli/output.h"

namespace flexgate::cli {
namespace {

using flexgate::v1::Config;

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

// "1 added, 2 changed, 0 removed".
std::string DiffCounts(const v1::ConfigDiff& diff) {
  return absl::StrCat(diff.added(), " added, ", diff.changed(), " changed, ", diff.removed(),
                      " removed");
}

// The diff's own text ("+ route \"api\" (at 2)", one change per line), indented under a heading.
void PrintDiffText(const v1::ConfigDiff& diff, std::ostream& out) {
  std::string text = diff.text().empty() ? "no changes\n" : diff.text();
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    out << "  " << line << "\n";
  }
  if (diff.route_order_changed()) out << "  (route order changed)\n";
}

// Who would notice an apply: routes and agents.
void PrintImpact(const v1::Impact& impact, bool unchanged, std::ostream& out) {
  out << "impact: " << Plural(impact.affected_routes_size(), "route") << " affected";
  if (impact.affected_routes_size() > 0) {
    out << " (" << absl::StrJoin(impact.affected_routes(), ", ") << ")";
  }
  out << "; ";
  if (unchanged) {
    out << "no agent receives anything\n";
    return;
  }
  out << Plural(impact.agents_affected(), "agent") << " would receive it ("
      << impact.agents_connected() << " connected now)\n";
  if (!impact.agents_by_label().empty()) {
    std::map<std::string, uint32_t> sorted(impact.agents_by_label().begin(),
                                           impact.agents_by_label().end());
    std::vector<std::string> parts;
    for (const auto& [label, n] : sorted) parts.push_back(absl::StrCat(label, " ", n));
    out << "  agents by label: " << absl::StrJoin(parts, ", ") << "\n";
  }
  if (impact.agents_sample_size() > 0) {
    out << "  agents (sample of " << impact.agents_sample_size() << "):\n";
    for (const v1::AgentRef& a : impact.agents_sample()) {
      out << "    " << a.agent_id() << "  " << (a.connected() ? "connected" : "disconnected")
          << "  version " << a.applied_version() << "  " << FormatLabels(a.labels()) << "\n";
    }
  }
}

// Prints a validation result (offline or from the server) and returns its exit status.
int PrintValidation(const v1::ValidateResponse& r, bool from_server, const Invocation& inv,
                    std::ostream& out) {
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(r) << "\n";
    return r.valid() ? kExitOk : kExitRefused;
  }
  // Secret warnings get their own section below, so they are not printed twice.
  google::protobuf::RepeatedPtrField<v1::Diagnostic> diagnostics;
  for (const auto& d : r.diagnostics()) {
    if (!(d.code() == "plaintext_secret" && r.secret_warnings_size() > 0)) {
      *diagnostics.Add() = d;
    }
  }
  PrintDiagnostics(diagnostics, out);
  if (r.secret_warnings_size() > 0) {
    out << "secret warnings (" << r.secret_warnings_size() << ", values redacted):\n";
    for (const auto& d : r.secret_warnings()) {
      out << "  " << (d.path().empty() ? "(config)" : d.path()) << ": " << d.message() << "\n";
    }
  }
  if (!r.valid()) {
    out << "invalid: " << Plural(CountErrors(r.diagnostics()), "error") << "\n";
    return kExitRefused;
  }
  out << "valid (hash " << ShortHash(r.hash()) << ")";
  if (!from_server) {
    out << "\n";
    return kExitOk;
  }
  if (r.unchanged()) {
    out << ", identical to live version " << r.live_version() << "\n";
  } else if (r.live_version() == 0) {
    out << ", no version applied yet\n";
  } else {
    out << ", against live version " << r.live_version() << "\n";
  }
  if (!r.unchanged()) {
    out << "diff against " << (r.live_version() == 0 ? std::string("the empty config")
                                                       : absl::StrCat("live version ",
                                                                      r.live_version()))
        << ": " << DiffCounts(r.diff()) << "\n";
    PrintDiffText(r.diff(), out);
  }
  PrintImpact(r.impact(), r.unchanged(), out);
  return kExitOk;
}

// The Validate RPC for `validate --server` and `diff FILE`. On failure returns the exit status
// (after printing why); on success fills `resp` and returns kExitOk.
int CallValidate(const Invocation& inv, const std::string& file, v1::ValidateResponse* resp,
                 std::ostream& err) {
  auto config = ReadConfig(file);
  if (!config.ok()) {
    err << "flexctl: cannot read config: " << config.status().message() << "\n";
    return kExitCannotRun;
  }
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::ValidateRequest req;
  req.set_tenant(inv.tenant);
  *req.mutable_config() = std::move(*config);
  auto ctx = client->Context();
  grpc::Status s = client->config().Validate(ctx.get(), req, resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  return kExitOk;
}

}  // namespace

int CmdValidate(const Invocation& inv, std::ostream& out, std::ostream& err) {
  if (inv.server.empty()) {
    auto config = ReadConfig(inv.args[0]);
    if (!config.ok()) {
      err << "flexctl: cannot read config: " << config.status().message() << "\n";
      return kExitCannotRun;
    }
    // Offline: the same validator the control plane and the agent run; no live version, so no
    // diff and no impact.
    v1::ValidateResponse r;
    for (auto& d : ValidateConfig(*config)) {
      if (d.code() == "plaintext_secret") *r.add_secret_warnings() = d;
      *r.add_diagnostics() = std::move(d);
    }
    r.set_valid(CountErrors(r.diagnostics()) == 0);
    r.set_hash(ConfigHash(*config));
    return PrintValidation(r, /*from_server=*/false, inv, out);
  }
  v1::ValidateResponse resp;
  if (int code = CallValidate(inv, inv.args[0], &resp, err); code != kExitOk) return code;
  return PrintValidation(resp, /*from_server=*/true, inv, out);
}

int CmdApply(const Invocation& inv, std::ostream& out, std::ostream& err) {
  if (inv.server.empty()) {
    err << "flexctl: apply needs a control plane: pass --server HOST:PORT or set "
        << "FLEXGATE_SERVER\n";
    return kExitCannotRun;
  }
  auto config = ReadConfig(inv.args[0]);
  if (!config.ok()) {
    err << "flexctl: cannot read config: " << config.status().message() << "\n";
    return kExitCannotRun;
  }
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::ApplyRequest req;
  req.set_tenant(inv.tenant);
  *req.mutable_config() = std::move(*config);
  if (inv.base_version.has_value()) req.set_base_version(*inv.base_version);
  req.set_message(inv.message);
  v1::ApplyResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->config().Apply(ctx.get(), req, &resp);
  if (!s.ok()) {
    int code = ReportRpcError(s, inv, err);
    // A refused apply may carry its diagnostics as a serialized ApplyResponse in the status
    // details; print them one per line like validate does, unless the message already lists them.
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
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::GetRequest req;
  req.set_tenant(inv.tenant);
  req.set_version(inv.version);
  v1::GetResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->config().Get(ctx.get(), req, &resp);
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
  out << "# agents: " << v.acked_agents() << " acked, " << v.serving_agents() << "/"
      << v.connected_agents() << " connected serving it, " << v.rejected_agents()
      << " rejected\n";
  std::string yaml = MessageToYaml(v.config());
  if (!yaml.empty() && yaml.back() != '\n') yaml += '\n';
  out << yaml;
  return kExitOk;
}

int CmdVersions(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::ListVersionsResponse all;
  std::string token;
  do {
    v1::ListVersionsRequest req;
    req.set_tenant(inv.tenant);
    const uint32_t per_page = inv.page_size == 0 ? 1000 : inv.page_size;
    uint32_t want = inv.limit == 0 ? per_page : inv.limit - static_cast<uint32_t>(all.versions_size());
    req.set_page_size(std::min<uint32_t>(want, per_page));
    req.set_page_token(token);
    v1::ListVersionsResponse page;
    auto ctx = client->Context();
    grpc::Status s = client->config().ListVersions(ctx.get(), req, &page);
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
  // Convergence per version (issue 5): how many agents ACKed it, how many of the connected
  // agents serve it now, how many rejected it, and commit-to-ACK latency.
  Table rows = {{"VERSION", "HASH", "CREATED", "AUTHOR", "ACKED", "SERVING/CONNECTED", "REJECTED",
                 "P50", "P99", "MESSAGE"}};
  for (const auto& v : all.versions()) {
    rows.push_back({absl::StrCat(v.version()), ShortHash(v.hash()), FormatTimestamp(v.created_at()),
                    v.author().empty() ? "-" : v.author(), absl::StrCat(v.acked_agents()),
                    absl::StrCat(v.serving_agents(), "/", v.connected_agents()),
                    absl::StrCat(v.rejected_agents()),
                    FormatDuration(v.convergence_p50(), v.has_convergence_p50()),
                    FormatDuration(v.convergence_p99(), v.has_convergence_p99()), v.message()});
  }
  PrintTable(rows, out);
  return kExitOk;
}

int CmdDiff(const Invocation& inv, std::ostream& out, std::ostream& err) {
  if (!inv.args.empty()) {
    // A dry-run diff of a file against the live version: exactly what an apply would change.
    v1::ValidateResponse r;
    if (int code = CallValidate(inv, inv.args[0], &r, err); code != kExitOk) return code;
    int code = r.valid() ? kExitOk : kExitRefused;
    if (!r.valid()) {
      PrintDiagnostics(r.diagnostics(), err);
      err << "invalid: " << Plural(CountErrors(r.diagnostics()), "error")
          << " (an apply of this file would be refused)\n";
    }
    if (inv.output == OutputFormat::kJson) {
      out << ToJson(r) << "\n";
      return code;
    }
    std::string live = r.live_version() == 0 ? std::string("the empty config")
                                              : absl::StrCat("live version ", r.live_version());
    if (r.unchanged()) {
      out << "no changes: " << inv.args[0] << " equals " << live << "\n";
      return code;
    }
    out << "diff " << live << " -> " << inv.args[0] << ": " << DiffCounts(r.diff()) << "\n";
    PrintDiffText(r.diff(), out);
    return code;
  }

  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::DiffRequest req;
  req.set_tenant(inv.tenant);
  req.set_from_version(inv.from_version);
  req.set_to_version(inv.to_version);
  v1::DiffResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->config().Diff(ctx.get(), req, &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(resp) << "\n";
    return kExitOk;
  }
  auto name = [](uint64_t v) {
    return v == 0 ? std::string("empty") : absl::StrCat("version ", v);
  };
  out << "diff " << name(resp.from_version()) << " -> " << name(resp.to_version()) << ": "
      << DiffCounts(resp.diff()) << "\n";
  PrintDiffText(resp.diff(), out);
  return kExitOk;
}

int CmdRollback(const Invocation& inv, std::ostream& out, std::ostream& err) {
  uint64_t to = 0;
  // ParseArgs checked that VERSION is a positive integer.
  (void)absl::SimpleAtoi(inv.args[0], &to);
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::RollbackRequest req;
  req.set_tenant(inv.tenant);
  req.set_to_version(to);
  if (inv.base_version.has_value()) req.set_base_version(*inv.base_version);
  req.set_message(inv.message);
  v1::RollbackResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->config().Rollback(ctx.get(), req, &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(resp) << "\n";
    return kExitOk;
  }
  if (resp.unchanged()) {
    out << "unchanged: live version " << resp.version() << " already has the content of version "
        << to << " (hash " << ShortHash(resp.hash()) << ")\n";
    return kExitOk;
  }
  out << "rolled back to the content of version " << to << " as version " << resp.version()
      << " (hash " << ShortHash(resp.hash()) << "): " << DiffCounts(resp.diff()) << "\n";
  PrintDiffText(resp.diff(), out);
  return kExitOk;
}

}  // namespace flexgate::cli
