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
