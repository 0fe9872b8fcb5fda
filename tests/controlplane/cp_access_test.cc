// Tenancy, keys, roles, enrollment tokens, Diff, Rollback, the dry-run's diff and impact, the
// audit trail and racing applies: flexgate-cp as a real process on a real PostgreSQL, called
// over real gRPC channels.
#include <catch2/catch.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/canonical.h"
#include "controlplane/pg.h"
#include "tests/controlplane/cp_test_support.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::cp {
namespace {

using flexgate::testing::LaunchOptions;
using flexgate::testing::CpProcess;
using flexgate::testing::FreshDatabase;
using flexgate::testing::WaitFor;
namespace v1 = flexgate::v1;
using Code = grpc::StatusCode;

constexpr char kOperatorKey[] = "fgk_test_operator_key";

v1::Config MakeConfig(uint32_t port, int routes = 1) {
  return flexgate::testing::RouteConfig(port, routes);
}

// flexgate-cp with the operator key of tenant "default", plus stubs for every service.
struct Cp : CpProcess {
  explicit Cp(const std::string& db_url) : CpProcess(LaunchOptions(db_url, kOperatorKey)) {}

  // Creates a tenant as the operator and returns its first admin key.
  std::string CreateTenant(const std::string& name) {
    v1::CreateTenantRequest req;
    req.set_name(name);
    v1::CreateTenantResponse resp;
    grpc::Status s = tenants->CreateTenant(Ctx(kOperatorKey).get(), req, &resp);
    INFO(s.error_message());
    REQUIRE(s.ok());
    REQUIRE(resp.admin_key().role() == "admin");
    REQUIRE(!resp.admin_key_secret().empty());
    return resp.admin_key_secret();
  }

  v1::CreateKeyResponse CreateKey(const std::string& admin_key, const std::string& role,
                                  const std::string& name = "k") {
    v1::CreateKeyRequest req;
    req.set_name(name);
    req.set_role(role);
    v1::CreateKeyResponse resp;
    grpc::Status s = keys->CreateKey(Ctx(admin_key).get(), req, &resp);
    INFO(s.error_message());
    REQUIRE(s.ok());
    return resp;
  }

