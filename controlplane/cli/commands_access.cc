// flexctl's access, audit and fleet commands: keys, tokens, tenants (TenantService, KeyService),
// audit (AuditService) and agents (FleetService).
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "controlplane/cli/client.h"
#include "controlplane/cli/commands.h"
#include "controlplane/cli/output.h"
#include "google/protobuf/util/time_util.h"

namespace flexgate::cli {
namespace {

using google::protobuf::util::TimeUtil;

// The numeric id argument (ParseArgs checked it).
uint64_t IdArg(const Invocation& inv) {
  uint64_t id = 0;
  (void)absl::SimpleAtoi(inv.args[0], &id);
  return id;
}

std::string Revoked(bool revoked, const google::protobuf::Timestamp& at) {
  if (!revoked) return "-";
  return FormatTimestamp(at);
}

// A secret is printed alone on stdout (so `KEY=$(flexctl keys create ...)` captures exactly it)
// and everything about it on stderr, with the reminder that it is never shown again.
void PrintSecret(const std::string& secret, const std::string& what, std::ostream& out,
                 std::ostream& err) {
  out << secret << "\n";
  err << what << "\n"
      << "warning: this secret is shown only now and cannot be retrieved again; store it safely\n";
}

std::string TenantOf(const Invocation& inv, const std::string& from_server) {
  if (!from_server.empty()) return from_server;
  return inv.tenant.empty() ? "(own)" : inv.tenant;
}

// "3 (ci)"; "control-plane" for changes the control plane made itself (key id 0).
std::string KeyLabel(uint64_t key_id, const std::string& name) {
  if (key_id == 0) return "control-plane";
  return name.empty() ? absl::StrCat(key_id) : absl::StrCat(key_id, " (", name, ")");
}

std::string StateName(v1::FleetAgent::State s) { return v1::FleetAgent::State_Name(s); }

}  // namespace

// --- keys ---------------------------------------------------------------------------------------

int CmdKeysCreate(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::CreateKeyRequest req;
  req.set_tenant(inv.tenant);
  req.set_name(inv.name);
  req.set_role(inv.role);
  v1::CreateKeyResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->keys().CreateKey(ctx.get(), req, &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  const v1::ApiKey& k = resp.key();
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(resp) << "\n";
    err << "warning: \"secret\" is shown only now and cannot be retrieved again; store it safely\n";
    return kExitOk;
  }
  PrintSecret(resp.secret(),
              absl::StrCat("created key ", k.key_id(), " \"", k.name(), "\" (", k.role(),
                           ") in tenant ", TenantOf(inv, k.tenant())),
              out, err);
  return kExitOk;
}

int CmdKeysList(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::ListKeysRequest req;
  req.set_tenant(inv.tenant);
  req.set_include_revoked(inv.include_revoked);
  v1::ListKeysResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->keys().ListKeys(ctx.get(), req, &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(resp) << "\n";
    return kExitOk;
  }
  Table rows = {{"ID", "NAME", "ROLE", "TENANT", "CREATED", "REVOKED"}};
  for (const auto& k : resp.keys()) {
    rows.push_back({absl::StrCat(k.key_id()), k.name(), k.role(), k.tenant(),
                    FormatTimestamp(k.created_at()), Revoked(k.revoked(), k.revoked_at())});
  }
  PrintTable(rows, out);
  return kExitOk;
}

int CmdKeysRevoke(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::RevokeKeyRequest req;
  req.set_tenant(inv.tenant);
  req.set_key_id(IdArg(inv));
  v1::RevokeKeyResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->keys().RevokeKey(ctx.get(), req, &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(resp) << "\n";
    return kExitOk;
  }
  const v1::ApiKey& k = resp.key();
  out << "revoked key " << k.key_id() << " \"" << k.name() << "\" (" << k.role() << ") at "
      << FormatTimestamp(k.revoked_at()) << "\n";
  return kExitOk;
}

// --- tokens -------------------------------------------------------------------------------------

int CmdTokensCreate(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::CreateTokenRequest req;
  req.set_tenant(inv.tenant);
  req.set_name(inv.name);
  v1::CreateTokenResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->keys().CreateToken(ctx.get(), req, &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  const v1::EnrollmentToken& t = resp.token();
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(resp) << "\n";
    err << "warning: \"secret\" is shown only now and cannot be retrieved again; store it safely\n";
    return kExitOk;
  }
  PrintSecret(resp.secret(),
              absl::StrCat("created agent enrollment token ", t.token_id(), " \"", t.name(),
                           "\" in tenant ", TenantOf(inv, t.tenant()),
                           " (flexgate-agent --token TOKEN)"),
              out, err);
  return kExitOk;
}

int CmdTokensList(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::ListTokensRequest req;
  req.set_tenant(inv.tenant);
  req.set_include_revoked(inv.include_revoked);
  v1::ListTokensResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->keys().ListTokens(ctx.get(), req, &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(resp) << "\n";
    return kExitOk;
  }
  Table rows = {{"ID", "NAME", "TENANT", "CREATED", "REVOKED"}};
  for (const auto& t : resp.tokens()) {
    rows.push_back({absl::StrCat(t.token_id()), t.name(), t.tenant(),
                    FormatTimestamp(t.created_at()), Revoked(t.revoked(), t.revoked_at())});
  }
  PrintTable(rows, out);
  return kExitOk;
}

int CmdTokensRevoke(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::RevokeTokenRequest req;
  req.set_tenant(inv.tenant);
  req.set_token_id(IdArg(inv));
  v1::RevokeTokenResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->keys().RevokeToken(ctx.get(), req, &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(resp) << "\n";
    return kExitOk;
  }
  const v1::EnrollmentToken& t = resp.token();
  out << "revoked agent enrollment token " << t.token_id() << " \"" << t.name() << "\" at "
      << FormatTimestamp(t.revoked_at()) << "\n";
  return kExitOk;
}

// --- tenants ------------------------------------------------------------------------------------

int CmdTenantsCreate(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::CreateTenantRequest req;
  req.set_name(inv.args[0]);
  req.set_admin_key_name(inv.name);
  v1::CreateTenantResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->tenants().CreateTenant(ctx.get(), req, &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(resp) << "\n";
    err << "warning: \"admin_key_secret\" is shown only now and cannot be retrieved again; "
           "store it safely\n";
    return kExitOk;
  }
  PrintSecret(resp.admin_key_secret(),
              absl::StrCat("created tenant \"", resp.tenant().name(), "\" with admin key ",
                           resp.admin_key().key_id(), " \"", resp.admin_key().name(), "\""),
              out, err);
  return kExitOk;
}

int CmdTenantsList(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::ListTenantsResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->tenants().ListTenants(ctx.get(), v1::ListTenantsRequest(), &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(resp) << "\n";
    return kExitOk;
  }
  Table rows = {{"NAME", "CREATED", "LIVE VERSION", "HASH"}};
  for (const auto& t : resp.tenants()) {
    rows.push_back({t.name(), FormatTimestamp(t.created_at()),
                    t.live_version() == 0 ? "-" : absl::StrCat(t.live_version()),
                    ShortHash(t.live_hash())});
  }
  PrintTable(rows, out);
  return kExitOk;
}

// --- audit --------------------------------------------------------------------------------------

int CmdAudit(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  // Follows the pages until the trail (or --limit) is exhausted, so a script sees every row.
  v1::ListAuditResponse all;
  std::string token;
  do {
    v1::ListAuditRequest req;
    req.set_tenant(inv.tenant);
    req.set_action(inv.action);
    if (inv.since) *req.mutable_since() = TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(*inv.since));
    if (inv.until) *req.mutable_until() = TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(*inv.until));
    req.set_key_id(inv.key_id);
    const uint32_t per_page = inv.page_size == 0 ? 1000 : inv.page_size;
    uint32_t want = inv.limit == 0 ? per_page : inv.limit - static_cast<uint32_t>(all.entries_size());
    req.set_page_size(std::min<uint32_t>(want, per_page));
    req.set_page_token(token);
    v1::ListAuditResponse page;
    auto ctx = client->Context();
    grpc::Status s = client->audit().List(ctx.get(), req, &page);
    if (!s.ok()) return ReportRpcError(s, inv, err);
    for (auto& e : *page.mutable_entries()) {
      if (inv.limit != 0 && all.entries_size() >= static_cast<int>(inv.limit)) break;
      *all.add_entries() = std::move(e);
    }
    token = page.next_page_token();
  } while (!token.empty() && (inv.limit == 0 || all.entries_size() < static_cast<int>(inv.limit)));

  if (inv.output == OutputFormat::kJson) {
    out << ToJson(all) << "\n";
    return kExitOk;
  }
  // SUMMARY is free text of any length, so it goes last where it cannot push other columns.
  Table rows = {{"ID", "TIME", "TENANT", "KEY", "ACTION", "TARGET", "REQUEST ID", "SUMMARY"}};
  for (const auto& e : all.entries()) {
    rows.push_back({absl::StrCat(e.audit_id()), FormatTimestamp(e.at()), e.tenant(),
                    KeyLabel(e.key_id(), e.key_name()), e.action(), e.target(),
                    e.request_id().empty() ? "-" : e.request_id(),
                    e.summary().empty() ? "-" : e.summary()});
  }
  PrintTable(rows, out);
  return kExitOk;
}

