// Revoking an agent's credential cuts off the streams that are already open with it, on every
// replica: real flexgate-cp processes on one real PostgreSQL database, fake agents as real gRPC
// streams, and the real flexgate-agent for what an agent does when it is cut off.
//
// Paths covered: the replica that handles RevokeToken / RevokeKey ends its own streams at once;
// other replicas learn it from the revocation notification (the replicas here run with the
// periodic re-check switched off, so nothing else could end the stream); a revocation whose
// notification never came (written straight into the table) is found by the periodic re-check,
// or by the re-check after the LISTEN connection comes back.
#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "controlplane/pg.h"
#include "tests/controlplane/cp_test_support.h"
#include "tests/harness/http/http_client.h"
#include "tests/harness/http/test_upstream.h"
#include "tests/harness/proc/process.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::cp {
namespace {

using flexgate::testing::BinaryPath;
using flexgate::testing::CpLaunchOptions;
using flexgate::testing::CpMetric;
using flexgate::testing::CpProcess;
using flexgate::testing::FreshDatabase;
using flexgate::testing::HttpGet;
using flexgate::testing::LaunchOptions;
using flexgate::testing::Process;
using flexgate::testing::ProcessOptions;
using flexgate::testing::TempDir;
using flexgate::testing::TestUpstream;
using flexgate::testing::WaitFor;
namespace v1 = flexgate::v1;
using Code = grpc::StatusCode;

constexpr char kOperatorKey[] = "fgk_revoke_test_operator";
// A revoked stream must end within this (the goal is "a couple of seconds"; the margin is for
// a loaded CI machine, not for the mechanism).
constexpr absl::Duration kPrompt = absl::Seconds(5);

// flexgate-cp with the operator key of tenant "default" and the periodic re-check of open
// streams' credentials every `check_seconds` (0 = off: only notifications and listener
// reconnects end a revoked stream).
struct Cp : CpProcess {
  Cp(const std::string& db_url, const std::string& replica, int check_seconds)
      : CpProcess(Launch(db_url, replica, check_seconds)) {}

  static CpLaunchOptions Launch(const std::string& db_url, const std::string& replica,
                                int check_seconds) {
    CpLaunchOptions o = LaunchOptions(db_url, kOperatorKey);
    o.extra_args = {"--replica-id", replica, "--revocation-check-interval",
                    absl::StrCat(check_seconds)};
    return o;
  }

  v1::ApplyResponse Apply(const v1::Config& cfg) { return CpProcess::Apply(cfg, kOperatorKey); }

  v1::CreateTokenResponse CreateToken(const std::string& name) {
    v1::CreateTokenRequest req;
    req.set_name(name);
    v1::CreateTokenResponse resp;
    grpc::Status s = keys->CreateToken(Ctx(kOperatorKey).get(), req, &resp);
    INFO(s.error_message());
    REQUIRE(s.ok());
    return resp;
  }

  void RevokeToken(uint64_t token_id, const std::string& request_id = "") {
    v1::RevokeTokenRequest req;
    req.set_token_id(token_id);
    v1::RevokeTokenResponse resp;
    grpc::Status s = keys->RevokeToken(Ctx(kOperatorKey, request_id).get(), req, &resp);
    INFO(s.error_message());
    REQUIRE(s.ok());
    REQUIRE(resp.token().revoked());
  }

