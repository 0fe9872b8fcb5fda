// Fault test (issue 5): 100 consecutive config versions reach a loaded agent without a failed
// request, and every one of them is ACKed.
//
// Real processes: PostgreSQL (the CTest fixture), flexgate-cp, two upstreams, flexgate-agent with
// two workers. Each version moves the catch-all route between upstreams A and B and changes the
// body of a direct-response route, so every version differs and is visible in traffic. Versions
// are applied one after another through ConfigService.Apply; the next is applied once the
// control plane has recorded the agent's ACK of the previous one, because the control plane sends
// only the newest pending version and ignores an ACK with a stale nonce (applying faster would
// leave versions un-ACKed by design).
#include <algorithm>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/harness/proc/test_util.h"
#include "tests/integration/fault_support.h"
#include "tests/integration/http_probe.h"
#include "tests/integration/stack.h"

namespace flexgate::testing {
namespace {

constexpr int kVersions = 100;
TEST_CASE("100 consecutive versions under load: zero failed requests, every version ACKed") {
  auto started = Stack::Start({.upstreams = 2, .agent = true, .agent_workers = 2});
  REQUIRE(started.ok());
  Stack& stack = **started;
  CpClient cp(stack.cp_address(), stack.admin_key());

  // Version 1 first, so the load generator starts against a serving agent.
  auto v1 = MarkedConfig(stack.upstream_ports(), "a", "v1");
  REQUIRE(v1.ok());
  auto first = cp.Apply(*v1, "v1");
  REQUIRE(first.ok());
  REQUIRE(first->version() == 1);
  REQUIRE(WaitFor([&] { return GetReadiness(stack.agent_admin_port()).version == 1; }, kConverge));

  LoadGenerator load(stack.agent_port());
  REQUIRE(load.AwaitMore(200, absl::Seconds(20)));

  std::vector<double> served_ms;  // Apply returned -> agent reports serving it
  std::vector<double> acked_ms;   // Apply returned -> control plane lists the ACK
  for (int n = 2; n <= kVersions; ++n) {
    auto config = MarkedConfig(stack.upstream_ports(), n % 2 == 0 ? "b" : "a", absl::StrCat("v", n));
    REQUIRE(config.ok());
    auto applied = cp.Apply(*config, absl::StrCat("version ", n));
    INFO("apply of version " << n << ": " << applied.status().ToString());
    REQUIRE(applied.ok());
    REQUIRE(applied->version() == static_cast<uint64_t>(n));
    REQUIRE_FALSE(applied->unchanged());
    absl::Time t0 = absl::Now();
    bool serving = WaitFor(
        [&] { return GetReadiness(stack.agent_admin_port()).version == static_cast<uint64_t>(n); },
        kConverge, absl::Milliseconds(2));
    INFO("agent: " << GetReadiness(stack.agent_admin_port()).body);
    REQUIRE(serving);
    const absl::Duration to_serving = absl::Now() - t0;
    // The next version goes out only once the control plane has taken this one's ACK: an ACK
    // that arrives after a newer snapshot was sent carries a stale nonce and is ignored by
    // design, so applying faster than the ACK round trip would leave versions un-ACKed.
    flexgate::v1::FleetAgent last;
    bool acked = WaitFor(
        [&] {
          auto fleet = cp.ListAgents();
          if (!fleet.ok() || fleet->agents_size() != 1) return false;
          last = fleet->agents(0);
          return last.applied_version() == static_cast<uint64_t>(n);
        },
        kConverge, absl::Milliseconds(5));
    INFO("fleet agent: " << last.ShortDebugString());
    REQUIRE(acked);
    acked_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
    served_ms.push_back(absl::ToDoubleMilliseconds(to_serving));
  }

  // The agent serves the last version, from the control plane, and traffic sees it.
  AgentReadiness ready = GetReadiness(stack.agent_admin_port());
  CHECK(ready.status == 200);
  CHECK(ready.version == kVersions);
  CHECK(ready.source == "control_plane");
  auto marker = probe::HttpGet(stack.agent_port(), "/version");
  REQUIRE(marker.ok());
  CHECK(marker->body == absl::StrCat("v", kVersions));

  // A little more traffic on the final version, then the verdict on all of it.
  REQUIRE(load.AwaitMore(200, absl::Seconds(20)));
  load.Stop();
  INFO(load.Summary());
  CHECK(load.failures() == 0);
  CHECK(load.answered_by('A') > 0);
  CHECK(load.answered_by('B') > 0);
  auto rejected = GetAgentStat(stack.agent_admin_port(), "agent.snapshots_rejected");
  REQUIRE(rejected.ok());
  CHECK(*rejected == 0);
  auto applied_count = GetAgentStat(stack.agent_admin_port(), "agent.snapshots_applied");
  REQUIRE(applied_count.ok());
  CHECK(*applied_count == kVersions);

  // The control plane recorded an ACK for every version (ACKs are stored asynchronously, so
  // await the last), and its fleet view has the agent in sync on the last one.
  std::vector<flexgate::v1::ConfigVersion> versions;
  bool all_acked = WaitFor(
      [&] {
        auto list = cp.ListAllVersions();
        if (!list.ok()) return false;
        versions = *list;
        return versions.size() == kVersions &&
               std::all_of(versions.begin(), versions.end(),
                           [](const auto& v) { return v.acked_agents() == 1; });
      },
      kConverge, absl::Milliseconds(100));
  std::string unacked;
  for (const auto& v : versions) {
    if (v.acked_agents() != 1) absl::StrAppend(&unacked, v.version(), "(", v.acked_agents(), ") ");
  }
  INFO("versions listed: " << versions.size() << "; not ACKed exactly once: " << unacked);
  CHECK(all_acked);

  auto fleet = cp.ListAgents();
  REQUIRE(fleet.ok());
  REQUIRE(fleet->agents_size() == 1);
  const auto& agent = fleet->agents(0);
  INFO("fleet: " << agent.ShortDebugString());
  CHECK(agent.applied_version() == kVersions);
  CHECK(agent.state() == flexgate::v1::FleetAgent::IN_SYNC);
  CHECK(agent.last_nack_version() == 0);

  std::sort(served_ms.begin(), served_ms.end());
  std::sort(acked_ms.begin(), acked_ms.end());
  std::printf("fault_distribution: %d versions; Apply returned -> agent serving p50 %.1f ms, max "
              "%.1f ms; -> ACK in FleetService p50 %.1f ms, max %.1f ms; %s\n",
              kVersions, served_ms[served_ms.size() / 2], served_ms.back(),
              acked_ms[acked_ms.size() / 2], acked_ms.back(), load.Summary().c_str());
}

}  // namespace
}  // namespace flexgate::testing
