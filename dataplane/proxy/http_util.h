// Small HTTP/1.1 helpers for the request path: header-name classification, reason phrases,
// locally generated responses, and chunked framing. Allocation-free except where they append
// to a caller's buffer.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace flexgate::dataplane {

namespace http_util_internal {

// `w` with ASCII upper-case letters lower-cased, 8 bytes at a time (bytes >= 0x80 unchanged).
inline uint64_t LowerAscii8(uint64_t w) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHigh = 0x8080808080808080ULL;
  uint64_t low7 = w & ~kHigh;
  // Per byte, the high bit of these says: >= 'A', and > 'Z' (no carries cross bytes: every
  // low7 byte is <= 0x7f and every addend <= 0x3f).
  uint64_t ge_a = low7 + (0x80 - 'A') * kOnes;
  uint64_t gt_z = low7 + (0x7f - 'Z') * kOnes;
  uint64_t upper = ge_a & ~gt_z & ~w & kHigh;
  return w | (upper >> 2);  // 0x80 >> 2 = 0x20
}

}  // namespace http_util_internal

// ASCII case-insensitive equality (header names, tokens). Inline: it runs several times for
// every header of every message, mostly against literals of a different length. Eight bytes are
// compared at a time, lower-cased.
inline bool HeaderNameEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  size_t i = 0;
  for (; i + 8 <= a.size(); i += 8) {
    uint64_t x, y;
    std::memcpy(&x, a.data() + i, 8);
    std::memcpy(&y, b.data() + i, 8);
    if (x != y && http_util_internal::LowerAscii8(x) != http_util_internal::LowerAscii8(y)) {
      return false;
    }
  }
  for (; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x == y) continue;
    // Equal apart from bit 0x20, and a letter: the same letter in the other case.
    char lx = static_cast<char>(x | 0x20);
    if (lx != (y | 0x20) || lx < 'a' || lx > 'z') return false;
  }
  return true;
}

// Hop-by-hop headers that a proxy never forwards (RFC 9110 section 7.6.1), plus the
// Proxy-* family. Transfer-Encoding is included: the proxy re-frames bodies itself.
bool IsHopByHopHeader(std::string_view name);

// What the proxy needs to know about a header name, found with one look at it (a switch on its
// length, then one or two compares) instead of a compare per name of interest. Bits.
enum HeaderClass : uint16_t {
  kHeaderOther = 0,
  kHeaderHopByHop = 1 << 0,    // IsHopByHopHeader
  kHeaderConnection = 1 << 1,  // also hop-by-hop
  kHeaderUpgrade = 1 << 2,     // also hop-by-hop
  kHeaderVia = 1 << 3,
  kHeaderHost = 1 << 4,
  kHeaderExpect = 1 << 5,
  kHeaderXForwardedFor = 1 << 6,
  kHeaderXForwardedProtoOrHost = 1 << 7,
  kHeaderXRequestId = 1 << 8,
  kHeaderTraceparent = 1 << 9,
  kHeaderTracestate = 1 << 10,
  // Not a name class: set by ParseSimpleResponseHead on lines received exactly as
  // AppendHeaderLine writes them ("name: value" CRLF, one space, no trailing whitespace), which
  // may therefore be forwarded as received.
  kHeaderLineCanonical = 1 << 15,
};
uint16_t ClassifyHeader(std::string_view name);

// Appends "name: value\r\n" with one size check.
inline void AppendHeaderLine(std::string& out, std::string_view name, std::string_view value) {
  size_t at = out.size();
  out.resize(at + name.size() + value.size() + 4);
  char* p = out.data() + at;
  std::memcpy(p, name.data(), name.size());
  p += name.size();
  p[0] = ':';
  p[1] = ' ';
  p += 2;
  std::memcpy(p, value.data(), value.size());
  p += value.size();
  p[0] = '\r';
  p[1] = '\n';
}

// True when the comma-separated token list `list` (e.g. a Connection value) contains `token`,
// case-insensitively.
bool TokenListContains(std::string_view list, std::string_view token);

// True when every token of a Connection value names a hop-by-hop header (e.g. "keep-alive",
// "upgrade"), so that searching it for other header names can be skipped. False for an empty
// list.
bool NamesOnlyHopByHopHeaders(std::string_view list);

// Calls f(token) for each token of a comma-separated list, trimmed of spaces and tabs.
template <typename F>
void ForEachToken(std::string_view list, F&& f) {
  size_t i = 0;
  while (i <= list.size()) {
    size_t comma = list.find(',', i);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view t = list.substr(i, comma - i);
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
    if (!t.empty()) f(t);
    i = comma + 1;
  }
}

// The standard reason phrase for `status`, or "Unknown".
std::string_view ReasonPhrase(int status);

// Appends a complete plain-text response: status line, content-type, content-length, optional
// "connection: close", extra header lines (each ending in CRLF), and `body` (unless head_only).
void AppendSimpleResponse(std::string& out, int status, std::string_view body, bool close,
                          std::string_view extra_headers = {}, bool head_only = false,
                          std::string_view content_type = "text/plain; charset=utf-8");

// Appends "<hex size>\r\n" for a chunk of `size` bytes.
void AppendChunkHeader(std::string& out, uint64_t size);

// Appends the decimal representation of `v`.
void AppendDecimal(std::string& out, uint64_t v);

}  // namespace flexgate::dataplane