  grpc::Status Apply(const std::string& key, const v1::Config& cfg, v1::ApplyResponse* resp,
                     std::optional<uint64_t> base = std::nullopt,
                     const std::string& request_id = "") {
    v1::ApplyRequest req;
    *req.mutable_config() = cfg;
    if (base) req.set_base_version(*base);
    return config->Apply(Ctx(key, request_id).get(), req, resp);
  }
};

std::unique_ptr<PgConn> Db(const std::string& url) {
  auto conn = PgConn::Connect(url);
  REQUIRE(conn.ok());
  return std::move(conn).value();
}

// Opens an agent stream with `secret` and returns how it went: OK with the first snapshot, or
// the status the control plane ended the stream with.
grpc::Status ConnectAgent(Cp& cp, const std::string& secret, v1::Snapshot* first = nullptr,
                          const std::string& agent_id = "agent-1") {
  v1::Hello hello;
  hello.set_agent_id(agent_id);
  hello.mutable_labels()->insert({"zone", "eu-1"});
  flexgate::testing::FakeAgent agent(cp, hello, secret);
  v1::ControlMessage msg;
  if (!agent.Read(&msg)) return agent.FinishStatus();
  if (first != nullptr && msg.has_snapshot()) *first = msg.snapshot();
  return grpc::Status::OK;  // the agent goes away (its stream is cancelled)
}

// Every RPC of the operator API, called with `key` against tenant `tenant`.
std::map<std::string, std::function<grpc::Status()>> EveryRpc(Cp& cp, const std::string& key,
                                                              const std::string& tenant) {
  std::map<std::string, std::function<grpc::Status()>> rpcs;
  auto ctx = [key] { return Cp::Ctx(key); };
  rpcs["ConfigService.Validate"] = [&cp, ctx, tenant] {
    v1::ValidateRequest r; r.set_tenant(tenant); *r.mutable_config() = MakeConfig(8081);
    v1::ValidateResponse o; return cp.config->Validate(ctx().get(), r, &o);
  };
  rpcs["ConfigService.Apply"] = [&cp, ctx, tenant] {
    v1::ApplyRequest r; r.set_tenant(tenant); *r.mutable_config() = MakeConfig(9999);
    v1::ApplyResponse o; return cp.config->Apply(ctx().get(), r, &o);
  };
  rpcs["ConfigService.Get"] = [&cp, ctx, tenant] {
    v1::GetRequest r; r.set_tenant(tenant); v1::GetResponse o;
    return cp.config->Get(ctx().get(), r, &o);
  };
  rpcs["ConfigService.ListVersions"] = [&cp, ctx, tenant] {
    v1::ListVersionsRequest r; r.set_tenant(tenant); v1::ListVersionsResponse o;
    return cp.config->ListVersions(ctx().get(), r, &o);
  };
  rpcs["ConfigService.Diff"] = [&cp, ctx, tenant] {
    v1::DiffRequest r; r.set_tenant(tenant); r.set_from_version(1); r.set_to_version(2);
    v1::DiffResponse o; return cp.config->Diff(ctx().get(), r, &o);
  };
  rpcs["ConfigService.Rollback"] = [&cp, ctx, tenant] {
    v1::RollbackRequest r; r.set_tenant(tenant); r.set_to_version(1);
    v1::RollbackResponse o; return cp.config->Rollback(ctx().get(), r, &o);
  };
  rpcs["KeyService.CreateKey"] = [&cp, ctx, tenant] {
    v1::CreateKeyRequest r; r.set_tenant(tenant); r.set_role("admin");
    v1::CreateKeyResponse o; return cp.keys->CreateKey(ctx().get(), r, &o);
  };
  rpcs["KeyService.ListKeys"] = [&cp, ctx, tenant] {
    v1::ListKeysRequest r; r.set_tenant(tenant); v1::ListKeysResponse o;
    return cp.keys->ListKeys(ctx().get(), r, &o);
  };
  rpcs["KeyService.RevokeKey"] = [&cp, ctx, tenant] {
    v1::RevokeKeyRequest r; r.set_tenant(tenant); r.set_key_id(1);
    v1::RevokeKeyResponse o; return cp.keys->RevokeKey(ctx().get(), r, &o);
  };
  rpcs["KeyService.CreateToken"] = [&cp, ctx, tenant] {
    v1::CreateTokenRequest r; r.set_tenant(tenant); v1::CreateTokenResponse o;
    return cp.keys->CreateToken(ctx().get(), r, &o);
  };
  rpcs["KeyService.ListTokens"] = [&cp, ctx, tenant] {
    v1::ListTokensRequest r; r.set_tenant(tenant); v1::ListTokensResponse o;
    return cp.keys->ListTokens(ctx().get(), r, &o);
  };
  rpcs["KeyService.RevokeToken"] = [&cp, ctx, tenant] {
    v1::RevokeTokenRequest r; r.set_tenant(tenant); r.set_token_id(1);
    v1::RevokeTokenResponse o; return cp.keys->RevokeToken(ctx().get(), r, &o);
  };
  rpcs["AuditService.List"] = [&cp, ctx, tenant] {
    v1::ListAuditRequest r; r.set_tenant(tenant); v1::ListAuditResponse o;
    return cp.audit->List(ctx().get(), r, &o);
  };
  // The operator scope has no tenant field: a tenant admin is simply not the operator.
  rpcs["TenantService.CreateTenant"] = [&cp, ctx] {
    v1::CreateTenantRequest r; r.set_name("intruder"); v1::CreateTenantResponse o;
    return cp.tenants->CreateTenant(ctx().get(), r, &o);
  };
  rpcs["TenantService.ListTenants"] = [&cp, ctx] {
    v1::ListTenantsRequest r; v1::ListTenantsResponse o;
    return cp.tenants->ListTenants(ctx().get(), r, &o);
  };
  return rpcs;
}

// Row count of every table in the public schema.
std::map<std::string, int64_t> RowCounts(PgConn& db) {
  auto tables = db.Exec("SELECT tablename FROM pg_tables WHERE schemaname = 'public'");
  REQUIRE(tables.ok());
  std::map<std::string, int64_t> out;
  for (int i = 0; i < tables->rows(); ++i) {
    const std::string t = tables->GetString(i, 0);
    auto n = db.Exec(absl::StrCat("SELECT count(*) FROM \"", t, "\""));
    REQUIRE(n.ok());
    out[t] = n->GetInt64(0, 0);
  }
  return out;
}

TEST_CASE("Every RPC refuses a key of another tenant and a call without a key") {
  const std::string url = FreshDatabase("cp_access");
  Cp cp(url);
  const std::string alpha = cp.CreateTenant("alpha");
  const std::string beta = cp.CreateTenant("beta");
  v1::ApplyResponse applied;
  REQUIRE(cp.Apply(alpha, MakeConfig(8081), &applied).ok());
  REQUIRE(cp.Apply(alpha, MakeConfig(8082), &applied).ok());
  auto db = Db(url);
  const auto before = RowCounts(*db);

  for (auto& [name, call] : EveryRpc(cp, beta, "alpha")) {
    INFO(name);
    CHECK(call().error_code() == Code::PERMISSION_DENIED);
  }
  for (auto& [name, call] : EveryRpc(cp, "", "alpha")) {
    INFO(name);
    CHECK(call().error_code() == Code::UNAUTHENTICATED);
  }
  for (auto& [name, call] : EveryRpc(cp, "fgk_not_a_key", "")) {
    INFO(name);
    CHECK(call().error_code() == Code::UNAUTHENTICATED);
  }
  // Nothing of alpha was changed by all that.
  CHECK(RowCounts(*db) == before);
  // The same calls with alpha's own admin key pass the access check (the tenant calls are
  // operator-only, so they stay denied).
  for (auto& [name, call] : EveryRpc(cp, alpha, "alpha")) {
    INFO(name);
    const Code code = call().error_code();
    CHECK(code != Code::UNAUTHENTICATED);
    if (absl::StartsWith(name, "TenantService.")) {
      CHECK(code == Code::PERMISSION_DENIED);
    } else {
      CHECK(code != Code::PERMISSION_DENIED);
    }
  }
}

TEST_CASE("Viewers read and validate and editors apply and roll back and only admins manage keys") {
  const std::string url = FreshDatabase("cp_access");
  Cp cp(url);
  const std::string admin = cp.CreateTenant("acme");
  const std::string editor = cp.CreateKey(admin, "editor").secret();
  const std::string viewer = cp.CreateKey(admin, "viewer").secret();
  v1::ApplyResponse applied;
  REQUIRE(cp.Apply(admin, MakeConfig(8081), &applied).ok());
  REQUIRE(cp.Apply(admin, MakeConfig(8082), &applied).ok());

  const std::map<std::string, std::map<std::string, bool>> allowed = {
      // RPC -> role -> passes the access check
      {"ConfigService.Validate", {{"viewer", true}, {"editor", true}}},
      {"ConfigService.Get", {{"viewer", true}, {"editor", true}}},
      {"ConfigService.ListVersions", {{"viewer", true}, {"editor", true}}},
      {"ConfigService.Diff", {{"viewer", true}, {"editor", true}}},
      {"AuditService.List", {{"viewer", true}, {"editor", true}}},
      {"ConfigService.Apply", {{"viewer", false}, {"editor", true}}},
      {"ConfigService.Rollback", {{"viewer", false}, {"editor", true}}},
      {"KeyService.CreateKey", {{"viewer", false}, {"editor", false}}},
      {"KeyService.ListKeys", {{"viewer", false}, {"editor", false}}},
      {"KeyService.RevokeKey", {{"viewer", false}, {"editor", false}}},
      {"KeyService.CreateToken", {{"viewer", false}, {"editor", false}}},
      {"KeyService.ListTokens", {{"viewer", false}, {"editor", false}}},
      {"KeyService.RevokeToken", {{"viewer", false}, {"editor", false}}},
      {"TenantService.CreateTenant", {{"viewer", false}, {"editor", false}}},
      {"TenantService.ListTenants", {{"viewer", false}, {"editor", false}}},
  };
  for (const auto& [role, key] : std::map<std::string, std::string>{{"viewer", viewer},
                                                                      {"editor", editor}}) {
    auto rpcs = EveryRpc(cp, key, "");
    REQUIRE(rpcs.size() == allowed.size());
    for (auto& [name, call] : rpcs) {
      INFO(role << " " << name);
      const Code code = call().error_code();
      CHECK(code != Code::UNAUTHENTICATED);
      CHECK((code != Code::PERMISSION_DENIED) == allowed.at(name).at(role));
    }
  }

  // The operator lists tenants; a tenant admin may not.
  v1::ListTenantsResponse list;
  REQUIRE(cp.tenants->ListTenants(Cp::Ctx(kOperatorKey).get(), {}, &list).ok());
  REQUIRE(list.tenants_size() == 2);
  CHECK(list.tenants(0).name() == "acme");
  CHECK(list.tenants(1).name() == "default");
  v1::CreateTenantRequest dup;
  dup.set_name("acme");
  v1::CreateTenantResponse dup_resp;
  CHECK(cp.tenants->CreateTenant(Cp::Ctx(kOperatorKey).get(), dup, &dup_resp).error_code() ==
        Code::ALREADY_EXISTS);
  dup.set_name("bad name!");
  CHECK(cp.tenants->CreateTenant(Cp::Ctx(kOperatorKey).get(), dup, &dup_resp).error_code() ==
        Code::INVALID_ARGUMENT);
}

TEST_CASE("Keys are shown once and stored only as hashes and a revoked key stops at once") {
  const std::string url = FreshDatabase("cp_access");
  Cp cp(url);
  const std::string admin = cp.CreateTenant("acme");
  v1::CreateKeyResponse created = cp.CreateKey(admin, "viewer", "dashboard");
  const std::string key = created.secret();
  CHECK(absl::StartsWith(key, "fgk_"));
  CHECK(created.key().role() == "viewer");
  CHECK(created.key().tenant() == "acme");

  auto db = Db(url);
  auto stored = db->Exec("SELECT key_hash FROM api_keys WHERE key_id = $1",
                         {PgParam::Uint(created.key().key_id())});
  REQUIRE(stored.ok());
  REQUIRE(stored->rows() == 1);
  CHECK(stored->GetString(0, 0) == Sha256Hex(key));
  auto anywhere = db->Exec("SELECT count(*) FROM api_keys WHERE key_hash = $1",
                           {PgParam::Text(key)});
  REQUIRE(anywhere.ok());
  CHECK(anywhere->GetInt64(0, 0) == 0);

  v1::ListKeysRequest list_req;
  v1::ListKeysResponse list;
  REQUIRE(cp.keys->ListKeys(Cp::Ctx(admin).get(), list_req, &list).ok());
  REQUIRE(list.keys_size() == 2);
  CHECK(list.keys(1).name() == "dashboard");
  CHECK(!list.DebugString().empty());
  CHECK(!absl::StrContains(list.SerializeAsString(), key));
  CHECK(!absl::StrContains(list.SerializeAsString(), Sha256Hex(key)));

  // The key works (and is now in the authentication cache) ...
  v1::ListVersionsResponse versions;
  REQUIRE(cp.config->ListVersions(Cp::Ctx(key).get(), {}, &versions).ok());
  // ... until it is revoked: at once on this replica, cache or not.
  v1::RevokeKeyRequest revoke;
  revoke.set_key_id(created.key().key_id());
  v1::RevokeKeyResponse revoked;
  REQUIRE(cp.keys->RevokeKey(Cp::Ctx(admin).get(), revoke, &revoked).ok());
  CHECK(revoked.key().revoked());
  CHECK(cp.config->ListVersions(Cp::Ctx(key).get(), {}, &versions).error_code() ==
        Code::UNAUTHENTICATED);
  list_req.set_include_revoked(false);
  REQUIRE(cp.keys->ListKeys(Cp::Ctx(admin).get(), list_req, &list).ok());
  CHECK(list.keys_size() == 1);
  revoke.set_key_id(999999);
  CHECK(cp.keys->RevokeKey(Cp::Ctx(admin).get(), revoke, &revoked).error_code() ==
        Code::NOT_FOUND);
  v1::CreateKeyRequest bad_role;
  bad_role.set_role("owner");
  v1::CreateKeyResponse bad_resp;
  CHECK(cp.keys->CreateKey(Cp::Ctx(admin).get(), bad_role, &bad_resp).error_code() ==
        Code::INVALID_ARGUMENT);

  // The operator cannot lock itself out by revoking the last admin key of "default".
  v1::ListKeysResponse op_keys;
  REQUIRE(cp.keys->ListKeys(Cp::Ctx(kOperatorKey).get(), {}, &op_keys).ok());
  REQUIRE(op_keys.keys_size() == 1);
  revoke.set_key_id(op_keys.keys(0).key_id());
  CHECK(cp.keys->RevokeKey(Cp::Ctx(kOperatorKey).get(), revoke, &revoked).error_code() ==
        Code::FAILED_PRECONDITION);
}

TEST_CASE("Enrollment tokens open only the agent stream of their tenant") {
  const std::string url = FreshDatabase("cp_access");
  Cp cp(url);
  const std::string admin = cp.CreateTenant("acme");
  const std::string editor = cp.CreateKey(admin, "editor").secret();
  v1::ApplyResponse applied;
  REQUIRE(cp.Apply(admin, MakeConfig(8081), &applied).ok());

  v1::CreateTokenRequest treq;
  treq.set_name("edge-fleet");
  v1::CreateTokenResponse token;
  REQUIRE(cp.keys->CreateToken(Cp::Ctx(admin).get(), treq, &token).ok());
  CHECK(absl::StartsWith(token.secret(), "fget_"));
  CHECK(token.token().tenant() == "acme");

  v1::Snapshot snap;
  grpc::Status s = ConnectAgent(cp, token.secret(), &snap);
  INFO(s.error_message());
  REQUIRE(s.ok());
  CHECK(snap.version() == applied.version());
  CHECK(snap.hash() == applied.hash());
  // The agent landed in its tenant.
  auto db = Db(url);
  auto row = db->Exec("SELECT t.name FROM agents a JOIN tenants t USING (tenant_id) "
                      "WHERE a.agent_id = 'agent-1'");
  REQUIRE(row.ok());
  REQUIRE(row->rows() == 1);
  CHECK(row->GetString(0, 0) == "acme");

  // A token is not an API key.
  v1::ListVersionsResponse versions;
  CHECK(cp.config->ListVersions(Cp::Ctx(token.secret()).get(), {}, &versions).error_code() ==
        Code::UNAUTHENTICATED);
  // Operator keys other than the admin keys of "default" do not open agent streams; the
  // bootstrap key still does (agents of "default" set up before tokens existed).
  CHECK(ConnectAgent(cp, editor).error_code() == Code::PERMISSION_DENIED);
  CHECK(ConnectAgent(cp, admin).error_code() == Code::PERMISSION_DENIED);
  REQUIRE(cp.Apply(kOperatorKey, MakeConfig(8081), &applied).ok());
  CHECK(ConnectAgent(cp, kOperatorKey, nullptr, "legacy").ok());

  v1::ListTokensResponse tokens;
  REQUIRE(cp.keys->ListTokens(Cp::Ctx(admin).get(), {}, &tokens).ok());
  REQUIRE(tokens.tokens_size() == 1);
  CHECK(tokens.tokens(0).name() == "edge-fleet");
  CHECK(!absl::StrContains(tokens.SerializeAsString(), token.secret()));

  v1::RevokeTokenRequest rreq;
  rreq.set_token_id(token.token().token_id());
  v1::RevokeTokenResponse rresp;
  REQUIRE(cp.keys->RevokeToken(Cp::Ctx(admin).get(), rreq, &rresp).ok());
  CHECK(rresp.token().revoked());
  CHECK(ConnectAgent(cp, token.secret()).error_code() == Code::UNAUTHENTICATED);
}

TEST_CASE("Diff compares any two versions and Rollback stores an old version as a new one") {
  const std::string url = FreshDatabase("cp_access");
  Cp cp(url);
  const std::string admin = cp.CreateTenant("acme");
  v1::ApplyResponse v1r, v2r;
  REQUIRE(cp.Apply(admin, MakeConfig(8081), &v1r).ok());
  v1::Config second = MakeConfig(8082, 2);
  REQUIRE(cp.Apply(admin, second, &v2r).ok());
  REQUIRE(v2r.version() == 2);

  v1::DiffRequest dreq;
  dreq.set_from_version(1);
  dreq.set_to_version(2);
  v1::DiffResponse diff;
  REQUIRE(cp.config->Diff(Cp::Ctx(admin).get(), dreq, &diff).ok());
  CHECK(diff.diff().added() == 1);    // route r1
  CHECK(diff.diff().changed() >= 1);  // cluster web: port
  bool port_change = false;
  for (const auto& r : diff.diff().resources()) {
    if (r.resource_type() == "cluster" && r.name() == "web") {
      CHECK(r.kind() == v1::ResourceChange::CHANGED);
      for (const auto& f : r.fields()) {
        // Endpoints are a set: the old one goes, the new one comes.
        if (absl::StrContains(f.path(), "8082") && absl::StrContains(f.new_value(), "8082")) {
          port_change = true;
        }
      }
    }
  }
  INFO(diff.DebugString());
  CHECK(port_change);
  CHECK(absl::StrContains(diff.diff().text(), "route \"r1\""));
  // 0 -> live: everything added.
  dreq.set_from_version(0);
  dreq.set_to_version(0);
  REQUIRE(cp.config->Diff(Cp::Ctx(admin).get(), dreq, &diff).ok());
  CHECK(diff.to_version() == 2);
  CHECK(diff.diff().added() == 3);
  dreq.set_to_version(7);
  CHECK(cp.config->Diff(Cp::Ctx(admin).get(), dreq, &diff).error_code() == Code::NOT_FOUND);

  v1::RollbackRequest rreq;
  rreq.set_to_version(1);
  rreq.set_base_version(1);  // stale: live is 2
  v1::RollbackResponse rb;
  CHECK(cp.config->Rollback(Cp::Ctx(admin).get(), rreq, &rb).error_code() == Code::ABORTED);
  rreq.set_base_version(2);
  REQUIRE(cp.config->Rollback(Cp::Ctx(admin, "rb-1").get(), rreq, &rb).ok());
  CHECK(rb.version() == 3);
  CHECK(!rb.unchanged());
  CHECK(rb.hash() == v1r.hash());
  CHECK(rb.diff().removed() == 1);
  // Again: the live version already has that content.
  rreq.clear_base_version();
  REQUIRE(cp.config->Rollback(Cp::Ctx(admin).get(), rreq, &rb).ok());
  CHECK(rb.unchanged());
  CHECK(rb.version() == 3);
  rreq.set_to_version(42);
  CHECK(cp.config->Rollback(Cp::Ctx(admin).get(), rreq, &rb).error_code() == Code::NOT_FOUND);

  v1::GetRequest get;
  v1::GetResponse got;
  REQUIRE(cp.config->Get(Cp::Ctx(admin).get(), get, &got).ok());
  CHECK(got.version().version() == 3);
  CHECK(got.version().message() == "rollback to version 1");
  CHECK(ConfigHash(got.version().config()) == v1r.hash());

  // An agent of the tenant receives the rolled-back content.
  v1::CreateTokenResponse token;
  REQUIRE(cp.keys->CreateToken(Cp::Ctx(admin).get(), {}, &token).ok());
  v1::Snapshot snap;
  REQUIRE(ConnectAgent(cp, token.secret(), &snap).ok());
  CHECK(snap.version() == 3);
  CHECK(snap.hash() == v1r.hash());

  v1::ListAuditRequest areq;
  areq.set_action("config.rollback");
  v1::ListAuditResponse audit;
  REQUIRE(cp.audit->List(Cp::Ctx(admin).get(), areq, &audit).ok());
  REQUIRE(audit.entries_size() == 1);
  CHECK(audit.entries(0).request_id() == "rb-1");
  CHECK(absl::StrContains(audit.entries(0).summary(), "rollback to version 1"));
}

TEST_CASE("Validate returns the semantic diff and impact and redacted secret warnings and never writes") {
  const std::string url = FreshDatabase("cp_access");
  Cp cp(url);
  const std::string admin = cp.CreateTenant("acme");
  v1::Config live = MakeConfig(8081, 3);
  auto* other = live.add_clusters();
  other->set_name("api");
  other->add_endpoints()->set_address("127.0.0.2");
  other->mutable_endpoints(0)->set_port(9000);
  live.mutable_routes(0)->set_cluster("api");
  v1::ApplyResponse applied;
  REQUIRE(cp.Apply(admin, live, &applied).ok());
  // Two known agents of the tenant (one connected), as the agents table records them.
  auto db = Db(url);
  REQUIRE(db->Exec("INSERT INTO agents (tenant_id, agent_id, labels, connected) "
                   "SELECT tenant_id, 'edge-1', '{\"zone\":\"eu-1\"}'::jsonb, true FROM tenants "
                   "WHERE name = 'acme' UNION ALL "
                   "SELECT tenant_id, 'edge-2', '{\"zone\":\"us-1\"}'::jsonb, false FROM tenants "
                   "WHERE name = 'acme'")
              .ok());
  const auto before = RowCounts(*db);

  // Reordering clusters and spelling out a default is no change at all.
  v1::Config reordered = live;
  reordered.mutable_clusters()->SwapElements(0, 1);
  v1::ValidateRequest req;
  *req.mutable_config() = reordered;
  v1::ValidateResponse resp;
  REQUIRE(cp.config->Validate(Cp::Ctx(admin).get(), req, &resp).ok());
  CHECK(resp.valid());
  CHECK(resp.live_version() == applied.version());
  CHECK(resp.diff().resources_size() == 0);
  CHECK(resp.diff().text() == "no changes\n");
  CHECK(resp.impact().affected_routes_size() == 0);

  // A real change: the cluster "api" moves, and a route sets a credential header.
  v1::Config changed = live;
  changed.mutable_clusters(1)->mutable_endpoints(0)->set_port(9001);
  auto* set = changed.mutable_routes(2)->mutable_request_headers()->add_set();
  set->set_name("authorization");
  set->set_value("Bearer sk_live_0123456789abcdef0123456789");
  *req.mutable_config() = changed;
  REQUIRE(cp.config->Validate(Cp::Ctx(admin).get(), req, &resp).ok());
  CHECK(resp.valid());
  CHECK(!resp.unchanged());
  CHECK(resp.diff().changed() == 2);  // cluster api, route all
  std::vector<std::string> affected(resp.impact().affected_routes().begin(),
                                    resp.impact().affected_routes().end());
  CHECK(affected == std::vector<std::string>{"r2", "all"});
  CHECK(resp.impact().agents_affected() == 2);
  CHECK(resp.impact().agents_connected() == 1);
  REQUIRE(resp.impact().agents_sample_size() == 2);
  CHECK(resp.impact().agents_sample(0).agent_id() == "edge-1");
  CHECK(resp.impact().agents_sample(0).labels().at("zone") == "eu-1");
  CHECK(resp.impact().agents_by_label().at("zone=us-1") == 1);
  REQUIRE(resp.secret_warnings_size() == 1);
  CHECK(resp.secret_warnings(0).code() == "plaintext_secret");
  CHECK(resp.secret_warnings(0).path() == "routes[2].request_headers.set[0].value");
  // The secret appears nowhere in the answer: not in diagnostics, not in the diff.
  CHECK(!absl::StrContains(resp.SerializeAsString(), "sk_live_0123456789abcdef"));
  CHECK(absl::StrContains(resp.diff().text(), "authorization"));

  // Invalid configs are diagnosed with paths, and the diff is still reported.
  changed.mutable_routes(1)->set_cluster("nowhere");
  *req.mutable_config() = changed;
  REQUIRE(cp.config->Validate(Cp::Ctx(admin).get(), req, &resp).ok());
  CHECK(!resp.valid());
  bool unknown_cluster = false;
  for (const auto& d : resp.diagnostics()) {
    if (d.code() == "unknown_cluster" && absl::StartsWith(d.path(), "routes[1]")) {
      unknown_cluster = true;
    }
  }
  CHECK(unknown_cluster);

  CHECK(RowCounts(*db) == before);
}

TEST_CASE("Every mutation appends an audit row that no API and no UPDATE can change") {
  const std::string url = FreshDatabase("cp_access");
  Cp cp(url);
  const std::string admin = cp.CreateTenant("acme");
  v1::ListKeysResponse own;
  REQUIRE(cp.keys->ListKeys(Cp::Ctx(admin).get(), {}, &own).ok());
  const uint64_t admin_id = own.keys(0).key_id();

  v1::ApplyResponse applied;
  REQUIRE(cp.Apply(admin, MakeConfig(8081), &applied, std::nullopt, "req-apply-1").ok());
  REQUIRE(cp.Apply(admin, MakeConfig(8082, 2), &applied, std::nullopt, "req-apply-2").ok());
  // An unchanged apply stores nothing and so audits nothing.
  REQUIRE(cp.Apply(admin, MakeConfig(8082, 2), &applied).ok());
  REQUIRE(applied.unchanged());
  v1::CreateKeyRequest kreq;
  kreq.set_role("editor");
  v1::CreateKeyResponse key;
  REQUIRE(cp.keys->CreateKey(Cp::Ctx(admin, "req-key").get(), kreq, &key).ok());
  v1::RevokeKeyRequest rk;
  rk.set_key_id(key.key().key_id());
  v1::RevokeKeyResponse rkr;
  REQUIRE(cp.keys->RevokeKey(Cp::Ctx(admin).get(), rk, &rkr).ok());
  v1::CreateTokenResponse token;
  REQUIRE(cp.keys->CreateToken(Cp::Ctx(admin).get(), {}, &token).ok());
  v1::RevokeTokenRequest rt;
  rt.set_token_id(token.token().token_id());
  v1::RevokeTokenResponse rtr;
  REQUIRE(cp.keys->RevokeToken(Cp::Ctx(admin).get(), rt, &rtr).ok());
  v1::RollbackRequest rb;
  rb.set_to_version(1);
  v1::RollbackResponse rbr;
  REQUIRE(cp.config->Rollback(Cp::Ctx(admin).get(), rb, &rbr).ok());

  v1::ListAuditRequest req;
  v1::ListAuditResponse all;
  REQUIRE(cp.audit->List(Cp::Ctx(admin).get(), req, &all).ok());
  std::vector<std::string> actions;
  for (const auto& e : all.entries()) {
    actions.push_back(e.action());
    CHECK(e.tenant() == "acme");
    CHECK(!e.request_id().empty());
  }
  // Newest first; the tenant's creation and its first key come from the operator.
  CHECK(actions == std::vector<std::string>{"config.rollback", "token.revoke", "token.create",
                                            "key.revoke", "key.create", "config.apply",
                                            "config.apply", "key.create", "tenant.create"});
  CHECK(all.entries(5).request_id() == "req-apply-2");
  CHECK(all.entries(5).key_id() == admin_id);
  CHECK(absl::StrContains(all.entries(5).summary(), "version 1 -> 2"));
  CHECK(absl::StrContains(all.entries(5).summary(), "1 added, 1 changed, 0 removed"));
  CHECK(all.entries(4).request_id() == "req-key");
  CHECK(all.entries(4).target() == absl::StrCat("key-", key.key().key_id()));

  // Filters: action, key, time range, paging.
  req.set_action("config.apply");
  v1::ListAuditResponse filtered;
  REQUIRE(cp.audit->List(Cp::Ctx(admin).get(), req, &filtered).ok());
  CHECK(filtered.entries_size() == 2);
  req.clear_action();
  req.set_key_id(admin_id);
  REQUIRE(cp.audit->List(Cp::Ctx(admin).get(), req, &filtered).ok());
  CHECK(filtered.entries_size() == 7);  // all but the operator's two
  req.clear_key_id();
  *req.mutable_since() = all.entries(1).at();
  *req.mutable_until() = all.entries(0).at();
  REQUIRE(cp.audit->List(Cp::Ctx(admin).get(), req, &filtered).ok());
  for (const auto& e : filtered.entries()) CHECK(e.action() != "config.rollback");
  CHECK(filtered.entries_size() >= 1);
  req.clear_since();
  req.clear_until();
  req.set_page_size(4);
  std::vector<std::string> paged;
  for (int pages = 0; pages < 10; ++pages) {
    REQUIRE(cp.audit->List(Cp::Ctx(admin).get(), req, &filtered).ok());
    for (const auto& e : filtered.entries()) paged.push_back(e.action());
    if (filtered.next_page_token().empty()) break;
    req.set_page_token(filtered.next_page_token());
  }
  CHECK(paged == actions);

  // The operator's own trail shows the tenant it created.
  v1::ListAuditRequest op_req;
  op_req.set_action("tenant.create");
  v1::ListAuditResponse op;
  REQUIRE(cp.audit->List(Cp::Ctx(kOperatorKey).get(), op_req, &op).ok());
  bool seen = false;
  for (const auto& e : op.entries()) seen = seen || e.target() == "tenant acme";
  CHECK(seen);

  // The table refuses changes even to someone with SQL access.
  auto db = Db(url);
  auto upd = db->Exec("UPDATE audit_log SET summary = 'forged'");
  CHECK(!upd.ok());
  CHECK(absl::StrContains(upd.status().message(), "append-only"));
  CHECK(!db->Exec("DELETE FROM audit_log").ok());
  REQUIRE(cp.audit->List(Cp::Ctx(admin).get(), v1::ListAuditRequest(), &filtered).ok());
  CHECK(filtered.entries_size() == all.entries_size());
}

TEST_CASE("Of two racing applies on the same base exactly one wins and the other is ABORTED") {
  const std::string url = FreshDatabase("cp_access");
  Cp cp(url);
  const std::string admin = cp.CreateTenant("acme");
  v1::ApplyResponse base;
  REQUIRE(cp.Apply(admin, MakeConfig(8081), &base).ok());
  for (int round = 0; round < 5; ++round) {
    v1::GetResponse live;
    REQUIRE(cp.config->Get(Cp::Ctx(admin).get(), {}, &live).ok());
    const uint64_t on = live.version().version();
    // Both racers read the same base, then are released together.
    std::atomic<int> ready{0};
    grpc::Status results[2];
    std::thread racers[2];
    for (int i = 0; i < 2; ++i) {
      racers[i] = std::thread([&, i] {
        v1::ApplyResponse r;
        ready.fetch_add(1);
        while (ready.load() < 2) std::this_thread::yield();
        results[i] = cp.Apply(admin, MakeConfig(9000 + round * 2 + i), &r, on);
      });
    }
    for (auto& t : racers) t.join();
    const int ok = results[0].ok() + results[1].ok();
    INFO("round " << round << ": " << results[0].error_message() << " / "
                  << results[1].error_message());
    CHECK(ok == 1);
    for (const auto& r : results) {
      if (!r.ok()) {
        CHECK(r.error_code() == Code::ABORTED);
        CHECK(absl::StrContains(r.error_message(), absl::StrCat("live version is ", on + 1)));
      }
    }
    REQUIRE(cp.config->Get(Cp::Ctx(admin).get(), {}, &live).ok());
    CHECK(live.version().version() == on + 1);
  }
}

}  // namespace
}  // namespace flexgate::cp
