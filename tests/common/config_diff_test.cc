// Tests for the semantic config diff: matching by name, no phantom changes from ordering or
// defaults, route order as a real change, field paths and values, and affected routes.
#include <algorithm>
#include <string>

#include <catch2/catch.hpp>

#include "common/canonical.h"
#include "common/config_diff.h"
#include "common/config_loader.h"

namespace {

using flexgate::ConfigDiff;
using flexgate::ResourceChange;
using flexgate::v1::Config;

Config Parse(const std::string& yaml) {
  auto config = flexgate::ParseConfig(yaml);
  REQUIRE(config.ok());
  return *config;
}

const ResourceChange* FindChange(const ConfigDiff& diff, const std::string& type, const std::string& name) {
  for (const auto& c : diff.resources) {
    if (c.resource_type == type && c.name == name) return &c;
  }
  return nullptr;
}

constexpr const char* kV1 = R"(
clusters:
  - name: web
    connect_timeout: 1s
    endpoints:
      - { address: 10.0.0.1, port: 8080 }
      - { address: 10.0.0.2, port: 8080 }
  - name: api
    endpoints: [{ address: 10.0.1.1, port: 9090 }]
policies:
  - name: browser
    cors: { allow_origins: ["https://a.example.com", "https://b.example.com"] }
rate_limits:
  - { name: per-ip, by: CLIENT_IP, requests_per_unit: 10, unit: MINUTE }
routes:
  - name: users
    match: { hosts: [a.example.com, b.example.com], path: { prefix: "/users/" }, methods: [GET, POST] }
    cluster: api
    policies: [browser]
    rate_limits: [per-ip]
  - name: health
    match: { path: { exact: "/healthz" } }
    direct_response: { status: 200 }
  - name: rest
    match: { path: { prefix: "/" } }
    cluster: web
)";

}  // namespace

TEST_CASE("identical configs have an empty diff", "[diff]") {
  const Config a = Parse(kV1);
  const auto diff = flexgate::DiffConfigs(a, a);
  CHECK(diff.empty());
  CHECK_FALSE(diff.route_order_changed);
  CHECK(diff.affected_routes.empty());
  CHECK(flexgate::RenderDiff(diff) == "no changes\n");
}

TEST_CASE("no phantom changes from list order of named resources, sets, or defaults", "[diff]") {
  const Config a = Parse(kV1);
  // Same content: clusters, policies and sets reordered; defaults written out explicitly; JSON
  // instead of YAML; camelCase keys.
  const Config b = Parse(R"({
    "policies": [{"name": "browser", "cors": {"allowOrigins": ["https://b.example.com", "https://a.example.com"]},
                  "ipAccess": {}, "maxBodyBytes": "0"}],
    "clusters": [
      {"name": "api", "endpoints": [{"address": "10.0.1.1", "port": 9090, "weight": 0}], "lbPolicy": "LB_POLICY_UNSPECIFIED"},
      {"name": "web", "connectTimeout": "1.000s", "tls": {}, "endpoints": [
        {"address": "10.0.0.2", "port": 8080}, {"address": "10.0.0.1", "port": 8080}]}],
    "rateLimits": [{"name": "per-ip", "by": "CLIENT_IP", "requestsPerUnit": 10, "unit": "MINUTE", "scope": "LOCAL"}],
    "routes": [
      {"name": "users", "match": {"hosts": ["b.example.com", "a.example.com"], "path": {"prefix": "/users/"},
       "methods": ["POST", "GET"]}, "cluster": "api", "policies": ["browser"], "rateLimits": ["per-ip"],
       "timeout": "0s", "retry": {}},
      {"name": "health", "match": {"path": {"exact": "/healthz"}}, "directResponse": {"status": 200}},
      {"name": "rest", "match": {"path": {"prefix": "/"}}, "cluster": "web"}
    ]})");
  const auto diff = flexgate::DiffConfigs(a, b);
  INFO(flexgate::RenderDiff(diff));
  CHECK(diff.empty());
  // The canonical hash agrees with the diff about explicit defaults.
  const Config defaults_written = Parse(std::string(kV1) + "global_policies: []\n");
  Config with_empty = a;
  with_empty.mutable_clusters(1)->mutable_tls();
  with_empty.mutable_routes(0)->mutable_timeout();
  CHECK(flexgate::ConfigHash(with_empty) == flexgate::ConfigHash(a));
  CHECK(flexgate::ConfigHash(defaults_written) == flexgate::ConfigHash(a));
}

