// Swapping a 10,000-route table under load drops no request: client threads keep sending (one on
// a keep-alive connection, one with a new connection per request) while the table is swapped back
// and forth between two 10,000-route configs. Every response is 2xx and comes from the upstream
// that the table in force sends it to: a request that started and ended under the same table
// must follow that table exactly; one that overlapped a swap may follow either.
#include <atomic>
#include <thread>

#include "absl/strings/str_cat.h"
#include "proxy_test_env.h"

namespace flexgate::dataplane::test {
namespace {

constexpr int kRoutes = 10000;

// Routes /r<i> (exact) and /p<i>/ (prefix), i < kRoutes / 2, plus a host-specific route per
// hundred; in table A route i goes to u0 when i is even and to u1 when odd, table B the reverse.
std::shared_ptr<const RouteTable> BigTable(const std::vector<uint16_t>& ports, bool flipped,
                                           uint64_t version) {
  flexgate::v1::Config config;
  for (int c = 0; c < 2; ++c) {
    auto* cl = config.add_clusters();
    cl->set_name("c" + std::to_string(c));
    auto* ep = cl->add_endpoints();
    ep->set_address("127.0.0.1");
    ep->set_port(ports[static_cast<size_t>(c)]);
  }
  for (int i = 0; i < kRoutes / 2; ++i) {
    bool to_u1 = (i % 2 == 1) != flipped;
    for (int kind = 0; kind < 2; ++kind) {
      auto* r = config.add_routes();
      r->set_name(absl::StrCat(kind == 0 ? "exact-" : "prefix-", i));
      if (kind == 0) {
        r->mutable_match()->mutable_path()->set_exact(absl::StrCat("/r", i));
      } else {
        r->mutable_match()->mutable_path()->set_prefix(absl::StrCat("/p", i, "/"));
      }
      if (i % 100 == 0) r->mutable_match()->add_hosts(absl::StrCat("h", i, ".example.com"));
      r->set_cluster(to_u1 ? "c1" : "c0");
    }
  }
  auto table = CompileRouteTable(config, version, absl::StrCat("h", version));
  REQUIRE(table.ok());
  REQUIRE((*table)->routes().size() == kRoutes);
  return *table;
}

// Which upstream table A (flipped = false) or B sends path index i to.
std::string Expected(int i, bool flipped) { return ((i % 2 == 1) != flipped) ? "u1" : "u0"; }

TEST_CASE("swapping a 10,000-route table under load drops no request") {
  ProxyEnv env("", {}, /*workers=*/2);
  auto a = BigTable(env.upstream_ports(), false, 1);
  auto b = BigTable(env.upstream_ports(), true, 2);
  // `generation` counts completed swaps: even = table A in force on every worker, odd = B.
  // While a swap is in progress it is odd/even "between" values, so requests that overlap it
  // are recognised by a generation change and allowed either answer.
  std::atomic<int> generation{0};
  {
    absl::Notification done;
    env.proxy().UpdateRouteTable(a, [&] { done.Notify(); });
    REQUIRE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
  }
  std::atomic<bool> stop{false};
  std::atomic<bool> swapping{false};
  std::atomic<uint64_t> ok{0}, failures{0}, misrouted{0};
  absl::Mutex mu;
  std::string first_failure;

  auto check = [&](int i, int gen_before, bool swap_before, const absl::StatusOr<HttpResponse>& r,
                   int gen_after, bool swap_after) {
    if (!r.ok() || r->status / 100 != 2) {
      failures.fetch_add(1);
      absl::MutexLock lock(&mu);
      if (first_failure.empty()) {
        first_failure = r.ok() ? absl::StrCat("status ", r->status, ": ", r->body)
                               : r.status().ToString();
      }
      return;
    }
    ok.fetch_add(1);
    if (gen_before == gen_after && !swap_before && !swap_after) {
      if (r->Header("x-upstream") != Expected(i, gen_before % 2 == 1)) misrouted.fetch_add(1);
    }
  };

  auto keep_alive = [&](int seed) {
    HttpClient c = env.Client();
    uint32_t x = static_cast<uint32_t>(seed) * 2654435761u + 1;
    while (!stop.load()) {
      x = x * 1664525u + 1013904223u;
      int i = static_cast<int>((x >> 8) % (kRoutes / 2));
      std::string path = (x & 1) ? absl::StrCat("/r", i) : absl::StrCat("/p", i, "/x");
      std::string host = i % 100 == 0 ? absl::StrCat("h", i, ".example.com") : "any.example.com";
      int g0 = generation.load();
      bool s0 = swapping.load();
      auto r = c.Get(path, host);
      // At the end, `swapping` is read before `generation` (at the start, the reverse): then a
      // swap that overlaps the request in any way shows up in one or the other.
      bool s1 = swapping.load();
      int g1 = generation.load();
      check(i, g0, s0, r, g1, s1);
      if (!r.ok()) c = env.Client();
    }
  };
  auto fresh = [&](int seed) {
    uint32_t x = static_cast<uint32_t>(seed) * 2246822519u + 7;
    while (!stop.load()) {
      x = x * 1664525u + 1013904223u;
      int i = static_cast<int>((x >> 8) % (kRoutes / 2));
      int g0 = generation.load();
      bool s0 = swapping.load();
      std::string host = i % 100 == 0 ? absl::StrCat("h", i, ".example.com") : "any.example.com";
      auto r = flexgate::testing::HttpGet(env.port(), absl::StrCat("/r", i), host);
      // At the end, `swapping` is read before `generation` (at the start, the reverse): then a
      // swap that overlaps the request in any way shows up in one or the other.
      bool s1 = swapping.load();
      int g1 = generation.load();
      check(i, g0, s0, r, g1, s1);
    }
  };
  std::vector<std::thread> threads;
  threads.emplace_back(keep_alive, 1);
  threads.emplace_back(keep_alive, 2);
  threads.emplace_back(fresh, 3);

  constexpr int kSwaps = 8;
  for (int s = 0; s < kSwaps; ++s) {
    // Let traffic run on the current table, then swap.
    uint64_t before = ok.load();
    REQUIRE(WaitUntil([&] { return ok.load() >= before + 20 || failures.load() > 0; },
                      absl::Seconds(20)));
    absl::Notification done;
    swapping.store(true);
    env.proxy().UpdateRouteTable(s % 2 == 0 ? b : a, [&] { done.Notify(); });
    REQUIRE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
    generation.fetch_add(1);
    swapping.store(false);
  }
  uint64_t before = ok.load();
  CHECK(WaitUntil([&] { return ok.load() >= before + 20; }, absl::Seconds(20)));
  stop.store(true);
  for (auto& t : threads) t.join();

  INFO("first failure: " << first_failure);
  CHECK(failures.load() == 0);
  CHECK(misrouted.load() == 0);
  CHECK(ok.load() >= 20 * (kSwaps + 1));
  CHECK(env.proxy().CollectStats().responses_5xx == 0);
  CHECK(env.proxy().CollectStats().route_table_swaps >= 2 * (kSwaps + 1));
}

}  // namespace
}  // namespace flexgate::dataplane::test
