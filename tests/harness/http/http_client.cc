#include "tests/harness/http/http_client.h"

#include <arpa/inet.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace flexgate::testing {
namespace {

struct ParseState {
  HttpResponse* resp;
  std::string field;
  std::string value;
  bool in_value = false;
  bool head_request = false;
  bool complete = false;
};

ParseState* St(llhttp_t* p) { return static_cast<ParseState*>(p->data); }

void FlushHeader(ParseState* s) {
  if (s->in_value || !s->field.empty()) {
    s->resp->headers.emplace_back(std::move(s->field), std::move(s->value));
    s->field.clear();
    s->value.clear();
    s->in_value = false;
  }
}

const llhttp_settings_t* ResponseSettings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_status = [](llhttp_t* p, const char* at, size_t n) {
      St(p)->resp->reason.append(at, n);
      return 0;
    };
    s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
      ParseState* st = St(p);
      if (st->in_value) FlushHeader(st);
      st->field.append(at, n);
      return 0;
    };
    s.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
      ParseState* st = St(p);
      st->in_value = true;
      st->value.append(at, n);
      return 0;
    };
    s.on_headers_complete = [](llhttp_t* p) {
      ParseState* st = St(p);
      FlushHeader(st);
      st->resp->status = p->status_code;
      st->resp->http_minor = p->http_minor;
      st->resp->chunked = (p->flags & F_CHUNKED) != 0;
      return st->head_request ? 1 : 0;
    };
    s.on_body = [](llhttp_t* p, const char* at, size_t n) {
      St(p)->resp->body.append(at, n);
      return 0;
    };
    s.on_message_complete = [](llhttp_t* p) {
      ParseState* st = St(p);
      // 1xx responses are interim: keep reading for the final one. 101 is final: the
      // connection switches protocols after it (read the rest with ReadBytes).
      if (st->resp->status >= 100 && st->resp->status < 200 && st->resp->status != 101) {
        *st->resp = HttpResponse();
        return 0;
      }
      st->complete = true;
      return static_cast<int>(HPE_PAUSED);
    };
    return s;
  }();
  return &settings;
}

}  // namespace

std::string HttpResponse::Header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (absl::EqualsIgnoreCase(n, absl::string_view(name.data(), name.size()))) return v;
  }
  return "";
}

bool HttpResponse::HasHeader(std::string_view name) const {
  for (const auto& h : headers) {
    if (absl::EqualsIgnoreCase(h.first, absl::string_view(name.data(), name.size()))) return true;
  }
  return false;
}

absl::StatusOr<HttpClient> HttpClient::Connect(std::string host, uint16_t port,
                                               absl::Duration timeout) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 literal: ", host));
  }
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(std::strerror(errno));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int e = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("connect ", host, ":", port, ": ", std::strerror(e)));
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return HttpClient(fd, timeout);
}

HttpClient::HttpClient(HttpClient&& other) noexcept
    : fd_(other.fd_), timeout_(other.timeout_), buf_(std::move(other.buf_)) {
  other.fd_ = -1;
}

HttpClient& HttpClient::operator=(HttpClient&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = other.fd_;
    timeout_ = other.timeout_;
    buf_ = std::move(other.buf_);
    other.fd_ = -1;
  }
  return *this;
}

HttpClient::~HttpClient() { Close(); }

void HttpClient::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void HttpClient::ShutdownWrite() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

absl::Status HttpClient::SendRaw(std::string_view bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError("not connected");
  size_t off = 0;
  absl::Time deadline = absl::Now() + timeout_;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
      if (ms <= 0) return absl::DeadlineExceededError("send timed out");
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, ms);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status HttpClient::Send(const HttpRequest& r) {
  std::string out = absl::StrCat(r.method, " ", r.path, " HTTP/1.1\r\n");
  if (!r.host.empty()) absl::StrAppend(&out, "Host: ", r.host, "\r\n");
  bool has_length = false;
  for (const auto& [n, v] : r.headers) {
    absl::StrAppend(&out, n, ": ", v, "\r\n");
    if (absl::EqualsIgnoreCase(n, "content-length") || absl::EqualsIgnoreCase(n, "transfer-encoding")) {
      has_length = true;
    }
  }
  if (r.chunked) {
    out.append("Transfer-Encoding: chunked\r\n\r\n");
    for (size_t off = 0; off < r.body.size(); off += r.chunk_size) {
      size_t n = std::min(r.chunk_size, r.body.size() - off);
      char hex[20];
      snprintf(hex, sizeof(hex), "%zx\r\n", n);
      out.append(hex);
      out.append(r.body, off, n);
      out.append("\r\n");
    }
    out.append("0\r\n\r\n");
  } else {
    if (!has_length && (!r.body.empty() || r.method == "POST" || r.method == "PUT")) {
      absl::StrAppend(&out, "Content-Length: ", r.body.size(), "\r\n");
    }
    out.append("\r\n");
    out.append(r.body);
  }
  return SendRaw(out);
}