TEST_CASE("added, removed and changed resources with field paths and values", "[diff]") {
  const Config a = Parse(kV1);
  Config b = a;
  b.mutable_clusters(0)->mutable_connect_timeout()->set_seconds(2);
  b.mutable_clusters(0)->mutable_endpoints(1)->set_weight(5);
  b.mutable_clusters(0)->add_endpoints()->set_address("10.0.0.3");
  b.mutable_clusters(0)->mutable_endpoints(2)->set_port(8080);
  b.mutable_routes(0)->mutable_match()->mutable_path()->set_prefix("/v2/users/");
  b.mutable_routes()->DeleteSubrange(1, 1);  // health
  auto* added = b.add_routes();
  added->set_name("metrics");
  added->mutable_match()->mutable_path()->set_exact("/metrics");
  added->set_cluster("web");
  b.mutable_rate_limits(0)->set_requests_per_unit(20);
  b.add_global_policies("browser");

  const auto diff = flexgate::DiffConfigs(a, b);
  const std::string text = flexgate::RenderDiff(diff);
  INFO(text);

  const auto* web = FindChange(diff, "cluster", "web");
  REQUIRE(web);
  CHECK(web->kind == ResourceChange::Kind::kChanged);
  auto has_field = [](const ResourceChange* c, const std::string& path, const std::string& old_value,
                      const std::string& new_value) {
    return std::any_of(c->fields.begin(), c->fields.end(), [&](const flexgate::FieldChange& f) {
      return f.path == path && f.old_value == old_value && f.new_value == new_value;
    });
  };
  CHECK(has_field(web, "connect_timeout", "1s", "2s"));
  CHECK(has_field(web, "endpoints[10.0.0.2:8080].weight", "0", "5"));
  CHECK(std::any_of(web->fields.begin(), web->fields.end(), [](const flexgate::FieldChange& f) {
    return f.path == "endpoints[10.0.0.3:8080]" && f.old_value.empty() && !f.new_value.empty();
  }));
  CHECK(FindChange(diff, "cluster", "api") == nullptr);

  const auto* users = FindChange(diff, "route", "users");
  REQUIRE(users);
  CHECK(has_field(users, "match.path.prefix", "\"/users/\"", "\"/v2/users/\""));
  const auto* health = FindChange(diff, "route", "health");
  REQUIRE(health);
  CHECK(health->kind == ResourceChange::Kind::kRemoved);
  const auto* metrics = FindChange(diff, "route", "metrics");
  REQUIRE(metrics);
  CHECK(metrics->kind == ResourceChange::Kind::kAdded);
  CHECK(metrics->new_index == 2);
  const auto* limit = FindChange(diff, "rate_limit", "per-ip");
  REQUIRE(limit);
  CHECK(has_field(limit, "requests_per_unit", "10", "20"));
  REQUIRE(diff.globals.size() == 1);
  CHECK(diff.globals[0].path == "global_policies");
  // Removing a route from the middle does not count as reordering the others.
  CHECK_FALSE(diff.route_order_changed);
  // A global list changed: every route is affected.
  CHECK(diff.affected_routes.size() == 4);

  CHECK(text.find("~ cluster \"web\"") != std::string::npos);
  CHECK(text.find("- route \"health\"") != std::string::npos);
  CHECK(text.find("+ route \"metrics\" (at 2)") != std::string::npos);
  CHECK(text.find("~ rate_limit \"per-ip\": requests_per_unit: 10 -> 20") != std::string::npos);
}

TEST_CASE("route order is a real change, reported for the moved route only", "[diff]") {
  const Config a = Parse(kV1);
  Config b = a;
  // Move "rest" (the catch-all) to the front: now it wins for everything.
  b.mutable_routes()->SwapElements(0, 2);  // rest, health, users
  b.mutable_routes()->SwapElements(1, 2);  // rest, users, health
  const auto diff = flexgate::DiffConfigs(a, b);
  INFO(flexgate::RenderDiff(diff));
  CHECK(diff.route_order_changed);
  REQUIRE(diff.resources.size() == 1);
  const auto& moved = diff.resources[0];
  CHECK(moved.name == "rest");
  REQUIRE(moved.fields.size() == 1);
  CHECK(moved.fields[0].path == "order");
  CHECK(moved.fields[0].old_value == "2");
  CHECK(moved.fields[0].new_value == "0");
  CHECK(diff.affected_routes == std::vector<std::string>{"rest"});
  CHECK(flexgate::RenderDiff(diff) == "~ route \"rest\": order: 2 -> 0\n");
}

TEST_CASE("a changed cluster or policy affects the routes that use it", "[diff]") {
  const Config a = Parse(kV1);
  Config b = a;
  b.mutable_policies(0)->mutable_cors()->add_allow_origins("https://c.example.com");
  b.mutable_clusters(0)->mutable_endpoints(0)->set_port(8081);
  const auto diff = flexgate::DiffConfigs(a, b);
  CHECK(diff.affected_routes == std::vector<std::string>{"users", "rest"});
  const auto* browser = FindChange(diff, "policy", "browser");
  REQUIRE(browser);
  REQUIRE(browser->fields.size() == 1);
  CHECK(browser->fields[0].path == "cors.allow_origins");
  // Endpoint identity is address:port, so a port change is one endpoint out, another in.
  const auto* web = FindChange(diff, "cluster", "web");
  REQUIRE(web);
  CHECK(web->fields.size() == 2);
}

TEST_CASE("changing a route action reports both oneof members", "[diff]") {
  const Config a = Parse(kV1);
  Config b = a;
  b.mutable_routes(2)->mutable_redirect()->set_host("www.example.com");
  const auto diff = flexgate::DiffConfigs(a, b);
  const auto* rest = FindChange(diff, "route", "rest");
  REQUIRE(rest);
  REQUIRE(rest->fields.size() == 2);
  CHECK(rest->fields[0].path == "cluster");
  CHECK(rest->fields[0].old_value == "\"web\"");
  CHECK(rest->fields[0].new_value.empty());
  CHECK(rest->fields[1].path == "redirect");
  CHECK(rest->fields[1].old_value.empty());
}
