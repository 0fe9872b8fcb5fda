// Tests for the one YAML/JSON config loader and the canonical hash.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <catch2/catch.hpp>

#include "common/canonical.h"
#include "common/config_loader.h"

namespace {

using flexgate::v1::Config;

std::string Error(const std::string& text, flexgate::ConfigFormat format = flexgate::ConfigFormat::kAuto) {
  auto config = flexgate::ParseConfig(text, format);
  REQUIRE_FALSE(config.ok());
  return std::string(config.status().message());
}

constexpr const char* kYaml = R"(
clusters:
  - name: web
    lb_policy: LEAST_REQUEST
    connect_timeout: 1.5s
    endpoints:
      - { address: 127.0.0.1, port: 8081, weight: 2 }
rate_limits:
  - { name: per-ip, by: CLIENT_IP, requests_per_unit: 10, unit: MINUTE }
  - { name: per-key, by: HEADER, header: x-api-key, requests_per_unit: 100, unit: HOUR }
routes:
  - name: all
    match: { path: { prefix: "/" }, hosts: ["*.example.com"] }
    cluster: web
    rate_limits: [per-ip, per-key]
)";

}  // namespace

TEST_CASE("YAML loads into the config model", "[loader]") {
  auto config = flexgate::ParseConfig(kYaml);
  REQUIRE(config.ok());
  REQUIRE(config->clusters_size() == 1);
  const auto& c = config->clusters(0);
  CHECK(c.name() == "web");
  CHECK(c.lb_policy() == flexgate::v1::Cluster::LEAST_REQUEST);
  CHECK(c.connect_timeout().seconds() == 1);
  CHECK(c.connect_timeout().nanos() == 500000000);
  CHECK(c.endpoints(0).port() == 8081);
  CHECK(c.endpoints(0).weight() == 2);
  REQUIRE(config->rate_limits_size() == 2);
  CHECK(config->rate_limits(0).by() == flexgate::v1::RateLimit::CLIENT_IP);
  CHECK(config->rate_limits(1).unit() == flexgate::v1::RateLimit::HOUR);
  CHECK(config->routes(0).match().hosts(0) == "*.example.com");
  CHECK(config->routes(0).cluster() == "web");
}

TEST_CASE("JSON and camelCase keys load the same config", "[loader]") {
  auto yaml = flexgate::ParseConfig(kYaml);
  REQUIRE(yaml.ok());
  auto json = flexgate::ParseConfig(R"({
    "rateLimits": [
      {"name": "per-ip", "by": "CLIENT_IP", "requestsPerUnit": "10", "unit": "MINUTE"},
      {"name": "per-key", "by": "HEADER", "header": "x-api-key", "requests_per_unit": 100, "unit": "HOUR"}],
    "routes": [{"name": "all", "cluster": "web", "rateLimits": ["per-ip", "per-key"],
                "match": {"hosts": ["*.example.com"], "path": {"prefix": "/"}}}],
    "clusters": [{"name": "web", "lbPolicy": "LEAST_REQUEST", "connectTimeout": "1.500s",
                  "endpoints": [{"address": "127.0.0.1", "port": 8081, "weight": 2}]}]
  })");
  REQUIRE(json.ok());
  CHECK(flexgate::ConfigHash(*yaml) == flexgate::ConfigHash(*json));
  // YAML with camelCase keys, too.
  auto camel = flexgate::ParseConfig("clusters: [{name: web, lbPolicy: LEAST_REQUEST, connectTimeout: 1.5s,"
                                     " endpoints: [{address: 127.0.0.1, port: 8081, weight: 2}]}]\n");
  REQUIRE(camel.ok());
  CHECK(camel->clusters(0).lb_policy() == flexgate::v1::Cluster::LEAST_REQUEST);
}

