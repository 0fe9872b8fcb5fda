// flexctl without a control plane: argument parsing, offline validation, exit codes, and what
// happens when the server cannot be reached. The commands that need flexgate-cp are covered by
// tests/integration/end_to_end_test.cc.
#include <catch2/catch.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controlplane/cli/flexctl.h"
#include "tests/harness/proc/process.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::cli {
namespace {

using flexgate::testing::FreePort;
using flexgate::testing::TempDir;

constexpr char kValidYaml[] = R"(clusters:
  - name: web
    endpoints:
      - { address: 127.0.0.1, port: 8081 }
routes:
  - name: all
    match: { path: { prefix: "/" } }
    cluster: web
)";

// The example every suite carries (DESIGN.md section 8): policies and rate limits by name.
constexpr char kExampleYaml[] = R"(clusters:
  - name: web
    endpoints:
      - { address: 127.0.0.1, port: 8081 }
policies:
  - name: browser
    cors: { allow_origins: ["https://app.example.com"], allow_methods: [GET, POST], max_age: "600s" }
    ip_access: { deny: ["10.0.0.0/8", "2001:db8::/32"] }
rate_limits:
  - { name: per-ip, by: CLIENT_IP, requests_per_unit: 10, unit: MINUTE }
  - { name: per-key, by: HEADER, header: x-api-key, requests_per_unit: 100, unit: HOUR }
routes:
  - name: api
    match: { path: { prefix: "/api/" } }
    cluster: web
    policies: [browser]
    rate_limits: [per-ip, per-key]
)";

struct Result {
  int code;
  std::string out;
  std::string err;
};

Result Run(std::vector<std::string> args, Environment env = {}) {
  std::ostringstream out, err;
  int code = RunFlexctl(args, env, out, err);
  return {code, out.str(), err.str()};
}

TEST_CASE("flexctl parses options before and after the command") {
  auto inv = ParseArgs({"--server", "h:1", "apply", "f.yaml", "--base-version=7", "-m", "why",
                        "--output", "json", "--tenant", "acme"},
                       {});
  REQUIRE(inv.ok());
  CHECK(inv->server == "h:1");
  CHECK(inv->command == "apply");
  CHECK(inv->args == std::vector<std::string>{"f.yaml"});
  REQUIRE(inv->base_version.has_value());
  CHECK(*inv->base_version == 7);
  CHECK(inv->message == "why");
  CHECK(inv->output == OutputFormat::kJson);
  CHECK(inv->tenant == "acme");

  // --base-version 0 means "no version yet" and is distinct from not giving it.
  auto zero = ParseArgs({"apply", "f.yaml", "--base-version", "0"}, {});
  REQUIRE(zero.ok());
  REQUIRE(zero->base_version.has_value());
  CHECK(*zero->base_version == 0);
  auto none = ParseArgs({"apply", "f.yaml"}, {});
  REQUIRE(none.ok());
  CHECK_FALSE(none->base_version.has_value());
}

TEST_CASE("flexctl takes server and token from the environment, flags win") {
  Environment env{"env-host:1", "env-key"};
  auto from_env = ParseArgs({"get"}, env);
  REQUIRE(from_env.ok());
  CHECK(from_env->server == "env-host:1");
  CHECK(from_env->token == "env-key");
  auto flags = ParseArgs({"get", "--server", "flag-host:2", "--token", "flag-key"}, env);
  REQUIRE(flags.ok());
  CHECK(flags->server == "flag-host:2");
  CHECK(flags->token == "flag-key");
}

