// Fault test (issue 5): the agent restarts while the control plane is down. It serves its
// last-known-good snapshot from the RocksDB cache within a second of starting (measured from
// process start to the first 200 through it), says so on /health/ready, serves load without a
// failure, and reconciles once the control plane returns.
#include <catch2/catch.hpp>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/proc/test_util.h"
#include "tests/integration/fault_support.h"
#include "tests/integration/http_probe.h"
#include "tests/integration/stack.h"

namespace flexgate::testing {
namespace {

TEST_CASE("The agent restarted while the control plane is down serves its cached version within "
          "a second") {
  auto started = Stack::Start(RestartableStackOptions());
  REQUIRE(started.ok());
  Stack& stack = **started;

  {
    CpClient cp(stack.cp_address(), stack.admin_key());
    auto v1 = MarkedConfig(stack.upstream_ports(), "b", "cached-v1");
    REQUIRE(v1.ok());
    REQUIRE(cp.Apply(*v1, "v1").ok());
  }
  // ACKed means cached: the agent writes the cache before it ACKs.
  REQUIRE(AwaitServedAndCached(stack.agent_admin_port(), 1));

  REQUIRE(stack.KillCp().ok());
  ExitStatus stopped = stack.StopAgent();
  CHECK(stopped.ToString() == "exit 0");

  // The clock starts before the process exists; StartAgent also waits for the port lines in
  // the log and /health/live, so this over-states the time to serve, never under-states it.
  const absl::Time t0 = absl::Now();
  REQUIRE(stack.RestartAgent().ok());
  absl::StatusOr<probe::HttpResponse> first;
  bool served = WaitFor(
      [&] {
        first = probe::HttpGet(stack.agent_port(), "/version", absl::Seconds(2));
        return first.ok() && first->status == 200;
      },
      absl::Seconds(10), absl::Milliseconds(2));
  const absl::Duration to_first_200 = absl::Now() - t0;
  REQUIRE(served);
  CHECK(first->body == "cached-v1");
  INFO("start to first 200: " << absl::FormatDuration(to_first_200));
  CHECK(to_first_200 < absl::Seconds(1));

  // /health/ready turns 200 once every worker has confirmed the swap, an instant after the first
  // worker serves: await it rather than read it once.
  AgentReadiness ready;
  CHECK(WaitFor(
      [&] {
        ready = GetReadiness(stack.agent_admin_port());
        return ready.status == 200;
      },
      absl::Seconds(1), absl::Milliseconds(2)));
  const absl::Duration to_ready = absl::Now() - t0;
  INFO(ready.body);
  CHECK(ready.status == 200);
  CHECK(ready.version == 1);
  CHECK(ready.source == "cache");
  CHECK_FALSE(ready.control_plane_connected);

  // Real traffic while the control plane is still away.
  LoadGenerator load(stack.agent_port());
  REQUIRE(load.AwaitMore(500, absl::Seconds(20)));
  CHECK(load.failures() == 0);
  CHECK(load.answered_by('B') > 0);

  // The control plane returns: the agent reconnects and reports the cached version, which is the
  // live one, so the control plane has nothing to send and lists the agent in sync.
  REQUIRE(stack.RestartCp().ok());
  REQUIRE(WaitFor([&] { return GetReadiness(stack.agent_admin_port()).control_plane_connected; },
                  kConverge));
  CpClient cp(stack.cp_address(), stack.admin_key());
  bool in_sync = WaitFor(
      [&] {
        auto fleet = cp.ListAgents();
        return fleet.ok() && fleet->agents_size() == 1 && fleet->agents(0).connected() &&
               fleet->agents(0).applied_version() == 1 &&
               fleet->agents(0).state() == flexgate::v1::FleetAgent::IN_SYNC;
      },
      kConverge, absl::Milliseconds(100));
  auto fleet = cp.ListAgents();
  INFO("fleet: " << (fleet.ok() ? fleet->ShortDebugString() : fleet.status().ToString()));
  CHECK(in_sync);
  REQUIRE(load.AwaitMore(200, absl::Seconds(20)));
  load.Stop();
  INFO(load.Summary());
  CHECK(load.failures() == 0);
  CHECK(load.answered_by('A') == 0);

  std::printf("fault_agent_restart: process start to first 200 from the cache: %.1f ms (ready "
              "with source cache by %.1f ms); %s\n",
              absl::ToDoubleMilliseconds(to_first_200), absl::ToDoubleMilliseconds(to_ready),
              load.Summary().c_str());
}

}  // namespace
}  // namespace flexgate::testing
