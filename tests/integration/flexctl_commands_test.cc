// flexctl against a real flexgate-cp (issue 4 item 6, issue 5 items 5-6): every command run as
// the shipped program on a fresh database of the shared test PostgreSQL, checking what it prints
// and its exit status, refusals included:
//  - config: validate --server (diff, impact, secret warnings, JSON), diff between versions and
//    of a file against live, rollback, versions with convergence columns;
//  - access: keys and tokens create/list/revoke with roles, tenants create/list, --tenant
//    isolation, and the audit trail with its filters and paging;
//  - fleet: agents (state counts, filters) and agents get;
//  - could-not-run cases: bad flags, TLS against a plaintext server, a missing CA file.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "tests/harness/proc/process.h"
#include "tests/harness/proc/test_util.h"
#include "tests/integration/stack.h"

namespace flexgate::testing {
namespace {

constexpr absl::Duration kConverge = absl::Seconds(15);

std::unique_ptr<Stack> StartStack(StackOptions options) {
  auto stack = Stack::Start(options);
  if (!stack.ok()) FAIL("stack did not start: " << stack.status().ToString());
  return std::move(*stack);
}

// flexctl with the stack's server and the operator (bootstrap admin) key.
CommandResult Ctl(Stack& stack, std::vector<std::string> args) {
  auto r = stack.Flexctl(std::move(args));
  if (!r.ok()) FAIL("flexctl did not run: " << r.status().ToString());
  return *r;
}

// flexctl with another key: a later --token wins over the one Stack::Flexctl puts first.
CommandResult CtlAs(Stack& stack, const std::string& key, std::vector<std::string> args) {
  args.insert(args.end(), {"--token", key});
  return Ctl(stack, std::move(args));
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// The line of a table whose first column is `first`; empty when there is none.
std::string Row(const std::string& table, const std::string& first) {
  for (const auto& line : Lines(table)) {
    if (absl::StartsWith(line, first + " ")) return line;
  }
  return "";
}

std::vector<std::string> Columns(const std::string& line) {
  return absl::StrSplit(line, ' ', absl::SkipEmpty());
}

// Creates a key and returns its secret (the only thing on stdout).
std::string CreateKey(Stack& stack, const std::string& name, const std::string& role,
                      std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"keys", "create", "--name", name, "--role", role};
  args.insert(args.end(), extra.begin(), extra.end());
  CommandResult r = Ctl(stack, args);
  INFO(r.Describe());
  REQUIRE(r.status.code == 0);
  std::string key(absl::StripTrailingAsciiWhitespace(r.out));
  REQUIRE(Lines(r.out).size() == 1);
  REQUIRE(absl::StartsWith(key, "fgk_"));
  return key;
}

TEST_CASE("flexctl validate --server, diff, rollback and versions against flexgate-cp") {
  auto stack = StartStack({.upstreams = 2, .agent = true, .agent_workers = 1});
  const std::string to_a = stack->WriteRouteConfig("to_a.yaml", "a");
  const std::string to_b = stack->WriteRouteConfig("to_b.yaml", "b");

  CommandResult apply1 = Ctl(*stack, {"apply", to_a, "-m", "first"});
  INFO(apply1.Describe());
  REQUIRE(apply1.status.code == 0);
  REQUIRE(absl::StrContains(apply1.out, "applied version 1"));

  // The agent ACKs version 1 (so it counts in the impact of the next change).
  REQUIRE(WaitFor(
      [&] {
        CommandResult a = Ctl(*stack, {"agents", "--state", "in_sync"});
        return a.status.code == 0 && absl::StrContains(a.out, "IN_SYNC 1");
      },
      kConverge, absl::Milliseconds(200)));

  SECTION("validate --server prints the diff against live and the impact") {
    CommandResult r = Ctl(*stack, {"validate", to_b});
    INFO(r.Describe());
    CHECK(r.status.code == 0);
    CHECK(absl::StrContains(r.out, ", against live version 1\n"));
    CHECK(absl::StrContains(r.out, "diff against live version 1: 0 added, 1 changed, 0 removed\n"));
    CHECK(absl::StrContains(r.out, "  ~ route \"all\": cluster: "));
    CHECK(absl::StrContains(r.out, "impact: 1 route affected (all); 1 agent would receive it "
                                   "(1 connected now)\n"));
    CHECK(absl::StrContains(r.out, "  agents (sample of 1):\n"));

    // Validate never writes.
    CommandResult versions = Ctl(*stack, {"versions"});
    CHECK(Lines(versions.out).size() == 2);  // header + version 1

    // The same content as live: no diff, no agent receives anything.
    CommandResult same = Ctl(*stack, {"validate", to_a});
    INFO(same.Describe());
    CHECK(same.status.code == 0);
    CHECK(absl::StrContains(same.out, "identical to live version 1"));
    CHECK(absl::StrContains(same.out, "no agent receives anything"));
    CHECK_FALSE(absl::StrContains(same.out, "diff against"));
  }

  SECTION("validate --server --output json is the whole ValidateResponse") {
    CommandResult r = Ctl(*stack, {"validate", to_b, "--output", "json"});
    INFO(r.Describe());
    CHECK(r.status.code == 0);
    for (const char* field :
         {"\"valid\": true", "\"live_version\": \"1\"", "\"unchanged\": false", "\"diff\": {",
          "\"changed\": 1", "\"text\": \"~ route \\\"all\\\"", "\"impact\": {",
          "\"agents_affected\": 1", "\"agents_connected\": 1", "\"secret_warnings\": []"}) {
      CHECK(absl::StrContains(r.out, field));
    }
  }

  SECTION("secret warnings are shown, redacted, and do not fail validation") {
    const std::string secret = "Bearer 9xQ2mZ7kLp4TvR8sW1yB3nC6dF0gH5jK";
    std::string yaml = RouteConfigYaml(stack->upstream_ports(), "a");
    absl::StrAppend(&yaml, "    request_headers:\n      set: [{ name: authorization, value: \"",
                    secret, "\" }]\n");
    const std::string file = stack->dir().WriteFile("secret.yaml", yaml);
    CommandResult r = Ctl(*stack, {"validate", file});
    INFO(r.Describe());
    CHECK(r.status.code == 0);
    CHECK(absl::StrContains(r.out, "secret warnings (1, values redacted):\n"));
    CHECK(absl::StrContains(r.out, "  routes[0].request_headers.set[0].value: "));
    CHECK_FALSE(absl::StrContains(r.out, "9xQ2mZ7kLp4TvR8sW1yB3nC6dF0gH5jK"));
    CommandResult json = Ctl(*stack, {"validate", file, "-o", "json"});
    CHECK(json.status.code == 0);
    CHECK(absl::StrContains(json.out, "\"code\": \"plaintext_secret\""));
    CHECK_FALSE(absl::StrContains(json.out, "9xQ2mZ7kLp4TvR8sW1yB3nC6dF0gH5jK"));
  }

  SECTION("validate --server of an invalid config exits 1 with every diagnostic") {
    const std::string bad = stack->WriteRouteConfig("bad.yaml", "nope");
    CommandResult r = Ctl(*stack, {"validate", bad});
    INFO(r.Describe());
    CHECK(r.status.code == 1);
    CHECK(absl::StrContains(r.out, "routes[0].cluster: unknown_cluster: "));
    CHECK(absl::StrContains(r.out, "invalid: 1 error"));
  }

  SECTION("diff between versions, of a file against live, rollback") {
    CommandResult apply2 = Ctl(*stack, {"apply", to_b, "-m", "second"});
    {
      // Scoped, like the other INFOs below: a later failure prints only the output it is about.
      INFO(apply2.Describe());
      REQUIRE(apply2.status.code == 0);
    }

    CommandResult d12 = Ctl(*stack, {"diff", "--from", "1", "--to", "2"});
    INFO(d12.Describe());
    CHECK(d12.status.code == 0);
    CHECK(absl::StartsWith(d12.out, "diff version 1 -> version 2: 0 added, 1 changed, 0 removed\n"));
    CHECK(absl::StrContains(d12.out, "  ~ route \"all\": cluster: "));

    // Defaults: from the empty config to the live version.
    CommandResult whole = Ctl(*stack, {"diff"});
    INFO(whole.Describe());
    CHECK(whole.status.code == 0);
    CHECK(absl::StartsWith(whole.out, "diff empty -> version 2: 3 added, 0 changed, 0 removed\n"));
    CHECK(absl::StrContains(whole.out, "  + route \"all\""));

    CommandResult json = Ctl(*stack, {"diff", "--from", "1", "--to", "2", "-o", "json"});
    CHECK(json.status.code == 0);
    CHECK(absl::StrContains(json.out, "\"from_version\": \"1\""));
    CHECK(absl::StrContains(json.out, "\"to_version\": \"2\""));
    CHECK(absl::StrContains(json.out, "\"changed\": 1"));

    CommandResult missing = Ctl(*stack, {"diff", "--from", "7"});
    CHECK(missing.status.code == 1);
    CHECK(absl::StrContains(missing.err, "not found: "));

    // A file against live (a dry-run): to_a is version 1's content, live is version 2.
    CommandResult file_diff = Ctl(*stack, {"diff", to_a});
    INFO(file_diff.Describe());
    CHECK(file_diff.status.code == 0);
    CHECK(absl::StrContains(file_diff.out, "diff live version 2 -> " + to_a + ": 0 added, 1 changed"));
    CommandResult no_change = Ctl(*stack, {"diff", to_b});
    CHECK(no_change.status.code == 0);
    CHECK(absl::StrContains(no_change.out, "no changes: " + to_b + " equals live version 2"));
    const std::string bad = stack->WriteRouteConfig("bad.yaml", "nope");
    CommandResult bad_diff = Ctl(*stack, {"diff", bad});
    CHECK(bad_diff.status.code == 1);
    CHECK(absl::StrContains(bad_diff.err, "routes[0].cluster: unknown_cluster: "));

    // Rollback to version 1: a new version 3 with version 1's content.
    CommandResult stale = Ctl(*stack, {"rollback", "1", "--base-version", "1"});
    CHECK(stale.status.code == 1);
    CHECK(absl::StrContains(stale.err, "conflict: "));
    CommandResult nothing = Ctl(*stack, {"rollback", "42"});
    CHECK(nothing.status.code == 1);
    CHECK(absl::StrContains(nothing.err, "not found: "));

    CommandResult rb = Ctl(*stack, {"rollback", "1", "--base-version", "2", "-m", "undo"});
    {
      INFO(rb.Describe());
      REQUIRE(rb.status.code == 0);
      CHECK(absl::StartsWith(rb.out, "rolled back to the content of version 1 as version 3 (hash "));
      CHECK(absl::StrContains(rb.out, "  ~ route \"all\": cluster: "));
    }
    CommandResult get = Ctl(*stack, {"get"});
    CHECK(absl::StrContains(get.out, "# version 3,"));
    CHECK(absl::StrContains(get.out, "# message: undo"));
    CHECK(absl::StrContains(get.out, "cluster: a"));

    CommandResult again = Ctl(*stack, {"rollback", "1", "-o", "json"});
    {
      INFO(again.Describe());
      CHECK(again.status.code == 0);
      CHECK(absl::StrContains(again.out, "\"unchanged\": true"));
      CHECK(absl::StrContains(again.out, "\"version\": \"3\""));
    }

    // Convergence per version: the agent ACKs version 3 and serves it.
    std::string row;
    bool converged = WaitFor(
        [&] {
          CommandResult v = Ctl(*stack, {"versions"});
          row = Row(v.out, "3");
          auto cols = Columns(row);
          // VERSION HASH CREATED AUTHOR ACKED SERVING/CONNECTED REJECTED P50 P99 MESSAGE
          return cols.size() >= 9 && cols[4] == "1" && cols[5] == "1/1";
        },
        kConverge, absl::Milliseconds(200));
    INFO("version 3 row: " << row);
    CHECK(converged);
    CommandResult v = Ctl(*stack, {"versions"});
    INFO(v.Describe());
    REQUIRE(v.status.code == 0);
    REQUIRE_FALSE(Lines(v.out).empty());
    // The header names, in order. Column widths follow the widest cell, so the spacing between
    // names depends on the values (a P50 of "123.4ms" widens its column under load): compare
    // the names, not the spaces.
    CHECK(Columns(Lines(v.out)[0]) ==
          std::vector<std::string>{"VERSION", "HASH", "CREATED", "AUTHOR", "ACKED",
                                   "SERVING/CONNECTED", "REJECTED", "P50", "P99", "MESSAGE"});
    auto cols = Columns(Row(v.out, "3"));
    REQUIRE(cols.size() >= 10);
    CHECK(cols[6] == "0");     // nobody rejected it
    CHECK(cols[7] != "-");     // p50 measured
    CHECK(cols[8] != "-");     // p99 measured
    CHECK(cols[9] == "undo");
    // Version 2 is no longer served by anyone.
    auto cols2 = Columns(Row(v.out, "2"));
    REQUIRE(cols2.size() >= 6);
    CHECK(cols2[5] == "0/1");
    CommandResult limited = Ctl(*stack, {"versions", "--limit", "2", "--page-size", "1"});
    CHECK(Lines(limited.out).size() == 3);
    CommandResult vjson = Ctl(*stack, {"versions", "-o", "json"});
    CHECK(absl::StrContains(vjson.out, "\"acked_agents\": 1"));
    CHECK(absl::StrContains(vjson.out, "\"convergence_p99\": \""));
  }
}

TEST_CASE("flexctl keys and tokens: create once, list, revoke, roles") {
  auto stack = StartStack({.upstreams = 1, .agent = false});

  // The secret is stdout's only line; the warning that it is not shown again is on stderr.
  CommandResult created = Ctl(*stack, {"keys", "create", "--name", "ci", "--role", "viewer"});
  INFO(created.Describe());
  REQUIRE(created.status.code == 0);
  REQUIRE(Lines(created.out).size() == 1);
  const std::string viewer(absl::StripTrailingAsciiWhitespace(created.out));
  CHECK(absl::StartsWith(viewer, "fgk_"));
  CHECK(absl::StrContains(created.err, "\"ci\" (viewer) in tenant default"));
  CHECK(absl::StrContains(created.err, "shown only now"));

  CommandResult list = Ctl(*stack, {"keys", "list"});
  INFO(list.Describe());
  CHECK(list.status.code == 0);
  CHECK(absl::StartsWith(list.out, "ID  NAME"));
  const std::string ci_row = Row(list.out, Columns(Lines(list.out).back())[0]);
  CHECK(absl::StrContains(ci_row, " ci "));
  CHECK(absl::StrContains(ci_row, " viewer "));
  CHECK_FALSE(absl::StrContains(list.out, viewer));  // never the secret
  const std::string ci_id = Columns(ci_row)[0];

  SECTION("a viewer may read and dry-run but not create keys or apply") {
    CommandResult denied = CtlAs(*stack, viewer, {"keys", "create", "--name", "x", "--role", "admin"});
    INFO(denied.Describe());
    CHECK(denied.status.code == 1);
    CHECK(absl::StrContains(denied.err, "permission denied"));
    CHECK(denied.out.empty());
    const std::string file = stack->WriteRouteConfig("c.yaml", "a");
    CHECK(CtlAs(*stack, viewer, {"validate", file}).status.code == 0);
    CommandResult apply = CtlAs(*stack, viewer, {"apply", file});
    CHECK(apply.status.code == 1);
    CHECK(absl::StrContains(apply.err, "permission denied"));
    CommandResult tokens = CtlAs(*stack, viewer, {"tokens", "list"});
    CHECK(tokens.status.code == 1);
    CHECK(absl::StrContains(tokens.err, "permission denied"));
    CommandResult tenants = CtlAs(*stack, viewer, {"tenants", "list"});
    CHECK(tenants.status.code == 1);
    CHECK(absl::StrContains(tenants.err, "permission denied"));
  }

  SECTION("an editor may apply but not manage keys") {
    const std::string editor = CreateKey(*stack, "deployer", "editor");
    const std::string file = stack->WriteRouteConfig("c.yaml", "a");
    CommandResult apply = CtlAs(*stack, editor, {"apply", file});
    INFO(apply.Describe());
    CHECK(apply.status.code == 0);
    CHECK(CtlAs(*stack, editor, {"keys", "list"}).status.code == 1);
  }

  SECTION("revoke: the key stops working at once, list --all shows it") {
    CommandResult revoke = Ctl(*stack, {"keys", "revoke", ci_id});
    INFO(revoke.Describe());
    CHECK(revoke.status.code == 0);
    CHECK(absl::StartsWith(revoke.out, "revoked key " + ci_id + " \"ci\" (viewer) at "));
    CommandResult use = CtlAs(*stack, viewer, {"versions"});
    CHECK(use.status.code == 1);
    CHECK(absl::StrContains(use.err, "unauthenticated"));
    CHECK(Row(Ctl(*stack, {"keys", "list"}).out, ci_id).empty());
    std::string revoked_row = Row(Ctl(*stack, {"keys", "list", "--all"}).out, ci_id);
    CHECK(absl::StrContains(revoked_row, " ci "));
    CHECK_FALSE(absl::EndsWith(revoked_row, " -"));  // REVOKED column has a time
    CommandResult unknown = Ctl(*stack, {"keys", "revoke", "9999"});
    CHECK(unknown.status.code == 1);
    CHECK(absl::StrContains(unknown.err, "not found"));
  }

  SECTION("--output json of keys create carries the secret; the warning stays on stderr") {
    CommandResult r = Ctl(*stack, {"keys", "create", "--name", "j", "--role", "editor", "-o", "json"});
    INFO(r.Describe());
    CHECK(r.status.code == 0);
    CHECK(absl::StrContains(r.out, "\"secret\": \"fgk_"));
    CHECK(absl::StrContains(r.out, "\"role\": \"editor\""));
    CHECK(absl::StrContains(r.err, "shown only now"));
    CommandResult l = Ctl(*stack, {"keys", "list", "-o", "json"});
    CHECK(absl::StrContains(l.out, "\"name\": \"j\""));
    CHECK_FALSE(absl::StrContains(l.out, "fgk_"));
  }

  SECTION("agent enrollment tokens: create once, list, revoke; they are not API keys") {
    CommandResult t = Ctl(*stack, {"tokens", "create", "--name", "edge-1"});
    INFO(t.Describe());
    REQUIRE(t.status.code == 0);
    REQUIRE(Lines(t.out).size() == 1);
    const std::string token(absl::StripTrailingAsciiWhitespace(t.out));
    CHECK(absl::StartsWith(token, "fget_"));
    CHECK(absl::StrContains(t.err, "shown only now"));
    CommandResult as_key = CtlAs(*stack, token, {"versions"});
    CHECK(as_key.status.code == 1);
    CHECK(absl::StrContains(as_key.err, "unauthenticated"));

    CommandResult list_tokens = Ctl(*stack, {"tokens", "list"});
    INFO(list_tokens.Describe());
    CHECK(absl::StartsWith(list_tokens.out, "ID  NAME"));
    const std::string id = Columns(Lines(list_tokens.out).back())[0];
    CHECK(absl::StrContains(Row(list_tokens.out, id), " edge-1 "));
    CHECK_FALSE(absl::StrContains(list_tokens.out, token));

    CommandResult revoke = Ctl(*stack, {"tokens", "revoke", id});
    CHECK(revoke.status.code == 0);
    CHECK(absl::StartsWith(revoke.out, "revoked agent enrollment token " + id + " \"edge-1\""));
    CHECK(Row(Ctl(*stack, {"tokens", "list"}).out, id).empty());
    CHECK(absl::StrContains(Row(Ctl(*stack, {"tokens", "list", "--all"}).out, id), " edge-1 "));
    CommandResult json = Ctl(*stack, {"tokens", "list", "--all", "-o", "json"});
    CHECK(absl::StrContains(json.out, "\"revoked\": true"));
  }
}

TEST_CASE("flexctl tenants and --tenant isolation") {
  auto stack = StartStack({.upstreams = 1, .agent = false});

  CommandResult created = Ctl(*stack, {"tenants", "create", "acme"});
  INFO(created.Describe());
  REQUIRE(created.status.code == 0);
  REQUIRE(Lines(created.out).size() == 1);
  const std::string acme(absl::StripTrailingAsciiWhitespace(created.out));
  CHECK(absl::StartsWith(acme, "fgk_"));
  CHECK(absl::StrContains(created.err, "created tenant \"acme\" with admin key "));
  CHECK(absl::StrContains(created.err, "shown only now"));

  CommandResult dup = Ctl(*stack, {"tenants", "create", "acme"});
  CHECK(dup.status.code == 1);
  CHECK(absl::StrContains(dup.err, "already exists"));
  CommandResult bad_name = Ctl(*stack, {"tenants", "create", "no spaces"});
  CHECK(bad_name.status.code == 1);

  // acme applies to its own tenant; the listing shows its live version.
  const std::string file = stack->WriteRouteConfig("c.yaml", "a");
  CommandResult apply = CtlAs(*stack, acme, {"apply", file});
  INFO(apply.Describe());
  CHECK(apply.status.code == 0);
  CommandResult tenants = Ctl(*stack, {"tenants", "list"});
  INFO(tenants.Describe());
  CHECK(absl::StartsWith(tenants.out, "NAME     CREATED"));
  auto acme_cols = Columns(Row(tenants.out, "acme"));
  REQUIRE(acme_cols.size() == 4);
  CHECK(acme_cols[2] == "1");
  CHECK(Columns(Row(tenants.out, "default"))[2] == "-");
  CHECK(absl::StrContains(Ctl(*stack, {"tenants", "list", "-o", "json"}).out, "\"name\": \"acme\""));

  // A tenant's key never reaches another tenant, whatever the command.
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"get"}, {"versions"}, {"diff"}, {"audit"}, {"agents"}, {"keys", "list"},
           {"tokens", "list"}, {"validate", file}, {"apply", file}, {"rollback", "1"},
           {"keys", "create", "--name", "x", "--role", "viewer"}}) {
    args.insert(args.end(), {"--tenant", "default"});
    CommandResult r = CtlAs(*stack, acme, args);
    INFO(absl::StrJoin(args, " ") << "\n" << r.Describe());
    CHECK(r.status.code == 1);
    CHECK(absl::StrContains(r.err, "permission denied"));
  }
  CommandResult not_operator = CtlAs(*stack, acme, {"tenants", "create", "evil"});
  CHECK(not_operator.status.code == 1);
  CHECK(absl::StrContains(not_operator.err, "permission denied"));

  // Naming its own tenant works, and acme's keys live in acme.
  CommandResult own = CtlAs(*stack, acme, {"keys", "create", "--name", "bot", "--role", "viewer",
                                           "--tenant", "acme"});
  INFO(own.Describe());
  CHECK(own.status.code == 0);
  CHECK(absl::StrContains(own.err, "in tenant acme"));
  CommandResult acme_keys = CtlAs(*stack, acme, {"keys", "list", "--tenant", "acme"});
  CHECK(absl::StrContains(acme_keys.out, " bot "));
  CHECK(absl::StrContains(acme_keys.out, " initial-admin "));
  CHECK_FALSE(absl::StrContains(Ctl(*stack, {"keys", "list"}).out, " bot "));

  // The audit trail of acme has its creation and its apply; default's has the creation too.
  CommandResult audit = CtlAs(*stack, acme, {"audit"});
  INFO(audit.Describe());
  CHECK(absl::StrContains(audit.out, " tenant.create "));
  CHECK(absl::StrContains(audit.out, " config.apply "));
  CHECK(absl::StrContains(Ctl(*stack, {"audit", "--action", "tenant.create"}).out, "tenant acme"));
}

