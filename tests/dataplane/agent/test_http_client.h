// A tiny blocking HTTP/1.1 client for the agent's tests: one request per connection
// ("Connection: close"), read to EOF, with a receive timeout so a broken server fails the test
// instead of hanging it. Header-only on purpose: it serves this directory's tests alone.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdint>
#include <string>

namespace flexgate::agent::testing {

struct HttpResult {
  int status = 0;  // 0 = no response (connect failed, timeout, garbage)
  std::string headers;
  std::string body;
};

// Sends `raw` bytes to 127.0.0.1:port and returns everything the server sent until it closed.
// With `half_close` the client shuts down its sending side after the request, as `nc` does.
inline std::string SendRaw(uint16_t port, const std::string& raw, int timeout_ms = 5000,
                           bool half_close = false) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {};
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    size_t sent = 0;
    while (sent < raw.size()) {
      ssize_t n = send(fd, raw.data() + sent, raw.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    if (half_close) shutdown(fd, SHUT_WR);
    char buf[8192];
    for (;;) {
      ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  close(fd);
  return out;
}

// Splits one response (status line, headers, body after the blank line).
inline HttpResult ParseResponse(const std::string& raw) {
  HttpResult r;
  size_t head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos || raw.size() < 12) return r;
  r.status = std::atoi(raw.substr(9, 3).c_str());
  r.headers = raw.substr(0, head_end);
  r.body = raw.substr(head_end + 4);
  return r;
}

inline HttpResult HttpGet(uint16_t port, const std::string& path, const std::string& method = "GET",
                          const std::string& host = "localhost") {
  return ParseResponse(SendRaw(port, method + " " + path + " HTTP/1.1\r\nHost: " + host +
                                         "\r\nConnection: close\r\n\r\n"));
}

}  // namespace flexgate::agent::testing