// --- agents -------------------------------------------------------------------------------------

int CmdAgents(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::ListAgentsResponse all;
  std::string token;
  do {
    v1::ListAgentsRequest req;
    req.set_tenant(inv.tenant);
    req.set_label_selector(inv.selector);
    for (const std::string& name : inv.states) {
      v1::FleetAgent::State state;
      // ParseArgs accepted only names that parse.
      if (v1::FleetAgent::State_Parse(name, &state)) req.add_states(state);
    }
    req.set_page_size(inv.page_size == 0 ? 1000 : inv.page_size);
    req.set_page_token(token);
    v1::ListAgentsResponse page;
    auto ctx = client->Context();
    grpc::Status s = client->fleet().ListAgents(ctx.get(), req, &page);
    if (!s.ok()) return ReportRpcError(s, inv, err);
    for (auto& a : *page.mutable_agents()) *all.add_agents() = std::move(a);
    // The summary fields describe the whole fleet and are the same on every page.
    all.set_live_version(page.live_version());
    all.set_total(page.total());
    *all.mutable_state_counts() = page.state_counts();
    token = page.next_page_token();
  } while (!token.empty());

  if (inv.output == OutputFormat::kJson) {
    out << ToJson(all) << "\n";
    return kExitOk;
  }
  Table rows = {{"AGENT", "STATE", "VERSION", "LIVE", "CONNECTED", "LAST SEEN", "LAST NACK",
                 "LABELS", "REASON"}};
  for (const auto& a : all.agents()) {
    rows.push_back({a.agent_id(), StateName(a.state()), absl::StrCat(a.applied_version()),
                    absl::StrCat(a.live_version()), a.connected() ? "yes" : "no",
                    FormatTimestamp(a.last_seen()),
                    a.last_nack_version() == 0 ? "-" : absl::StrCat(a.last_nack_version()),
                    FormatLabels(a.labels()), a.state_reason()});
  }
  PrintTable(rows, out);
  // The fleet summary: every state in the order the proto declares them, zeros included, so a
  // script can read the line the same way every time.
  std::vector<std::string> counts;
  uint32_t fleet = 0;
  for (int s = v1::FleetAgent::State_MIN; s <= v1::FleetAgent::State_MAX; ++s) {
    if (s == v1::FleetAgent::STATE_UNSPECIFIED || !v1::FleetAgent::State_IsValid(s)) continue;
    std::string name = StateName(static_cast<v1::FleetAgent::State>(s));
    auto it = all.state_counts().find(name);
    uint32_t n = it == all.state_counts().end() ? 0 : it->second;
    fleet += n;
    counts.push_back(absl::StrCat(name, " ", n));
  }
  out << Plural(all.total(), "agent") << " shown of " << fleet << ", live version "
      << all.live_version() << ": " << absl::StrJoin(counts, ", ") << "\n";
  return kExitOk;
}

