// End-to-end tests of issue 2 with real processes: PostgreSQL (the CTest fixture), flexgate-cp,
// flexgate-agent under the control plane, two upstreams, and flexctl as an operator runs it.
//
//  - config v1 flows from flexctl through the control plane to the agent and to traffic;
//  - v2 moves the route to another upstream while clients keep sending requests over keep-alive
//    and fresh connections: every request succeeds and the new route takes effect;
//  - an invalid config is named by the dry-run and refused by apply, and nothing changes;
//  - bad input (malformed file, stale base version) gets a clear error and changes nothing.
#include <atomic>
#include <catch2/catch.hpp>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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

constexpr absl::Duration kConverge = absl::Seconds(15);

std::unique_ptr<Stack> StartStack(StackOptions options = {}) {
  auto stack = Stack::Start(options);
  if (!stack.ok()) FAIL("stack did not start: " << stack.status().ToString());
  return std::move(*stack);
}

CommandResult Flexctl(Stack& stack, std::vector<std::string> args) {
  auto r = stack.Flexctl(args);
  if (!r.ok()) FAIL("flexctl did not run: " << r.status().ToString());
  return *r;
}

// Waits until a GET through the agent is answered by upstream `name`.
bool ServedBy(const Stack& stack, const std::string& name, const std::string& path = "/hello") {
  return WaitFor(
      [&] {
        auto r = HttpGet(stack.agent_port(), path, absl::Seconds(2));
        return r.ok() && r->status == 200 && r->body == absl::StrCat(name, " GET ", path, "\n");
      },
      kConverge, absl::Milliseconds(50));
}

// Which upstream answered, from the body "NAME GET PATH\n"; empty when the body is not that.
std::string AnsweredBy(const HttpResponse& r, const std::string& path) {
  for (const char* name : {"A", "B"}) {
    if (r.body == absl::StrCat(name, " GET ", path, "\n")) return name;
  }
  return "";
}

// Sends requests through the agent until stopped, on two threads: one keeps a single keep-alive
// connection (reconnecting only when the server closes it), the other opens a fresh connection
// per request. Records every failure; joins its threads on destruction even when a test fails.
class LoadClient {
 public:
  explicit LoadClient(uint16_t port) : port_(port) {
    threads_.emplace_back([this] { KeepAliveLoop(); });
    threads_.emplace_back([this] { FreshConnectionLoop(); });
  }
  ~LoadClient() { Stop(); }

  void Stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  int64_t total() const { return keepalive_total_ + fresh_total_; }
  int64_t keepalive_total() const { return keepalive_total_; }
  int64_t fresh_total() const { return fresh_total_; }
  int64_t from_b() const { return from_b_; }
  int64_t from_a() const { return from_a_; }
  int64_t keepalive_from_b() const { return keepalive_from_b_; }
  int64_t fresh_from_b() const { return fresh_from_b_; }
  bool keepalive_went_back_to_a() const { return keepalive_went_back_; }

  std::vector<std::string> failures() const {
    std::lock_guard<std::mutex> lock(mu_);
    return failures_;
  }
  int64_t failure_count() const { return failure_count_; }

 private:
  // Returns the upstream name, or records a failure and returns "".
  std::string Check(const absl::StatusOr<HttpResponse>& r, const std::string& path,
                    const char* kind) {
    std::string who;
    if (r.ok() && r->status >= 200 && r->status < 300) who = AnsweredBy(*r, path);
    if (!who.empty()) {
      (who == "A" ? from_a_ : from_b_)++;
      return who;
    }
    ++failure_count_;
    std::lock_guard<std::mutex> lock(mu_);
    if (failures_.size() < 20) {
      failures_.push_back(
          r.ok() ? absl::StrCat(kind, " ", path, ": status ", r->status, " body \"",
                                r->body.substr(0, 200), "\"")
                 : absl::StrCat(kind, " ", path, ": ", r.status().ToString()));
    }
    return "";
  }

  void KeepAliveLoop() {
    std::unique_ptr<HttpConnection> conn;
    bool seen_b = false;
    for (int64_t i = 0; !stop_; ++i) {
      if (conn == nullptr || !conn->open()) {
        auto c = HttpConnection::Connect(port_, absl::Seconds(20));
        if (!c.ok()) {
          Check(c.status(), "(connect)", "keep-alive");
          continue;
        }
        conn = std::move(*c);
        seen_b = false;  // a new connection may land on another worker
      }
      HttpRequest req;
      req.path = absl::StrCat("/load/keepalive/", i);
      std::string who = Check(conn->Send(req), req.path, "keep-alive");
      if (who == "B") {
        seen_b = true;
        ++keepalive_from_b_;
      } else if (who == "A" && seen_b) {
        // Once a worker has swapped to v2, a connection it serves never sees v1 again.
        keepalive_went_back_ = true;
      }
      ++keepalive_total_;
    }
  }