TEST_CASE("flexctl usage errors exit 2 with the reason") {
  struct Case {
    std::vector<std::string> args;
    std::string reason;
  };
  std::vector<Case> cases = {
      {{}, "no command"},
      {{"frobnicate"}, "unknown command \"frobnicate\""},
      {{"apply"}, "apply needs exactly one FILE"},
      {{"validate", "a.yaml", "b.yaml"}, "validate needs exactly one FILE"},
      {{"get", "extra"}, "get takes no arguments"},
      {{"get", "--base-version", "3"}, "--base-version is not an option of get"},
      {{"apply", "f.yaml", "--base-version", "three"}, "--base-version needs a non-negative integer"},
      {{"apply", "f.yaml", "--base-version", "-1"}, "--base-version needs a non-negative integer"},
      {{"versions", "--output", "xml"}, "--output must be table or json"},
      {{"versions", "--bogus"}, "unknown option --bogus"},
      {{"versions", "--server"}, "--server needs a value"},
      {{"versions", "--timeout", "soon"}, "--timeout needs a duration"},
      {{"keys"}, "keys needs a subcommand: create, list, revoke"},
      {{"keys", "rotate"}, "keys needs a subcommand: create, list, revoke (got \"rotate\")"},
      {{"keys", "create", "--role", "viewer"}, "keys create needs --name"},
      {{"keys", "create", "--name", "ci"}, "keys create needs --role"},
      {{"keys", "create", "--name", "ci", "--role", "root"}, "--role must be admin, editor or viewer"},
      {{"keys", "revoke"}, "keys revoke needs exactly one ID argument"},
      {{"keys", "revoke", "x7"}, "keys revoke needs a positive number as ID"},
      {{"keys", "list", "--all=yes"}, "--all takes no value"},
      {{"keys", "list", "--role", "admin"}, "--role is not an option of keys list"},
      {{"tokens", "create"}, "tokens create needs --name"},
      {{"tenants", "create"}, "tenants create needs exactly one NAME argument"},
      {{"tenants", "list", "--tenant", "acme"}, "--tenant is not an option of tenants list"},
      {{"rollback", "0"}, "rollback needs a positive number as VERSION"},
      {{"diff", "a.yaml", "b.yaml"}, "diff takes at most one FILE argument"},
      {{"diff", "a.yaml", "--to", "3"}, "--from and --to are for stored versions"},
      {{"diff", "--from", "x"}, "--from needs a non-negative integer"},
      {{"audit", "--since", "last week"}, "--since needs an RFC 3339 time"},
      {{"audit", "--since", "1h", "--until", "2h"}, "--until must be later than --since"},
      {{"audit", "--key-id", "-3"}, "--key-id needs a non-negative integer"},
      {{"audit", "--page-size", "0"}, "--page-size must be 1 to 1000"},
      {{"agents", "--state", "asleep"}, "--state must be one of"},
      {{"agents", "get"}, "agents get needs exactly one ID argument"},
      {{"agents", "extra"}, "agents takes no arguments"},
      {{"get", "--tls=1"}, "--tls takes no value"},
  };
  for (const auto& c : cases) {
    Result r = Run(c.args);
    INFO("args: " << absl::StrJoin(c.args, " ") << "\nerr: " << r.err);
    CHECK(r.code == kExitCannotRun);
    CHECK(absl::StrContains(r.err, c.reason));
    CHECK(r.out.empty());
  }
}

TEST_CASE("flexctl --help prints usage and exits 0") {
  Result r = Run({"--help"});
  CHECK(r.code == kExitOk);
  CHECK(absl::StrContains(r.out, "usage: flexctl"));
  CHECK(absl::StrContains(r.out, "--base-version"));
  for (const char* line :
       {"  validate FILE\n", "  apply FILE [--base-version N] [--message TEXT]\n",
        "  get [--version N]\n", "  versions [--limit N] [--page-size N]\n",
        "  diff [FILE] [--from N] [--to N]\n",
        "  rollback VERSION [--base-version N] [--message TEXT]\n",
        "  audit [--action ACTION] [--since TIME] [--until TIME] [--key-id ID] [--limit N]",
        "  keys create --name NAME --role admin|editor|viewer\n", "  keys list [--all]\n",
        "  keys revoke ID\n", "  tokens create --name NAME\n", "  tokens list [--all]\n",
        "  tokens revoke ID\n", "  tenants create NAME [--admin-key-name NAME]\n",
        "  tenants list\n", "  agents [--selector K=V,...] [--state STATE] [--page-size N]\n",
        "  agents get ID\n", "  --tls ", "  --ca-file FILE ", "  -o, --output table|json "}) {
    INFO(line);
    CHECK(absl::StrContains(r.out, line));
  }
  // `help` is the same as --help.
  CHECK(Run({"help"}).out == r.out);
}

TEST_CASE("flexctl COMMAND --help explains that command") {
  Result keys_create = Run({"keys", "create", "--help"});
  CHECK(keys_create.code == kExitOk);
  CHECK(absl::StartsWith(keys_create.out,
                         "usage: flexctl [global options] keys create --name NAME --role "
                         "admin|editor|viewer\n"));
  CHECK(absl::StrContains(keys_create.out, "shown again"));
  CHECK_FALSE(absl::StrContains(keys_create.out, "keys list"));

  // A group lists each of its commands; "agents" is both a command and a group.
  Result keys = Run({"keys", "--help"});
  for (const char* cmd : {"keys create", "keys list [--all]", "keys revoke ID"}) {
    CHECK(absl::StrContains(keys.out, cmd));
  }
  Result agents = Run({"help", "agents"});
  CHECK(absl::StrContains(agents.out, "agents [--selector K=V,...]"));
  CHECK(absl::StrContains(agents.out, "agents get ID"));
  CHECK(absl::StrContains(agents.out, "in_sync"));
  Result tenants = Run({"tenants", "create", "--help"});
  CHECK(absl::StrContains(tenants.out, "--tenant does not apply"));
  // Help wins over a missing argument.
  CHECK(Run({"rollback", "--help"}).code == kExitOk);
}