  v1::FleetAgent::State AgentState(const std::string& id) {
    v1::GetAgentRequest req;
    req.set_agent_id(id);
    v1::GetAgentResponse resp;
    grpc::Status s = fleet->GetAgent(Ctx(kOperatorKey).get(), req, &resp);
    INFO(s.error_message());
    REQUIRE(s.ok());
    return resp.agent().state();
  }
};

v1::Hello HelloOf(const std::string& agent_id) {
  v1::Hello hello;
  hello.set_agent_id(agent_id);
  hello.set_agent_version("9.9.9-test");
  return hello;
}

// A fake agent that has received and ACKed the live version (so it is fully connected).
std::unique_ptr<flexgate::testing::FakeAgent> ConnectedAgent(Cp& cp, const std::string& id,
                                                             const std::string& secret) {
  auto agent = std::make_unique<flexgate::testing::FakeAgent>(cp, HelloOf(id), secret);
  v1::Snapshot s = agent->Next();
  agent->Ack(s);
  return agent;
}

// How a stream ended and how long after `since` it had.
struct Ending {
  grpc::Status status;
  absl::Duration after;
};

Ending AwaitEnd(flexgate::testing::FakeAgent& agent, absl::Time since) {
  grpc::Status s = agent.FinishStatus();
  return Ending{s, absl::Now() - since};
}

// The status a new stream with `secret` gets on `cp`.
grpc::Status Reconnect(Cp& cp, const std::string& id, const std::string& secret) {
  flexgate::testing::FakeAgent agent(cp, HelloOf(id), secret);
  return agent.FinishStatus();
}

std::unique_ptr<PgConn> Db(const std::string& url) {
  auto conn = PgConn::Connect(url);
  INFO(conn.status().ToString());
  REQUIRE(conn.ok());
  return std::move(conn).value();
}

TEST_CASE("Revoking a token through one replica ends its streams on every replica at once and leaves other tokens alone") {
  const std::string url = FreshDatabase("cp_revoke");
  Cp a(url, "replica-a", 0);
  Cp b(url, "replica-b", 0);
  a.Apply(flexgate::testing::RouteConfig(8081));
  const v1::CreateTokenResponse leaked = a.CreateToken("leaked");
  const v1::CreateTokenResponse healthy = a.CreateToken("healthy");

  auto on_b = ConnectedAgent(b, "leaked-on-b", leaked.secret());
  auto on_a = ConnectedAgent(a, "leaked-on-a", leaked.secret());
  auto other = ConnectedAgent(b, "healthy-on-b", healthy.secret());

  const absl::Time revoked_at = absl::Now();
  a.RevokeToken(leaked.token().token_id(), "revoke-req-1");

  // The replica that revoked it (directly) and the other one (through the notification).
  for (auto* agent : {on_a.get(), on_b.get()}) {
    Ending end = AwaitEnd(*agent, revoked_at);
    INFO(end.status.error_message() << " after " << absl::FormatDuration(end.after));
    CHECK(end.status.error_code() == Code::UNAUTHENTICATED);
    CHECK(end.status.error_message() == "enrollment token revoked");
    CHECK(end.after < kPrompt);
  }
  // Counted just after the streams are told to end, so awaited.
  for (Cp* cp : {&a, &b}) {
    CHECK(WaitFor(
        [&] { return CpMetric(cp->admin_port, "flexgate_cp_revoked_streams_total") == 1; },
        absl::Seconds(5)));
    CHECK(CpMetric(cp->admin_port, "flexgate_cp_revocation_notifications_total") == 1);
  }
  CHECK(WaitFor([&] { return a.AgentState("leaked-on-b") == v1::FleetAgent::DISCONNECTED; },
                absl::Seconds(10)));

  // The agent with another token keeps its stream and keeps receiving versions.
  const v1::ApplyResponse v2 = a.Apply(flexgate::testing::RouteConfig(8082));
  v1::Snapshot s = other->Next();
  CHECK(s.version() == v2.version());
  other->Ack(s);
  CHECK(a.AgentState("healthy-on-b") != v1::FleetAgent::DISCONNECTED);

  // The revoked token opens no new stream, on either replica.
  for (Cp* cp : {&a, &b}) {
    grpc::Status again = Reconnect(*cp, "leaked-again", leaked.secret());
    INFO(again.error_message());
    CHECK(again.error_code() == Code::UNAUTHENTICATED);
  }

  // The revocation is in the audit trail, once, with its request id.
  v1::ListAuditRequest q;
  q.set_action("token.revoke");
  v1::ListAuditResponse audit;
  REQUIRE(b.audit->List(Cp::Ctx(kOperatorKey).get(), q, &audit).ok());
  REQUIRE(audit.entries_size() == 1);
  CHECK(audit.entries(0).target() == absl::StrCat("token-", leaked.token().token_id()));
  CHECK(audit.entries(0).request_id() == "revoke-req-1");

  // Revoking it again changes nothing and is not audited again.
  a.RevokeToken(leaked.token().token_id());
  REQUIRE(b.audit->List(Cp::Ctx(kOperatorKey).get(), q, &audit).ok());
  CHECK(audit.entries_size() == 1);
}

TEST_CASE("Revoking an admin key ends agent streams opened with it and evicts it from every replica's cache") {
  const std::string url = FreshDatabase("cp_revoke");
  Cp a(url, "replica-a", 0);
  Cp b(url, "replica-b", 0);
  a.Apply(flexgate::testing::RouteConfig(8081));
  v1::CreateKeyRequest kreq;
  kreq.set_name("old-agent-key");
  kreq.set_role("admin");
  v1::CreateKeyResponse key;
  REQUIRE(a.keys->CreateKey(Cp::Ctx(kOperatorKey).get(), kreq, &key).ok());

  // Agents of tenant "default" set up before enrollment tokens connect with an admin key.
  auto agent = ConnectedAgent(b, "key-agent", key.secret());
  // Replica B has now cached the key (as an agent credential and, after this call, as an
  // operator key): without the notification it would keep accepting it for its cache TTL.
  v1::ListVersionsResponse versions;
  REQUIRE(b.config->ListVersions(Cp::Ctx(key.secret()).get(), {}, &versions).ok());
  const absl::Time cached_at = absl::Now();

  v1::RevokeKeyRequest rreq;
  rreq.set_key_id(key.key().key_id());
  v1::RevokeKeyResponse rresp;
  const absl::Time revoked_at = absl::Now();
  REQUIRE(a.keys->RevokeKey(Cp::Ctx(kOperatorKey).get(), rreq, &rresp).ok());

  Ending end = AwaitEnd(*agent, revoked_at);
  INFO(end.status.error_message() << " after " << absl::FormatDuration(end.after));
  CHECK(end.status.error_code() == Code::UNAUTHENTICATED);
  CHECK(end.status.error_message() == "API key revoked");
  CHECK(end.after < kPrompt);

  // Refused on B well within the 5 s cache TTL: the notification evicted it.
  grpc::Status s = b.config->ListVersions(Cp::Ctx(key.secret()).get(), {}, &versions);
  INFO("refused " << absl::FormatDuration(absl::Now() - cached_at) << " after it was cached");
  CHECK(s.error_code() == Code::UNAUTHENTICATED);
  CHECK(absl::Now() - cached_at < absl::Seconds(5));
  CHECK(Reconnect(b, "key-agent", key.secret()).error_code() == Code::UNAUTHENTICATED);
}

TEST_CASE("A revocation whose notification was missed ends the stream at the next periodic check") {
  const std::string url = FreshDatabase("cp_revoke");
  Cp cp(url, "replica-a", 1);
  cp.Apply(flexgate::testing::RouteConfig(8081));
  const v1::CreateTokenResponse leaked = cp.CreateToken("leaked");
  const v1::CreateTokenResponse healthy = cp.CreateToken("healthy");
  auto agent = ConnectedAgent(cp, "quietly-revoked", leaked.secret());
  auto other = ConnectedAgent(cp, "unaffected", healthy.secret());

  // Straight into the table: no notification is sent.
  auto db = Db(url);
  const absl::Time revoked_at = absl::Now();
  REQUIRE(db->Exec("UPDATE enrollment_tokens SET revoked_at = now() WHERE token_id = $1",
                   {PgParam::Uint(leaked.token().token_id())})
              .ok());
  Ending end = AwaitEnd(*agent, revoked_at);
  INFO(end.status.error_message() << " after " << absl::FormatDuration(end.after));
  CHECK(end.status.error_code() == Code::UNAUTHENTICATED);
  CHECK(end.status.error_message() == "enrollment token revoked");
  CHECK(end.after < kPrompt);
  CHECK(CpMetric(cp.admin_port, "flexgate_cp_revocation_notifications_total") == 0);
  CHECK(CpMetric(cp.admin_port, "flexgate_cp_revocation_checks_total") >= 1);

  const v1::ApplyResponse v2 = cp.Apply(flexgate::testing::RouteConfig(8082));
  CHECK(other->Next().version() == v2.version());
}

TEST_CASE("A revocation missed while the LISTEN connection was down is caught when it comes back") {
  const std::string url = FreshDatabase("cp_revoke");
  Cp cp(url, "replica-a", 0);
  cp.Apply(flexgate::testing::RouteConfig(8081));
  const v1::CreateTokenResponse leaked = cp.CreateToken("leaked");
  auto agent = ConnectedAgent(cp, "revoked-offline", leaked.secret());

  auto db = Db(url);
  const absl::Time revoked_at = absl::Now();
  REQUIRE(db->Exec("UPDATE enrollment_tokens SET revoked_at = now() WHERE token_id = $1",
                   {PgParam::Uint(leaked.token().token_id())})
              .ok());
  // Cut the replica's LISTEN connection; it reconnects and re-checks the open streams.
  auto killed = db->Exec(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
      "WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()");
  REQUIRE(killed.ok());
  REQUIRE(killed->rows() == 1);

  Ending end = AwaitEnd(*agent, revoked_at);
  INFO(end.status.error_message() << " after " << absl::FormatDuration(end.after));
  CHECK(end.status.error_code() == Code::UNAUTHENTICATED);
  CHECK(end.status.error_message() == "enrollment token revoked");
  CHECK(end.after < kPrompt);
  CHECK(CpMetric(cp.admin_port, "flexgate_cp_listener_reconnects_total") >= 1);
}

// The real agent, cut off by a revocation: it keeps serving its last-known-good config and says
// the control plane is disconnected.
TEST_CASE("The real agent keeps serving its last config and reports the control plane disconnected after its token is revoked") {
  const std::string url = FreshDatabase("cp_revoke");
  Cp cp(url, "replica-a", 0);
  auto upstream = TestUpstream::Start("up");
  REQUIRE(upstream.ok());
  cp.Apply(flexgate::testing::RouteConfig((*upstream)->port()));
  const v1::CreateTokenResponse token = cp.CreateToken("edge");

  TempDir cache("cp-revoke-agent");
  ProcessOptions o;
  o.args = {BinaryPath("flexgate-agent"), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
            "--control-plane", cp.address(), "--token", token.secret(),
            "--cache-dir", cache.path(), "--workers", "1"};
  auto agent = Process::Start(std::move(o));
  REQUIRE(agent.ok());
  auto port_of = [&](const std::string& pattern) {
    auto text = (*agent)->WaitForLogMatch(pattern, absl::Seconds(30));
    INFO((*agent)->LogTail());
    REQUIRE(text.ok());
    int port = 0;
    REQUIRE(absl::SimpleAtoi(*text, &port));
    return static_cast<uint16_t>(port);
  };
  const uint16_t listen = port_of(R"("msg":"listening".*"port":(\d+))");
  const uint16_t admin = port_of(R"("msg":"admin listening".*"port":(\d+))");

  auto ready_body = [&] {
    auto r = HttpGet(admin, "/health/ready");
    return r.ok() && r->status == 200 ? r->body : std::string();
  };
  auto disconnects = [&] {
    auto r = HttpGet(admin, "/stats");
    const std::string line = "agent.control_plane_disconnects: ";
    size_t at = r.ok() ? r->body.find(line) : std::string::npos;
    int n = -1;
    if (at != std::string::npos) {
      at += line.size();
      (void)absl::SimpleAtoi(r->body.substr(at, r->body.find('\n', at) - at), &n);
    }
    return n;
  };
  auto served = [&] {
    auto r = HttpGet(listen, "/hello");
    return r.ok() && r->status == 200 && absl::StartsWith(r->body, "up GET /hello");
  };
  REQUIRE(WaitFor(
      [&] { return absl::StrContains(ready_body(), "\"control_plane_connected\":true"); },
      absl::Seconds(30)));
  REQUIRE(served());
  REQUIRE(disconnects() == 0);

  cp.RevokeToken(token.token().token_id());
  // The stream ends (the agent counts the disconnect and logs it) and the agent says so. It
  // retries with backoff; every retry is refused, so "disconnected" is what it settles on.
  CHECK(WaitFor([&] { return disconnects() >= 1; }, kPrompt));
  auto ended = (*agent)->WaitForLogLine("control plane stream ended", kPrompt);
  INFO((*agent)->LogTail());
  CHECK(ended.ok());
  CHECK(WaitFor(
      [&] { return absl::StrContains(ready_body(), "\"control_plane_connected\":false"); },
      kPrompt));

  // Still ready, still serving the version it had, from the same upstream.
  CHECK(absl::StrContains(ready_body(), "\"ready\":true"));
  for (int i = 0; i < 5; ++i) CHECK(served());
  CHECK((*agent)->Running());
  // Its reconnects are refused.
  CHECK(cp.proc->WaitForLogLine("agent stream refused", absl::Seconds(10)).ok());
  CHECK(served());
  CHECK((*agent)->Terminate().success());
}

}  // namespace
}  // namespace flexgate::cp