  void FreshConnectionLoop() {
    for (int64_t i = 0; !stop_; ++i) {
      std::string path = absl::StrCat("/load/fresh/", i);
      if (Check(HttpGet(port_, path, absl::Seconds(20)), path, "fresh") == "B") ++fresh_from_b_;
      ++fresh_total_;
    }
  }

  const uint16_t port_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> keepalive_total_{0}, fresh_total_{0}, from_a_{0}, from_b_{0},
      keepalive_from_b_{0}, fresh_from_b_{0}, failure_count_{0};
  std::atomic<bool> keepalive_went_back_{false};
  mutable std::mutex mu_;
  std::vector<std::string> failures_;
  std::vector<std::thread> threads_;
};

TEST_CASE("A config flows from flexctl to traffic, and a route moves under load without a "
          "failed request") {
  auto stack = StartStack();

  // Before any config the agent is alive but not ready.
  auto ready = HttpGet(stack->agent_admin_port(), "/health/ready");
  REQUIRE(ready.ok());
  CHECK(ready->status == 503);

  // Version 1: everything to upstream A.
  std::string v1 = stack->WriteRouteConfig("v1.yaml", "a");
  CommandResult apply1 = Flexctl(*stack, {"apply", v1, "--message", "route to A"});
  INFO(apply1.Describe());
  REQUIRE(apply1.status.code == 0);
  CHECK(absl::StrContains(apply1.out, "applied version 1"));

  REQUIRE(ServedBy(*stack, "A"));
  CHECK(WaitFor(
      [&] {
        auto r = HttpGet(stack->agent_admin_port(), "/health/ready");
        return r.ok() && r->status == 200;
      },
      kConverge));

  // Version 2 moves the route to B while both kinds of clients keep sending.
  LoadClient load(stack->agent_port());
  REQUIRE(WaitFor([&] { return load.keepalive_total() >= 100 && load.fresh_total() >= 50; },
                  absl::Seconds(30)));
  std::string v2 = stack->WriteRouteConfig("v2.yaml", "b");
  CommandResult apply2 = Flexctl(*stack, {"apply", v2, "--message", "move to B"});
  INFO(apply2.Describe());
  REQUIRE(apply2.status.code == 0);
  CHECK(absl::StrContains(apply2.out, "applied version 2"));

  // Both clients see B, and keep seeing it for a while longer.
  REQUIRE(WaitFor([&] { return load.keepalive_from_b() > 0 && load.fresh_from_b() > 0; },
                  kConverge));
  const int64_t at_switch = load.total();
  REQUIRE(WaitFor([&] { return load.total() >= at_switch + 1000; }, absl::Seconds(30)));
  load.Stop();

  const std::vector<std::string> failures = load.failures();
  INFO("requests: " << load.total() << " (A " << load.from_a() << ", B " << load.from_b()
                    << "); failures: " << load.failure_count() << "\n"
                    << absl::StrJoin(failures, "\n"));
  CHECK(load.failure_count() == 0);
  CHECK(load.from_a() > 0);
  CHECK(load.from_b() > 0);
  CHECK_FALSE(load.keepalive_went_back_to_a());
  CHECK(ServedBy(*stack, "B", "/after"));

  // The control plane recorded both versions; `get` shows the live one.
  CommandResult versions = Flexctl(*stack, {"versions"});
  INFO(versions.Describe());
  REQUIRE(versions.status.code == 0);
  std::vector<std::string> lines = absl::StrSplit(versions.out, '\n', absl::SkipEmpty());
  REQUIRE(lines.size() == 3);  // header + 2 versions, newest first
  CHECK(absl::StartsWith(lines[1], "2 "));
  CHECK(absl::StrContains(lines[1], "move to B"));
  CHECK(absl::StartsWith(lines[2], "1 "));

  CommandResult get = Flexctl(*stack, {"get"});
  INFO(get.Describe());
  REQUIRE(get.status.code == 0);
  CHECK(absl::StrContains(get.out, "# version 2,"));
  CHECK(absl::StrContains(get.out, "cluster: b"));

  // Both servers drain and exit 0 on SIGTERM.
  auto [agent_exit, cp_exit] = stack->Shutdown();
  CHECK(agent_exit.ToString() == "exit 0");
  CHECK(cp_exit.ToString() == "exit 0");
}

