// The fleet view and convergence, end to end: flexgate-cp as a real process on a real
// PostgreSQL, fake agents as real gRPC streams. Checks every agent state FleetService reports
// (in sync, pending, rejected, drifted, disconnected, stale), label and state filters, paging,
// the per-version convergence numbers of ListVersions and Get, the convergence histogram on
// /metrics, and tenant isolation and roles on the new RPCs.
#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/capabilities.h"
#include "google/protobuf/util/time_util.h"
#include "tests/controlplane/cp_test_support.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::cp {
namespace {

using flexgate::testing::AdminBody;
using flexgate::testing::CpLaunchOptions;
using flexgate::testing::LaunchOptions;
using flexgate::testing::CpProcess;
using flexgate::testing::FreshDatabase;
using flexgate::testing::MetricValue;
using flexgate::testing::WaitFor;
using google::protobuf::util::TimeUtil;
namespace v1 = flexgate::v1;
using State = v1::FleetAgent;

constexpr char kOperatorKey[] = "fgk_fleet_test_operator";

v1::Config MakeConfig(uint32_t port) { return flexgate::testing::RouteConfig(port); }

// flexgate-cp with the operator key of tenant "default".
struct Cp : CpProcess {
  explicit Cp(const std::string& db_url, int stale_after_seconds = 30)
      : CpProcess(Launch(db_url, stale_after_seconds)) {}

  static CpLaunchOptions Launch(const std::string& db_url, int stale_after_seconds) {
    CpLaunchOptions o = LaunchOptions(db_url, kOperatorKey);
    o.extra_args = {"--replica-id", "replica-a", "--agent-stale-after",
                    absl::StrCat(stale_after_seconds)};
    return o;
  }

  v1::ApplyResponse Apply(const v1::Config& cfg) { return CpProcess::Apply(cfg, kOperatorKey); }

  v1::ListAgentsResponse List(v1::ListAgentsRequest req = {},
                              const std::string& key = kOperatorKey) {
    v1::ListAgentsResponse resp;
    grpc::Status s = fleet->ListAgents(Ctx(key).get(), req, &resp);
    INFO(s.error_message());
    REQUIRE(s.ok());
    return resp;
  }

  v1::FleetAgent Agent(const std::string& id) {
    v1::GetAgentRequest req;
    req.set_agent_id(id);
    v1::GetAgentResponse resp;
    grpc::Status s = fleet->GetAgent(Ctx(kOperatorKey).get(), req, &resp);
    INFO(s.error_message());
    REQUIRE(s.ok());
    return resp.agent();
  }

  // Waits until GetAgent shows `state`; returns whether it did.
  bool AwaitState(const std::string& id, State::State state) {
    return WaitFor([&] { return Agent(id).state() == state; }, absl::Seconds(10));
  }
};

// A fake agent with labels zone=`zone` and role=edge, authenticated with the operator key (an
// admin key of tenant "default" opens agent streams of "default"). It announces every feature:
// Validate and Apply check configs against the fleet's capabilities, and this test is about the
// fleet view, not about refusals.
struct FakeAgent : flexgate::testing::FakeAgent {
  FakeAgent(Cp& cp, const std::string& id, const std::string& zone)
      : flexgate::testing::FakeAgent(cp, Hello(id, zone), kOperatorKey) {}

