// Fault test (issue 5): the control plane is killed (SIGKILL) under load. The agent keeps
// serving through the outage without a failed request; when the control plane returns on the
// same address and database, the agent reconnects on its own and converges to a version applied
// after the restart.
#include <catch2/catch.hpp>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/harness/proc/test_util.h"
#include "tests/integration/fault_support.h"
#include "tests/integration/http_probe.h"
#include "tests/integration/stack.h"

namespace flexgate::testing {
namespace {

TEST_CASE("The control plane is killed under load: the agent keeps serving, then reconnects and "
          "converges") {
  auto started = Stack::Start(RestartableStackOptions());
  REQUIRE(started.ok());
  Stack& stack = **started;

  {
    CpClient cp(stack.cp_address(), stack.admin_key());
    auto v1 = MarkedConfig(stack.upstream_ports(), "a", "v1");
    REQUIRE(v1.ok());
    REQUIRE(cp.Apply(*v1, "v1").ok());
  }
  REQUIRE(WaitFor(
      [&] {
        AgentReadiness r = GetReadiness(stack.agent_admin_port());
        return r.version == 1 && r.control_plane_connected;
      },
      kConverge));

  LoadGenerator load(stack.agent_port());
  REQUIRE(load.AwaitMore(200, absl::Seconds(20)));

  // The outage.
  REQUIRE(stack.KillCp().ok());
  REQUIRE(WaitFor([&] { return !GetReadiness(stack.agent_admin_port()).control_plane_connected; },
                  kConverge));
  const int64_t at_outage = load.total();
  const absl::Time outage_began = absl::Now();
  // Stay down until the agent has failed to reconnect three times and served plenty of requests
  // meanwhile.
  auto disconnects = GetAgentStat(stack.agent_admin_port(), "agent.control_plane_disconnects");
  REQUIRE(disconnects.ok());
  REQUIRE(WaitFor(
      [&] {
        auto d = GetAgentStat(stack.agent_admin_port(), "agent.control_plane_disconnects");
        return d.ok() && *d >= *disconnects + 3;
      },
      kConverge, absl::Milliseconds(50)));
  REQUIRE(load.AwaitMore(500, absl::Seconds(20)));
  const int64_t during_outage = load.total() - at_outage;
  const absl::Duration outage = absl::Now() - outage_began;
  AgentReadiness down = GetReadiness(stack.agent_admin_port());
  CHECK(down.status == 200);  // still ready: it serves its snapshot
  CHECK(down.version == 1);
  CHECK(load.failures() == 0);
  CHECK(during_outage > 100);

  // The control plane returns on the same port and database.
  auto connects_before = GetAgentStat(stack.agent_admin_port(), "agent.control_plane_connects");
  REQUIRE(connects_before.ok());
  const absl::Time restarted = absl::Now();
  REQUIRE(stack.RestartCp().ok());
  REQUIRE(WaitFor([&] { return GetReadiness(stack.agent_admin_port()).control_plane_connected; },
                  kConverge));
  const absl::Duration reconnect = absl::Now() - restarted;
  auto connects_after = GetAgentStat(stack.agent_admin_port(), "agent.control_plane_connects");
  REQUIRE(connects_after.ok());
  CHECK(*connects_after > *connects_before);

  // A version applied after the restart reaches the agent and the traffic.
  CpClient cp(stack.cp_address(), stack.admin_key());
  auto v2 = MarkedConfig(stack.upstream_ports(), "b", "v2");
  REQUIRE(v2.ok());
  auto applied = cp.Apply(*v2, "after restart");
  INFO(applied.status().ToString());
  REQUIRE(applied.ok());
  REQUIRE(applied->version() == 2);
  REQUIRE(WaitFor([&] { return GetReadiness(stack.agent_admin_port()).version == 2; }, kConverge));
  const int64_t b_before = load.answered_by('B');
  REQUIRE(WaitFor([&] { return load.answered_by('B') > b_before + 100; }, kConverge));

  load.Stop();
  INFO(load.Summary());
  CHECK(load.failures() == 0);

  // The fleet view agrees: the agent ACKed version 2 through the new process.
  bool in_sync = WaitFor(
      [&] {
        auto fleet = cp.ListAgents();
        return fleet.ok() && fleet->agents_size() == 1 && fleet->agents(0).connected() &&
               fleet->agents(0).applied_version() == 2 &&
               fleet->agents(0).state() == flexgate::v1::FleetAgent::IN_SYNC;
      },
      kConverge, absl::Milliseconds(100));
  auto fleet = cp.ListAgents();
  INFO("fleet: " << (fleet.ok() ? fleet->ShortDebugString() : fleet.status().ToString()));
  CHECK(in_sync);

  std::printf("fault_cp_outage: %lld requests during a %.0f ms outage; reconnected %.0f ms after "
              "the restart began; %s\n",
              static_cast<long long>(during_outage), absl::ToDoubleMilliseconds(outage),
              absl::ToDoubleMilliseconds(reconnect),
              load.Summary().c_str());
}

}  // namespace
}  // namespace flexgate::testing
