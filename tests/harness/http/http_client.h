// HttpClient: a small blocking HTTP/1.1 client for tests. One TCP connection; requests and
// responses in order (keep-alive, pipelining by sending several requests before reading); bodies
// with content-length or chunked; a raw-bytes mode for malformed input. Every read has a
// deadline, so a test never hangs on a server that does not answer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace flexgate::testing {

struct HttpResponse {
  int status = 0;
  std::string reason;
  int http_minor = 1;
  std::vector<std::pair<std::string, std::string>> headers;  // in order, names as received
  std::string body;
  bool chunked = false;

  // The first value of header `name` (case-insensitive), or "" when absent.
  std::string Header(std::string_view name) const;
  bool HasHeader(std::string_view name) const;
};

struct HttpRequest {
  std::string method = "GET";
  std::string path = "/";
  std::string host = "localhost";  // empty = no Host header
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool chunked = false;       // send the body with Transfer-Encoding: chunked
  size_t chunk_size = 16384;  // chunk size when chunked
};

class HttpClient {
 public:
  static absl::StatusOr<HttpClient> Connect(std::string host, uint16_t port,
                                            absl::Duration timeout = absl::Seconds(10));
  HttpClient(HttpClient&& other) noexcept;
  HttpClient& operator=(HttpClient&& other) noexcept;
  ~HttpClient();

  // Serializes and sends a request (does not read).
  absl::Status Send(const HttpRequest& request);
  // Sends bytes as they are.
  absl::Status SendRaw(std::string_view bytes);
  // Reads one response. `head_request`: the response to a HEAD has no body.
  absl::StatusOr<HttpResponse> ReadResponse(bool head_request = false);
  // Send + ReadResponse.
  absl::StatusOr<HttpResponse> RoundTrip(const HttpRequest& request);
  // Convenience GET with a Host header.
  absl::StatusOr<HttpResponse> Get(std::string path, std::string host = "localhost");

  // Reads exactly `n` raw bytes (after a 101 answer, for tunnels).
  absl::StatusOr<std::string> ReadBytes(size_t n);
  // True when the peer closes the connection (EOF or reset) within `timeout` (bytes that arrive
  // meanwhile are discarded).
  bool WaitForClose(absl::Duration timeout);
  // Half-closes the sending side.
  void ShutdownWrite();
  void Close();
  bool connected() const { return fd_ >= 0; }
  void set_timeout(absl::Duration timeout) { timeout_ = timeout; }

 private:
  HttpClient(int fd, absl::Duration timeout) : fd_(fd), timeout_(timeout) {}
  // Reads more bytes into buf_; DeadlineExceeded / Unavailable (EOF) on failure.
  absl::Status Fill(absl::Time deadline);

  int fd_ = -1;
  absl::Duration timeout_;
  std::string buf_;  // received, not yet consumed
};

// A one-shot request on a fresh connection.
absl::StatusOr<HttpResponse> HttpGet(uint16_t port, std::string path,
                                     std::string host = "localhost");

}  // namespace flexgate::testing