  static v1::Hello Hello(const std::string& id, const std::string& zone) {
    v1::Hello hello;
    hello.set_agent_id(id);
    hello.mutable_labels()->insert({"zone", zone});
    hello.mutable_labels()->insert({"role", "edge"});
    hello.set_agent_version("9.9.9-test");
    for (const std::string& f : AllFeatures()) hello.add_capabilities(f);
    return hello;
  }
};

std::map<std::string, uint32_t> Counts(const v1::ListAgentsResponse& r) {
  return {r.state_counts().begin(), r.state_counts().end()};
}

double Seconds(const google::protobuf::Duration& d) {
  return static_cast<double>(TimeUtil::DurationToNanoseconds(d)) / 1e9;
}

TEST_CASE("ListAgents shows in sync and pending and rejected and drifted and disconnected agents and convergence per version") {
  const absl::Time test_start = absl::Now();
  const std::string url = FreshDatabase("cp_fleet");
  Cp cp(url);

  const v1::ApplyResponse v1r = cp.Apply(MakeConfig(8081));
  const std::vector<std::string> ids = {"a1", "a2", "a3", "a4", "a5", "a6"};
  std::map<std::string, std::unique_ptr<FakeAgent>> agents;
  for (const std::string& id : ids) {
    agents[id] = std::make_unique<FakeAgent>(cp, id, id == "a2" ? "b" : "a");
  }
  // Every agent receives and ACKs version 1.
  for (const std::string& id : ids) {
    v1::Snapshot s = agents[id]->Next();
    REQUIRE(s.version() == 1);
    agents[id]->Ack(s);
  }
  CHECK(WaitFor([&] { return Counts(cp.List())["IN_SYNC"] == 6; }, absl::Seconds(10)));

  // a5 goes away.
  agents["a5"]->Close();
  CHECK(cp.AwaitState("a5", State::DISCONNECTED));

  // Version 2: a1 and a2 ACK, a3 NACKs, a4 ACKs and then reports a foreign hash, a6 stays
  // silent.
  const v1::ApplyResponse v2r = cp.Apply(MakeConfig(8082));
  std::map<std::string, v1::Snapshot> s2;
  for (const char* id : {"a1", "a2", "a3", "a4", "a6"}) {
    s2[id] = agents[id]->Next();
    REQUIRE(s2[id].version() == 2);
  }
  agents["a1"]->Ack(s2["a1"]);
  agents["a2"]->Ack(s2["a2"]);
  agents["a3"]->Nack(s2["a3"], 1, "routes[0]: unsupported_feature: test says no");
  agents["a4"]->Ack(s2["a4"]);
  CHECK(cp.AwaitState("a4", State::IN_SYNC));
  agents["a4"]->Heartbeat(2, std::string(64, 'f'));

  std::map<std::string, uint32_t> want = {
      {"IN_SYNC", 2}, {"PENDING", 1}, {"REJECTED", 1}, {"DRIFTED", 1}, {"DISCONNECTED", 1}};
  CHECK(WaitFor([&] { return Counts(cp.List()) == want; }, absl::Seconds(10)));
  v1::ListAgentsResponse all = cp.List();
  CHECK(Counts(all) == want);
  CHECK(all.live_version() == 2);
  CHECK(all.total() == 6);
  REQUIRE(all.agents_size() == 6);

  std::map<std::string, v1::FleetAgent> by_id;
  for (const auto& a : all.agents()) by_id[a.agent_id()] = a;
  {
    const v1::FleetAgent& a = by_id["a1"];
    CHECK(a.state() == State::IN_SYNC);
    CHECK(a.connected());
    CHECK(a.tenant() == "default");
    CHECK(a.applied_version() == 2);
    CHECK(a.applied_hash() == v2r.hash());
    CHECK(a.expected_hash() == v2r.hash());
    CHECK(a.sent_version() == 2);
    CHECK(a.labels().at("zone") == "a");
    CHECK(a.labels().at("role") == "edge");
    CHECK(a.agent_version() == "9.9.9-test");
    REQUIRE(a.capabilities_size() == static_cast<int>(AllFeatures().size()));
    CHECK(a.capabilities(0) == AllFeatures()[0]);
    CHECK(a.replica() == "replica-a");
    CHECK(TimeUtil::DurationToMilliseconds(a.last_apply_duration()) ==
          absl::ToInt64Milliseconds(flexgate::testing::kFakeApplyDuration));
    CHECK(a.last_seen().seconds() >= absl::ToUnixSeconds(test_start) - 5);
    CHECK(a.applied_at().seconds() > 0);
    CHECK(a.last_nack_version() == 0);
  }
  {
    const v1::FleetAgent& a = by_id["a3"];
    CHECK(a.state() == State::REJECTED);
    CHECK(a.applied_version() == 1);
    CHECK(a.applied_hash() == v1r.hash());
    CHECK(a.last_nack_version() == 2);
    CHECK(a.last_nack_error() == "routes[0]: unsupported_feature: test says no");
    CHECK(a.last_nack_at().seconds() > 0);
    CHECK(a.state_reason().find("test says no") != std::string::npos);
  }
  {
    const v1::FleetAgent& a = by_id["a4"];
    CHECK(a.state() == State::DRIFTED);
    CHECK(a.applied_version() == 2);
    CHECK(a.applied_hash() == std::string(64, 'f'));
    CHECK(a.expected_hash() == v2r.hash());
  }
  {
    const v1::FleetAgent& a = by_id["a5"];
    CHECK(a.state() == State::DISCONNECTED);
    CHECK_FALSE(a.connected());
    CHECK(a.applied_version() == 1);
  }
  {
    const v1::FleetAgent& a = by_id["a6"];
    CHECK(a.state() == State::PENDING);
    CHECK(a.applied_version() == 1);
    CHECK(a.sent_version() == 2);
    CHECK(a.state_reason().find("not yet acknowledged") != std::string::npos);
  }

  // Label selector, state filter, paging, errors. (Plain blocks, not SECTIONs: Catch2 would
  // rerun the whole setup for each.)
  {
    v1::ListAgentsRequest req;
    req.set_label_selector("zone=b, role=edge");
    v1::ListAgentsResponse zb = cp.List(req);
    REQUIRE(zb.agents_size() == 1);
    CHECK(zb.agents(0).agent_id() == "a2");
    CHECK(zb.total() == 1);

    req.set_label_selector("zone=a");
    req.add_states(State::REJECTED);
    req.add_states(State::PENDING);
    v1::ListAgentsResponse filtered = cp.List(req);
    REQUIRE(filtered.agents_size() == 2);
    CHECK(filtered.agents(0).agent_id() == "a3");
    CHECK(filtered.agents(1).agent_id() == "a6");
    CHECK(filtered.total() == 2);
    CHECK(filtered.state_counts().at("IN_SYNC") == 1);  // counts ignore the state filter

    v1::ListAgentsRequest paged;
    paged.set_page_size(4);
    std::vector<std::string> seen;
    for (int page = 0; page < 5; ++page) {
      v1::ListAgentsResponse r = cp.List(paged);
      for (const auto& a : r.agents()) seen.push_back(a.agent_id());
      if (r.next_page_token().empty()) break;
      paged.set_page_token(r.next_page_token());
    }
    CHECK(seen == ids);

    v1::ListAgentsRequest bad;
    bad.set_label_selector("zone");
    v1::ListAgentsResponse out;
    CHECK(cp.fleet->ListAgents(Cp::Ctx(kOperatorKey).get(), bad, &out).error_code() ==
          grpc::StatusCode::INVALID_ARGUMENT);
    bad.set_label_selector("");
    bad.set_page_token("garbage!");
    CHECK(cp.fleet->ListAgents(Cp::Ctx(kOperatorKey).get(), bad, &out).error_code() ==
          grpc::StatusCode::INVALID_ARGUMENT);

    v1::GetAgentRequest get;
    get.set_agent_id("nobody");
    v1::GetAgentResponse got;
    CHECK(cp.fleet->GetAgent(Cp::Ctx(kOperatorKey).get(), get, &got).error_code() ==
          grpc::StatusCode::NOT_FOUND);
    CHECK(cp.Agent("a3").state() == State::REJECTED);
  }

  // Convergence per version in ListVersions and Get, and on /metrics.
  {
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - test_start);
    v1::ListVersionsResponse versions;
    REQUIRE(cp.config->ListVersions(Cp::Ctx(kOperatorKey).get(), {}, &versions).ok());
    REQUIRE(versions.versions_size() == 2);
    const v1::ConfigVersion& v2 = versions.versions(0);
    const v1::ConfigVersion& v1v = versions.versions(1);
    CHECK(v2.version() == 2);
    CHECK(v2.acked_agents() == 3);  // a1, a2, a4
    CHECK(v1v.acked_agents() == 6);
    CHECK(v2.connected_agents() == 5);
    CHECK(v1v.connected_agents() == 5);
    CHECK(v2.serving_agents() == 2);   // a1, a2 (a4 reports another hash)
    CHECK(v1v.serving_agents() == 2);  // a3, a6
    CHECK(v2.rejected_agents() == 1);
    CHECK(v1v.rejected_agents() == 0);
    for (const v1::ConfigVersion* v : {&v2, &v1v}) {
      INFO("version " << v->version());
      REQUIRE(v->has_convergence_p50());
      const double p50 = Seconds(v->convergence_p50());
      const double p99 = Seconds(v->convergence_p99());
      const double max = Seconds(v->convergence_max());
      CHECK(p50 > 0);
      CHECK(p50 <= p99);
      CHECK(p99 <= max);
      CHECK(max < elapsed);
    }

    v1::GetRequest get;
    get.set_version(2);
    v1::GetResponse got;
    REQUIRE(cp.config->Get(Cp::Ctx(kOperatorKey).get(), get, &got).ok());
    CHECK(got.version().acked_agents() == 3);
    CHECK(got.version().rejected_agents() == 1);
    CHECK(TimeUtil::DurationToNanoseconds(got.version().convergence_max()) ==
          TimeUtil::DurationToNanoseconds(v2.convergence_max()));

    // Nine first ACKs (six of version 1, three of version 2), each observed once.
    std::string metrics = AdminBody(cp.admin_port, "/metrics");
    CHECK(MetricValue(metrics, "flexgate_cp_convergence_seconds_count") == 9);
    const double sum = MetricValue(metrics, "flexgate_cp_convergence_seconds_sum");
    CHECK(sum > 0);
    CHECK(sum < 9 * elapsed);
    CHECK(MetricValue(metrics, "flexgate_cp_convergence_seconds_bucket{le=\"60\"}") == 9);
  }
}