TEST_CASE("flexctl audit: filters, limit and paging") {
  auto stack = StartStack({.upstreams = 1, .agent = false});
  const std::string editor = CreateKey(*stack, "deployer", "editor");
  const std::string file_a = stack->WriteRouteConfig("a.yaml", "a");
  std::string yaml_b = RouteConfigYaml(stack->upstream_ports(), "a");
  yaml_b += "    timeout: 3s\n";
  const std::string file_b = stack->dir().WriteFile("b.yaml", yaml_b);
  REQUIRE(CtlAs(*stack, editor, {"apply", file_a, "-m", "one"}).status.code == 0);
  REQUIRE(CtlAs(*stack, editor, {"apply", file_b, "-m", "two"}).status.code == 0);
  REQUIRE(Ctl(*stack, {"rollback", "1"}).status.code == 0);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(Ctl(*stack, {"tokens", "create", "--name", absl::StrCat("t", i)}).status.code == 0);
  }

  CommandResult all = Ctl(*stack, {"audit"});
  INFO(all.Describe());
  REQUIRE(all.status.code == 0);
  auto lines = Lines(all.out);
  CHECK(absl::StartsWith(lines[0], "ID  TIME"));
  // key.create of the editor, 2 applies, 1 rollback, 3 tokens (plus any bootstrap rows).
  const size_t rows = lines.size() - 1;
  CHECK(rows >= 7);
  CHECK(absl::StrContains(lines[1], " token.create "));  // newest first
  CHECK(absl::StrContains(all.out, " config.rollback "));

  CommandResult applies = Ctl(*stack, {"audit", "--action", "config.apply"});
  INFO(applies.Describe());
  CHECK(Lines(applies.out).size() == 3);
  CHECK(absl::StrContains(applies.out, "(deployer)"));
  CHECK(absl::StrContains(applies.out, "version 2"));

  // --key-id: the editor made exactly the two applies.
  std::string editor_id;
  for (const auto& line : Lines(Ctl(*stack, {"keys", "list"}).out)) {
    if (absl::StrContains(line, " deployer ")) editor_id = Columns(line)[0];
  }
  REQUIRE_FALSE(editor_id.empty());
  CommandResult by_key = Ctl(*stack, {"audit", "--key-id", editor_id});
  CHECK(Lines(by_key.out).size() == 3);

  CommandResult limited = Ctl(*stack, {"audit", "--limit", "2"});
  CHECK(Lines(limited.out).size() == 3);

  // Following pages of 2 yields the same rows as one page.
  CommandResult paged = Ctl(*stack, {"audit", "--page-size", "2"});
  CHECK(paged.out == all.out);

  // Time filters: everything is after an hour ago and nothing after an hour from now.
  CHECK(Lines(Ctl(*stack, {"audit", "--since", "1h"}).out).size() == rows + 1);
  CommandResult future = Ctl(*stack, {"audit", "--since", "2999-01-01T00:00:00Z"});
  CHECK(future.status.code == 0);
  CHECK(Lines(future.out).size() == 1);  // header only
  CHECK(Lines(Ctl(*stack, {"audit", "--until", "2000-01-01T00:00:00Z"}).out).size() == 1);

  CommandResult json = Ctl(*stack, {"audit", "--action", "config.rollback", "-o", "json"});
  CHECK(absl::StrContains(json.out, "\"action\": \"config.rollback\""));
  CHECK_FALSE(absl::StrContains(json.out, "\"action\": \"config.apply\""));

  CommandResult bad_time = Ctl(*stack, {"audit", "--since", "yesterday"});
  CHECK(bad_time.status.code == 2);
  CHECK(absl::StrContains(bad_time.err, "RFC 3339"));
}

