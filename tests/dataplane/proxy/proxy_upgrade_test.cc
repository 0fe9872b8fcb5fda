// Protocol upgrades (websocket tunnels) and W3C trace context over real sockets.
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "proxy_test_env.h"

namespace flexgate::dataplane::test {
namespace {

constexpr char kUpgradeRequest[] =
    "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

// The value of header `name` in a request head as the test upstream records it.
std::string HeadHeader(const std::string& head, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(head, '\n')) {
    size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    if (absl::EqualsIgnoreCase(line.substr(0, colon), name)) {
      return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    }
  }
  return "";
}

TEST_CASE("websocket upgrade: 101, then bytes relayed both ways, close propagates") {
  ProxyEnv env(kDefaultConfig, {}, 1);
  HttpClient c = env.Client();
  REQUIRE(c.SendRaw(kUpgradeRequest).ok());
  auto r = c.ReadResponse();
  REQUIRE(r.ok());
  CHECK(r->status == 101);
  CHECK(absl::EqualsIgnoreCase(r->Header("upgrade"), "websocket"));
  CHECK(absl::EqualsIgnoreCase(r->Header("connection"), "upgrade"));
  CHECK(r->Header("x-upstream") == "u0");
  CHECK(absl::StrContains(env.up(0).last_request_head(), "Sec-WebSocket-Key"));

  // Small messages, then a large one that exercises back-pressure in both directions.
  for (int i = 0; i < 5; ++i) {
    std::string msg = "frame " + std::to_string(i);
    REQUIRE(c.SendRaw(msg).ok());
    auto echo = c.ReadBytes(msg.size());
    REQUIRE(echo.ok());
    CHECK(*echo == msg);
  }
  std::string big(2 * 1024 * 1024, 'w');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + (i / 4096) % 26);
  // Send and read concurrently: the echo comes back while we are still sending.
  std::string got;
  std::thread reader([&] {
    auto echo = c.ReadBytes(big.size());
    if (echo.ok()) got = *echo;
  });
  REQUIRE(c.SendRaw(big).ok());
  reader.join();
  CHECK(got.size() == big.size());
  CHECK(got == big);

  ProxyStats st = env.proxy().CollectStats();
  CHECK(st.upgrades_total == 1);
  CHECK(st.upgrades_active == 1);
  CHECK(st.responses_1xx == 1);

  // The client closing ends the tunnel on both sides.
  uint64_t upstream_conns = env.up(0).connections();
  c.Close();
  REQUIRE(WaitUntil([&] { return env.proxy().CollectStats().upgrades_active == 0; }));
  CHECK(env.up(0).connections() == upstream_conns);
  // The proxy still serves plain requests.
  auto ok = env.Client().Get("/");
  REQUIRE(ok.ok());
  CHECK(ok->status == 200);
}

TEST_CASE("bytes sent right behind the upgrade request reach the upstream") {
  ProxyEnv env(kDefaultConfig, {}, 1);
  HttpClient c = env.Client();
  REQUIRE(c.SendRaw(std::string(kUpgradeRequest) + "early").ok());
  auto r = c.ReadResponse();
  REQUIRE(r.ok());
  REQUIRE(r->status == 101);
  auto echo = c.ReadBytes(5);
  REQUIRE(echo.ok());
  CHECK(*echo == "early");
}

TEST_CASE("a client half-close passes through the tunnel; the answer still arrives") {
  ProxyEnv env(kDefaultConfig, {}, 1);
  HttpClient c = env.Client();
  SECTION("after the switch") {
    REQUIRE(c.SendRaw(kUpgradeRequest).ok());
    auto r = c.ReadResponse();
    REQUIRE(r.ok());
    REQUIRE(r->status == 101);
    REQUIRE(c.SendRaw("bye").ok());
  }
  SECTION("right behind the upgrade request") {
    REQUIRE(c.SendRaw(std::string(kUpgradeRequest) + "bye").ok());
    c.ShutdownWrite();
    auto r = c.ReadResponse();
    REQUIRE(r.ok());
    REQUIRE(r->status == 101);
  }
  c.ShutdownWrite();
  auto echo = c.ReadBytes(3);
  REQUIRE(echo.ok());
  CHECK(*echo == "bye");
  // The echo server closes once it sees the FIN; that close reaches the client.
  CHECK(c.WaitForClose(absl::Seconds(5)));
  REQUIRE(WaitUntil([&] { return env.proxy().CollectStats().upgrades_active == 0; }));
}