TEST_CASE("flexctl parses the options of the new commands") {
  auto keys = ParseArgs({"keys", "create", "--name", "ci", "--role", "viewer", "--tenant", "acme"}, {});
  REQUIRE(keys.ok());
  CHECK(keys->command == "keys create");
  CHECK(keys->name == "ci");
  CHECK(keys->role == "viewer");
  CHECK(keys->tenant == "acme");

  auto agents = ParseArgs({"agents", "--state", "in-sync,Pending", "--state", "STALE",
                           "--selector", "zone=eu,tier=edge"},
                          {});
  REQUIRE(agents.ok());
  CHECK(agents->command == "agents");
  CHECK(agents->states == std::vector<std::string>{"IN_SYNC", "PENDING", "STALE"});
  CHECK(agents->selector == "zone=eu,tier=edge");
  auto list = ParseArgs({"agents", "list"}, {});
  REQUIRE(list.ok());
  CHECK(list->command == "agents");
  auto get = ParseArgs({"agents", "get", "agent-1"}, {});
  REQUIRE(get.ok());
  CHECK(get->command == "agents get");
  CHECK(get->args == std::vector<std::string>{"agent-1"});

  auto audit = ParseArgs({"audit", "--since", "2024-05-01T12:00:00Z", "--until", "30m",
                          "--action", "key.create", "--key-id", "7", "--limit", "5"},
                         {});
  REQUIRE(audit.ok());
  REQUIRE(audit->since.has_value());
  CHECK(absl::ToUnixSeconds(*audit->since) == 1714564800);
  REQUIRE(audit->until.has_value());
  CHECK(*audit->until < absl::Now() - absl::Minutes(29));
  CHECK(*audit->until > absl::Now() - absl::Minutes(31));
  CHECK(audit->action == "key.create");
  CHECK(audit->key_id == 7);
  CHECK(audit->limit == 5);

  auto diff = ParseArgs({"diff", "--from", "2", "--to", "5"}, {});
  REQUIRE(diff.ok());
  CHECK(diff->from_version == 2);
  CHECK(diff->to_version == 5);
  CHECK(diff->args.empty());
  auto diff_file = ParseArgs({"diff", "new.yaml"}, {});
  REQUIRE(diff_file.ok());
  CHECK(diff_file->args == std::vector<std::string>{"new.yaml"});

  auto rollback = ParseArgs({"rollback", "3", "--base-version", "5", "-m", "bad deploy"}, {});
  REQUIRE(rollback.ok());
  CHECK(rollback->args == std::vector<std::string>{"3"});
  CHECK(rollback->base_version == std::optional<uint64_t>(5));
  CHECK(rollback->message == "bad deploy");

  // --ca-file implies TLS; the last --token wins.
  auto tls = ParseArgs({"get", "--ca-file", "ca.pem", "--token", "a", "--token", "b"}, {});
  REQUIRE(tls.ok());
  CHECK(tls->tls);
  CHECK(tls->ca_file == "ca.pem");
  CHECK(tls->token == "b");
  auto plain = ParseArgs({"get"}, {});
  REQUIRE(plain.ok());
  CHECK_FALSE(plain->tls);

  auto all = ParseArgs({"tokens", "list", "--all"}, {});
  REQUIRE(all.ok());
  CHECK(all->include_revoked);
}

