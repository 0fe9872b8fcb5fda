// flexgate-cp as a real process against a real PostgreSQL: authentication, Apply/Get/Validate/
// ListVersions semantics, migrations across restarts, graceful shutdown, and config distribution
// to a fake agent (a gRPC client stream) with ACK, NACK and stale nonces.
#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/canonical.h"
#include "controlplane/migrations.h"
#include "controlplane/pg.h"
#include "tests/controlplane/cp_test_support.h"
#include "tests/harness/proc/test_postgres.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::cp {
namespace {

using flexgate::testing::AdminBody;
using flexgate::testing::AdminStatus;
using flexgate::testing::CpLaunchOptions;
using flexgate::testing::LaunchOptions;
using flexgate::testing::CpProcess;
using flexgate::testing::FreshDatabase;
using flexgate::testing::MetricValue;
using flexgate::testing::TestPostgres;
using flexgate::testing::WaitFor;
namespace v1 = flexgate::v1;

constexpr char kAdminKey[] = "fgk_test_admin_key";

v1::Config MakeConfig(uint32_t port) { return flexgate::testing::RouteConfig(port); }

// One flexgate-cp process on a database; `key` is the bootstrap admin key (none: generated).
struct Cp : CpProcess {
  explicit Cp(CpLaunchOptions o) : CpProcess(std::move(o)) {}

  static std::unique_ptr<Cp> Start(const std::string& db_url, const std::string& key = kAdminKey) {
    return std::make_unique<Cp>(LaunchOptions(db_url, key));
  }

  grpc::Status Apply(const v1::Config& cfg, v1::ApplyResponse* resp,
                     std::optional<uint64_t> base = std::nullopt,
                     const std::string& key = kAdminKey) {
    v1::ApplyRequest req;
    *req.mutable_config() = cfg;
    req.set_message("test");
    if (base) req.set_base_version(*base);
    return config->Apply(Ctx(key).get(), req, resp);
  }

