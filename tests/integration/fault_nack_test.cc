// Fault test (issue 5): a config the agent rejects. The agent runs with the test-only flag
// --disable-capability route.match.regex. The control plane's dry-run names the problem and
// Apply refuses the regex version unless told allow_unsupported; stored that way, it reaches the
// agent, whose capability check rejects it. Then:
//  - the NACK is recorded: FleetService lists the agent as REJECTED with the version and error;
//  - the agent keeps serving the old version: every request still succeeds, still on upstream A;
//  - the version is not re-sent: the agent's count of snapshots received (applied + rejected)
//    stays put over several heartbeats, after its stream is cut and re-established by a control
//    plane restart, and after the agent itself restarts;
//  - a later good version is applied normally.
#include <algorithm>
#include <catch2/catch.hpp>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/proc/test_util.h"
#include "tests/integration/fault_support.h"
#include "tests/integration/http_probe.h"
#include "tests/integration/stack.h"

namespace flexgate::testing {
namespace {

constexpr absl::Duration kHeartbeat = absl::Milliseconds(200);

// applied + rejected: every snapshot the agent received and did not already serve.
uint64_t SnapshotsReceived(uint16_t admin_port) {
  auto applied = GetAgentStat(admin_port, "agent.snapshots_applied");
  auto rejected = GetAgentStat(admin_port, "agent.snapshots_rejected");
  if (!applied.ok() || !rejected.ok()) return ~uint64_t{0};
  return *applied + *rejected;
}

// Waits for `n` heartbeats of the agent to reach the control plane: the FleetAgent's last_seen
// moves with every one of them.
bool AwaitHeartbeats(CpClient& cp, int n) {
  int64_t last = -1;
  int seen = 0;
  return WaitFor(
      [&] {
        auto fleet = cp.ListAgents();
        if (!fleet.ok() || fleet->agents_size() != 1) return false;
        const auto& ts = fleet->agents(0).last_seen();
        int64_t now = ts.seconds() * 1000000000 + ts.nanos();
        if (last >= 0 && now > last) ++seen;
        last = now;
        return seen >= n;
      },
      kConverge, kHeartbeat / 2);
}

TEST_CASE("A config the agent rejects is NACKed, recorded, never re-sent, and the agent keeps "
          "serving the old version") {
  auto started = Stack::Start({.upstreams = 2,
                               .agent = true,
                               .agent_workers = 2,
                               .agent_args = {"--disable-capability", "route.match.regex",
                                              "--heartbeat-interval", "200ms",
                                              "--reconnect-max-backoff", "500ms"}});
  REQUIRE(started.ok());
  Stack& stack = **started;
  const uint16_t admin = stack.agent_admin_port();
  auto agent_id_file = ReadFileToString(stack.agent_cache_dir() + "/agent_id");
  REQUIRE(agent_id_file.ok());
  const std::string agent_id(absl::StripAsciiWhitespace(*agent_id_file));

  auto cp = std::make_unique<CpClient>(stack.cp_address(), stack.admin_key());
  auto v1 = MarkedConfig(stack.upstream_ports(), "a", "v1");
  REQUIRE(v1.ok());
  REQUIRE(cp->Apply(*v1, "v1").ok());
  REQUIRE(WaitFor([&] { return GetReadiness(admin).version == 1; }, kConverge));

  LoadGenerator load(stack.agent_port());
  REQUIRE(load.AwaitMore(200, absl::Seconds(20)));

  // Version 2 moves all traffic to B and adds a regex route. The control plane knows from the
  // agent's Hello that it lacks route.match.regex: the dry-run names the problem and a plain
  // Apply refuses it, storing nothing.
  auto v2 = MarkedConfig(stack.upstream_ports(), "b", "v2",
                         "  - name: by-regex\n"
                         "    match: { path: { regex: \"^/re/[0-9]+$\" } }\n"
                         "    cluster: b\n");
  REQUIRE(v2.ok());
  auto dry = cp->Validate(*v2);
  REQUIRE(dry.ok());
  INFO("Validate: " << dry->ShortDebugString());
  CHECK_FALSE(dry->valid());
  CHECK(std::any_of(dry->diagnostics().begin(), dry->diagnostics().end(), [](const auto& d) {
    return d.code() == "unsupported_feature" && d.path() == "routes[1].match.path.regex";
  }));
  auto refused = cp->Apply(*v2, "needs regex");
  CHECK(refused.status().code() == absl::StatusCode::kFailedPrecondition);
  // Stored anyway on purpose (as an operator would ahead of an agent upgrade): the agent must
  // now reject it by itself.
  auto applied = cp->Apply(*v2, "needs regex", /*allow_unsupported=*/true);
  INFO(applied.status().ToString());
  REQUIRE(applied.ok());
  REQUIRE(applied->version() == 2);

  // The NACK is recorded with the agent's error.
  flexgate::v1::FleetAgent agent;
  bool rejected = WaitFor(
      [&] {
        auto fleet = cp->ListAgents();
        if (!fleet.ok() || fleet->agents_size() != 1) return false;
        agent = fleet->agents(0);
        return agent.state() == flexgate::v1::FleetAgent::REJECTED;
      },
      kConverge, absl::Milliseconds(50));
  INFO("fleet agent: " << agent.ShortDebugString());
  REQUIRE(rejected);
  CHECK(agent.agent_id() == agent_id);
  // The agent announced the narrowed capability list, so the fleet view shows why.
  CHECK(std::find(agent.capabilities().begin(), agent.capabilities().end(), "route.match.regex") ==
        agent.capabilities().end());
  CHECK(std::find(agent.capabilities().begin(), agent.capabilities().end(),
                  "route.match.prefix") != agent.capabilities().end());
  CHECK(agent.last_nack_version() == 2);
  CHECK(absl::StrContains(agent.last_nack_error(), "unsupported_feature"));
  CHECK(absl::StrContains(agent.last_nack_error(), "route.match.regex"));
  CHECK(agent.applied_version() == 1);
  CHECK(agent.live_version() == 2);
  auto versions = cp->ListAllVersions();
  REQUIRE(versions.ok());
  REQUIRE(versions->size() == 2);
  CHECK((*versions)[0].version() == 2);
  CHECK((*versions)[0].rejected_agents() == 1);
  CHECK((*versions)[0].acked_agents() == 0);

  // The agent stays on version 1; traffic stays on A and never fails.
  AgentReadiness ready = GetReadiness(admin);
  CHECK(ready.status == 200);
  CHECK(ready.version == 1);
  auto marker = probe::HttpGet(stack.agent_port(), "/version");
  REQUIRE(marker.ok());
  CHECK(marker->body == "v1");
  auto rejected_count = GetAgentStat(admin, "agent.snapshots_rejected");
  REQUIRE(rejected_count.ok());
  CHECK(*rejected_count == 1);
  const uint64_t received = SnapshotsReceived(admin);
  CHECK(received == 2);  // v1 applied, v2 rejected

  // Not re-sent over several heartbeats...
  REQUIRE(AwaitHeartbeats(*cp, 5));
  CHECK(SnapshotsReceived(admin) == received);

  // ...nor on a new stream: the control plane restarts, the agent reconnects.
  auto connects = GetAgentStat(admin, "agent.control_plane_connects");
  REQUIRE(connects.ok());
  cp.reset();
  REQUIRE(stack.RestartCp().ok());
  cp = std::make_unique<CpClient>(stack.cp_address(), stack.admin_key());
  REQUIRE(WaitFor(
      [&] {
        auto c = GetAgentStat(admin, "agent.control_plane_connects");
        return c.ok() && *c > *connects && GetReadiness(admin).control_plane_connected;
      },
      kConverge));
  REQUIRE(AwaitHeartbeats(*cp, 5));
  CHECK(SnapshotsReceived(admin) == received);
  CHECK(GetReadiness(admin).version == 1);

  // ...nor to the same agent restarted (same id from its cache dir, version 1 from its cache).
  const int64_t a_before_restart = load.answered_by('A');
  load.Stop();
  INFO(load.Summary());
  CHECK(load.failures() == 0);
  CHECK(load.answered_by('B') == 0);
  CHECK(a_before_restart > 0);
  REQUIRE(stack.RestartAgent().ok());
  const uint16_t admin2 = stack.agent_admin_port();
  REQUIRE(WaitFor([&] { return GetReadiness(admin2).control_plane_connected; }, kConverge));
  REQUIRE(AwaitHeartbeats(*cp, 5));
  AgentReadiness after_restart = GetReadiness(admin2);
  CHECK(after_restart.version == 1);
  CHECK(after_restart.source == "cache");
  auto rejected_after_restart = GetAgentStat(admin2, "agent.snapshots_rejected");
  REQUIRE(rejected_after_restart.ok());
  CHECK(*rejected_after_restart == 0);
  auto fleet = cp->ListAgents();
  REQUIRE(fleet.ok());
  REQUIRE(fleet->agents_size() == 1);
  CHECK(fleet->agents(0).state() == flexgate::v1::FleetAgent::REJECTED);

  // A later version the agent can enforce is applied as usual.
  LoadGenerator load2(stack.agent_port());
  auto v3 = MarkedConfig(stack.upstream_ports(), "b", "v3");
  REQUIRE(v3.ok());
  auto applied3 = cp->Apply(*v3, "no regex");
  REQUIRE(applied3.ok());
  REQUIRE(applied3->version() == 3);
  REQUIRE(WaitFor([&] { return GetReadiness(admin2).version == 3; }, kConverge));
  REQUIRE(WaitFor([&] { return load2.answered_by('B') > 50; }, kConverge));
  load2.Stop();
  INFO(load2.Summary());
  CHECK(load2.failures() == 0);
  CHECK(WaitFor(
      [&] {
        auto f = cp->ListAgents();
        return f.ok() && f->agents_size() == 1 &&
               f->agents(0).state() == flexgate::v1::FleetAgent::IN_SYNC;
      },
      kConverge, absl::Milliseconds(100)));

  std::printf("fault_nack: snapshots received by the agent stayed at %llu across heartbeats and "
              "a reconnect; %s\n",
              static_cast<unsigned long long>(received), load.Summary().c_str());
}

}  // namespace
}  // namespace flexgate::testing
