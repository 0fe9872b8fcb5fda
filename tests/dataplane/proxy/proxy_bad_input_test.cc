// Bad input: each malformed or hostile request gets its status, the connection is closed, and the
// proxy keeps serving other clients.
#include <string>

#include "absl/strings/match.h"
#include "proxy_test_env.h"

namespace flexgate::dataplane::test {
namespace {

ProxyLimits SmallLimits() {
  ProxyLimits l;
  l.max_header_bytes = 4096;
  l.max_body_bytes = 1000;
  l.header_timeout = absl::Milliseconds(300);
  return l;
}

// Sends `raw` on a fresh connection and expects `status` followed by the connection closing.
void ExpectRejected(ProxyEnv& env, const std::string& raw, int status) {
  INFO(raw.substr(0, 200));
  HttpClient c = env.Client();
  REQUIRE(c.SendRaw(raw).ok());
  auto r = c.ReadResponse();
  REQUIRE(r.ok());
  CHECK(r->status == status);
  CHECK(r->Header("connection") == "close");
  CHECK_FALSE(r->body.empty());
  CHECK(c.WaitForClose(absl::Seconds(5)));
  // The proxy still serves.
  auto ok = env.Client().Get("/still-alive");
  REQUIRE(ok.ok());
  CHECK(ok->status == 200);
}

TEST_CASE("malformed requests get 400 and a close") {
  ProxyEnv env(kDefaultConfig, SmallLimits());
  ExpectRejected(env, "GARBAGE\r\n\r\n", 400);
  ExpectRejected(env, "GET / HTTP/1.1\r\nHost a\r\n\r\n", 400);
  ExpectRejected(env, "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);  // space before the colon
  ExpectRejected(env, "GET / HTTP/1.1\r\n\r\n", 400);              // no Host
  ExpectRejected(env, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
}

TEST_CASE("request smuggling shapes get 400 and a close") {
  ProxyEnv env(kDefaultConfig, SmallLimits());
  ExpectRejected(env,
                 "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 400);
  ExpectRejected(env,
                 "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
                 400);
  ExpectRejected(env, "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n", 400);
  ExpectRejected(env, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nxx", 400);
}

TEST_CASE("obs-fold split across reads is still detected") {
  ProxyEnv env(kDefaultConfig, SmallLimits());
  HttpClient c = env.Client();
  REQUIRE(c.SendRaw("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n").ok());
  // Let the proxy parse the first part before the continuation line arrives.
  absl::SleepFor(absl::Milliseconds(50));
  REQUIRE(c.SendRaw("\ttwo\r\n\r\n").ok());
  auto r = c.ReadResponse();
  REQUIRE(r.ok());
  CHECK(r->status == 400);
}

TEST_CASE("oversized headers get 431, oversized bodies 413") {
  ProxyEnv env(kDefaultConfig, SmallLimits());
  ExpectRejected(env, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(5000, 'b') + "\r\n\r\n",
                 431);
  ExpectRejected(env, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n", 413);
  // A chunked body is counted as it streams.
  std::string chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 3; ++i) chunked += "190\r\n" + std::string(400, 'z') + "\r\n";
  chunked += "0\r\n\r\n";
  ExpectRejected(env, chunked, 413);
  // Exactly at the limit is fine.
  HttpClient c = env.Client();
  HttpRequest post;
  post.method = "POST";
  post.body = std::string(1000, 'q');
  auto r = c.RoundTrip(post);
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == post.body);
}

TEST_CASE("slow-loris: a request head that does not arrive in time gets 408") {
  ProxyEnv env(kDefaultConfig, SmallLimits());
  HttpClient c = env.Client();
  REQUIRE(c.SendRaw("GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ").ok());
  auto r = c.ReadResponse();
  REQUIRE(r.ok());
  CHECK(r->status == 408);
  CHECK(c.WaitForClose(absl::Seconds(5)));
  CHECK(env.Client().Get("/").ok());
  // A connection that sends nothing is closed quietly.
  HttpClient silent = env.Client();
  CHECK(silent.WaitForClose(absl::Seconds(5)));
  CHECK(env.proxy().CollectStats().bad_requests >= 1);
}

}  // namespace
}  // namespace flexgate::dataplane::test