TEST_CASE("flexctl agents: the fleet with state counts, filters and one agent") {
  auto stack = StartStack({.upstreams = 1, .agent = true, .agent_workers = 1});
  REQUIRE(Ctl(*stack, {"apply", stack->WriteRouteConfig("c.yaml", "a")}).status.code == 0);

  std::string listing;
  bool in_sync = WaitFor(
      [&] {
        CommandResult r = Ctl(*stack, {"agents"});
        listing = r.out;
        return r.status.code == 0 && absl::StrContains(r.out, "IN_SYNC 1");
      },
      kConverge, absl::Milliseconds(200));
  INFO(listing);
  REQUIRE(in_sync);
  auto lines = Lines(listing);
  REQUIRE(lines.size() == 3);  // header, the agent, the summary
  CHECK(absl::StartsWith(lines[0], "AGENT"));
  auto cols = Columns(lines[1]);
  REQUIRE(cols.size() >= 6);
  const std::string id = cols[0];
  CHECK(cols[1] == "IN_SYNC");
  CHECK(cols[2] == "1");    // applied version
  CHECK(cols[3] == "1");    // live version
  CHECK(cols[4] == "yes");  // connected
  CHECK(lines[2] ==
        "1 agent shown of 1, live version 1: DISCONNECTED 0, STALE 0, DRIFTED 0, IN_SYNC 1, "
        "REJECTED 0, PENDING 0");

  // Filters: the summary still counts the whole fleet.
  CommandResult pending = Ctl(*stack, {"agents", "--state", "pending,rejected", "--state", "stale"});
  INFO(pending.Describe());
  CHECK(pending.status.code == 0);
  CHECK(Lines(pending.out).size() == 2);
  CHECK(absl::StrContains(pending.out, "0 agents shown of 1"));
  CommandResult nolabel = Ctl(*stack, {"agents", "--selector", "zone=nowhere"});
  CHECK(absl::StrContains(nolabel.out, "0 agents shown of 0"));
  CommandResult bad_selector = Ctl(*stack, {"agents", "--selector", "novalue"});
  CHECK(bad_selector.status.code == 1);
  CHECK(absl::StrContains(bad_selector.err, "refused: "));

  CommandResult json = Ctl(*stack, {"agents", "-o", "json"});
  CHECK(absl::StrContains(json.out, "\"state\": \"IN_SYNC\""));
  CHECK(absl::StrContains(json.out, "\"IN_SYNC\": 1"));

  CommandResult one = Ctl(*stack, {"agents", "get", id});
  INFO(one.Describe());
  CHECK(one.status.code == 0);
  CHECK(absl::StrContains(one.out, "agent:            " + id + "\n"));
  CHECK(absl::StrContains(one.out, "state:            IN_SYNC ("));
  CHECK(absl::StrContains(one.out, "connected:        yes, since "));
  CHECK(absl::StrContains(one.out, "applied version:  1 (hash "));
  CHECK(absl::StrContains(one.out, "last nack:        -"));
  CommandResult one_json = Ctl(*stack, {"agents", "get", id, "-o", "json"});
  CHECK(absl::StrContains(one_json.out, "\"agent_id\": \"" + id + "\""));
  CommandResult unknown = Ctl(*stack, {"agents", "get", "no-such-agent"});
  CHECK(unknown.status.code == 1);
  CHECK(absl::StrContains(unknown.err, "not found"));
}

