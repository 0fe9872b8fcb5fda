// libFuzzer target: the upstream response fast path (dataplane/proxy/response_head.h) against
// llhttp, byte for byte.
//
// The fast path may decline anything, but whatever it accepts llhttp (strict, as the proxy runs
// it) must accept too and read the same way: the same head length, status, reason, header names
// and values (trailing spaces and tabs trimmed, as the proxy trims them), content length, and
// keep-alive verdict, with no transfer coding and no body delimited by the connection's end. A
// difference aborts with both readings printed.
//
// Build with -DFLEXGATE_FUZZ=ON (clang); run from the build directory with a scratch corpus first:
//   mkdir -p fuzz/response_head_corpus
//   tests/bin/response_head_fuzz -max_total_time=600 fuzz/response_head_corpus \
//     ../tests/fuzz/corpus/response_head
#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dataplane/proxy/http_util.h"
#include "dataplane/proxy/response_head.h"

namespace {

struct Reading {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;
  uint64_t content_length = 0;
  uint16_t flags = 0;
  bool keep_alive = false;
  bool needs_eof = false;
  bool headers_complete = false;
  bool in_value = false;
};

Reading* Of(llhttp_t* p) { return static_cast<Reading*>(p->data); }

int OnStatus(llhttp_t* p, const char* at, size_t n) {
  Of(p)->reason.append(at, n);
  return 0;
}
int OnField(llhttp_t* p, const char* at, size_t n) {
  Reading* r = Of(p);
  if (r->headers.empty() || r->in_value) r->headers.emplace_back();
  r->in_value = false;
  r->headers.back().first.append(at, n);
  return 0;
}
int OnValue(llhttp_t* p, const char* at, size_t n) {
  Reading* r = Of(p);
  r->in_value = true;
  r->headers.back().second.append(at, n);
  return 0;
}
int OnHeadersComplete(llhttp_t* p) {
  Reading* r = Of(p);
  r->headers_complete = true;
  r->status = p->status_code;
  r->content_length = p->content_length;
  r->flags = p->flags;
  r->keep_alive = llhttp_should_keep_alive(p) != 0;
  r->needs_eof = llhttp_message_needs_eof(p) != 0;
  return HPE_PAUSED;
}

[[noreturn]] void Mismatch(const char* what, std::string_view in) {
  std::fprintf(stderr, "response_head_fuzz: fast path and llhttp disagree on %s; input:\n%.*s\n",
               what, static_cast<int>(in.size()), in.data());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  flexgate::dataplane::SimpleResponseHead fast;
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  std::vector<uint16_t> classes;
  if (!flexgate::dataplane::ParseSimpleResponseHead(in, 64 * 1024, &fast, &headers, &classes)) {
    return 0;
  }
  if (classes.size() != headers.size()) Mismatch("the class vector's length", in);

  llhttp_settings_t settings;
  llhttp_settings_init(&settings);
  settings.on_status = OnStatus;
  settings.on_header_field = OnField;
  settings.on_header_value = OnValue;
  settings.on_headers_complete = OnHeadersComplete;
  llhttp_t parser;
  llhttp_init(&parser, HTTP_RESPONSE, &settings);
  Reading r;
  parser.data = &r;
  llhttp_errno_t err = llhttp_execute(&parser, in.data(), fast.head_size);
  if (err != HPE_PAUSED || !r.headers_complete) Mismatch("whether the head is valid", in);
  if (static_cast<size_t>(llhttp_get_error_pos(&parser) - in.data()) != fast.head_size) {
    Mismatch("where the head ends", in);
  }
  if (r.status != fast.status) Mismatch("the status", in);
  if (r.reason != fast.reason) Mismatch("the reason phrase", in);
  if (r.headers.size() != headers.size()) Mismatch("the number of headers", in);
  for (size_t i = 0; i < headers.size(); ++i) {
    std::string value = r.headers[i].second;
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.pop_back();
    if (r.headers[i].first != headers[i].first) Mismatch("a header name", in);
    if (value != headers[i].second) Mismatch("a header value", in);
    // A line flagged canonical is forwarded as received: it must be exactly "name: value" CRLF.
    if (classes[i] & flexgate::dataplane::kHeaderLineCanonical) {
      std::string line = std::string(headers[i].first) + ": " + std::string(headers[i].second) +
                         "\r\n";
      size_t at = static_cast<size_t>(headers[i].first.data() - in.data());
      if (in.substr(at, line.size()) != line) Mismatch("a line flagged canonical", in);
    }
  }
  if (!(r.flags & F_CONTENT_LENGTH) || r.content_length != fast.content_length) {
    Mismatch("the content length", in);
  }
  if (r.flags & (F_CHUNKED | F_TRANSFER_ENCODING)) Mismatch("the transfer coding", in);
  if (r.needs_eof) Mismatch("how the body ends", in);
  if (r.keep_alive != fast.keep_alive) Mismatch("keep-alive", in);
  return 0;
}
