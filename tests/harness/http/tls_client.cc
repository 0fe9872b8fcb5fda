#include "tests/harness/http/tls_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace flexgate::testing {

struct TlsTestClient::Impl {
  int fd = -1;
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  std::string buf;  // decrypted, not yet consumed
  ~Impl() {
    if (ssl != nullptr) SSL_free(ssl);
    if (ctx != nullptr) SSL_CTX_free(ctx);
    if (fd >= 0) ::close(fd);
  }
};

namespace {

std::string OpenSslErrors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char text[256];
    ERR_error_string_n(e, text, sizeof(text));
    if (!out.empty()) out.append("; ");
    out.append(text);
  }
  return out;
}

}  // namespace

TlsTestClient::TlsTestClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsTestClient::~TlsTestClient() = default;

absl::StatusOr<std::unique_ptr<TlsTestClient>> TlsTestClient::Connect(
    const std::string& host, uint16_t port, TlsTestClientOptions options) {
  auto impl = std::make_unique<Impl>();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not an IPv4 literal: ", host));
  }
  impl->fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (impl->fd < 0) return absl::InternalError("socket failed");
  timeval tv{};
  int64_t us = absl::ToInt64Microseconds(options.timeout);
  tv.tv_sec = us / 1000000;
  tv.tv_usec = us % 1000000;
  ::setsockopt(impl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(impl->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  int one = 1;
  ::setsockopt(impl->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(impl->fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(errno)));
  }
  impl->ctx = SSL_CTX_new(TLS_client_method());
  if (impl->ctx == nullptr) return absl::InternalError("SSL_CTX_new failed");
  SSL_CTX_set_min_proto_version(impl->ctx, TLS1_2_VERSION);
  if (options.verify) {
    if (SSL_CTX_load_verify_locations(impl->ctx, options.ca_file.c_str(), nullptr) != 1) {
      return absl::InvalidArgumentError(absl::StrCat("cannot load CA ", options.ca_file));
    }
    SSL_CTX_set_verify(impl->ctx, SSL_VERIFY_PEER, nullptr);
  }
  if (!options.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(impl->ctx, options.cert_file.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(impl->ctx, options.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot load client certificate ", options.cert_file));
    }
  }
  impl->ssl = SSL_new(impl->ctx);
  if (impl->ssl == nullptr) return absl::InternalError("SSL_new failed");
  SSL_set_fd(impl->ssl, impl->fd);
  if (!options.sni.empty()) {
    SSL_set_tlsext_host_name(impl->ssl, options.sni.c_str());
    if (options.verify) SSL_set1_host(impl->ssl, options.sni.c_str());
  }
  ERR_clear_error();
  if (SSL_connect(impl->ssl) != 1) {
    long v = SSL_get_verify_result(impl->ssl);
    std::string why = v != X509_V_OK ? X509_verify_cert_error_string(v) : OpenSslErrors();
    return absl::UnauthenticatedError(absl::StrCat("TLS handshake failed: ", why));
  }
  return std::unique_ptr<TlsTestClient>(new TlsTestClient(std::move(impl)));
}

std::string TlsTestClient::PeerCommonName() const {
  X509* cert = SSL_get1_peer_certificate(impl_->ssl);
  if (cert == nullptr) return "";
  char cn[256] = {0};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
  X509_free(cert);
  return cn;
}

std::string TlsTestClient::ProtocolVersion() const { return SSL_get_version(impl_->ssl); }

absl::Status TlsTestClient::SendRaw(std::string_view bytes) {
  while (!bytes.empty()) {
    size_t written = 0;
    if (SSL_write_ex(impl_->ssl, bytes.data(), bytes.size(), &written) != 1) {
      return absl::UnavailableError(absl::StrCat("TLS write failed: ", OpenSslErrors()));
    }
    bytes.remove_prefix(written);
  }
  return absl::OkStatus();
}

absl::Status TlsTestClient::Fill() {
  char tmp[16384];
  size_t n = 0;
  if (SSL_read_ex(impl_->ssl, tmp, sizeof(tmp), &n) == 1) {
    impl_->buf.append(tmp, n);
    return absl::OkStatus();
  }
  int err = SSL_get_error(impl_->ssl, 0);
  ERR_clear_error();
  if (err == SSL_ERROR_ZERO_RETURN) return absl::UnavailableError("close_notify");
  if (errno == EAGAIN || errno == EWOULDBLOCK) return absl::DeadlineExceededError("read timeout");
  return absl::UnavailableError("connection closed");
}

absl::StatusOr<HttpResponse> TlsTestClient::ReadResponse(bool head_request) {
  std::string& b = impl_->buf;
  size_t end;
  while ((end = b.find("\r\n\r\n")) == std::string::npos) {
    if (absl::Status s = Fill(); !s.ok()) return s;
  }
  HttpResponse r;
  std::vector<std::string> lines = absl::StrSplit(b.substr(0, end), "\r\n");
  b.erase(0, end + 4);
  std::vector<std::string> first = absl::StrSplit(lines[0], absl::MaxSplits(' ', 2));
  if (first.size() < 2 || !absl::SimpleAtoi(first[1], &r.status)) {
    return absl::DataLossError(absl::StrCat("bad status line: ", lines[0]));
  }
  r.http_minor = absl::StartsWith(first[0], "HTTP/1.0") ? 0 : 1;
  if (first.size() > 2) r.reason = first[2];
  for (size_t i = 1; i < lines.size(); ++i) {
    size_t colon = lines[i].find(':');
    if (colon == std::string::npos) continue;
    r.headers.emplace_back(lines[i].substr(0, colon),
                           std::string(absl::StripAsciiWhitespace(lines[i].substr(colon + 1))));
  }
  if (head_request || r.status == 204 || r.status == 304 || r.status < 200) return r;
  if (absl::AsciiStrToLower(r.Header("transfer-encoding")) == "chunked") {
    r.chunked = true;
    for (;;) {
      size_t eol;
      while ((eol = b.find("\r\n")) == std::string::npos) {
        if (absl::Status s = Fill(); !s.ok()) return s;
      }
      uint64_t size = 0;
      std::string size_text = b.substr(0, b.find_first_of(";\r"));
      if (!absl::SimpleHexAtoi(size_text, &size)) return absl::DataLossError("bad chunk size");
      while (b.size() < eol + 2 + size + 2) {
        if (absl::Status s = Fill(); !s.ok()) return s;
      }
      r.body.append(b, eol + 2, size);
      b.erase(0, eol + 2 + size + 2);
      if (size == 0) break;  // no trailers in tests
    }
    return r;
  }
  std::string cl = r.Header("content-length");
  if (!cl.empty()) {
    uint64_t n = 0;
    if (!absl::SimpleAtoi(cl, &n)) return absl::DataLossError("bad content-length");
    while (b.size() < n) {
      if (absl::Status s = Fill(); !s.ok()) return s;
    }
    r.body = b.substr(0, n);
    b.erase(0, n);
    return r;
  }
  // Delimited by the end of the connection.
  for (;;) {
    absl::Status s = Fill();
    if (!s.ok()) break;
  }
  r.body.swap(b);
  return r;
}

absl::StatusOr<HttpResponse> TlsTestClient::Get(const std::string& path, const std::string& host) {
  if (absl::Status s = SendRaw(absl::StrCat("GET ", path, " HTTP/1.1\r\nhost: ", host, "\r\n\r\n"));
      !s.ok()) {
    return s;
  }
  return ReadResponse();
}

bool TlsTestClient::WaitForClose(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    absl::Status s = Fill();
    if (absl::IsUnavailable(s)) return true;
    impl_->buf.clear();
  }
  return false;
}

}  // namespace flexgate::testing