TEST_CASE("unknown fields are errors that name the field", "[loader]") {
  CHECK(Error("clusters: [{name: web, endpoint: []}]\n").find("endpoint") != std::string::npos);
  CHECK(Error(R"({"routes": [{"name": "a", "colour": "red"}]})").find("colour") != std::string::npos);
  CHECK(Error("nonsense: 1\n").find("nonsense") != std::string::npos);
}

TEST_CASE("type errors are reported", "[loader]") {
  // A list where a scalar belongs, a mapping where a list belongs, a bad number, a bad bool.
  CHECK(Error("clusters: [{name: [a, b]}]\n").find("clusters[0].name") != std::string::npos);
  CHECK(Error("clusters: {name: web}\n").find("clusters") != std::string::npos);
  Error("clusters: [{name: web, endpoints: [{address: a, port: eighty}]}]\n");
  CHECK(Error("clusters: [{name: web, tls: {enabled: maybe}}]\n").find("true or false") != std::string::npos);
  Error("clusters: [{name: web, endpoints: [{address: a, port: -1}]}]\n");
  Error("clusters: [{name: web, endpoints: [{address: a, port: 99999999999}]}]\n");
  CHECK(Error("- just\n- a list\n").find("expected a mapping") != std::string::npos);
  CHECK(Error("clusters: [unterminated\n").find("malformed YAML") != std::string::npos);
  Error("{\"clusters\": [}", flexgate::ConfigFormat::kJson);
}

TEST_CASE("durations: strings with units, errors for the rest", "[loader]") {
  auto ok = flexgate::ParseConfig("routes: [{name: a, timeout: 0.25s, retry: {per_try_timeout: \"3s\"}}]\n");
  REQUIRE(ok.ok());
  CHECK(ok->routes(0).timeout().nanos() == 250000000);
  CHECK(ok->routes(0).retry().per_try_timeout().seconds() == 3);
  Error("routes: [{name: a, timeout: 5}]\n");          // no unit
  Error("routes: [{name: a, timeout: 5m}]\n");         // only seconds in the JSON mapping
  Error("routes: [{name: a, timeout: {seconds: 5}}]\n");
}

TEST_CASE("enums by name and by number; unknown names are errors", "[loader]") {
  auto by_name = flexgate::ParseConfig("rate_limits: [{name: a, by: CLIENT_IP, unit: SECOND}]\n");
  REQUIRE(by_name.ok());
  CHECK(by_name->rate_limits(0).by() == flexgate::v1::RateLimit::CLIENT_IP);
  auto by_number = flexgate::ParseConfig("rate_limits: [{name: a, by: 2, unit: 3}]\n");
  REQUIRE(by_number.ok());
  CHECK(by_number->rate_limits(0).by() == flexgate::v1::RateLimit::HEADER);
  CHECK(by_number->rate_limits(0).unit() == flexgate::v1::RateLimit::HOUR);
  CHECK(Error("rate_limits: [{name: a, by: CLIENT_PI}]\n").find("CLIENT_PI") != std::string::npos);
}

TEST_CASE("strings that look like other types stay strings", "[loader]") {
  auto config = flexgate::ParseConfig("clusters: [{name: 8081, endpoints: [{address: 10.0.0.1, port: \"8081\"}]}]\n"
                                      "routes: [{name: yes, match: {path: {exact: \"/\"}}, cluster: \"8081\"}]\n");
  REQUIRE(config.ok());
  CHECK(config->clusters(0).name() == "8081");
  CHECK(config->clusters(0).endpoints(0).port() == 8081);
  CHECK(config->routes(0).name() == "yes");
}

TEST_CASE("empty documents are empty configs", "[loader]") {
  auto empty = flexgate::ParseConfig("");
  REQUIRE(empty.ok());
  CHECK(empty->ByteSizeLong() == 0);
  auto comment = flexgate::ParseConfig("# nothing here\n");
  REQUIRE(comment.ok());
  auto braces = flexgate::ParseConfig("{}");
  REQUIRE(braces.ok());
}