TEST_CASE("An invalid config is named by the dry-run, refused by apply, and changes nothing") {
  auto stack = StartStack({.upstreams = 1});
  std::string v1 = stack->WriteRouteConfig("v1.yaml", "a");
  CommandResult apply1 = Flexctl(*stack, {"apply", v1});
  INFO(apply1.Describe());
  REQUIRE(apply1.status.code == 0);
  REQUIRE(ServedBy(*stack, "A"));

  std::string bad = stack->WriteRouteConfig("bad.yaml", "unknown_cluster");

  // The dry-run names the field and the problem, and exits 1.
  CommandResult dry = Flexctl(*stack, {"validate", bad});
  INFO(dry.Describe());
  CHECK(dry.status.code == 1);
  CHECK(absl::StrContains(dry.out, "routes[0].cluster: unknown_cluster: "));

  // The same verdict as JSON, for CI.
  CommandResult dry_json = Flexctl(*stack, {"validate", bad, "--output", "json"});
  INFO(dry_json.Describe());
  CHECK(dry_json.status.code == 1);
  CHECK(absl::StrContains(dry_json.out, "\"valid\": false"));
  CHECK(absl::StrContains(dry_json.out, "\"path\": \"routes[0].cluster\""));
  CHECK(absl::StrContains(dry_json.out, "\"code\": \"unknown_cluster\""));

  // Offline validation (the shared validator in flexctl) agrees with the control plane.
  ProcessOptions offline;
  offline.args = {BinaryPath("flexctl"), "validate", bad};
  offline.unset_env = {"FLEXGATE_SERVER", "FLEXGATE_TOKEN"};
  auto off = RunCommand(offline);
  REQUIRE(off.ok());
  INFO(off->Describe());
  CHECK(off->status.code == 1);
  CHECK(absl::StrContains(off->out, "routes[0].cluster: unknown_cluster: "));

  // A valid config passes the dry-run, which writes nothing.
  std::string good = stack->WriteRouteConfig("good.yaml", "a");
  CommandResult dry_ok = Flexctl(*stack, {"validate", good});
  INFO(dry_ok.Describe());
  CHECK(dry_ok.status.code == 0);
  CHECK(absl::StrContains(dry_ok.out, "identical to live version 1"));

  // Apply refuses it with the same diagnostic.
  CommandResult apply_bad = Flexctl(*stack, {"apply", bad});
  INFO(apply_bad.Describe());
  CHECK(apply_bad.status.code == 1);
  CHECK(absl::StrContains(apply_bad.err, "routes[0].cluster"));
  CHECK(absl::StrContains(apply_bad.err, "unknown_cluster"));

  // Nothing changed: still version 1, still served by A.
  CommandResult versions = Flexctl(*stack, {"versions", "--output", "json"});
  INFO(versions.Describe());
  REQUIRE(versions.status.code == 0);
  CHECK(absl::StrContains(versions.out, "\"version\": \"1\""));
  CHECK_FALSE(absl::StrContains(versions.out, "\"version\": \"2\""));
  CommandResult get = Flexctl(*stack, {"get"});
  REQUIRE(get.status.code == 0);
  CHECK(absl::StrContains(get.out, "# version 1,"));
  CHECK(ServedBy(*stack, "A", "/still-a"));
}

