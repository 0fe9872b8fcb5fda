// Fault test (issue 5): a corrupt last-known-good cache. Every file of the agent's RocksDB store
// is overwritten with garbage while the agent is stopped. The restarted agent starts anyway,
// reports the corruption (an error log line and the cache_errors counter), takes its config from
// the control plane, and rebuilds a cache that a later restart without control plane serves from.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/proc/test_util.h"
#include "tests/integration/fault_support.h"
#include "tests/integration/http_probe.h"
#include "tests/integration/stack.h"

namespace flexgate::testing {
namespace {

namespace fs = std::filesystem;

// Overwrites every regular file under `dir` with garbage of the same length (at least 64 bytes)
// and returns how many files it damaged.
int CorruptEveryFile(const fs::path& dir) {
  int damaged = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const auto size = std::max<std::uintmax_t>(entry.file_size(), 64);
    std::ofstream out(entry.path(), std::ios::binary | std::ios::trunc);
    for (std::uintmax_t i = 0; i < size; ++i) out.put(static_cast<char>((i * 131 + 7) & 0xff));
    if (out) ++damaged;
  }
  return damaged;
}

TEST_CASE("A corrupt cache is reported and skipped, and the agent takes its config from the "
          "control plane") {
  auto started = Stack::Start(RestartableStackOptions());
  REQUIRE(started.ok());
  Stack& stack = **started;
  CpClient cp(stack.cp_address(), stack.admin_key());

  auto v1 = MarkedConfig(stack.upstream_ports(), "a", "v1");
  REQUIRE(v1.ok());
  REQUIRE(cp.Apply(*v1, "v1").ok());
  REQUIRE(AwaitServedAndCached(stack.agent_admin_port(), 1));
  // Version 2 is live when the agent comes back, so "from the control plane" is visible as a
  // version the cache never held.
  CHECK(stack.StopAgent().ToString() == "exit 0");
  auto v2 = MarkedConfig(stack.upstream_ports(), "b", "v2");
  REQUIRE(v2.ok());
  REQUIRE(cp.Apply(*v2, "v2").ok());

  const fs::path store = fs::path(stack.agent_cache_dir()) / "snapshots";
  REQUIRE(fs::is_directory(store));
  const int damaged = CorruptEveryFile(store);
  REQUIRE(damaged > 0);

  REQUIRE(stack.RestartAgent().ok());
  const uint16_t admin = stack.agent_admin_port();
  // Reported: a log line naming the cache, and the counter.
  auto logged = stack.agent().WaitForLogLine("last-known-good cache problem", kConverge);
  INFO(stack.agent().LogTail());
  REQUIRE(logged.ok());
  CHECK(absl::StrContains(*logged, "\"level\":\"error\""));
  auto errors = GetAgentStat(admin, "agent.cache_errors");
  REQUIRE(errors.ok());
  CHECK(*errors >= 1);

  // And the config comes from the control plane.
  REQUIRE(WaitFor([&] { return GetReadiness(admin).version == 2; }, kConverge));
  AgentReadiness ready = GetReadiness(admin);
  CHECK(ready.status == 200);
  CHECK(ready.source == "control_plane");
  LoadGenerator load(stack.agent_port());
  REQUIRE(load.AwaitMore(300, absl::Seconds(20)));
  load.Stop();
  INFO(load.Summary());
  CHECK(load.failures() == 0);
  CHECK(load.answered_by('A') == 0);
  CHECK(load.answered_by('B') > 0);

  // The replacement store works: version 2 was cached, and an agent started without a control
  // plane serves it.
  REQUIRE(WaitFor(
      [&] {
        auto writes = GetAgentStat(admin, "agent.cache_writes");
        return writes.ok() && *writes >= 1;
      },
      kConverge));
  REQUIRE(stack.KillCp().ok());
  REQUIRE(stack.RestartAgent().ok());
  REQUIRE(WaitFor([&] { return GetReadiness(stack.agent_admin_port()).status == 200; }, kConverge));
  AgentReadiness cached = GetReadiness(stack.agent_admin_port());
  INFO(cached.body);
  CHECK(cached.version == 2);
  CHECK(cached.source == "cache");
  auto errors_now = GetAgentStat(stack.agent_admin_port(), "agent.cache_errors");
  REQUIRE(errors_now.ok());
  CHECK(*errors_now == 0);

  std::printf("fault_cache: %d store files corrupted; agent reported %llu cache problem(s) and "
              "served version 2 from the control plane; %s\n",
              damaged, static_cast<unsigned long long>(*errors), load.Summary().c_str());
}

}  // namespace
}  // namespace flexgate::testing