int CmdAgentsGet(const Invocation& inv, std::ostream& out, std::ostream& err) {
  auto client = Client::Connect(inv, err);
  if (client == nullptr) return kExitCannotRun;
  v1::GetAgentRequest req;
  req.set_tenant(inv.tenant);
  req.set_agent_id(inv.args[0]);
  v1::GetAgentResponse resp;
  auto ctx = client->Context();
  grpc::Status s = client->fleet().GetAgent(ctx.get(), req, &resp);
  if (!s.ok()) return ReportRpcError(s, inv, err);
  if (inv.output == OutputFormat::kJson) {
    out << ToJson(resp) << "\n";
    return kExitOk;
  }
  const v1::FleetAgent& a = resp.agent();
  Table rows = {
      {"agent:", a.agent_id()},
      {"tenant:", a.tenant()},
      {"state:", absl::StrCat(StateName(a.state()), " (", a.state_reason(), ")")},
      {"labels:", FormatLabels(a.labels())},
      {"agent version:", a.agent_version().empty() ? "-" : a.agent_version()},
      {"capabilities:",
       a.capabilities().empty() ? "-" : absl::StrJoin(a.capabilities(), ",")},
      {"connected:", a.connected() ? absl::StrCat("yes, since ", FormatTimestamp(a.connected_at()))
                                   : "no"},
      {"replica:", a.replica().empty() ? "-" : a.replica()},
      {"last seen:", FormatTimestamp(a.last_seen())},
      {"healthy:", a.healthy() ? "yes" : "no"},
      {"applied version:", absl::StrCat(a.applied_version(), " (hash ", ShortHash(a.applied_hash()),
                                        ", expected ", ShortHash(a.expected_hash()), ")")},
      {"applied at:", FormatTimestamp(a.applied_at())},
      {"apply duration:", FormatDuration(a.last_apply_duration(), a.has_last_apply_duration())},
      {"live version:", absl::StrCat(a.live_version())},
      {"sent version:", absl::StrCat(a.sent_version())},
  };
  if (a.last_nack_version() != 0) {
    rows.push_back({"last nack:", absl::StrCat("version ", a.last_nack_version(), " at ",
                                               FormatTimestamp(a.last_nack_at()), ": ",
                                               a.last_nack_error())});
  } else {
    rows.push_back({"last nack:", "-"});
  }
  PrintTable(rows, out);
  return kExitOk;
}

}  // namespace flexgate::cli