absl::Status HttpClient::Fill(absl::Time deadline) {
  if (fd_ < 0) return absl::FailedPreconditionError("not connected");
  char tmp[65536];
  for (;;) {
    int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms <= 0) return absl::DeadlineExceededError("timed out waiting for the response");
    pollfd p{fd_, POLLIN, 0};
    int rc = ::poll(&p, 1, ms);
    if (rc < 0 && errno == EINTR) continue;
    if (rc == 0) return absl::DeadlineExceededError("timed out waiting for the response");
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n > 0) {
      buf_.append(tmp, static_cast<size_t>(n));
      return absl::OkStatus();
    }
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return absl::UnavailableError("connection closed by peer");
    return absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno)));
  }
}

absl::StatusOr<HttpResponse> HttpClient::ReadResponse(bool head_request) {
  HttpResponse resp;
  ParseState st;
  st.resp = &resp;
  st.head_request = head_request;
  llhttp_t parser;
  llhttp_init(&parser, HTTP_RESPONSE, ResponseSettings());
  parser.data = &st;
  absl::Time deadline = absl::Now() + timeout_;
  for (;;) {
    if (!buf_.empty()) {
      llhttp_errno_t err = llhttp_execute(&parser, buf_.data(), buf_.size());
      if (err == HPE_PAUSED && st.complete) {
        size_t used = static_cast<size_t>(llhttp_get_error_pos(&parser) - buf_.data());
        buf_.erase(0, used);
        return resp;
      }
      if (err != HPE_OK) {
        return absl::DataLossError(absl::StrCat("malformed response: ", llhttp_errno_name(err), " ",
                                                parser.reason ? parser.reason : ""));
      }
      buf_.clear();
    }
    absl::Status s = Fill(deadline);
    if (!s.ok()) {
      if (absl::IsUnavailable(s)) {
        // EOF: completes a close-delimited body, otherwise the response was cut short.
        if (llhttp_finish(&parser) == HPE_OK && st.complete) return resp;
        if (st.complete) return resp;
      }
      return s;
    }
  }
}

absl::StatusOr<HttpResponse> HttpClient::RoundTrip(const HttpRequest& request) {
  absl::Status s = Send(request);
  if (!s.ok()) return s;
  return ReadResponse(request.method == "HEAD");
}

absl::StatusOr<HttpResponse> HttpClient::Get(std::string path, std::string host) {
  HttpRequest r;
  r.path = std::move(path);
  r.host = std::move(host);
  return RoundTrip(r);
}

absl::StatusOr<std::string> HttpClient::ReadBytes(size_t n) {
  absl::Time deadline = absl::Now() + timeout_;
  while (buf_.size() < n) {
    absl::Status s = Fill(deadline);
    if (!s.ok()) return s;
  }
  std::string out = buf_.substr(0, n);
  buf_.erase(0, n);
  return out;
}

bool HttpClient::WaitForClose(absl::Duration timeout) {
  if (fd_ < 0) return true;
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    buf_.clear();
    absl::Status s = Fill(deadline);
    if (absl::IsUnavailable(s)) return true;
    if (!s.ok()) return false;
  }
}

absl::StatusOr<HttpResponse> HttpGet(uint16_t port, std::string path, std::string host) {
  auto c = HttpClient::Connect("127.0.0.1", port);
  if (!c.ok()) return c.status();
  return c->Get(std::move(path), std::move(host));
}

}  // namespace flexgate::testing
