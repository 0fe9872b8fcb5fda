// The integration tests' HTTP client: keep-alive connections and one-shot requests against the
// agent, its admin port and the test upstreams, with the answer in the shape these tests check
// (lower-case header map, whether the server closes).
//
// A thin adapter over the harness's HttpClient (tests/harness/http/http_client.h), so the suite
// has one HTTP/1.1 client to keep right. That client is test code, not the agent's: it shares no
// source with the request path (only the llhttp library, which the agent runs in strict mode on
// requests). It stays behind a pointer here because both define HttpRequest/HttpResponse, and
// tests import these names unqualified.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace flexgate::testing {
class HttpClient;
}  // namespace flexgate::testing

namespace flexgate::testing::probe {

struct HttpResponse {
  int status = 0;
  // Lower-case names; repeated headers joined with ", ".
  std::map<std::string, std::string> headers;
  std::string body;
  // True when the server closes after this response: "Connection: close", HTTP/1.0 without
  // keep-alive, or a body that ends with the connection.
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

  bool open() const { return client_ != nullptr; }

 private:
  explicit HttpConnection(std::unique_ptr<HttpClient> client);

  std::unique_ptr<HttpClient> client_;  // null once closed
};

// A one-shot request on a fresh connection ("Connection: close").
absl::StatusOr<HttpResponse> HttpFetch(uint16_t port, HttpRequest request,
                                       absl::Duration timeout = absl::Seconds(10));
absl::StatusOr<HttpResponse> HttpGet(uint16_t port, const std::string& path,
                                     absl::Duration timeout = absl::Seconds(10));

}  // namespace flexgate::testing::probe