TEST_CASE("files: format by extension, errors name the file", "[loader]") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("flexgate-loader-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  struct Cleanup {
    std::filesystem::path dir;
    ~Cleanup() { std::filesystem::remove_all(dir); }
  } cleanup{dir};
  {
    std::ofstream(dir / "c.yml") << kYaml;
    std::ofstream(dir / "c.json") << R"({"clusters": [{"name": "web"}]})";
    std::ofstream(dir / "bad.yaml") << "clusters: [{nme: web}]\n";
  }
  auto yml = flexgate::LoadConfigFile((dir / "c.yml").string());
  REQUIRE(yml.ok());
  CHECK(yml->routes_size() == 1);
  auto json = flexgate::LoadConfigFile((dir / "c.json").string());
  REQUIRE(json.ok());
  CHECK(json->clusters(0).name() == "web");
  auto bad = flexgate::LoadConfigFile((dir / "bad.yaml").string());
  REQUIRE_FALSE(bad.ok());
  CHECK(std::string(bad.status().message()).find("bad.yaml") != std::string::npos);
  auto missing = flexgate::LoadConfigFile((dir / "missing.yaml").string());
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().code() == absl::StatusCode::kNotFound);
}

TEST_CASE("export round-trips through JSON and YAML", "[loader]") {
  auto config = flexgate::ParseConfig(kYaml);
  REQUIRE(config.ok());
  auto from_json = flexgate::ParseConfig(flexgate::MessageToJson(*config));
  REQUIRE(from_json.ok());
  CHECK(flexgate::ConfigHash(*from_json) == flexgate::ConfigHash(*config));
  const std::string yaml = flexgate::MessageToYaml(*config);
  auto from_yaml = flexgate::ParseConfig(yaml, flexgate::ConfigFormat::kYaml);
  REQUIRE(from_yaml.ok());
  CHECK(flexgate::ConfigHash(*from_yaml) == flexgate::ConfigHash(*config));
  // Block style, one field per line, as operators read and diff it.
  CHECK(yaml.rfind("clusters:\n", 0) == 0);
  CHECK(yaml.find('{') == std::string::npos);
  CHECK(yaml.find("\n  - name: ") != std::string::npos);
}

TEST_CASE("canonical hash: stable, order of keys irrelevant, content relevant", "[canonical]") {
  auto a = flexgate::ParseConfig("clusters: [{name: web, endpoints: [{address: a, port: 1}]}]\nrate_limits: []\n");
  auto b = flexgate::ParseConfig("rate_limits: []\nclusters: [{endpoints: [{port: 1, address: a}], name: web}]\n");
  auto c = flexgate::ParseConfig("clusters: [{name: web, endpoints: [{address: a, port: 2}]}]\n");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(c.ok());
  const std::string ha = flexgate::ConfigHash(*a);
  CHECK(ha.size() == 64);
  CHECK(ha.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(ha == flexgate::ConfigHash(*b));
  CHECK(ha != flexgate::ConfigHash(*c));
  CHECK(flexgate::ConfigHash(Config()) == flexgate::Sha256Hex(""));
  // Known vector: SHA-256("abc").
  CHECK(flexgate::Sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Oneof presence is content: an empty exact path is not "no path".
  Config with_path;
  with_path.add_routes()->mutable_match()->mutable_path()->set_exact("");
  Config without_path;
  without_path.add_routes()->mutable_match();
  CHECK(flexgate::ConfigHash(with_path) != flexgate::ConfigHash(without_path));
}

TEST_CASE("ConstantTimeEquals", "[canonical]") {
  CHECK(flexgate::ConstantTimeEquals("abc", "abc"));
  CHECK_FALSE(flexgate::ConstantTimeEquals("abc", "abd"));
  CHECK_FALSE(flexgate::ConstantTimeEquals("abc", "ab"));
  CHECK(flexgate::ConstantTimeEquals("", ""));
}
