// Route matching: host exact and wildcard, path exact / prefix / regex, methods, headers,
// first match wins, and compile errors.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/config_loader.h"
#include "dataplane/proxy/route_table.h"

namespace flexgate::dataplane {
namespace {

std::shared_ptr<const RouteTable> Compile(const std::string& yaml) {
  auto config = flexgate::ParseConfig(yaml);
  REQUIRE(config.ok());
  auto table = CompileRouteTable(*config, 1, "hash");
  INFO(table.status().ToString());
  REQUIRE(table.ok());
  return *table;
}

// The name of the matched route, or "" for none.
std::string MatchName(const RouteTable& t, std::string host, std::string path,
                      std::string method = "GET",
                      std::vector<std::pair<std::string_view, std::string_view>> headers = {}) {
  RouteRequest r;
  r.host = host;
  r.path = path;
  r.method = method;
  r.headers = headers;
  const CompiledRoute* route = t.Match(r);
  return route == nullptr ? "" : route->name;
}

constexpr char kClusters[] = R"(
clusters:
  - name: a
    endpoints: [{ address: 127.0.0.1, port: 8081 }]
  - name: b
    endpoints: [{ address: 127.0.0.1, port: 8082, weight: 3 }, { address: 127.0.0.1, port: 8083 }]
)";

TEST_CASE("hosts: exact, wildcard and any; case and port ignored") {
  auto t = Compile(std::string(kClusters) + R"(
routes:
  - { name: exact, match: { hosts: [api.example.com], path: { prefix: / } }, cluster: a }
  - { name: wild, match: { hosts: ["*.example.com"], path: { prefix: / } }, cluster: a }
  - { name: any, match: { path: { prefix: / } }, cluster: b }
)");
  CHECK(MatchName(*t, "api.example.com", "/x") == "exact");
  CHECK(MatchName(*t, "API.Example.COM:8080", "/x") == "exact");
  CHECK(MatchName(*t, "www.example.com", "/x") == "wild");
  CHECK(MatchName(*t, "a.b.example.com", "/x") == "wild");
  // "*.example.com" does not match the bare domain, nor a look-alike suffix.
  CHECK(MatchName(*t, "example.com", "/x") == "any");
  CHECK(MatchName(*t, "badexample.com", "/x") == "any");
  CHECK(MatchName(*t, "", "/x") == "any");
}

TEST_CASE("paths: exact, prefix and regex (full match, no query)") {
  auto t = Compile(std::string(kClusters) + R"(
routes:
  - { name: exact, match: { path: { exact: /health } }, cluster: a }
  - { name: regex, match: { path: { regex: "/users/[0-9]+" } }, cluster: a }
  - { name: api, match: { path: { prefix: /api/ } }, cluster: a }
  - { name: apiv2, match: { path: { prefix: /api/v2/ } }, cluster: b }
)");
  CHECK(MatchName(*t, "h", "/health") == "exact");
  CHECK(MatchName(*t, "h", "/healthz") == "");
  CHECK(MatchName(*t, "h", "/users/42") == "regex");
  CHECK(MatchName(*t, "h", "/users/42/x") == "");  // full match only
  CHECK(MatchName(*t, "h", "/users/abc") == "");
  CHECK(MatchName(*t, "h", "/api/v2/x") == "api");  // first match wins over a longer prefix
  CHECK(MatchName(*t, "h", "/api") == "");
}

TEST_CASE("methods and headers") {
  auto t = Compile(std::string(kClusters) + R"(
routes:
  - name: post-only
    match: { path: { prefix: / }, methods: [POST, PUT] }
    cluster: a
  - name: canary
    match:
      path: { prefix: / }
      headers:
        - { name: X-Canary, exact: "yes" }
        - { name: x-user, regex: "u[0-9]+" }
    cluster: b
  - name: no-debug
    match:
      path: { prefix: / }
      headers: [{ name: x-debug, present: true, invert: true }]
    cluster: a
  - name: rest
    match: { path: { prefix: / } }
    cluster: b
)");
  CHECK(MatchName(*t, "h", "/", "POST") == "post-only");
  CHECK(MatchName(*t, "h", "/", "GET", {{"x-canary", "yes"}, {"X-User", "u12"}}) == "canary");
  CHECK(MatchName(*t, "h", "/", "GET", {{"x-canary", "yes"}, {"X-User", "admin"}}) == "no-debug");
  CHECK(MatchName(*t, "h", "/", "GET", {{"x-debug", "1"}}) == "rest");
  CHECK(MatchName(*t, "h", "/", "GET") == "no-debug");
}

TEST_CASE("first match wins across host buckets and path kinds") {
  auto t = Compile(std::string(kClusters) + R"(
routes:
  - { name: any-exact, match: { path: { exact: /x } }, cluster: a }
  - { name: host-prefix, match: { hosts: [h.example.com], path: { prefix: / } }, cluster: a }
  - { name: wild-exact, match: { hosts: ["*.example.com"], path: { exact: /y } }, cluster: a }
  - { name: host-regex, match: { hosts: [h.example.com], path: { regex: "/y" } }, cluster: a }
)");
  CHECK(MatchName(*t, "h.example.com", "/x") == "any-exact");
  CHECK(MatchName(*t, "h.example.com", "/y") == "host-prefix");
  CHECK(MatchName(*t, "z.example.com", "/y") == "wild-exact");
  CHECK(MatchName(*t, "z.example.com", "/x") == "any-exact");
}

TEST_CASE("actions and options compile") {
  auto t = Compile(std::string(kClusters) + R"(
routes:
  - name: split
    match: { path: { prefix: /split } }
    weighted_clusters: { clusters: [{ name: a, weight: 1 }, { name: b, weight: 3 }] }
  - name: moved
    match: { path: { prefix: /old } }
    redirect: { path: /new, status: 308 }
  - name: teapot
    match: { path: { exact: /tea } }
    direct_response: { status: 418, body: "short and stout" }
  - name: rewrite
    match: { path: { prefix: /v1/ } }
    cluster: a
    prefix_rewrite: /
    timeout: 2s
    request_headers: { set: [{ name: X-A, value: "1" }], remove: [x-b] }
)");
  const auto& routes = t->routes();
  REQUIRE(routes.size() == 4);
  CHECK(routes[0].action == CompiledRoute::ActionKind::kWeightedClusters);
  CHECK(routes[0].weighted_total == 4);
  CHECK(routes[1].redirect.status() == 308);
  CHECK(routes[2].direct_status == 418);
  CHECK(routes[3].has_prefix_rewrite);
  CHECK(routes[3].timeout_ms == 2000);
  CHECK(routes[3].request_headers.Drops("x-a"));
  CHECK(routes[3].request_headers.Drops("X-B"));
  CHECK_FALSE(routes[3].request_headers.Drops("x-c"));
  // Weighted round robin: weight 3 vs 1 gives 3 of every 4 picks, interleaved.
  const auto& b = t->clusters()[1];
  REQUIRE(b.rr_schedule.size() == 4);
  int first = 0;
  for (uint32_t e : b.rr_schedule) first += e == 0 ? 1 : 0;
  CHECK(first == 3);
  CHECK(b.endpoints[0].key == "127.0.0.1:8082");
}

TEST_CASE("compile errors") {
  auto bad_regex = flexgate::ParseConfig(std::string(kClusters) + R"(
routes:
  - { name: r, match: { path: { regex: "(" } }, cluster: a }
)");
  REQUIRE(bad_regex.ok());
  auto s = CompileRouteTable(*bad_regex, 1, "");
  CHECK(absl::IsInvalidArgument(s.status()));
  CHECK(s.status().message().find("routes[0].match.path.regex") != std::string::npos);

  auto unknown = flexgate::ParseConfig(std::string(kClusters) + R"(
routes:
  - { name: r, match: { path: { prefix: / } }, cluster: nope }
)");
  REQUIRE(unknown.ok());
  CHECK(absl::IsInvalidArgument(CompileRouteTable(*unknown, 1, "").status()));
}

TEST_CASE("lookup with 10,000 routes finds the right one") {
  std::string yaml = std::string(kClusters) + "routes:\n";
  for (int i = 0; i < 10000; ++i) {
    absl::StrAppend(&yaml, "  - { name: r", i, ", match: { hosts: [h", i % 100,
                    ".example.com], path: { prefix: /svc", i, "/ } }, cluster: a }\n");
  }
  auto t = Compile(yaml);
  CHECK(MatchName(*t, "h42.example.com", "/svc9942/x") == "r9942");
  CHECK(MatchName(*t, "h41.example.com", "/svc9942/x") == "");
  CHECK(MatchName(*t, "h0.example.com", "/svc0/") == "r0");
}

}  // namespace
}  // namespace flexgate::dataplane