TEST_CASE("An agent that stops sending is shown stale and a heartbeat brings it back") {
  const std::string url = FreshDatabase("cp_fleet");
  Cp cp(url, /*stale_after_seconds=*/1);
  cp.Apply(MakeConfig(8081));
  FakeAgent agent(cp, "quiet", "a");
  v1::Snapshot s = agent.Next();
  agent.Ack(s);
  CHECK(cp.AwaitState("quiet", State::STALE));
  CHECK(cp.Agent("quiet").connected());
  agent.Heartbeat(s.version(), s.hash());
  CHECK(cp.AwaitState("quiet", State::IN_SYNC));
}

// The ACK owns what the agent applied; a heartbeat refreshes what it reports, and one that comes
// late on a stream the agent has already replaced (the agent reconnected, and its old stream's
// events were still queued) changes nothing.
TEST_CASE("A heartbeat of a replaced stream does not overwrite what the new stream recorded") {
  const std::string url = FreshDatabase("cp_fleet");
  Cp cp(url);
  const v1::ApplyResponse v1r = cp.Apply(MakeConfig(8081));
  FakeAgent old_stream(cp, "twice", "a");
  v1::Snapshot s1 = old_stream.Next();
  old_stream.Ack(s1);
  CHECK(cp.AwaitState("twice", State::IN_SYNC));

  // The agent reconnects (the old stream is not yet torn down) and moves on to version 2.
  FakeAgent new_stream(cp, "twice", "a");
  v1::Snapshot again = new_stream.Next();  // its Hello reported nothing applied
  REQUIRE(again.version() == 1);
  new_stream.Ack(again);
  const v1::ApplyResponse v2r = cp.Apply(MakeConfig(8082));
  v1::Snapshot s2 = new_stream.Next();
  REQUIRE(s2.version() == 2);
  new_stream.Ack(s2);
  CHECK(WaitFor([&] { return cp.Agent("twice").applied_version() == 2; }, absl::Seconds(10)));
  const v1::FleetAgent acked = cp.Agent("twice");
  CHECK(acked.state() == State::IN_SYNC);

  // The old stream still reports version 1. Written (the batch counter moves), and ignored.
  auto batches = [&] {
    return flexgate::testing::CpMetric(cp.admin_port, "flexgate_cp_db_event_batches_total");
  };
  const double before = batches();
  old_stream.Heartbeat(1, v1r.hash());
  CHECK(WaitFor([&] { return batches() > before; }, absl::Seconds(10)));
  v1::FleetAgent after = cp.Agent("twice");
  CHECK(after.applied_version() == 2);
  CHECK(after.applied_hash() == v2r.hash());
  CHECK(after.state() == State::IN_SYNC);

  // The current stream's heartbeat for the same version keeps the ACK's time and duration.
  new_stream.Heartbeat(2, v2r.hash());
  CHECK(WaitFor(
      [&] {
        return TimeUtil::TimestampToNanoseconds(cp.Agent("twice").last_seen()) >
               TimeUtil::TimestampToNanoseconds(after.last_seen());
      },
      absl::Seconds(10)));
  v1::FleetAgent beat = cp.Agent("twice");
  CHECK(beat.state() == State::IN_SYNC);
  CHECK(TimeUtil::TimestampToNanoseconds(beat.applied_at()) ==
        TimeUtil::TimestampToNanoseconds(acked.applied_at()));
  CHECK(TimeUtil::DurationToMilliseconds(beat.last_apply_duration()) ==
        absl::ToInt64Milliseconds(flexgate::testing::kFakeApplyDuration));
}

