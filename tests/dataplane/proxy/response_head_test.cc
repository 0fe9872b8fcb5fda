// The upstream response fast path: what it accepts and how it reads it, and that it declines
// every shape it leaves to llhttp. (tests/fuzz/response_head_fuzz.cc compares it with llhttp on
// arbitrary input; the proxy tests run it end to end.)
#include "dataplane/proxy/response_head.h"

#include <catch2/catch.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dataplane/proxy/http_util.h"

namespace flexgate::dataplane {
namespace {

using namespace std::string_literals;

struct Parsed {
  bool ok = false;
  SimpleResponseHead head;
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  std::vector<uint16_t> classes;
};

Parsed Parse(std::string_view in, size_t max_head = 64 * 1024) {
  Parsed p;
  p.ok = ParseSimpleResponseHead(in, max_head, &p.head, &p.headers, &p.classes);
  return p;
}

const std::string kTypical =
    "HTTP/1.1 200 OK\r\n"
    "Server: upstream/1.0\r\n"
    "Date: Sun, 22 Nov 2026 12:45:54 GMT\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 1024\r\n"
    "Connection: keep-alive\r\n"
    "\r\n";

TEST_CASE("fast path reads a typical upstream head") {
  std::string in = kTypical + std::string(1024, 'x');
  Parsed p = Parse(in);
  REQUIRE(p.ok);
  CHECK(p.head.status == 200);
  CHECK(p.head.reason == "OK");
  CHECK(p.head.content_length == 1024);
  CHECK(p.head.keep_alive);
  CHECK(p.head.head_size == kTypical.size());
  CHECK(p.head.connection == "keep-alive");
  REQUIRE(p.headers.size() == 5);
  CHECK(p.headers[0] == std::pair<std::string_view, std::string_view>("Server", "upstream/1.0"));
  CHECK(p.headers[1].second == "Sun, 22 Nov 2026 12:45:54 GMT");
  CHECK(p.headers[3] == std::pair<std::string_view, std::string_view>("Content-Length", "1024"));
  REQUIRE(p.classes.size() == 5);
  CHECK(p.classes[4] == (ClassifyHeader("Connection") | kHeaderLineCanonical));
  CHECK((p.classes[4] & kHeaderConnection) != 0);
  CHECK(p.classes[0] == kHeaderLineCanonical);
  for (uint16_t cls : p.classes) CHECK((cls & kHeaderLineCanonical) != 0);
}

TEST_CASE("fast path trims values and keeps what a value may hold") {
  std::string in =
      "HTTP/1.1 503 \r\n"
      "X-Spaces:  \t a b \t \r\n"
      "X-Obs: caf\xe9\r\n"
      "X-Empty:\r\n"
      "Keep-Alive: timeout=5\r\n"
      "content-length: 0\r\n"
      "Connection: Close\r\n"
      "\r\n";
  Parsed p = Parse(in);
  REQUIRE(p.ok);
  CHECK(p.head.status == 503);
  CHECK(p.head.reason.empty());
  CHECK(p.head.content_length == 0);
  CHECK_FALSE(p.head.keep_alive);
  CHECK(p.head.head_size == in.size());
  REQUIRE(p.headers.size() == 6);
  CHECK(p.headers[0].second == "a b");
  CHECK(p.headers[1].second == "caf\xe9");
  CHECK(p.headers[2].second.empty());
  CHECK((p.classes[3] & kHeaderHopByHop) != 0);  // Keep-Alive: accepted, dropped downstream
  // Only lines written exactly as "name: value" may be forwarded as received.
  CHECK_FALSE(p.classes[0] & kHeaderLineCanonical);  // extra and trailing whitespace
  CHECK(p.classes[1] & kHeaderLineCanonical);
  CHECK_FALSE(p.classes[2] & kHeaderLineCanonical);  // "X-Empty:" without the space
  CHECK_FALSE(Parse("HTTP/1.1 200 OK\r\nA:b\r\nContent-Length: 0\r\n\r\n").classes[0] &
              kHeaderLineCanonical);
  CHECK_FALSE(Parse("HTTP/1.1 200 OK\r\nA: b \r\nContent-Length: 0\r\n\r\n").classes[0] &
              kHeaderLineCanonical);
  CHECK_FALSE(Parse("HTTP/1.1 200 OK\r\nA:\tb\r\nContent-Length: 0\r\n\r\n").classes[0] &
              kHeaderLineCanonical);
}

TEST_CASE("fast path declines every incomplete head") {
  for (size_t n = 0; n < kTypical.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    CHECK_FALSE(Parse(std::string_view(kTypical).substr(0, n)).ok);
  }
  CHECK(Parse(kTypical).ok);
  CHECK_FALSE(Parse(kTypical, kTypical.size() - 1).ok);  // longer than the limit
  CHECK(Parse(kTypical, kTypical.size()).ok);
}

TEST_CASE("fast path declines the shapes it leaves to llhttp") {
  auto with = [](std::string status_line, std::string headers) {
    return status_line + "\r\n" + headers + "\r\n";
  };
  const std::string cl = "Content-Length: 5\r\n";
  const std::vector<std::pair<const char*, std::string>> declined = {
      {"no content length", with("HTTP/1.1 200 OK", "Server: x\r\n")},
      {"chunked", with("HTTP/1.1 200 OK", "Transfer-Encoding: chunked\r\n")},
      {"length and chunked", with("HTTP/1.1 200 OK", cl + "Transfer-Encoding: chunked\r\n")},
      {"two lengths", with("HTTP/1.1 200 OK", cl + cl)},
      {"signed length", with("HTTP/1.1 200 OK", "Content-Length: +5\r\n")},
      {"length list", with("HTTP/1.1 200 OK", "Content-Length: 5, 5\r\n")},
      {"empty length", with("HTTP/1.1 200 OK", "Content-Length:\r\n")},
      {"tab after length", with("HTTP/1.1 200 OK", "Content-Length: 5\t\r\n")},
      {"tab after close", with("HTTP/1.1 200 OK", cl + "Connection: close\t\r\n")},
      {"huge length", with("HTTP/1.1 200 OK", "Content-Length: 1234567890123456789\r\n")},
      {"HTTP/1.0", with("HTTP/1.0 200 OK", cl)},
      {"interim", with("HTTP/1.1 100 Continue", "")},
      {"switching", with("HTTP/1.1 101 Switching Protocols", cl + "Upgrade: websocket\r\n")},
      {"no content", with("HTTP/1.1 204 No Content", cl)},
      {"not modified", with("HTTP/1.1 304 Not Modified", cl)},
      {"four digit status", with("HTTP/1.1 2000 OK", cl)},
      {"no space after status", with("HTTP/1.1 200", cl)},
      {"control in reason", with("HTTP/1.1 200 O\x01K", cl)},
      {"obs-fold", with("HTTP/1.1 200 OK", cl + "X-A: b\r\n c\r\n")},
      {"bare LF in value", with("HTTP/1.1 200 OK", cl + "X-A: b\nc\r\n")},
      {"bare CR in value", with("HTTP/1.1 200 OK", cl + "X-A: b\rc\r\n")},
      {"bare LF line end", "HTTP/1.1 200 OK\r\nContent-Length: 5\n\r\n"},
      {"NUL in value", with("HTTP/1.1 200 OK", cl + "X-A: b\0c\r\n"s)},
      {"DEL in value", with("HTTP/1.1 200 OK", cl + "X-A: b\x7f\r\n")},
      {"space before colon", with("HTTP/1.1 200 OK", cl + "X-A : b\r\n")},
      {"empty name", with("HTTP/1.1 200 OK", cl + ": b\r\n")},
      {"separator in name", with("HTTP/1.1 200 OK", cl + "X(A): b\r\n")},
      {"upgrade", with("HTTP/1.1 200 OK", cl + "Upgrade: h2c\r\n")},
      {"connection upgrade", with("HTTP/1.1 200 OK", cl + "Connection: upgrade\r\n")},
      {"connection list", with("HTTP/1.1 200 OK", cl + "Connection: close, x-private\r\n")},
      {"proxy-connection", with("HTTP/1.1 200 OK", cl + "Proxy-Connection: close\r\n")},
      {"trailer", with("HTTP/1.1 200 OK", cl + "Trailer: x\r\n")},
      {"te", with("HTTP/1.1 200 OK", cl + "TE: trailers\r\n")},
      {"bad end of head", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\rx"},
  };
  for (const auto& [what, in] : declined) {
    INFO(what);
    CHECK_FALSE(Parse(in).ok);
  }
  // The same lines with the oddity removed are accepted, so the cases above test what they say.
  CHECK(Parse(with("HTTP/1.1 200 OK", cl + "X-A: b\r\n")).ok);
  CHECK(Parse(with("HTTP/1.1 200 OK", cl + "Connection: close\r\n")).ok);
  CHECK(Parse(with("HTTP/1.1 200 OK", "Content-Length: 5  \r\n")).ok);
}

}  // namespace
}  // namespace flexgate::dataplane
