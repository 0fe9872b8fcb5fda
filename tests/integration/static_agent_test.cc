// flexgate-agent in static mode (`--config FILE`, no control plane): serves traffic from the
// file, reports ready, and drains to exit 0 on SIGTERM.
#include <catch2/catch.hpp>
#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/proc/process.h"
#include "tests/harness/proc/test_util.h"
#include "tests/integration/http_probe.h"
#include "tests/integration/stack.h"

namespace flexgate::testing {
namespace {

using probe::HttpConnection;
using probe::HttpGet;
using probe::HttpRequest;
using probe::HttpResponse;

TEST_CASE("A static-config agent serves traffic and is ready") {
  TempDir dir("flexgate-static");
  auto upstream = StartUpstream("A", dir);
  if (!upstream.ok()) FAIL(upstream.status().ToString());
  std::string config = dir.WriteFile("static.yaml", RouteConfigYaml({upstream->port}, "a"));

  std::unique_ptr<Process> agent;
  auto ports = StartAgent({"--config", config, "--workers", "1"}, dir, &agent);
  if (!ports.ok()) FAIL("agent did not start: " << ports.status().ToString());
  // On failure, ctest --output-on-failure shows the agent's log.
  struct PrintLog {
    Process* p;
    ~PrintLog() { std::printf("=== flexgate-agent ===\n%s\n", p->LogTail().c_str()); }
  } print_log{agent.get()};

  CHECK(WaitFor(
      [&] {
        auto r = HttpGet(ports->admin, "/health/ready");
        return r.ok() && r->status == 200;
      },
      absl::Seconds(10)));

  auto r = HttpGet(ports->listen, "/static/path");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == "A GET /static/path\n");

  // Several requests on one keep-alive connection.
  auto conn = HttpConnection::Connect(ports->listen);
  REQUIRE(conn.ok());
  for (int i = 0; i < 5; ++i) {
    HttpRequest req;
    req.path = absl::StrCat("/ka/", i);
    auto resp = (*conn)->Send(req);
    REQUIRE(resp.ok());
    CHECK(resp->status == 200);
    CHECK(resp->body == absl::StrCat("A GET /ka/", i, "\n"));
  }

  ExitStatus exit = agent->Terminate(absl::Seconds(10));
  CHECK(exit.ToString() == "exit 0");
}

TEST_CASE("A static-config agent refuses an invalid file at start") {
  TempDir dir("flexgate-static");
  std::string config = dir.WriteFile("bad.yaml", RouteConfigYaml({8081}, "unknown_cluster"));
  ProcessOptions o;
  o.args = {BinaryPath("flexgate-agent"), "--config", config, "--listen", "127.0.0.1:0",
            "--admin", "127.0.0.1:0", "--workers", "1"};
  REQUIRE(BinaryExists("flexgate-agent"));
  auto r = RunCommand(o, absl::Seconds(20));
  REQUIRE(r.ok());
  INFO(r->Describe());
  CHECK_FALSE(r->status.success());
  CHECK(absl::StrContains(r->err, "routes[0].cluster"));
}

}  // namespace
}  // namespace flexgate::testing
