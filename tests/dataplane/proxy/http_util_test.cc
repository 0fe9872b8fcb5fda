// Header-name classification: every name the proxy treats specially, in any letter case, and
// names of the same lengths that it must not.
#include "dataplane/proxy/http_util.h"

#include <catch2/catch.hpp>

#include <cctype>
#include <string>
#include <utility>
#include <vector>

namespace flexgate::dataplane {
namespace {

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

TEST_CASE("ClassifyHeader knows every special header in any case") {
  const std::vector<std::pair<std::string, uint16_t>> cases = {
      {"te", kHeaderHopByHop},
      {"via", kHeaderVia},
      {"host", kHeaderHost},
      {"expect", kHeaderExpect},
      {"upgrade", kHeaderHopByHop | kHeaderUpgrade},
      {"trailer", kHeaderHopByHop},
      {"connection", kHeaderHopByHop | kHeaderConnection},
      {"keep-alive", kHeaderHopByHop},
      {"tracestate", kHeaderTracestate},
      {"traceparent", kHeaderTraceparent},
      {"x-request-id", kHeaderXRequestId},
      {"x-forwarded-for", kHeaderXForwardedFor},
      {"x-forwarded-host", kHeaderXForwardedProtoOrHost},
      {"transfer-encoding", kHeaderHopByHop},
      {"x-forwarded-proto", kHeaderXForwardedProtoOrHost},
      {"proxy-connection", kHeaderHopByHop},
      {"proxy-authorization", kHeaderHopByHop},
      {"proxy-authenticate", kHeaderHopByHop},
  };
  for (const auto& [name, cls] : cases) {
    INFO(name);
    CHECK(ClassifyHeader(name) == cls);
    CHECK(ClassifyHeader(Upper(name)) == cls);
    CHECK(IsHopByHopHeader(name) == ((cls & kHeaderHopByHop) != 0));
  }
}

TEST_CASE("ClassifyHeader leaves other names alone") {
  for (const char* name : {"tz", "vib", "hose", "accept", "upgrades", "trailers", "connectio",
                           "connectiom", "keep_alive", "content-length", "content-type",
                           "x-request-ix", "x-forwarded-fox", "proxy-", "proxy", "proxyx-a",
                           "date", "server", "set-cookie", ""}) {
    INFO(name);
    CHECK(ClassifyHeader(name) == kHeaderOther);
    CHECK_FALSE(IsHopByHopHeader(name));
  }
}

TEST_CASE("Connection value helpers") {
  CHECK(NamesOnlyHopByHopHeaders("keep-alive"));
  CHECK(NamesOnlyHopByHopHeaders("Keep-Alive, Upgrade"));
  CHECK_FALSE(NamesOnlyHopByHopHeaders("close, x-secret"));
  CHECK_FALSE(NamesOnlyHopByHopHeaders(""));
  CHECK(TokenListContains("close, X-Secret", "x-secret"));
  CHECK_FALSE(TokenListContains("close, x-secretive", "x-secret"));
}

}  // namespace
}  // namespace flexgate::dataplane

namespace flexgate::dataplane {
namespace {

bool ReferenceEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto lower = [](unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; };
    if (lower(static_cast<unsigned char>(a[i])) != lower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

TEST_CASE("HeaderNameEquals is exactly ASCII case-insensitive equality") {
  // Every byte value against every other, in each position of a 9-byte string (one 8-byte word
  // and one byte after it), padded with text that matches: the word-wise path and the tail both
  // see every pair, including the ones that differ only in bit 0x20 ('@'/'`', '['/'{', 0x0d/'-',
  // 0xc1/0xe1, ...).
  int mismatches = 0;
  for (size_t pos : {size_t{0}, size_t{5}, size_t{7}, size_t{8}}) {
    for (int x = 0; x < 256; ++x) {
      for (int y = 0; y < 256; ++y) {
        std::string a = "Content-T", b = "cONTENT-t";
        a[pos] = static_cast<char>(x);
        b[pos] = static_cast<char>(y);
        if (HeaderNameEquals(a, b) != ReferenceEquals(a, b)) ++mismatches;
      }
    }
  }
  CHECK(mismatches == 0);
  CHECK(HeaderNameEquals("Transfer-Encoding", "transfer-encoding"));
  CHECK_FALSE(HeaderNameEquals("Transfer-Encodinf", "transfer-encoding"));
  CHECK_FALSE(HeaderNameEquals("transfer-encoding", "transfer-encodin"));
}

}  // namespace
}  // namespace flexgate::dataplane
