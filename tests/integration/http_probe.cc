#include "tests/integration/http_probe.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/harness/http/http_client.h"

namespace flexgate::testing::probe {

HttpConnection::HttpConnection(std::unique_ptr<HttpClient> client) : client_(std::move(client)) {}

HttpConnection::~HttpConnection() = default;

absl::StatusOr<std::unique_ptr<HttpConnection>> HttpConnection::Connect(uint16_t port,
                                                                        absl::Duration timeout) {
  auto client = HttpClient::Connect("127.0.0.1", port, timeout);
  if (!client.ok()) return client.status();
  return std::unique_ptr<HttpConnection>(
      new HttpConnection(std::make_unique<HttpClient>(*std::move(client))));
}

absl::StatusOr<HttpResponse> HttpConnection::Send(const HttpRequest& req) {
  if (client_ == nullptr) return absl::FailedPreconditionError("connection is closed");
  testing::HttpRequest wire;
  wire.method = req.method;
  wire.path = req.path;
  wire.host = req.host;
  wire.headers = req.headers;
  wire.body = req.body;
  if (req.close) wire.headers.emplace_back("Connection", "close");

  auto got = client_->RoundTrip(wire);
  if (!got.ok()) {
    client_.reset();  // the connection's state is unknown after an error
    return got.status();
  }
  HttpResponse resp;
  resp.status = got->status;
  for (const auto& [name, value] : got->headers) {
    auto [it, inserted] = resp.headers.emplace(absl::AsciiStrToLower(name), value);
    if (!inserted) absl::StrAppend(&it->second, ", ", value);
  }
  resp.body = std::move(got->body);

  const std::string connection = absl::AsciiStrToLower(resp.Header("connection"));
  const bool no_body = req.method == "HEAD" || resp.status == 204 || resp.status == 304 ||
                       (resp.status >= 100 && resp.status < 200);
  // A body with neither a length nor chunked framing ends where the connection does.
  const bool close_delimited =
      !no_body && !got->chunked && resp.Header("content-length").empty();
  resp.close = absl::StrContains(connection, "close") || close_delimited ||
               (got->http_minor == 0 && !absl::StrContains(connection, "keep-alive"));
  if (resp.close) client_.reset();
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