TEST_CASE("Bad input gets a clear error and changes nothing") {
  // Only the control plane: these configs are stored, never served, so their endpoints need not
  // exist.
  auto stack = StartStack({.upstreams = 0, .agent = false});
  const std::vector<uint16_t> ports = {18081, 18082};
  auto write_config = [&](const std::string& name, const std::string& route_to) {
    return stack->dir().WriteFile(name, RouteConfigYaml(ports, route_to));
  };

  SECTION("a malformed file is exit 2 and names the file") {
    std::string broken = stack->dir().WriteFile("broken.yaml", "clusters: [ { name: a, \n");
    for (const char* cmd : {"validate", "apply"}) {
      CommandResult r = Flexctl(*stack, {cmd, broken});
      INFO(cmd << ": " << r.Describe());
      CHECK(r.status.code == 2);
      CHECK(absl::StrContains(r.err, "broken.yaml"));
    }
    // A field the schema does not have is named.
    std::string unknown = stack->dir().WriteFile("unknown.yaml", "clusterz: []\n");
    CommandResult r = Flexctl(*stack, {"apply", unknown});
    INFO(r.Describe());
    CHECK(r.status.code == 2);
    CHECK(absl::StrContains(r.err, "clusterz"));
    // A missing file.
    CommandResult missing = Flexctl(*stack, {"apply", stack->dir().File("nope.yaml")});
    CHECK(missing.status.code == 2);
    CHECK(absl::StrContains(missing.err, "nope.yaml"));

    CommandResult versions = Flexctl(*stack, {"versions", "--output", "json"});
    INFO(versions.Describe());
    REQUIRE(versions.status.code == 0);
    CHECK_FALSE(absl::StrContains(versions.out, "\"version\""));
  }

  SECTION("an unknown cluster is exit 1") {
    std::string bad = write_config("bad.yaml", "nowhere");
    CommandResult r = Flexctl(*stack, {"apply", bad});
    INFO(r.Describe());
    CHECK(r.status.code == 1);
    CHECK(absl::StrContains(r.err, "unknown_cluster"));
  }

  SECTION("a stale base version is a conflict, not an overwrite") {
    std::string to_a = write_config("a.yaml", "a");
    std::string to_b = write_config("b.yaml", "b");
    CommandResult first = Flexctl(*stack, {"apply", to_a, "--base-version", "0"});
    INFO(first.Describe());
    REQUIRE(first.status.code == 0);
    CHECK(absl::StrContains(first.out, "applied version 1"));
    CommandResult second = Flexctl(*stack, {"apply", to_b, "--base-version", "1"});
    INFO(second.Describe());
    REQUIRE(second.status.code == 0);
    CHECK(absl::StrContains(second.out, "applied version 2"));

    // Someone else's edit based on version 1 loses.
    std::string other = stack->dir().WriteFile(
        "other.yaml", RouteConfigYaml(ports, "a") +
                          "  - name: extra\n    match: { path: { prefix: \"/x\" } }\n"
                          "    cluster: b\n");
    CommandResult stale = Flexctl(*stack, {"apply", other, "--base-version", "1"});
    INFO(stale.Describe());
    CHECK(stale.status.code == 1);
    CHECK(absl::StartsWith(stale.err, "conflict: "));
    CHECK(absl::StrContains(stale.err, "live version is 2"));

    CommandResult get = Flexctl(*stack, {"get"});
    INFO(get.Describe());
    REQUIRE(get.status.code == 0);
    CHECK(absl::StrContains(get.out, "# version 2,"));
    CHECK(absl::StrContains(get.out, "cluster: b"));
    CHECK_FALSE(absl::StrContains(get.out, "extra"));

    // `get` prints a config that applies back as a no-op.
    std::string dumped = stack->dir().WriteFile("dumped.yaml", get.out);
    CommandResult again = Flexctl(*stack, {"apply", dumped});
    INFO(again.Describe());
    CHECK(again.status.code == 0);
    CHECK(absl::StrContains(again.out, "unchanged: live version 2"));

    CommandResult old = Flexctl(*stack, {"get", "--version", "1", "--output", "json"});
    INFO(old.Describe());
    CHECK(old.status.code == 0);
    CHECK(absl::StrContains(old.out, "\"cluster\": \"a\""));
  }

  SECTION("a wrong key is refused; an unreachable server is exit 2") {
    ProcessOptions o;
    o.args = {BinaryPath("flexctl"), "--server", stack->cp_address(), "--token", "fgk_wrong",
              "versions"};
    o.unset_env = {"FLEXGATE_SERVER", "FLEXGATE_TOKEN"};
    auto wrong = RunCommand(o);
    REQUIRE(wrong.ok());
    INFO(wrong->Describe());
    CHECK(wrong->status.code == 1);

    o.args = {BinaryPath("flexctl"), "--server", absl::StrCat("127.0.0.1:", FreePort()),
              "--token", stack->admin_key(), "--timeout", "5s", "versions"};
    auto down = RunCommand(o);
    REQUIRE(down.ok());
    INFO(down->Describe());
    CHECK(down->status.code == 2);
    CHECK(absl::StrContains(down->err, "cannot reach"));
  }
}

}  // namespace
}  // namespace flexgate::testing