TEST_CASE("flexctl validate offline: valid, invalid, malformed") {
  TempDir dir("flexctl-test");

  SECTION("a valid YAML file exits 0 with its hash") {
    Result r = Run({"validate", dir.WriteFile("ok.yaml", kValidYaml)});
    INFO(r.err);
    CHECK(r.code == kExitOk);
    CHECK(absl::StartsWith(r.out, "valid (hash "));
  }

  SECTION("the example with policies and rate limits is valid") {
    Result r = Run({"validate", dir.WriteFile("example.yaml", kExampleYaml)});
    INFO(r.out << r.err);
    CHECK(r.code == kExitOk);
  }

  SECTION("the same config as JSON has the same hash") {
    Result yaml = Run({"validate", dir.WriteFile("ok.yaml", kValidYaml)});
    Result json = Run({"validate", dir.WriteFile("ok.json", R"({
      "clusters": [{"name": "web", "endpoints": [{"address": "127.0.0.1", "port": 8081}]}],
      "routes": [{"name": "all", "match": {"path": {"prefix": "/"}}, "cluster": "web"}]})")});
    CHECK(json.code == kExitOk);
    CHECK(json.out == yaml.out);
  }

  SECTION("every diagnostic is printed as path: code: message, exit 1") {
    std::string bad = kValidYaml;
    bad.replace(bad.find("cluster: web"), 12, "cluster: nope");
    bad += "  - name: all\n    match: { path: { prefix: \"/x\" } }\n    cluster: web\n";
    Result r = Run({"validate", dir.WriteFile("bad.yaml", bad)});
    INFO(r.out << r.err);
    CHECK(r.code == kExitRefused);
    CHECK(absl::StrContains(r.out, "routes[0].cluster: unknown_cluster: "));
    CHECK(absl::StrContains(r.out, "routes[1].name: duplicate_name: "));
    CHECK(absl::StrContains(r.out, "invalid: 2 errors"));
  }

  SECTION("--output json reports valid=false and the diagnostics") {
    std::string bad = kValidYaml;
    bad.replace(bad.find("cluster: web"), 12, "cluster: nope");
    Result r = Run({"validate", "--output", "json", dir.WriteFile("bad.yaml", bad)});
    CHECK(r.code == kExitRefused);
    CHECK(absl::StrContains(r.out, "\"valid\": false"));
    CHECK(absl::StrContains(r.out, "\"path\": \"routes[0].cluster\""));
    CHECK(absl::StrContains(r.out, "\"code\": \"unknown_cluster\""));
  }

  SECTION("a malformed file exits 2 and names the file") {
    Result r = Run({"validate", dir.WriteFile("broken.yaml", "routes: [ { name: x\n")});
    CHECK(r.code == kExitCannotRun);
    CHECK(absl::StrContains(r.err, "broken.yaml"));
    CHECK(r.out.empty());
  }

  SECTION("an unknown field exits 2 and names it") {
    Result r = Run({"validate", dir.WriteFile("typo.yaml", "clusterz: []\n")});
    CHECK(r.code == kExitCannotRun);
    CHECK(absl::StrContains(r.err, "clusterz"));
  }

  SECTION("a missing file exits 2") {
    Result r = Run({"validate", dir.File("missing.yaml")});
    CHECK(r.code == kExitCannotRun);
    CHECK(absl::StrContains(r.err, "missing.yaml"));
  }
}

TEST_CASE("flexctl commands that need a server say so, or that it is unreachable") {
  TempDir dir("flexctl-test");
  std::string file = dir.WriteFile("ok.yaml", kValidYaml);

  for (std::vector<std::string> args : {std::vector<std::string>{"apply", file}, {"audit"},
                                          {"keys", "list"}, {"agents"}, {"diff", file}}) {
    Result no_server = Run(args);
    INFO(absl::StrJoin(args, " "));
    CHECK(no_server.code == kExitCannotRun);
    CHECK(absl::StrContains(no_server.err, "--server"));
  }

  // Nothing listens on a port that was just free.
  std::string down = absl::StrCat("127.0.0.1:", FreePort());
  for (std::vector<std::string> args :
       {std::vector<std::string>{"apply", file}, {"validate", file}, {"get"}, {"versions"},
        {"diff"}, {"diff", file}, {"rollback", "1"}, {"audit"}, {"keys", "list"},
        {"keys", "create", "--name", "n", "--role", "viewer"}, {"keys", "revoke", "1"},
        {"tokens", "list"}, {"tokens", "create", "--name", "n"}, {"tokens", "revoke", "1"},
        {"tenants", "list"}, {"tenants", "create", "t"}, {"agents"}, {"agents", "get", "a"}}) {
    args.insert(args.end(), {"--server", down, "--timeout", "5s"});
    Result r = Run(args);
    INFO(absl::StrJoin(args, " ") << "\n" << r.err);
    CHECK(r.code == kExitCannotRun);
    CHECK(absl::StrContains(r.err, "cannot reach flexgate-cp at " + down));
  }
}

TEST_CASE("the flexctl program reads stdin and returns the exit status") {
  REQUIRE(flexgate::testing::BinaryExists("flexctl"));
  flexgate::testing::ProcessOptions o;
  o.args = {flexgate::testing::BinaryPath("flexctl"), "validate", "-"};
  o.unset_env = {"FLEXGATE_SERVER", "FLEXGATE_TOKEN"};
  o.stdin_data = kValidYaml;
  auto ok = flexgate::testing::RunCommand(o, absl::Seconds(30));
  REQUIRE(ok.ok());
  INFO(ok->Describe());
  CHECK(ok->status.code == 0);

  std::string bad = kValidYaml;
  bad.replace(bad.find("cluster: web"), 12, "cluster: nope");
  o.stdin_data = bad;
  auto invalid = flexgate::testing::RunCommand(o, absl::Seconds(30));
  REQUIRE(invalid.ok());
  INFO(invalid->Describe());
  CHECK(invalid->status.code == 1);
  CHECK(absl::StrContains(invalid->out, "routes[0].cluster: unknown_cluster: "));
}

}  // namespace
}  // namespace flexgate::cli
