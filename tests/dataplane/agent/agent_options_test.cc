// Flags and bootstrap parsing (DESIGN.md section 8): what the operator types must land in the
// right setting, flags must override the bootstrap file, and every mistake must be named.
#include <fstream>
#include <map>

#include <catch2/catch.hpp>

#include "dataplane/agent/agent_options.h"
#include "temp_dir.h"

namespace flexgate::agent {
namespace {

using testing::TempDir;

EnvLookup Env(std::map<std::string, std::string> vars = {}) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* name) -> const char* {
    auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

absl::StatusOr<AgentOptions> Parse(std::vector<std::string> args, EnvLookup env = Env()) {
  return ParseAgentFlags(args, env);
}

std::string ErrorOf(std::vector<std::string> args, EnvLookup env = Env()) {
  auto o = Parse(std::move(args), std::move(env));
  REQUIRE_FALSE(o.ok());
  CHECK(o.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(o.status().message());
}

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

TEST_CASE("static mode flags as the design spells them") {
  auto o = Parse({"--config", "site.yaml", "--listen", "127.0.0.1:8080", "--admin",
                  "127.0.0.1:9901", "--workers", "3"});
  REQUIRE(o.ok());
  CHECK(o->static_mode());
  CHECK(o->config_file == "site.yaml");
  CHECK(o->listen_addresses == std::vector<std::string>{"127.0.0.1:8080"});
  CHECK(o->admin_address == "127.0.0.1:9901");
  CHECK(o->workers == 3);
}

TEST_CASE("control-plane flags, repeatable labels and the --flag=value form") {
  auto o = Parse({"--control-plane", "cp.internal:7000", "--token=t0k", "--cache-dir", "/var/x",
                  "--label", "zone=a", "--label=tier=edge", "--label", "zone=b", "--agent-id",
                  "edge-1", "--listen", "[::1]:8080", "--listen", ":8081", "--cp-ca-file",
                  "ca.pem", "--drain-timeout", "2s", "--heartbeat-interval", "250ms"});
  REQUIRE(o.ok());
  CHECK_FALSE(o->static_mode());
  CHECK(o->control_plane.address == "cp.internal:7000");
  CHECK(o->control_plane.token == "t0k");
  CHECK(o->control_plane.tls);  // implied by the CA file
  CHECK(o->cache_dir == "/var/x");
  CHECK(o->labels == std::map<std::string, std::string>{{"tier", "edge"}, {"zone", "b"}});
  CHECK(o->agent_id == "edge-1");
  CHECK(o->listen_addresses == std::vector<std::string>{"[::1]:8080", ":8081"});
  CHECK(o->drain_timeout == absl::Seconds(2));
  CHECK(o->control_plane.heartbeat_interval == absl::Milliseconds(250));
}

TEST_CASE("defaults: listener, admin on loopback, one worker per core") {
  auto o = Parse({"--config", "c.yaml"});
  REQUIRE(o.ok());
  CHECK(o->listen_addresses == std::vector<std::string>{"0.0.0.0:8080"});
  CHECK(o->admin_address == "127.0.0.1:9901");
  CHECK(o->workers >= 1);
}

TEST_CASE("FLEXGATE_TOKEN stands in for --token, and --token wins over it") {
  auto from_env = Parse({"--control-plane", "h:1"}, Env({{"FLEXGATE_TOKEN", "envtok"}}));
  REQUIRE(from_env.ok());
  CHECK(from_env->control_plane.token == "envtok");
  auto from_flag =
      Parse({"--control-plane", "h:1", "--token", "flag"}, Env({{"FLEXGATE_TOKEN", "envtok"}}));
  REQUIRE(from_flag.ok());
  CHECK(from_flag->control_plane.token == "flag");
}

TEST_CASE("bootstrap file supplies settings and flags override it") {
  TempDir dir;
  Write(dir.file("bootstrap.yaml"), R"(
listeners:
  - { name: main, address: "127.0.0.1:7001" }
  - { name: alt, address: "127.0.0.1:7002" }
admin_address: "127.0.0.1:7900"
control_plane: { address: "cp:443", token: filetoken, tls: true, server_name: cp.example.com }
cache_dir: /var/cache/flexgate
labels: { zone: a, tier: edge }
workers: 2
agent_id: from-file
limits: { max_header_bytes: 8192, drain_timeout: "7s", idle_timeout: "30s" }
)");
  SECTION("file alone") {
    auto o = Parse({"--bootstrap", dir.file("bootstrap.yaml")});
    REQUIRE(o.ok());
    CHECK(o->listen_addresses ==
          std::vector<std::string>{"127.0.0.1:7001", "127.0.0.1:7002"});
    CHECK(o->admin_address == "127.0.0.1:7900");
    CHECK(o->control_plane.address == "cp:443");
    CHECK(o->control_plane.token == "filetoken");
    CHECK(o->control_plane.tls);
    CHECK(o->control_plane.server_name == "cp.example.com");
    CHECK(o->cache_dir == "/var/cache/flexgate");
    CHECK(o->workers == 2);
    CHECK(o->agent_id == "from-file");
    CHECK(o->limits.max_header_bytes == 8192);
    CHECK(o->limits.idle_timeout == absl::Seconds(30));
    CHECK(o->drain_timeout == absl::Seconds(7));
  }
  SECTION("flags win, wherever --bootstrap appears") {
    auto o = Parse({"--listen", "127.0.0.1:9000", "--workers", "5", "--label", "zone=z",
                    "--bootstrap", dir.file("bootstrap.yaml"), "--token", "flagtoken"},
                   Env({{"FLEXGATE_TOKEN", "envtoken"}}));
    REQUIRE(o.ok());
    CHECK(o->listen_addresses == std::vector<std::string>{"127.0.0.1:9000"});
    CHECK(o->workers == 5);
    CHECK(o->labels == std::map<std::string, std::string>{{"tier", "edge"}, {"zone", "z"}});
    CHECK(o->control_plane.token == "flagtoken");
  }
  SECTION("the environment overrides the file's token") {
    auto o = Parse({"--bootstrap", dir.file("bootstrap.yaml")}, Env({{"FLEXGATE_TOKEN", "e"}}));
    REQUIRE(o.ok());
    CHECK(o->control_plane.token == "e");
  }
}

TEST_CASE("bootstrap file errors name the file and the problem") {
  TempDir dir;
  CHECK_THAT(ErrorOf({"--bootstrap", dir.file("missing.yaml")}),
             Catch::Contains("missing.yaml"));
  Write(dir.file("typo.yaml"), "admin_adress: \"127.0.0.1:1\"\n");
  CHECK_THAT(ErrorOf({"--bootstrap", dir.file("typo.yaml")}), Catch::Contains("admin_adress"));
  Write(dir.file("tls.yaml"),
        "listeners: [{ name: s, address: \"0.0.0.0:443\", tls: { certificates: [{ cert_file: "
        "c.pem }] } }]\nconfig_file: c.yaml\n");  // no key_file
  CHECK_THAT(ErrorOf({"--bootstrap", dir.file("tls.yaml")}), Catch::Contains("TLS"));
}

TEST_CASE("bad flags are refused with a message that names them") {
  CHECK_THAT(ErrorOf({"--config", "c", "--frobnicate"}), Catch::Contains("--frobnicate"));
  CHECK_THAT(ErrorOf({"--config"}), Catch::Contains("--config needs a value"));
  CHECK_THAT(ErrorOf({"--config", "c", "stray"}), Catch::Contains("stray"));
  CHECK_THAT(ErrorOf({"--config", "c", "--workers", "many"}), Catch::Contains("--workers"));
  CHECK_THAT(ErrorOf({"--config", "c", "--workers", "-1"}), Catch::Contains("--workers"));
  CHECK_THAT(ErrorOf({"--config", "c", "--listen", "8080"}), Catch::Contains("--listen"));
  CHECK_THAT(ErrorOf({"--config", "c", "--listen", "h:99999"}), Catch::Contains("--listen"));
  CHECK_THAT(ErrorOf({"--config", "c", "--admin", "[::1:80"}), Catch::Contains("--admin"));
  CHECK_THAT(ErrorOf({"--config", "c", "--drain-timeout", "soon"}),
             Catch::Contains("--drain-timeout"));
  CHECK_THAT(ErrorOf({"--control-plane", "h:1", "--token", "t", "--label", "novalue"}),
             Catch::Contains("key=value"));
  CHECK_THAT(ErrorOf({"--control-plane", "h:1", "--token", "t", "--label", "=v"}),
             Catch::Contains("key=value"));
  CHECK_THAT(ErrorOf({"--help=yes"}), Catch::Contains("takes no value"));
  CHECK_THAT(ErrorOf({"--config", "c", "--log-level", "loud"}), Catch::Contains("--log-level"));
}

TEST_CASE("mode errors: nothing to serve, both modes, control plane without token or port") {
  CHECK_THAT(ErrorOf({}), Catch::Contains("nothing to serve"));
  CHECK_THAT(ErrorOf({"--listen", "127.0.0.1:1"}), Catch::Contains("nothing to serve"));
  CHECK_THAT(ErrorOf({"--config", "c", "--control-plane", "h:1", "--token", "t"}),
             Catch::Contains("exclude each other"));
  CHECK_THAT(ErrorOf({"--control-plane", "h:1"}), Catch::Contains("token"));
  CHECK_THAT(ErrorOf({"--control-plane", "h:1"}, Env({{"FLEXGATE_TOKEN", ""}})),
             Catch::Contains("token"));
  CHECK_THAT(ErrorOf({"--control-plane", "cp-without-port", "--token", "t"}),
             Catch::Contains("--control-plane"));
  CHECK_THAT(ErrorOf({"--control-plane", "h:1", "--token", "t", "--cp-cert-file", "c.pem"}),
             Catch::Contains("mTLS"));
}

TEST_CASE("--help and --version short-circuit validation") {
  auto help = Parse({"--help"});
  REQUIRE(help.ok());
  CHECK(help->show_help);
  CHECK_THAT(AgentUsage(), Catch::Contains("--control-plane HOST:PORT"));
  auto version = Parse({"--version"});
  REQUIRE(version.ok());
  CHECK(version->show_version);
}

}  // namespace
}  // namespace flexgate::agent
