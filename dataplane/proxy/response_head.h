// The upstream response fast path: a single-pass parser for the response head shape that nearly
// every upstream sends (HTTP/1.1, a final status with a body, one Content-Length, plain header
// lines), arriving whole in one read.
//
// It accepts a strict subset of what llhttp accepts and declines everything else (returns
// false) without judging it: the caller then parses the same bytes with llhttp, which accepts or
// rejects them as it always has. So the fast path never widens what the proxy accepts from an
// upstream; tests/fuzz/response_head_fuzz.cc checks that on every input it accepts, llhttp
// agrees field by field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace flexgate::dataplane {

struct SimpleResponseHead {
  int status = 0;                 // 200..599, never 204 or 304
  std::string_view reason;        // may be empty
  uint64_t content_length = 0;
  bool keep_alive = true;         // false when a Connection header says "close"
  size_t head_size = 0;           // bytes of the head, up to and including the blank line
  std::string_view connection;    // the last Connection value, trimmed; empty when absent
};

// Parses the head at the start of `in`. On success fills `out` and replaces the contents of
// `headers` (views into `in`, values trimmed of surrounding spaces and tabs) and `classes`
// (ClassifyHeader of each name, plus kHeaderLineCanonical on lines written exactly as
// "name: value" CRLF). Declines (false; the outputs are then unspecified) when the head
// is incomplete, longer than `max_head`, or anything but:
//   "HTTP/1.1 " three digits (200..599 except 204 and 304) " " reason CRLF
//   then header lines "token:" OWS value OWS CRLF (value bytes: HTAB, SP, VCHAR, obs-text),
//   then CRLF; exactly one Content-Length (decimal, at most 18 digits); no Transfer-Encoding,
//   Upgrade, TE, Trailer or Proxy-* header; Connection values only "close" or "keep-alive".
bool ParseSimpleResponseHead(std::string_view in, size_t max_head, SimpleResponseHead* out,
                             std::vector<std::pair<std::string_view, std::string_view>>* headers,
                             std::vector<uint16_t>* classes);

}  // namespace flexgate::dataplane
