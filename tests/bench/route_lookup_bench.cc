// Route lookup cost against table size: RouteTable::Match at 10, 1,000 and 10,000 routes.
//
// The tables mix what operators write: routes on exact hosts and "*.suffix" wildcards, exact
// paths and prefixes, method and header conditions, and a fixed handful of regex routes (regex
// routes are checked one by one, so their number, not the table size, sets their cost). Requests
// are drawn from the table's own routes (hits at every position, including the last) plus
// misses. The goal: 10,000 routes cost about what 10 do.
//
//   build/bin/flexgate-route-bench --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dataplane/proxy/route_table.h"
#include "flexgate/v1/config.pb.h"

namespace {

using flexgate::dataplane::RouteRequest;
using flexgate::dataplane::RouteTable;

struct Fixture {
  std::shared_ptr<const RouteTable> table;
  std::vector<std::string> hosts, paths;
  std::vector<std::string> methods;
};

// Route i: one of 4 shapes, spread over 100 exact hosts and 20 wildcard suffixes.
Fixture Build(int routes) {
  flexgate::v1::Config config;
  auto* cl = config.add_clusters();
  cl->set_name("c");
  auto* ep = cl->add_endpoints();
  ep->set_address("127.0.0.1");
  ep->set_port(8080);
  Fixture f;
  constexpr int kRegexRoutes = 4;
  for (int i = 0; i < routes; ++i) {
    auto* r = config.add_routes();
    r->set_name(absl::StrCat("r", i));
    r->set_cluster("c");
    auto* m = r->mutable_match();
    std::string host;
    switch (i % 4) {
      case 0:  // exact host, exact path
        host = absl::StrCat("svc", i % 100, ".example.com");
        m->add_hosts(host);
        m->mutable_path()->set_exact(absl::StrCat("/api/v1/items/", i));
        f.paths.push_back(absl::StrCat("/api/v1/items/", i));
        break;
      case 1:  // wildcard host, prefix, method
        host = absl::StrCat("a.tenant", i % 20, ".example.net");
        m->add_hosts(absl::StrCat("*.tenant", i % 20, ".example.net"));
        m->mutable_path()->set_prefix(absl::StrCat("/t/", i, "/"));
        m->add_methods("GET");
        f.paths.push_back(absl::StrCat("/t/", i, "/x/y"));
        break;
      case 2:  // any host, prefix with a header condition
        m->mutable_path()->set_prefix(absl::StrCat("/svc/", i));
        {
          auto* h = m->add_headers();
          h->set_name("x-tenant");
          h->set_exact("blue");
        }
        f.paths.push_back(absl::StrCat("/svc/", i, "/deep/path"));
        break;
      default:  // exact host, prefix
        host = absl::StrCat("svc", i % 100, ".example.com");
        m->add_hosts(host);
        m->mutable_path()->set_prefix(absl::StrCat("/static/", i, "/"));
        f.paths.push_back(absl::StrCat("/static/", i, "/app.js"));
        break;
    }
    f.hosts.push_back(host.empty() ? "any.example.org" : host);
  }
  // A few regex routes near the end, and a catch-all last.
  for (int k = 0; k < kRegexRoutes; ++k) {
    auto* r = config.add_routes();
    r->set_name(absl::StrCat("re", k));
    r->set_cluster("c");
    r->mutable_match()->mutable_path()->set_regex(absl::StrCat("/re", k, "/[a-z]+/[0-9]+"));
  }
  auto* last = config.add_routes();
  last->set_name("fallback");
  last->set_cluster("c");
  last->mutable_match()->mutable_path()->set_prefix("/fallback/");
  auto table = flexgate::dataplane::CompileRouteTable(config, 1, "bench");
  if (!table.ok()) std::abort();
  f.table = *table;
  return f;
}

void BM_MatchHit(benchmark::State& state) {
  Fixture f = Build(static_cast<int>(state.range(0)));
  std::vector<std::pair<std::string_view, std::string_view>> headers = {
      {"user-agent", "bench"}, {"x-tenant", "blue"}, {"accept", "*/*"}};
  size_t n = f.paths.size(), i = 0;
  uint64_t matched = 0;
  for (auto _ : state) {
    // A stride co-prime with n walks every route, so caches see the whole table.
    size_t k = (i * 7919) % n;
    ++i;
    RouteRequest rr;
    rr.host = f.hosts[k];
    rr.path = f.paths[k];
    rr.method = "GET";
    rr.headers = headers;
    const auto* route = f.table->Match(rr);
    matched += route != nullptr;
    benchmark::DoNotOptimize(route);
  }
  if (matched != static_cast<uint64_t>(state.iterations())) state.SkipWithError("a request did not match");
}

void BM_MatchHitHotSet(benchmark::State& state) {
  // 64 requests spread evenly over the table (so the last routes are among them), cycled: the
  // working set stays in cache, which isolates the algorithmic cost from memory misses.
  Fixture f = Build(static_cast<int>(state.range(0)));
  std::vector<std::pair<std::string_view, std::string_view>> headers = {
      {"user-agent", "bench"}, {"x-tenant", "blue"}, {"accept", "*/*"}};
  std::vector<size_t> picks;
  for (size_t j = 0; j < 64; ++j) picks.push_back(j * (f.paths.size() - 1) / 63);
  size_t i = 0;
  for (auto _ : state) {
    size_t k = picks[i++ & 63];
    RouteRequest rr;
    rr.host = f.hosts[k];
    rr.path = f.paths[k];
    rr.method = "GET";
    rr.headers = headers;
    benchmark::DoNotOptimize(f.table->Match(rr));
  }
}

void BM_MatchMissToRegex(benchmark::State& state) {
  // No indexed route matches: the lookup falls through to the regex routes and the last route.
  Fixture f = Build(static_cast<int>(state.range(0)));
  std::vector<std::pair<std::string_view, std::string_view>> headers = {{"user-agent", "bench"}};
  const std::string paths[] = {"/re3/abc/123", "/fallback/x", "/nothing/here"};
  size_t i = 0;
  for (auto _ : state) {
    RouteRequest rr;
    rr.host = "svc7.example.com";
    rr.path = paths[i++ % 3];
    rr.method = "GET";
    rr.headers = headers;
    benchmark::DoNotOptimize(f.table->Match(rr));
  }
}

BENCHMARK(BM_MatchHit)->Arg(10)->Arg(1000)->Arg(10000);
BENCHMARK(BM_MatchHitHotSet)->Arg(10)->Arg(1000)->Arg(10000);
BENCHMARK(BM_MatchMissToRegex)->Arg(10)->Arg(1000)->Arg(10000);

}  // namespace

BENCHMARK_MAIN();