// The agent answers each snapshot only after the next one has arrived, as a busy agent does
// when versions are applied every few milliseconds: the ACK of n then carries n's nonce, which
// is no longer the current one. It must still count for n (acked agents, convergence), never
// move the agent's applied version backwards, and never confirm n+1.
TEST_CASE("Late ACKs and NACKs are recorded for the version they answer") {
  const std::string url = FreshDatabase("cp_fleet");
  Cp cp(url);
  auto versions = [&] {
    std::map<uint64_t, v1::ConfigVersion> out;
    v1::ListVersionsResponse r;
    REQUIRE(cp.config->ListVersions(Cp::Ctx(kOperatorKey).get(), {}, &r).ok());
    for (const auto& v : r.versions()) out[v.version()] = v;
    return out;
  };
  auto acked = [&](uint64_t version) { return versions()[version].acked_agents(); };
  auto metric = [&](const char* name) {
    return flexgate::testing::CpMetric(cp.admin_port, name);
  };

  cp.Apply(MakeConfig(8081));
  FakeAgent agent(cp, "late", "a");
  const v1::Snapshot s1 = agent.Next();
  REQUIRE(s1.version() == 1);
  cp.Apply(MakeConfig(8082));
  const v1::Snapshot s2 = agent.Next();  // sent before version 1 was answered
  REQUIRE(s2.version() == 2);
  CHECK(s2.nonce() != s1.nonce());

  // Late ACK of 1: recorded for version 1, the agent is still pending on 2.
  agent.Ack(s1);
  REQUIRE(WaitFor([&] { return acked(1) == 1; }, absl::Seconds(10)));
  {
    auto v = versions();
    CHECK(v[2].acked_agents() == 0);
    REQUIRE(v[1].has_convergence_p50());
    CHECK(Seconds(v[1].convergence_max()) > 0);
    v1::FleetAgent a = cp.Agent("late");
    CHECK(a.state() == State::PENDING);
    CHECK(a.applied_version() == 1);
    CHECK(a.applied_hash() == s1.hash());
    CHECK(a.sent_version() == 2);
  }
  CHECK(metric("flexgate_cp_late_replies_total") == 1);
  CHECK(metric("flexgate_cp_convergence_seconds_count") == 1);
  // The same nonce answers once.
  agent.Ack(s1);
  CHECK(WaitFor([&] { return metric("flexgate_cp_stale_replies_total") == 1; },
                absl::Seconds(10)));

  // The current ACK confirms 2.
  agent.Ack(s2);
  CHECK(cp.AwaitState("late", State::IN_SYNC));
  CHECK(acked(2) == 1);

  // Out of order: 4 is ACKed after 5 (the agent applied both; the stream shows only the newest
  // nonce as current). The late ACK counts for 4 but the agent stays on 5.
  cp.Apply(MakeConfig(8083));
  const v1::Snapshot s3 = agent.Next();
  agent.Ack(s3);
  CHECK(cp.AwaitState("late", State::IN_SYNC));
  cp.Apply(MakeConfig(8084));
  const v1::Snapshot s4 = agent.Next();
  cp.Apply(MakeConfig(8085));
  const v1::Snapshot s5 = agent.Next();
  REQUIRE(s4.version() == 4);
  REQUIRE(s5.version() == 5);
  agent.Ack(s5);
  agent.Ack(s4);
  REQUIRE(WaitFor([&] { return acked(4) == 1; }, absl::Seconds(10)));
  CHECK(acked(5) == 1);
  {
    v1::FleetAgent a = cp.Agent("late");
    CHECK(a.state() == State::IN_SYNC);
    CHECK(a.applied_version() == 5);
    CHECK(a.applied_hash() == s5.hash());
  }

  // A late NACK of 6 is recorded for 6 and leaves the send of 7 to be confirmed normally.
  cp.Apply(MakeConfig(8086));
  const v1::Snapshot s6 = agent.Next();
  cp.Apply(MakeConfig(8087));
  const v1::Snapshot s7 = agent.Next();
  REQUIRE(s6.version() == 6);
  REQUIRE(s7.version() == 7);
  agent.Nack(s6, 5, "routes[0]: test: late rejection");
  REQUIRE(WaitFor([&] { return versions()[6].rejected_agents() == 1; }, absl::Seconds(10)));
  CHECK(cp.Agent("late").last_nack_version() == 6);
  CHECK(cp.Agent("late").applied_version() == 5);
  agent.Ack(s7);
  CHECK(cp.AwaitState("late", State::IN_SYNC));
  CHECK(cp.Agent("late").applied_version() == 7);
  CHECK(acked(6) == 0);
  CHECK(metric("flexgate_cp_late_replies_total") == 3);
  CHECK(metric("flexgate_cp_nacks_total") == 1);
  // One convergence sample per first ACK: 1, 2, 3, 4, 5, 7.
  CHECK(metric("flexgate_cp_convergence_seconds_count") == 6);
}

