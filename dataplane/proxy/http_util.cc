#include "dataplane/proxy/http_util.h"

#include <cstring>

namespace flexgate::dataplane {

using namespace std::string_view_literals;  // literal appends without strlen

bool IsHopByHopHeader(std::string_view name) {
  return (ClassifyHeader(name) & kHeaderHopByHop) != 0;
}

uint16_t ClassifyHeader(std::string_view name) {
  // One switch on the length, then one or two compares: this runs for every header of every
  // message, in both directions.
  uint16_t cls = kHeaderOther;
  switch (name.size()) {
    case 2:
      if (HeaderNameEquals(name, "te")) cls = kHeaderHopByHop;
      break;
    case 3:
      if (HeaderNameEquals(name, "via")) cls = kHeaderVia;
      break;
    case 4:
      if (HeaderNameEquals(name, "host")) cls = kHeaderHost;
      break;
    case 6:
      if (HeaderNameEquals(name, "expect")) cls = kHeaderExpect;
      break;
    case 7:
      if (HeaderNameEquals(name, "upgrade")) {
        cls = kHeaderHopByHop | kHeaderUpgrade;
      } else if (HeaderNameEquals(name, "trailer")) {
        cls = kHeaderHopByHop;
      }
      break;
    case 10:
      if (HeaderNameEquals(name, "connection")) {
        cls = kHeaderHopByHop | kHeaderConnection;
      } else if (HeaderNameEquals(name, "keep-alive")) {
        cls = kHeaderHopByHop;
      } else if (HeaderNameEquals(name, "tracestate")) {
        cls = kHeaderTracestate;
      }
      break;
    case 11:
      if (HeaderNameEquals(name, "traceparent")) cls = kHeaderTraceparent;
      break;
    case 12:
      if (HeaderNameEquals(name, "x-request-id")) cls = kHeaderXRequestId;
      break;
    case 15:
      if (HeaderNameEquals(name, "x-forwarded-for")) cls = kHeaderXForwardedFor;
      break;
    case 16:
      if (HeaderNameEquals(name, "x-forwarded-host")) cls = kHeaderXForwardedProtoOrHost;
      break;
    case 17:
      if (HeaderNameEquals(name, "transfer-encoding")) {
        cls = kHeaderHopByHop;
      } else if (HeaderNameEquals(name, "x-forwarded-proto")) {
        cls = kHeaderXForwardedProtoOrHost;
      }
      break;
    default:
      break;
  }
  // The Proxy-* family (Proxy-Connection, Proxy-Authorization, ...).
  if (cls == kHeaderOther && name.size() > 6 && (name[0] | 0x20) == 'p' &&
      HeaderNameEquals(name.substr(0, 6), "proxy-")) {
    cls = kHeaderHopByHop;
  }
  return cls;
}

bool TokenListContains(std::string_view list, std::string_view token) {
  bool found = false;
  ForEachToken(list, [&](std::string_view t) {
    if (HeaderNameEquals(t, token)) found = true;
  });
  return found;
}

bool NamesOnlyHopByHopHeaders(std::string_view list) {
  // The most common value, without tokenizing.
  if (HeaderNameEquals(list, "keep-alive")) return true;
  bool any = false, only = true;
  ForEachToken(list, [&](std::string_view t) {
    any = true;
    if (!IsHopByHopHeader(t)) only = false;
  });
  return any && only;
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

void AppendDecimal(std::string& out, uint64_t v) {
  if (v >= 100 && v <= 999) {  // status codes
    const char digits[3] = {static_cast<char>('0' + v / 100), static_cast<char>('0' + v / 10 % 10),
                            static_cast<char>('0' + v % 10)};
    out.append(digits, 3);
    return;
  }
  char buf[24];
  char* p = buf + sizeof(buf);
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  out.append(p, buf + sizeof(buf) - p);
}

void AppendChunkHeader(std::string& out, uint64_t size) {
  static constexpr char kHex[] = "0123456789abcdef";
  char buf[20];
  char* p = buf + sizeof(buf);
  *--p = '\n';
  *--p = '\r';
  do {
    *--p = kHex[size & 0xf];
    size >>= 4;
  } while (size != 0);
  out.append(p, buf + sizeof(buf) - p);
}

void AppendSimpleResponse(std::string& out, int status, std::string_view body, bool close,
                          std::string_view extra_headers, bool head_only,
                          std::string_view content_type) {
  out.append("HTTP/1.1 "sv);
  AppendDecimal(out, static_cast<uint64_t>(status));
  out.push_back(' ');
  out.append(ReasonPhrase(status));
  out.append("\r\n"sv);
  bool bodyless = status == 204 || status == 304 || status < 200;
  if (!bodyless) {
    out.append("content-type: "sv);
    out.append(content_type);
    out.append("\r\ncontent-length: "sv);
    AppendDecimal(out, body.size());
    out.append("\r\n"sv);
  }
  if (close) out.append("connection: close\r\n"sv);
  out.append(extra_headers);
  out.append("\r\n"sv);
  if (!head_only && !bodyless) out.append(body);
}

}  // namespace flexgate::dataplane
