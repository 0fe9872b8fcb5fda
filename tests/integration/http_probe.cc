#include "tests/integration/http_probe.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace flexgate::testing::probe {
namespace {

constexpr size_t kMaxResponseBytes = 64 << 20;

void SetTimeouts(int fd, absl::Duration timeout) {
  timeval tv = absl::ToTimeval(timeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpConnection>> HttpConnection::Connect(uint16_t port,
                                                                        absl::Duration timeout) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  SetTimeouts(fd, timeout);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int e = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect 127.0.0.1:", port, ": ", strerror(e)));
  }
  return std::unique_ptr<HttpConnection>(new HttpConnection(fd));
}

HttpConnection::~HttpConnection() { Close(); }

void HttpConnection::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

absl::Status HttpConnection::ReadMore() {
  char buf[16384];
  while (true) {
    ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      buffer_.append(buf, static_cast<size_t>(n));
      if (buffer_.size() > kMaxResponseBytes) return absl::ResourceExhaustedError("response too large");
      return absl::OkStatus();
    }
    if (n == 0) return absl::OutOfRangeError("connection closed by peer");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return absl::DeadlineExceededError("read timed out");
    return absl::UnavailableError(absl::StrCat("recv: ", strerror(errno)));
  }
}

absl::StatusOr<std::string> HttpConnection::ReadLine() {
  while (true) {
    size_t eol = buffer_.find("\r\n");
    if (eol != std::string::npos) {
      std::string line = buffer_.substr(0, eol);
      buffer_.erase(0, eol + 2);
      return line;
    }
    if (auto st = ReadMore(); !st.ok()) return st;
  }
}

absl::StatusOr<HttpResponse> HttpConnection::Send(const HttpRequest& req) {
  if (fd_ < 0) return absl::FailedPreconditionError("connection is closed");
  std::string wire = absl::StrCat(req.method, " ", req.path, " HTTP/1.1\r\nHost: ", req.host,
                                  "\r\n");
  for (const auto& [k, v] : req.headers) absl::StrAppend(&wire, k, ": ", v, "\r\n");
  if (!req.body.empty() || req.method == "POST" || req.method == "PUT") {
    absl::StrAppend(&wire, "Content-Length: ", req.body.size(), "\r\n");
  }
  if (req.close) wire += "Connection: close\r\n";
  absl::StrAppend(&wire, "\r\n", req.body);

  size_t off = 0;
  while (off < wire.size()) {
    ssize_t n = send(fd_, wire.data() + off, wire.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      Close();
      return absl::UnavailableError(absl::StrCat("send: ", strerror(e)));
    }
    off += static_cast<size_t>(n);
  }

  auto fail = [this](absl::Status st) {
    Close();
    return st;
  };
  HttpResponse resp;
  auto status_line = ReadLine();
  if (!status_line.ok()) return fail(status_line.status());
  // "HTTP/1.1 200 OK"
  absl::string_view sl(*status_line);
  bool http10 = absl::StartsWith(sl, "HTTP/1.0 ");
  if (!absl::StartsWith(sl, "HTTP/1.") || sl.size() < 12 ||
      !absl::SimpleAtoi(sl.substr(9, 3), &resp.status)) {
    return fail(absl::DataLossError(absl::StrCat("bad status line: ", *status_line)));
  }
  while (true) {
    auto line = ReadLine();
    if (!line.ok()) return fail(line.status());
    if (line->empty()) break;
    size_t colon = line->find(':');
    if (colon == std::string::npos) return fail(absl::DataLossError("bad header line: " + *line));
    std::string name = absl::AsciiStrToLower(line->substr(0, colon));
    std::string value(absl::StripAsciiWhitespace(absl::string_view(*line).substr(colon + 1)));
    auto [it, inserted] = resp.headers.emplace(name, value);
    if (!inserted) absl::StrAppend(&it->second, ", ", value);
  }
  std::string connection = absl::AsciiStrToLower(resp.Header("connection"));
  resp.close = absl::StrContains(connection, "close") ||
               (http10 && !absl::StrContains(connection, "keep-alive"));

  const bool no_body = req.method == "HEAD" || resp.status == 204 || resp.status == 304 ||
                       (resp.status >= 100 && resp.status < 200);
  if (no_body) {
    // Nothing to read.
  } else if (absl::StrContains(absl::AsciiStrToLower(resp.Header("transfer-encoding")),
                               "chunked")) {
    while (true) {
      auto size_line = ReadLine();
      if (!size_line.ok()) return fail(size_line.status());
      std::string hex(size_line->substr(0, size_line->find(';')));
      uint64_t size = 0;
      if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(hex), &size)) {
        return fail(absl::DataLossError("bad chunk size: " + *size_line));
      }
      if (size == 0) {
        // Trailers until the empty line.
        while (true) {
          auto t = ReadLine();
          if (!t.ok()) return fail(t.status());
          if (t->empty()) break;
        }
        break;
      }
      while (buffer_.size() < size + 2) {
        if (auto st = ReadMore(); !st.ok()) return fail(st);
      }
      resp.body.append(buffer_, 0, size);
      buffer_.erase(0, size + 2);
    }
  } else if (!resp.Header("content-length").empty()) {
    uint64_t len = 0;
    if (!absl::SimpleAtoi(resp.Header("content-length"), &len)) {
      return fail(absl::DataLossError("bad content-length"));
    }
    while (buffer_.size() < len) {
      if (auto st = ReadMore(); !st.ok()) return fail(st);
    }
    resp.body = buffer_.substr(0, len);
    buffer_.erase(0, len);
  } else {
    // Close-delimited body.
    while (true) {
      absl::Status st = ReadMore();
      if (absl::IsOutOfRange(st)) break;
      if (!st.ok()) return fail(st);
    }
    resp.body = std::move(buffer_);
    buffer_.clear();
    resp.close = true;
  }
  if (resp.close) Close();
  return resp;
}

absl::StatusOr<HttpResponse> HttpFetch(uint16_t port, HttpRequest request, absl::Duration timeout) {
  auto conn = HttpConnection::Connect(port, timeout);
  if (!conn.ok()) return conn.status();
  request.close = true;
  return (*conn)->Send(request);
}

absl::StatusOr<HttpResponse> HttpGet(uint16_t port, const std::string& path,
                                     absl::Duration timeout) {
  HttpRequest r;
  r.path = path;
  return HttpFetch(port, std::move(r), timeout);
}

}  // namespace flexgate::testing::probe