TEST_CASE("flexctl refuses bad flags with exit 2 and fails cleanly on TLS trouble") {
  auto stack = StartStack({.upstreams = 0, .agent = false});
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"keys", "create", "--name", "x", "--role", "root"},
           {"keys", "create", "--role", "viewer"},
           {"keys", "revoke", "abc"},
           {"tokens", "create"},
           {"tenants", "create", "x", "--tenant", "y"},
           {"agents", "--state", "sleepy"},
           {"rollback"},
           {"diff", "f.yaml", "--from", "1"},
           {"audit", "--limit", "-1"},
           {"versions", "--nope"}}) {
    CommandResult r = Ctl(*stack, args);
    INFO(absl::StrJoin(args, " ") << "\n" << r.Describe());
    CHECK(r.status.code == 2);
    CHECK(absl::StrContains(r.err, "Run 'flexctl --help' for usage."));
    CHECK(r.out.empty());
  }

  // The server speaks plaintext: a TLS handshake cannot succeed, and that is "could not run".
  CommandResult tls = Ctl(*stack, {"versions", "--tls", "--timeout", "5s"});
  INFO(tls.Describe());
  CHECK(tls.status.code == 2);
  CHECK(absl::StrContains(tls.err, "cannot reach flexgate-cp"));
  CommandResult no_ca = Ctl(*stack, {"versions", "--ca-file", stack->dir().File("missing.pem")});
  CHECK(no_ca.status.code == 2);
  CHECK(absl::StrContains(no_ca.err, "cannot read --ca-file"));
  const std::string not_pem = stack->dir().WriteFile("bogus.pem", "hello\n");
  CommandResult bogus = Ctl(*stack, {"versions", "--ca-file", not_pem});
  CHECK(bogus.status.code == 2);
  CHECK(absl::StrContains(bogus.err, "holds no PEM certificate"));

  // Help lists every command, and a command's help its options.
  CommandResult help = Ctl(*stack, {"--help"});
  CHECK(help.status.code == 0);
  for (const char* cmd : {"validate FILE", "apply FILE", "get", "versions", "diff [FILE]",
                          "rollback VERSION", "audit", "keys create", "keys list", "keys revoke",
                          "tokens create", "tokens list", "tokens revoke", "tenants create NAME",
                          "tenants list", "agents [", "agents get ID", "--tls", "--ca-file"}) {
    CHECK(absl::StrContains(help.out, cmd));
  }
  CommandResult keys_help = Ctl(*stack, {"keys", "create", "--help"});
  CHECK(keys_help.status.code == 0);
  CHECK(absl::StrContains(keys_help.out, "--role admin|editor|viewer"));
}

}  // namespace
}  // namespace flexgate::testing
