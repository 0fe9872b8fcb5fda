// TlsTestClient: a small blocking HTTPS/1.1 client for tests, written directly on OpenSSL (not on
// common/tls), so that tests of the proxy's TLS do not check the proxy's TLS code against itself.
// One connection; the handshake happens in Connect (SNI, verification against a CA file);
// requests and responses in order with keep-alive; every socket operation has a timeout.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/harness/http/http_client.h"

namespace flexgate::testing {

struct TlsTestClientOptions {
  std::string sni;      // server name sent (and verified when verify is on); empty = none
  std::string ca_file;  // trusted CA (PEM); required when verify is on
  bool verify = true;
  // A client certificate and key (PEM) for servers that require mutual TLS; both or neither.
  std::string cert_file;
  std::string key_file;
  absl::Duration timeout = absl::Seconds(10);
};

class TlsTestClient {
 public:
  // Connects to 127.0.0.1-style `host` and completes the TLS handshake. Errors: Unavailable
  // (TCP), Unauthenticated (the handshake or the verification failed, with OpenSSL's reason).
  static absl::StatusOr<std::unique_ptr<TlsTestClient>> Connect(const std::string& host,
                                                                uint16_t port,
                                                                TlsTestClientOptions options);
  ~TlsTestClient();
  TlsTestClient(const TlsTestClient&) = delete;
  TlsTestClient& operator=(const TlsTestClient&) = delete;

  // The subject common name of the certificate the server presented.
  std::string PeerCommonName() const;
  // "TLSv1.3" or "TLSv1.2".
  std::string ProtocolVersion() const;

  absl::Status SendRaw(std::string_view bytes);
  absl::StatusOr<HttpResponse> ReadResponse(bool head_request = false);
  // GET with a Host header, on this connection (keep-alive).
  absl::StatusOr<HttpResponse> Get(const std::string& path, const std::string& host);
  // True when the server ends the stream (close_notify, EOF or reset) within `timeout`.
  bool WaitForClose(absl::Duration timeout);

  struct Impl;

 private:
  explicit TlsTestClient(std::unique_ptr<Impl> impl);
  absl::Status Fill();
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexgate::testing
