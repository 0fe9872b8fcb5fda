// flexgate-agent as an operator runs it: the real binary, its flags, exit statuses and signals
// (DESIGN.md section 8): bad flags exit 2, an invalid config exits 1 naming the problem, a static
// config serves traffic, SIGHUP reloads, SIGTERM drains and exits 0.
#include <signal.h>

#include <catch2/catch.hpp>

#include "absl/strings/numbers.h"
#include "tests/harness/http/http_client.h"
#include "tests/harness/http/test_upstream.h"
#include "tests/harness/proc/process.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::testing {
namespace {

std::string ConfigYaml(uint16_t upstream_port, const std::string& cluster_ref = "web") {
  return "clusters:\n"
         "  - name: web\n"
         "    endpoints:\n"
         "      - { address: 127.0.0.1, port: " + std::to_string(upstream_port) + " }\n"
         "routes:\n"
         "  - name: all\n"
         "    match: { path: { prefix: \"/\" } }\n"
         "    cluster: " + cluster_ref + "\n";
}

CommandResult Run(std::vector<std::string> args, std::vector<std::pair<std::string, std::string>> env = {}) {
  ProcessOptions o;
  o.args = std::move(args);
  o.args.insert(o.args.begin(), BinaryPath("flexgate-agent"));
  o.env = std::move(env);
  o.unset_env = {"FLEXGATE_TOKEN"};
  auto r = RunCommand(o, absl::Seconds(30));
  REQUIRE(r.ok());
  return *r;
}

uint16_t PortFromLog(Process& p, const std::string& msg) {
  absl::StatusOr<uint16_t> port = p.WaitForLogPort(msg, absl::Seconds(10));
  INFO(p.LogTail());
  REQUIRE(port.ok());
  return *port;
}

TEST_CASE("bad flags exit 2 with a message naming the flag") {
  REQUIRE(BinaryExists("flexgate-agent"));
  auto unknown = Run({"--config", "x.yaml", "--no-such-flag"});
  CHECK(unknown.status.exited);
  CHECK(unknown.status.code == 2);
  CHECK_THAT(unknown.err, Catch::Contains("--no-such-flag"));

  auto no_token = Run({"--control-plane", "127.0.0.1:1"});
  CHECK(no_token.status.code == 2);
  CHECK_THAT(no_token.err, Catch::Contains("FLEXGATE_TOKEN"));

  auto nothing = Run({});
  CHECK(nothing.status.code == 2);
  CHECK_THAT(nothing.err, Catch::Contains("nothing to serve"));

  auto help = Run({"--help"});
  CHECK(help.status.success());
  CHECK_THAT(help.out, Catch::Contains("--control-plane HOST:PORT"));
}

TEST_CASE("an invalid static config exits 1 and lists the diagnostics") {
  TempDir dir("flexgate-agent-proc");
  std::string bad = dir.WriteFile("bad.yaml", ConfigYaml(8081, "nope"));
  auto r = Run({"--config", bad, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                "--workers", "1"});
  CHECK(r.status.exited);
  CHECK(r.status.code == 1);
  CHECK_THAT(r.err, Catch::Contains("routes[0].cluster: unknown_cluster"));
  CHECK_THAT(r.err, !Catch::Contains("\"msg\":\"listening\""));  // nothing was served

  std::string typo = dir.WriteFile("typo.yaml", "clusterz: []\n");
  auto t = Run({"--config", typo, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"});
  CHECK(t.status.code == 1);
  CHECK_THAT(t.err, Catch::Contains("clusterz"));
}

TEST_CASE("static mode: serves, reloads on SIGHUP, drains on SIGTERM and exits 0") {
  auto alpha = TestUpstream::Start("alpha");
  auto beta = TestUpstream::Start("beta");
  REQUIRE(alpha.ok());
  REQUIRE(beta.ok());
  TempDir dir("flexgate-agent-proc");
  std::string config = dir.WriteFile("config.yaml", ConfigYaml((*alpha)->port()));
  ProcessOptions o;
  o.args = {BinaryPath("flexgate-agent"), "--config", config, "--listen", "127.0.0.1:0",
            "--admin", "127.0.0.1:0", "--workers", "2"};
  auto agent = Process::Start(o);
  REQUIRE(agent.ok());
  Process& p = **agent;
  uint16_t proxy = PortFromLog(p, "listening");
  uint16_t admin = PortFromLog(p, "admin listening");

  // The admin port opens before the first snapshot is applied, so readiness is awaited.
  CHECK(WaitFor(
      [&] {
        auto ready = HttpGet(admin, "/health/ready");
        return ready.ok() && ready->status == 200;
      },
      absl::Seconds(10)));
  auto r = HttpGet(proxy, "/a");
  REQUIRE(r.ok());
  CHECK(r->body == "alpha GET /a\n");

  dir.WriteFile("config.yaml", ConfigYaml((*beta)->port()));
  REQUIRE(p.Signal(SIGHUP).ok());
  REQUIRE(p.WaitForLogLine("config reloaded", absl::Seconds(10)).ok());
  auto after = HttpGet(proxy, "/b");
  REQUIRE(after.ok());
  CHECK(after->body == "beta GET /b\n");

  ExitStatus status = p.Terminate(absl::Seconds(20));
  INFO(p.LogTail());
  CHECK(status.success());
  CHECK_THAT(p.ReadLog(), Catch::Contains("\"msg\":\"stopped\""));
}

}  // namespace
}  // namespace flexgate::testing