  std::vector<uint64_t> Versions() {
    v1::ListVersionsRequest req;
    v1::ListVersionsResponse resp;
    grpc::Status s = config->ListVersions(Ctx(kAdminKey).get(), req, &resp);
    REQUIRE(s.ok());
    std::vector<uint64_t> out;
    for (const auto& v : resp.versions()) out.push_back(v.version());
    return out;
  }
};

std::unique_ptr<PgConn> Db(const std::string& url) {
  auto conn = PgConn::Connect(url);
  REQUIRE(conn.ok());
  return std::move(conn).value();
}

TEST_CASE("Calls without a valid key are refused and other tenants and viewers are denied") {
  const std::string url = FreshDatabase("cp_test");
  auto cp = Cp::Start(url);
  v1::ApplyResponse resp;

  CHECK(cp->Apply(MakeConfig(8081), &resp, std::nullopt, "").error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
  CHECK(cp->Apply(MakeConfig(8081), &resp, std::nullopt, "fgk_wrong").error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
  v1::GetRequest get;
  v1::GetResponse got;
  CHECK(cp->config->Get(cp->Ctx("").get(), get, &got).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);

  // A viewer of tenant default and an admin of another tenant, created directly in the tables.
  auto db = Db(url);
  REQUIRE(db->Exec("INSERT INTO api_keys (tenant_id, key_hash, role) "
                   "SELECT tenant_id, $1, 'viewer' FROM tenants WHERE name = 'default'",
                   {PgParam::Text(Sha256Hex("viewer-key"))})
              .ok());
  REQUIRE(db->Exec("INSERT INTO tenants (name) VALUES ('other')").ok());
  REQUIRE(db->Exec("INSERT INTO api_keys (tenant_id, key_hash, role) "
                   "SELECT tenant_id, $1, 'admin' FROM tenants WHERE name = 'other'",
                   {PgParam::Text(Sha256Hex("other-admin"))})
              .ok());

  CHECK(cp->Apply(MakeConfig(8081), &resp, std::nullopt, "viewer-key").error_code() ==
        grpc::StatusCode::PERMISSION_DENIED);
  v1::ValidateRequest vreq;
  *vreq.mutable_config() = MakeConfig(8081);
  v1::ValidateResponse vresp;
  CHECK(cp->config->Validate(cp->Ctx("viewer-key").get(), vreq, &vresp).ok());

  get.set_tenant("default");
  CHECK(cp->config->Get(cp->Ctx("other-admin").get(), get, &got).error_code() ==
        grpc::StatusCode::PERMISSION_DENIED);
  v1::ApplyRequest areq;
  areq.set_tenant("default");
  *areq.mutable_config() = MakeConfig(8081);
  CHECK(cp->config->Apply(cp->Ctx("other-admin").get(), areq, &resp).error_code() ==
        grpc::StatusCode::PERMISSION_DENIED);
  CHECK(cp->Versions().empty());
}

TEST_CASE("Apply then Get round-trips and identical applies are no-ops and versions page newest first") {
  const std::string url = FreshDatabase("cp_test");
  auto cp = Cp::Start(url);

  v1::ApplyResponse a1;
  REQUIRE(cp->Apply(MakeConfig(8081), &a1, 0).ok());  // base 0: nothing applied yet
  CHECK(a1.version() == 1);
  CHECK_FALSE(a1.unchanged());
  CHECK(a1.hash() == ConfigHash(MakeConfig(8081)));

  v1::GetRequest get;
  v1::GetResponse got;
  REQUIRE(cp->config->Get(cp->Ctx(kAdminKey).get(), get, &got).ok());
  CHECK(got.version().version() == 1);
  CHECK(got.version().tenant() == "default");
  CHECK(got.version().hash() == a1.hash());
  CHECK(got.version().message() == "test");
  CHECK(got.version().author() == "bootstrap");
  CHECK(got.version().created_at().seconds() > 0);
  CHECK(ConfigHash(got.version().config()) == a1.hash());
  CHECK(got.version().config().clusters(0).endpoints(0).port() == 8081);

  v1::ApplyResponse same;
  REQUIRE(cp->Apply(MakeConfig(8081), &same).ok());
  CHECK(same.unchanged());
  CHECK(same.version() == 1);

  for (uint32_t port = 8082; port <= 8084; ++port) {
    v1::ApplyResponse r;
    REQUIRE(cp->Apply(MakeConfig(port), &r).ok());
  }
  CHECK(cp->Versions() == std::vector<uint64_t>{4, 3, 2, 1});

  get.set_version(2);
  REQUIRE(cp->config->Get(cp->Ctx(kAdminKey).get(), get, &got).ok());
  CHECK(got.version().config().clusters(0).endpoints(0).port() == 8082);
  get.set_version(99);
  CHECK(cp->config->Get(cp->Ctx(kAdminKey).get(), get, &got).error_code() ==
        grpc::StatusCode::NOT_FOUND);

  // Paging: 3 + 1.
  v1::ListVersionsRequest list;
  list.set_page_size(3);
  v1::ListVersionsResponse page1;
  REQUIRE(cp->config->ListVersions(cp->Ctx(kAdminKey).get(), list, &page1).ok());
  REQUIRE(page1.versions_size() == 3);
  CHECK(page1.versions(0).version() == 4);
  CHECK_FALSE(page1.versions(0).has_config());
  REQUIRE_FALSE(page1.next_page_token().empty());
  list.set_page_token(page1.next_page_token());
  v1::ListVersionsResponse page2;
  REQUIRE(cp->config->ListVersions(cp->Ctx(kAdminKey).get(), list, &page2).ok());
  REQUIRE(page2.versions_size() == 1);
  CHECK(page2.versions(0).version() == 1);
  CHECK(page2.next_page_token().empty());

  // Every stored version left an audit row.
  auto db = Db(url);
  auto audit = db->Exec("SELECT count(*) FROM audit_log WHERE action = 'config.apply'");
  REQUIRE(audit.ok());
  CHECK(audit->GetInt64(0, 0) == 4);
}

TEST_CASE("A stale base version is refused with ABORTED and writes nothing") {
  const std::string url = FreshDatabase("cp_test");
  auto cp = Cp::Start(url);
  v1::ApplyResponse r;
  REQUIRE(cp->Apply(MakeConfig(8081), &r).ok());
  REQUIRE(cp->Apply(MakeConfig(8082), &r, 1).ok());
  CHECK(r.version() == 2);

  grpc::Status s = cp->Apply(MakeConfig(8083), &r, 1);
  CHECK(s.error_code() == grpc::StatusCode::ABORTED);
  CHECK(s.error_message().find("live version is 2") != std::string::npos);
  CHECK(cp->Versions() == std::vector<uint64_t>{2, 1});
}

TEST_CASE("An invalid config is refused with INVALID_ARGUMENT naming the field and Validate agrees") {
  const std::string url = FreshDatabase("cp_test");
  auto cp = Cp::Start(url);
  v1::Config bad = MakeConfig(8081);
  bad.mutable_routes(0)->set_cluster("nope");

  v1::ApplyResponse r;
  grpc::Status s = cp->Apply(bad, &r);
  CHECK(s.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK(s.error_message().find("routes[0].cluster: unknown_cluster") != std::string::npos);
  CHECK(cp->Versions().empty());

  v1::ValidateRequest vreq;
  *vreq.mutable_config() = bad;
  v1::ValidateResponse vresp;
  REQUIRE(cp->config->Validate(cp->Ctx(kAdminKey).get(), vreq, &vresp).ok());
  CHECK_FALSE(vresp.valid());
  bool named = false;
  for (const auto& d : vresp.diagnostics()) {
    named |= d.path() == "routes[0].cluster" && d.code() == "unknown_cluster";
  }
  CHECK(named);
  CHECK(vresp.live_version() == 0);

  // Validate on a good config reports the live version and whether it would change anything.
  REQUIRE(cp->Apply(MakeConfig(8081), &r).ok());
  *vreq.mutable_config() = MakeConfig(8081);
  REQUIRE(cp->config->Validate(cp->Ctx(kAdminKey).get(), vreq, &vresp).ok());
  CHECK(vresp.valid());
  CHECK(vresp.live_version() == 1);
  CHECK(vresp.unchanged());
  CHECK(vresp.hash() == r.hash());
  CHECK(cp->Versions() == std::vector<uint64_t>{1});  // Validate never writes
}

TEST_CASE("Migrations run once and restarts keep data and SIGTERM exits 0 and a key is generated once") {
  const std::string url = FreshDatabase("cp_test");
  {
    // No bootstrap key given: one is generated, printed once, and only its hash is stored.
    auto cp = Cp::Start(url, "");
    auto line = cp->proc->WaitForLogMatch(R"(^\s+(fgk_\S+)\s*$)", absl::Seconds(30));
    REQUIRE(line.ok());
    auto db = Db(url);
    auto keys = db->Exec("SELECT key_hash FROM api_keys WHERE role = 'admin'");
    REQUIRE(keys.ok());
    REQUIRE(keys->rows() == 1);
    CHECK(keys->GetString(0, 0) == Sha256Hex(*line));
    // Every embedded migration ran, once.
    CHECK(cp->proc->ReadLog().find(absl::StrCat("\"applied\":", EmbeddedMigrations().size())) !=
          std::string::npos);
    v1::ApplyResponse r;
    REQUIRE(cp->Apply(MakeConfig(8081), &r, std::nullopt, *line).ok());
    CHECK(cp->Stop());
  }
  {
    auto cp = Cp::Start(url, "");
    auto log = cp->proc->ReadLog();
    CHECK(log.find("\"applied\":0") != std::string::npos);
    CHECK(log.find("fgk_") == std::string::npos);  // an admin key exists: nothing printed
    CHECK(cp->Stop());
  }
  auto cp = Cp::Start(url);  // now with a bootstrap key: it is added
  CHECK(cp->Versions() == std::vector<uint64_t>{1});
  auto db = Db(url);
  auto m = db->Exec("SELECT count(*) FROM schema_migrations");
  REQUIRE(m.ok());
  CHECK(m->GetInt64(0, 0) == static_cast<int64_t>(EmbeddedMigrations().size()));
  CHECK(cp->Stop());
}

TEST_CASE("Admin port serves health and metrics") {
  const std::string url = FreshDatabase("cp_test");
  auto cp = Cp::Start(url);
  CHECK(AdminStatus(cp->admin_port, "/health/live") == 200);
  CHECK(AdminStatus(cp->admin_port, "/health/ready") == 200);
  v1::ApplyResponse r;
  REQUIRE(cp->Apply(MakeConfig(8081), &r).ok());
  std::string metrics = AdminBody(cp->admin_port, "/metrics");
  CHECK(MetricValue(metrics, "flexgate_cp_applies_total") == 1);
  CHECK(MetricValue(metrics, "flexgate_cp_connected_agents") == 0);
}

// A fake agent: one Connect stream, labels zone=a, reporting what it already serves.
// With `token_in_hello`, the key travels in Hello.token instead of the metadata.
struct FakeAgent : flexgate::testing::FakeAgent {
  FakeAgent(Cp& cp, const std::string& agent_id, uint64_t applied_version = 0,
            const std::string& applied_hash = "", const std::string& key = kAdminKey,
            bool token_in_hello = false)
      : flexgate::testing::FakeAgent(cp, Hello(agent_id, applied_version, applied_hash), key,
                                     token_in_hello ? TokenIn::kHello : TokenIn::kMetadata) {}

  static v1::Hello Hello(const std::string& agent_id, uint64_t applied_version,
                         const std::string& applied_hash) {
    v1::Hello hello;
    hello.set_agent_id(agent_id);
    hello.mutable_labels()->insert({"zone", "a"});
    hello.set_applied_version(applied_version);
    hello.set_applied_hash(applied_hash);
    return hello;
  }
};

struct AgentRow {
  bool connected = false;
  int64_t applied_version = 0;
  int64_t last_nack_version = 0;
  std::string last_nack_error;
};

AgentRow ReadAgent(PgConn& db, const std::string& agent_id) {
  auto r = db.Exec("SELECT connected, applied_version, COALESCE(last_nack_version, 0), "
                   "COALESCE(last_nack_error, '') FROM agents WHERE agent_id = $1",
                   {PgParam::Text(agent_id)});
  REQUIRE(r.ok());
  if (r->rows() == 0) return {};
  return AgentRow{r->GetBool(0, 0), r->GetInt64(0, 1), r->GetInt64(0, 2), r->GetString(0, 3)};
}

TEST_CASE("An agent receives each new version and ACKs are recorded and a NACKed version is not re-sent") {
  const std::string url = FreshDatabase("cp_test");
  auto cp = Cp::Start(url);
  auto db = Db(url);
  v1::ApplyResponse v1r;
  REQUIRE(cp->Apply(MakeConfig(8081), &v1r).ok());

  {
    FakeAgent agent(*cp, "agent-1");
    // On Hello, the live version is sent.
    v1::Snapshot s1 = agent.Next();
    CHECK(s1.version() == 1);
    CHECK(s1.hash() == v1r.hash());
    CHECK(s1.agent_id() == "agent-1");
    CHECK(ConfigHash(s1.config()) == s1.hash());
    agent.Ack(s1);
    CHECK(WaitFor([&] { return ReadAgent(*db, "agent-1").applied_version == 1; },
                  absl::Seconds(10)));
    CHECK(ReadAgent(*db, "agent-1").connected);

    // Apply pushes version 2 on the open stream.
    v1::ApplyResponse v2r;
    REQUIRE(cp->Apply(MakeConfig(8082), &v2r).ok());
    v1::Snapshot s2 = agent.Next();
    CHECK(s2.version() == 2);
    CHECK(s2.nonce() != s1.nonce());
    CHECK(s2.config().clusters(0).endpoints(0).port() == 8082);

    // A reply with the old nonce is ignored: the row stays at version 1.
    agent.AckWithNonce(2, s1.nonce());
    agent.Nack(s2, 1, "routes[0]: unsupported_feature: test says no");
    CHECK(WaitFor([&] { return ReadAgent(*db, "agent-1").last_nack_version == 2; },
                  absl::Seconds(10)));
    AgentRow row = ReadAgent(*db, "agent-1");
    CHECK(row.applied_version == 1);
    CHECK(row.last_nack_error == "routes[0]: unsupported_feature: test says no");
    std::string metrics = AdminBody(cp->admin_port, "/metrics");
    CHECK(MetricValue(metrics, "flexgate_cp_stale_replies_total") == 1);
    CHECK(MetricValue(metrics, "flexgate_cp_nacks_total") == 1);
    CHECK(MetricValue(metrics, "flexgate_cp_connected_agents") == 1);

    // The next version is sent normally.
    v1::ApplyResponse v3r;
    REQUIRE(cp->Apply(MakeConfig(8083), &v3r).ok());
    CHECK(agent.Next().version() == 3);
  }
  CHECK(WaitFor([&] { return !ReadAgent(*db, "agent-1").connected; }, absl::Seconds(10)));

  // An agent NACKs the live version and reconnects: the rejection survives the new stream, so the
  // first snapshot it then sees is the next version, not the rejected one again.
  {
    FakeAgent agent(*cp, "agent-2");
    v1::Snapshot s3 = agent.Next();
    REQUIRE(s3.version() == 3);
    agent.Nack(s3, 0, "no");
    CHECK(WaitFor([&] { return ReadAgent(*db, "agent-2").last_nack_version == 3; },
                  absl::Seconds(10)));
  }
  {
    FakeAgent agent(*cp, "agent-2");
    v1::ApplyResponse v4r;
    REQUIRE(cp->Apply(MakeConfig(8084), &v4r).ok());
    CHECK(agent.Next().version() == 4);  // version 3 was not re-sent first
  }
}

TEST_CASE("An agent that already serves the live version gets nothing until the next apply") {
  const std::string url = FreshDatabase("cp_test");
  auto cp = Cp::Start(url);
  v1::ApplyResponse r1;
  REQUIRE(cp->Apply(MakeConfig(8081), &r1).ok());
  FakeAgent agent(*cp, "agent-3", 1, r1.hash());
  v1::ApplyResponse r2;
  REQUIRE(cp->Apply(MakeConfig(8082), &r2).ok());
  CHECK(agent.Next().version() == 2);
}

TEST_CASE("Agent streams without a valid key are refused and Hello.token is accepted") {
  const std::string url = FreshDatabase("cp_test");
  auto cp = Cp::Start(url);
  {
    FakeAgent agent(*cp, "intruder", 0, "", "fgk_wrong");
    CHECK(agent.FinishStatus().error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    FakeAgent agent(*cp, "intruder", 0, "", "fgk_wrong", /*token_in_hello=*/true);
    CHECK(agent.FinishStatus().error_code() == grpc::StatusCode::UNAUTHENTICATED);
  }
  v1::ApplyResponse r;
  REQUIRE(cp->Apply(MakeConfig(8081), &r).ok());
  FakeAgent agent(*cp, "agent-token", 0, "", kAdminKey, /*token_in_hello=*/true);
  v1::Snapshot s = agent.Next();
  CHECK(s.version() == 1);
  // Heartbeats record what the agent serves.
  agent.Heartbeat(1, s.hash());
  auto db = Db(url);
  CHECK(WaitFor([&] { return ReadAgent(*db, "agent-token").applied_version == 1; },
                absl::Seconds(10)));
}

TEST_CASE("Two replicas on one database share applies with each other's agents") {
  const std::string url = FreshDatabase("cp_test");
  auto a = Cp::Start(url);
  auto b = Cp::Start(url);
  FakeAgent agent(*b, "agent-on-b");
  v1::ApplyResponse r;
  REQUIRE(a->Apply(MakeConfig(8081), &r).ok());
  v1::Snapshot s = agent.Next();
  CHECK(s.version() == 1);
  CHECK(s.hash() == r.hash());
}

}  // namespace
}  // namespace flexgate::cp

namespace flexgate::cp {
namespace {

TEST_CASE("A database restart makes RPCs fail with UNAVAILABLE and then the control plane recovers") {
  // A private cluster: this test stops and restarts it.
  auto pg = TestPostgres::Start();
  REQUIRE(pg.ok());
  auto url = (*pg)->CreateDatabase("cp_restart");
  REQUIRE(url.ok());
  auto cp = Cp::Start(*url);
  FakeAgent agent(*cp, "agent-r");
  v1::ApplyResponse r;
  REQUIRE(cp->Apply(MakeConfig(8081), &r).ok());
  CHECK(agent.Next().version() == 1);

  REQUIRE((*pg)->Stop().ok());
  grpc::Status down = cp->Apply(MakeConfig(8082), &r);
  CHECK(down.error_code() == grpc::StatusCode::UNAVAILABLE);
  CHECK(WaitFor([&] {
    return AdminStatus(cp->admin_port, "/health/ready") == 503;
  }, absl::Seconds(10)));
  CHECK(cp->proc->Running());

  REQUIRE((*pg)->Restart().ok());
  CHECK(WaitFor([&] {
    return AdminStatus(cp->admin_port, "/health/ready") == 200;
  }, absl::Seconds(15)));
  // Pooled connections broken by the restart are re-established on use.
  grpc::Status after = cp->Apply(MakeConfig(8082), &r);
  INFO(after.error_message());
  REQUIRE(after.ok());
  CHECK(r.version() == 2);
  // The listener reconnected too: the open stream gets the new version.
  CHECK(agent.Next().version() == 2);
  CHECK(cp->Stop());
}

}  // namespace
}  // namespace flexgate::cp

namespace flexgate::cp {
namespace {

TEST_CASE("Many agents of one tenant all receive each version") {
  const std::string url = FreshDatabase("cp_test");
  auto cp = Cp::Start(url);
  constexpr int kAgents = 25;
  std::vector<std::unique_ptr<FakeAgent>> agents;
  for (int i = 0; i < kAgents; ++i) {
    agents.push_back(std::make_unique<FakeAgent>(*cp, absl::StrCat("fleet-", i)));
  }
  for (uint32_t port : {8081u, 8082u}) {
    v1::ApplyResponse r;
    REQUIRE(cp->Apply(MakeConfig(port), &r).ok());
    for (auto& a : agents) {
      v1::Snapshot s = a->Next();
      CHECK(s.version() == r.version());
      CHECK(s.hash() == r.hash());
      a->Ack(s);
    }
  }
  auto db = Db(url);
  CHECK(WaitFor([&] {
    auto n = db->Exec("SELECT count(*) FROM agents WHERE applied_version = 2 AND connected");
    return n.ok() && n->GetInt64(0, 0) == kAgents;
  }, absl::Seconds(10)));
  CHECK(flexgate::testing::CpMetric(cp->admin_port, "flexgate_cp_connected_agents") == kAgents);
}

}  // namespace
}  // namespace flexgate::cp