TEST_CASE("FleetService keeps tenants apart and viewers may read") {
  const std::string url = FreshDatabase("cp_fleet");
  Cp cp(url);
  cp.Apply(MakeConfig(8081));
  FakeAgent agent(cp, "default-agent", "a");
  agent.Ack(agent.Next());
  CHECK(cp.AwaitState("default-agent", State::IN_SYNC));

  // A viewer of "default" lists and reads its agents.
  v1::CreateKeyRequest kreq;
  kreq.set_name("ci");
  kreq.set_role("viewer");
  v1::CreateKeyResponse viewer;
  REQUIRE(cp.keys->CreateKey(Cp::Ctx(kOperatorKey).get(), kreq, &viewer).ok());
  v1::ListAgentsResponse listed = cp.List({}, viewer.secret());
  REQUIRE(listed.agents_size() == 1);
  CHECK(listed.agents(0).agent_id() == "default-agent");
  v1::GetAgentRequest get;
  get.set_agent_id("default-agent");
  v1::GetAgentResponse got;
  CHECK(cp.fleet->GetAgent(Cp::Ctx(viewer.secret()).get(), get, &got).ok());

  // The admin of tenant "beta" sees none of it.
  v1::CreateTenantRequest treq;
  treq.set_name("beta");
  v1::CreateTenantResponse beta;
  REQUIRE(cp.tenants->CreateTenant(Cp::Ctx(kOperatorKey).get(), treq, &beta).ok());
  const std::string beta_key = beta.admin_key_secret();

  v1::ListAgentsRequest other;
  other.set_tenant("default");
  v1::ListAgentsResponse out;
  CHECK(cp.fleet->ListAgents(Cp::Ctx(beta_key).get(), other, &out).error_code() ==
        grpc::StatusCode::PERMISSION_DENIED);
  CHECK(out.agents_size() == 0);
  get.set_tenant("default");
  CHECK(cp.fleet->GetAgent(Cp::Ctx(beta_key).get(), get, &got).error_code() ==
        grpc::StatusCode::PERMISSION_DENIED);
  // Its own tenant: no agents, and the other tenant's agent id is simply not found.
  CHECK(cp.List({}, beta_key).agents_size() == 0);
  get.set_tenant("");
  CHECK(cp.fleet->GetAgent(Cp::Ctx(beta_key).get(), get, &got).error_code() ==
        grpc::StatusCode::NOT_FOUND);
  // The per-version numbers are the tenant's own too.
  v1::ListVersionsRequest lv;
  lv.set_tenant("default");
  v1::ListVersionsResponse versions;
  CHECK(cp.config->ListVersions(Cp::Ctx(beta_key).get(), lv, &versions).error_code() ==
        grpc::StatusCode::PERMISSION_DENIED);

  // No key at all.
  CHECK(cp.fleet->ListAgents(Cp::Ctx("").get(), {}, &out).error_code() ==
        grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace flexgate::cp