TEST_CASE("an upgrade the upstream declines stays plain HTTP on a keep-alive connection") {
  ProxyEnv env(kDefaultConfig, {}, 1);
  HttpClient c = env.Client();
  std::string req = kUpgradeRequest;
  req.replace(req.find("/ws"), 3, "/plain");
  REQUIRE(c.SendRaw(req).ok());
  auto r = c.ReadResponse();
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == "u0 GET /plain\n");
  auto again = c.Get("/again");
  REQUIRE(again.ok());
  CHECK(again->body == "u0 GET /again\n");
  CHECK(env.proxy().CollectStats().upgrades_total == 0);
}

TEST_CASE("the upstream closing a tunnel closes the client side") {
  ProxyEnv env(kDefaultConfig, {}, 1);
  HttpClient c = env.Client();
  REQUIRE(c.SendRaw(kUpgradeRequest).ok());
  auto r = c.ReadResponse();
  REQUIRE(r.ok());
  REQUIRE(r->status == 101);
  env.up(0).Stop();  // closes every upstream connection
  CHECK(c.WaitForClose(absl::Seconds(5)));
  REQUIRE(WaitUntil([&] { return env.proxy().CollectStats().upgrades_active == 0; }));
}

TEST_CASE("traceparent: a valid one is propagated, a missing or invalid one is created") {
  ProxyEnv env(kDefaultConfig, {}, 1);
  HttpClient c = env.Client();
  const std::string valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

  HttpRequest req;
  req.path = "/headers";
  req.headers = {{"traceparent", valid}, {"tracestate", "vendor=1"}, {"x-request-id", "rid-1"}};
  auto r = c.RoundTrip(req);
  REQUIRE(r.ok());
  std::string head = env.up(0).last_request_head();
  CHECK(HeadHeader(head, "traceparent") == valid);
  CHECK(HeadHeader(head, "tracestate") == "vendor=1");
  CHECK(HeadHeader(head, "x-request-id") == "rid-1");

  auto check_new = [&](const std::string& what) {
    INFO(what);
    std::string h = env.up(0).last_request_head();
    std::string tp = HeadHeader(h, "traceparent");
    REQUIRE(tp.size() == 55);
    CHECK(tp.substr(0, 3) == "00-");
    CHECK(tp.substr(35, 1) == "-");
    CHECK(tp.substr(52) == "-01");
    CHECK(tp.substr(3, 32) != std::string(32, '0'));
    CHECK(tp.find_first_not_of("0123456789abcdef-") == std::string::npos);
    CHECK(HeadHeader(h, "tracestate").empty());
    return tp;
  };

  req.headers = {};
  REQUIRE(c.RoundTrip(req).ok());
  std::string first = check_new("absent");
  REQUIRE(c.RoundTrip(req).ok());
  std::string second = check_new("absent again");
  CHECK(first.substr(3, 32) != second.substr(3, 32));  // a new trace per request

  for (const std::string& bad :
       {std::string("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"),  // upper case
        std::string("00-00000000000000000000000000000000-b7ad6b7169203331-01"),  // zero trace
        std::string("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"),  // zero span
        std::string("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),  // version ff
        std::string("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x"),  // v00 extra
        std::string("garbage")}) {
    req.headers = {{"traceparent", bad}, {"tracestate", "vendor=1"}};
    REQUIRE(c.RoundTrip(req).ok());
    std::string tp = check_new(bad);
    CHECK(tp != bad);
  }
  // A later version may carry more fields; it is accepted as is.
  const std::string future = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra";
  req.headers = {{"traceparent", future}};
  REQUIRE(c.RoundTrip(req).ok());
  CHECK(HeadHeader(env.up(0).last_request_head(), "traceparent") == future);
  // Two traceparent headers are ambiguous: replaced.
  req.headers = {{"traceparent", valid}, {"traceparent", valid}};
  REQUIRE(c.RoundTrip(req).ok());
  check_new("duplicate");
}

}  // namespace
}  // namespace flexgate::dataplane::test
