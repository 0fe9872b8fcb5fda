// A small blocking HTTP/1.1 client for the integration tests: keep-alive connections and
// one-shot requests against the agent, its admin port and the test upstreams.
//
// Deliberately minimal (Content-Length, chunked and close-delimited bodies; no TLS, no
// pipelining) and independent of the code under test, so a bug in the agent's HTTP handling
// cannot hide itself by being shared with the client that checks it. Its own namespace keeps it
// apart from flexgate_test_http's client, which tests may link as well.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace flexgate::testing::probe {

struct HttpResponse {
  int status = 0;
  // Lower-case names; repeated headers joined with ", ".
  std::map<std::string, std::string> headers;
  std::string body;
  // True when the server said "Connection: close" (or HTTP/1.0 without keep-alive).
  bool close = false;

  std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct HttpRequest {
  std::string method = "GET";
  std::string path = "/";
  std::string host = "localhost";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Sends "Connection: close".
  bool close = false;
};

// One TCP connection to 127.0.0.1:port carrying requests one after another.
class HttpConnection {
 public:
  // Connects with `timeout` as the connect and per-read/write timeout.
  static absl::StatusOr<std::unique_ptr<HttpConnection>> Connect(
      uint16_t port, absl::Duration timeout = absl::Seconds(10));
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // Sends the request and reads the whole response. After an error, or a response that closes
  // the connection, the connection is unusable (open() is false).
  absl::StatusOr<HttpResponse> Send(const HttpRequest& request);

  bool open() const { return fd_ >= 0; }

 private:
  explicit HttpConnection(int fd) : fd_(fd) {}
  absl::Status ReadMore();
  absl::StatusOr<std::string> ReadLine();
  void Close();

  int fd_;
  std::string buffer_;  // received, not yet consumed
};

// A one-shot request on a fresh connection ("Connection: close").
absl::StatusOr<HttpResponse> HttpFetch(uint16_t port, HttpRequest request,
                                       absl::Duration timeout = absl::Seconds(10));
absl::StatusOr<HttpResponse> HttpGet(uint16_t port, const std::string& path,
                                     absl::Duration timeout = absl::Seconds(10));

}  // namespace flexgate::testing::probe
