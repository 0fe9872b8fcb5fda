// OpenSSL 3 implementation of common/tls/tls.h. Everything OpenSSL-specific lives in this file:
// a BoringSSL build would replace it and keep the header.
//
// Each session owns an SSL object with two memory BIOs: the read BIO receives what the event
// loop read from the socket, the write BIO collects what must be written to it. OpenSSL never
// sees a file descriptor, so no call here can block.
#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "common/tls/tls.h"

namespace flexgate::tls {
namespace {

struct SslCtxFree {
  void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
};
struct SslFree {
  void operator()(SSL* p) const { SSL_free(p); }
};
struct BioFree {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
using SslPtr = std::unique_ptr<SSL, SslFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// TLS 1.2 suites: ECDHE (forward secrecy) with AEAD ciphers only. TLS 1.3 suites are all AEAD
// and OpenSSL's default list for them is kept.
constexpr char kTls12Ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Session ids and tickets are only valid within FlexGate's own contexts.
constexpr unsigned char kSessionIdContext[] = "flexgate";

// Drains OpenSSL's per-thread error queue into one readable line ("reason; reason: detail").
// The queue is shared with every other OpenSSL user on the thread (gRPC, libpq), so every
// failure path here drains it, and every operation starts by clearing it.
std::string DrainErrors() {
  std::string out;
  const char* data = nullptr;
  int flags = 0;
  unsigned long code;
  while ((code = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) != 0) {
    const char* reason = ERR_reason_error_string(code);
    std::string item = reason != nullptr ? reason : absl::StrCat("error 0x", absl::Hex(code));
    if ((flags & ERR_TXT_STRING) != 0 && data != nullptr && *data != '\0') {
      absl::StrAppend(&item, " (", data, ")");
    }
    if (!absl::StrContains(out, item)) absl::StrAppend(&out, out.empty() ? "" : "; ", item);
  }
  return out;
}

// Refuses to prompt for a passphrase: the agent has no terminal, and a prompt would block.
int NoPassphrase(char*, int, int, void*) { return -1; }

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what) {
  if (path.empty())
    return absl::InvalidArgumentError(absl::StrCat("TLS: no ", what, " file given"));
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    std::string msg =
        absl::StrCat("TLS: cannot open ", what, " file '", path, "': ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  std::string data;
  char buf[8192];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed)
    return absl::UnavailableError(absl::StrCat("TLS: error reading ", what, " file '", path, "'"));
  return data;
}

BioPtr MemBio(const std::string& data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

// True when the last error on the queue is the normal end of a PEM stream; clears it if so.
bool AtPemEnd() {
  const unsigned long e = ERR_peek_last_error();
  if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
    ERR_clear_error();
    return true;
  }
  return false;
}

// Loads a PEM certificate chain (leaf first) and its private key into `ctx` and checks that
// they belong together.
absl::Status LoadCertificateAndKey(SSL_CTX* ctx, const std::string& cert_file,
                                   const std::string& key_file) {
  ERR_clear_error();
  FG_ASSIGN_OR_RETURN(const std::string cert_pem, ReadFile(cert_file, "certificate"));
  FG_ASSIGN_OR_RETURN(const std::string key_pem, ReadFile(key_file, "private key"));

  BioPtr cert_bio = MemBio(cert_pem);
  X509Ptr leaf(PEM_read_bio_X509_AUX(cert_bio.get(), nullptr, NoPassphrase, nullptr));
  if (leaf == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS: no PEM certificate in '", cert_file, "': ", DrainErrors()));
  }
  if (SSL_CTX_use_certificate(ctx, leaf.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS: unusable certificate in '", cert_file, "': ", DrainErrors()));
  }
  while (true) {
    X509* intermediate = PEM_read_bio_X509(cert_bio.get(), nullptr, NoPassphrase, nullptr);
    if (intermediate == nullptr) {
      if (AtPemEnd()) break;
      return absl::InvalidArgumentError(
          absl::StrCat("TLS: bad intermediate certificate in '", cert_file, "': ", DrainErrors()));
    }
    if (SSL_CTX_add0_chain_cert(ctx, intermediate) != 1) {  // takes ownership on success
      X509_free(intermediate);
      return absl::InvalidArgumentError(absl::StrCat(
          "TLS: cannot add intermediate certificate from '", cert_file, "': ", DrainErrors()));
    }
  }

  BioPtr key_bio = MemBio(key_pem);
  PkeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr));
  if (key == nullptr) {
    const std::string detail = DrainErrors();
    if (absl::StrContains(key_pem, "ENCRYPTED")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TLS: private key '", key_file, "' is encrypted; FlexGate needs an unencrypted key"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("TLS: no PEM private key in '", key_file, "': ", detail));
  }
  if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("TLS: private key '", key_file,
                                                   "' does not match the certificate '", cert_file,
                                                   "': ", DrainErrors()));
  }
  return absl::OkStatus();
}

// Adds every certificate of the PEM file `path` to the trust store of `ctx` (and to `*out`
// when given). `what` names the file in errors ("CA", "client CA").
absl::Status LoadTrustedCas(SSL_CTX* ctx, const std::string& path, absl::string_view what,
                            std::vector<X509Ptr>* out) {
  FG_ASSIGN_OR_RETURN(const std::string pem, ReadFile(path, what));
  BioPtr bio = MemBio(pem);
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  int count = 0;
  while (true) {
    X509Ptr ca(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
    if (ca == nullptr) {
      if (AtPemEnd()) break;
      return absl::InvalidArgumentError(
          absl::StrCat("TLS: bad certificate in ", what, " file '", path, "': ", DrainErrors()));
    }
    if (X509_STORE_add_cert(store, ca.get()) != 1) {  // does not take ownership
      return absl::InvalidArgumentError(absl::StrCat("TLS: cannot trust a certificate from '",
                                                     path, "': ", DrainErrors()));
    }
    ++count;
    if (out != nullptr) out->push_back(std::move(ca));
  }
  if (count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS: no PEM certificate in ", what, " file '", path, "'"));
  }
  return absl::OkStatus();
}

// ALPN protocols in wire format: each name prefixed by its length.
absl::StatusOr<std::string> AlpnWire(const std::vector<std::string>& protocols) {
  std::string wire;
  for (const std::string& p : protocols) {
    if (p.empty() || p.size() > 255) {
      return absl::InvalidArgumentError(absl::StrCat("TLS: bad ALPN protocol name '", p, "'"));
    }
    wire.push_back(static_cast<char>(p.size()));
    wire.append(p);
  }
  return wire;
}

// Settings shared by server and client contexts.
absl::StatusOr<SslCtxPtr> NewBaseContext(const SSL_METHOD* method) {
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(method));
  if (ctx == nullptr) return absl::InternalError(absl::StrCat("TLS: SSL_CTX_new: ", DrainErrors()));
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  // Idle keep-alive connections hold no record buffers: memory per connection matters.
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(ctx.get(), NoPassphrase);
  if (SSL_CTX_set_cipher_list(ctx.get(), kTls12Ciphers) != 1) {
    return absl::InternalError(absl::StrCat("TLS: cipher list: ", DrainErrors()));
  }
  return ctx;
}

// Server names as configured: lower case, no trailing dot; "*.suffix" or a plain name.
absl::StatusOr<std::string> NormalizeServerName(absl::string_view name) {
  std::string n = absl::AsciiStrToLower(name);
  if (!n.empty() && n.back() == '.') n.pop_back();
  const bool wildcard = absl::StartsWith(n, "*.");
  const absl::string_view rest = wildcard ? absl::string_view(n).substr(2) : absl::string_view(n);
  if (rest.empty() || absl::StrContains(rest, '*') || absl::StartsWith(rest, ".") ||
      absl::StrContains(rest, "..")) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS: bad server name '", std::string(name),
                     "': use an exact name or a wildcard of the form *.example.com"));
  }
  return n;
}

bool IsIpLiteral(const std::string& name) {
  unsigned char buf[16];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

// ------------------------------------------------------------------------------------------------
// The session, shared by both roles.

class OpenSslSession final : public TlsSession {
 public:
  OpenSslSession(SslPtr ssl, std::shared_ptr<const void> owner, bool is_client, bool verify_enabled,
                 std::string server_name, const std::vector<SslCtxPtr>* server_ctxs)
      : ssl_(std::move(ssl)),
        owner_(std::move(owner)),
        is_client_(is_client),
        verify_enabled_(verify_enabled),
        client_server_name_(std::move(server_name)),
        server_ctxs_(server_ctxs) {
    rbio_ = SSL_get_rbio(ssl_.get());
    wbio_ = SSL_get_wbio(ssl_.get());
  }

  void FeedCiphertext(absl::string_view bytes) override {
    if (!status_.ok()) return;
    while (!bytes.empty()) {
      const int chunk = static_cast<int>(std::min<size_t>(bytes.size(), INT_MAX));
      if (BIO_write(rbio_, bytes.data(), chunk) != chunk) {
        Fail(absl::ResourceExhaustedError("TLS: cannot buffer received bytes"));
        return;
      }
      bytes.remove_prefix(chunk);
    }
  }

  void FeedEof() override { eof_ = true; }

  ReadResult ReadPlaintext(char* buffer, size_t capacity, size_t* bytes_read) override {
    *bytes_read = 0;
    if (!status_.ok()) return ReadResult::kError;
    if (!SSL_is_init_finished(ssl_.get())) {
      if (!DriveHandshake().ok()) return ReadResult::kError;
      if (!SSL_is_init_finished(ssl_.get())) return ReadResult::kWantMore;
    }
    if (capacity == 0) return ReadResult::kWantMore;
    ERR_clear_error();
    size_t n = 0;
    const int r = SSL_read_ex(ssl_.get(), buffer, capacity, &n);
    if (r == 1) {
      *bytes_read = n;
      return ReadResult::kData;
    }
    const int err = SSL_get_error(ssl_.get(), r);
    switch (err) {
      case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return ReadResult::kClosed;
      case SSL_ERROR_WANT_READ:
      case SSL_ERROR_WANT_WRITE:
        ERR_clear_error();
        if (eof_ && BIO_ctrl_pending(rbio_) == 0) {
          // A truncation attack or a crashed peer looks the same: never treat it as a clean end.
          Fail(absl::DataLossError(
              "TLS: the peer closed the connection without close_notify (truncated stream)"));
          return ReadResult::kError;
        }
        return ReadResult::kWantMore;
      default:
        Fail(ProtocolError(err, "TLS error: "));
        return ReadResult::kError;
    }
  }

  absl::Status WritePlaintext(absl::string_view bytes) override {
    if (!status_.ok()) return status_;
    if (shutdown_requested_) {
      return absl::FailedPreconditionError("TLS: write after Shutdown()");
    }
    if (!SSL_is_init_finished(ssl_.get())) {
      pending_plaintext_.append(bytes.data(), bytes.size());
      // A client's first write is a good moment to send the ClientHello.
      return DriveHandshake();
    }
    return WriteNow(bytes);
  }

  void Shutdown() override {
    if (shutdown_requested_) return;
    shutdown_requested_ = true;
    if (status_.ok() && SSL_is_init_finished(ssl_.get())) SendCloseNotify();
  }

  bool HasCiphertext() const override { return BIO_ctrl_pending(wbio_) > 0; }
  size_t PendingCiphertextBytes() const override { return BIO_ctrl_pending(wbio_); }

  size_t TakeCiphertext(std::string* out) override {
    const size_t pending = BIO_ctrl_pending(wbio_);
    if (pending == 0) return 0;
    const size_t old_size = out->size();
    out->resize(old_size + pending);
    const int n = BIO_read(wbio_, out->data() + old_size, static_cast<int>(pending));
    const size_t taken = n > 0 ? static_cast<size_t>(n) : 0;
    out->resize(old_size + taken);
    return taken;
  }

  absl::Status StartHandshake() override {
    if (!is_client_) return status_;
    return DriveHandshake();
  }

  bool handshake_done() const override { return SSL_is_init_finished(ssl_.get()) != 0; }
  absl::Status status() const override { return status_; }

  absl::string_view server_name() const override {
    if (is_client_) return client_server_name_;
    const char* sni = SSL_get_servername(ssl_.get(), TLSEXT_NAMETYPE_host_name);
    return sni != nullptr ? absl::string_view(sni) : absl::string_view();
  }

  int certificate_index() const override {
    if (is_client_ || server_ctxs_ == nullptr || SSL_in_before(ssl_.get())) return -1;
    const SSL_CTX* current = SSL_get_SSL_CTX(ssl_.get());
    for (size_t i = 0; i < server_ctxs_->size(); ++i) {
      if ((*server_ctxs_)[i].get() == current) return static_cast<int>(i);
    }
    return -1;
  }

  bool peer_verified() const override {
    return verify_enabled_ && handshake_done() &&
           SSL_get0_peer_certificate(ssl_.get()) != nullptr &&
           SSL_get_verify_result(ssl_.get()) == X509_V_OK;
  }

  std::string PeerCertificateSubject() const override {
    const X509* cert = SSL_get0_peer_certificate(ssl_.get());
    if (cert == nullptr) return "";
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (bio == nullptr) return "";
    X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &data);
    return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string();
  }

  absl::string_view alpn_protocol() const override {
    const unsigned char* proto = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl_.get(), &proto, &len);
    return proto != nullptr ? absl::string_view(reinterpret_cast<const char*>(proto), len)
                            : absl::string_view();
  }

  absl::string_view protocol_version() const override {
    return handshake_done() ? absl::string_view(SSL_get_version(ssl_.get())) : absl::string_view();
  }

 private:
  absl::Status DriveHandshake() {
    if (!status_.ok() || SSL_is_init_finished(ssl_.get())) return status_;
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl_.get());
    if (r == 1) {
      // Plaintext queued before the handshake goes out now, in order, then any close_notify.
      if (!pending_plaintext_.empty()) {
        std::string queued;
        queued.swap(pending_plaintext_);
        if (!WriteNow(queued).ok()) return status_;
      }
      if (shutdown_requested_) SendCloseNotify();
      return status_;
    }
    const int err = SSL_get_error(ssl_.get(), r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      ERR_clear_error();
      if (eof_ && BIO_ctrl_pending(rbio_) == 0) {
        Fail(absl::UnavailableError(
            absl::StrCat(HandshakePrefix(), "the peer closed the connection")));
      }
      return status_;
    }
    Fail(ProtocolError(err, HandshakePrefix()));
    return status_;
  }

  std::string HandshakePrefix() const {
    return is_client_ ? absl::StrCat("TLS handshake with '", client_server_name_, "' failed: ")
                      : std::string("TLS handshake failed: ");
  }

  // Builds the status for a failed SSL call: a verification failure names the check that
  // failed; anything else carries OpenSSL's reasons (e.g. "wrong version number" for garbage,
  // "tlsv1 alert unknown ca" when the peer rejected our certificate).
  absl::Status ProtocolError(int ssl_error, absl::string_view prefix) {
    const long verify = SSL_get_verify_result(ssl_.get());
    if (is_client_ && verify_enabled_ && verify != X509_V_OK) {
      ERR_clear_error();
      std::string msg =
          absl::StrCat(prefix, "certificate verification: ", X509_verify_cert_error_string(verify));
      if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        absl::StrAppend(&msg, " (the certificate is not valid for '", client_server_name_, "')");
      } else if (verify == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                 verify == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
                 verify == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT) {
        absl::StrAppend(&msg, " (the certificate is not issued by a trusted CA)");
      }
      return absl::UnauthenticatedError(msg);
    }
    std::string detail = DrainErrors();
    if (detail.empty()) {
      detail = ssl_error == SSL_ERROR_SYSCALL ? "unexpected end of data"
                                              : absl::StrCat("SSL error ", ssl_error);
    }
    return absl::AbortedError(absl::StrCat(prefix, detail));
  }

  absl::Status WriteNow(absl::string_view bytes) {
    ERR_clear_error();
    while (!bytes.empty()) {
      size_t written = 0;
      const int r = SSL_write_ex(ssl_.get(), bytes.data(), bytes.size(), &written);
      if (r != 1) {
        // Memory BIOs grow, so a write never has to wait; any failure is fatal.
        Fail(ProtocolError(SSL_get_error(ssl_.get(), r), "TLS write failed: "));
        return status_;
      }
      bytes.remove_prefix(written);
    }
    return absl::OkStatus();
  }

  void SendCloseNotify() {
    ERR_clear_error();
    SSL_shutdown(ssl_.get());
    ERR_clear_error();
  }

  void Fail(absl::Status status) {
    if (status_.ok()) status_ = std::move(status);
    pending_plaintext_.clear();
  }

  SslPtr ssl_;
  // Keeps the context (and the SSL_CTXs its callbacks point into) alive for this session.
  std::shared_ptr<const void> owner_;
  BIO* rbio_ = nullptr;  // owned by ssl_
  BIO* wbio_ = nullptr;  // owned by ssl_
  const bool is_client_;
  const bool verify_enabled_;
  const std::string client_server_name_;
  const std::vector<SslCtxPtr>* server_ctxs_;  // owned by the context held in owner_
  std::string pending_plaintext_;
  absl::Status status_;
  bool eof_ = false;
  bool shutdown_requested_ = false;
};

// Creates an SSL with a fresh pair of memory BIOs. An empty read BIO means "retry later"
// (the memory BIO default), which is how OpenSSL learns that more bytes have to come.
absl::StatusOr<SslPtr> NewSsl(SSL_CTX* ctx) {
  ERR_clear_error();
  SslPtr ssl(SSL_new(ctx));
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  if (ssl == nullptr || rbio == nullptr || wbio == nullptr) {
    BIO_free(rbio);
    BIO_free(wbio);
    return absl::ResourceExhaustedError(
        absl::StrCat("TLS: cannot create session: ", DrainErrors()));
  }
  SSL_set_bio(ssl.get(), rbio, wbio);
  return ssl;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Server context

namespace {

// One loaded set of listener certificates: an SSL_CTX per certificate, identical apart from the
// certificate, and the SNI lookup over them. Immutable once built; every session created from
// it holds it (the SNI and ALPN callbacks point into it), so a reload can replace it while
// established connections keep using it.
struct ServerCertificates {
  std::vector<SslCtxPtr> ctxs;
  size_t default_index = 0;
  absl::flat_hash_map<std::string, size_t> exact;
  absl::flat_hash_map<std::string, size_t> wildcard;  // key: the part after "*."
  std::string alpn_wire;
  bool verify_clients = false;

  // Exact name, then the one-label wildcard, then the default.
  size_t Select(absl::string_view sni) const {
    if (sni.empty()) return default_index;
    std::string name = absl::AsciiStrToLower(sni);
    if (!name.empty() && name.back() == '.') name.pop_back();
    if (auto it = exact.find(name); it != exact.end()) return it->second;
    const size_t dot = name.find('.');
    if (dot != std::string::npos && dot > 0) {
      if (auto it = wildcard.find(absl::string_view(name).substr(dot + 1)); it != wildcard.end()) {
        return it->second;
      }
    }
    return default_index;
  }

  static int OnServerName(SSL* ssl, int* /*alert*/, void* arg) {
    const auto* self = static_cast<const ServerCertificates*>(arg);
    const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    SSL_CTX* chosen = self->ctxs[self->Select(sni != nullptr ? sni : "")].get();
    if (SSL_get_SSL_CTX(ssl) != chosen) SSL_set_SSL_CTX(ssl, chosen);
    return SSL_TLSEXT_ERR_OK;
  }

  static int OnAlpn(SSL* /*ssl*/, const unsigned char** out, unsigned char* out_len,
                    const unsigned char* in, unsigned int in_len, void* arg) {
    const auto* self = static_cast<const ServerCertificates*>(arg);
    unsigned char* selected = nullptr;
    // Our preference order; `selected` points into alpn_wire, which outlives the session.
    if (SSL_select_next_proto(&selected, out_len,
                              reinterpret_cast<const unsigned char*>(self->alpn_wire.data()),
                              static_cast<unsigned int>(self->alpn_wire.size()), in,
                              in_len) == OPENSSL_NPN_NEGOTIATED) {
      *out = selected;
      return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;  // RFC 7301: no_application_protocol
  }
};

// Requires client certificates issued by the CAs in `ca_file` (mutual TLS): trusts them for
// verification and names them in the CertificateRequest so that clients pick a matching
// certificate.
absl::Status RequireClientCertificates(SSL_CTX* ctx, const std::string& ca_file) {
  std::vector<X509Ptr> cas;
  FG_RETURN_IF_ERROR(LoadTrustedCas(ctx, ca_file, "client CA", &cas));
  STACK_OF(X509_NAME)* names = sk_X509_NAME_new_null();
  if (names == nullptr) return absl::ResourceExhaustedError("TLS: out of memory");
  for (const X509Ptr& ca : cas) {
    X509_NAME* name = X509_NAME_dup(X509_get_subject_name(ca.get()));
    if (name == nullptr || sk_X509_NAME_push(names, name) == 0) {
      X509_NAME_free(name);
      sk_X509_NAME_pop_free(names, X509_NAME_free);
      return absl::ResourceExhaustedError("TLS: out of memory");
    }
  }
  SSL_CTX_set_client_CA_list(ctx, names);  // takes ownership
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return absl::OkStatus();
}

// Reads every file of `options` and builds a certificate set; nothing is shared with any other
// set, so a failure leaves whatever set is serving untouched.
absl::StatusOr<std::shared_ptr<const ServerCertificates>> LoadServerCertificates(
    const TlsServerOptions& options) {
  if (options.certificates.empty()) {
    return absl::InvalidArgumentError("TLS: a TLS listener needs at least one certificate");
  }
  auto set = std::make_shared<ServerCertificates>();
  FG_ASSIGN_OR_RETURN(set->alpn_wire, AlpnWire(options.alpn));
  set->verify_clients = !options.client_ca_file.empty();
  bool have_default = false;
  for (size_t i = 0; i < options.certificates.size(); ++i) {
    const CertificateSpec& spec = options.certificates[i];
    FG_ASSIGN_OR_RETURN(SslCtxPtr ctx, NewBaseContext(TLS_server_method()));
    FG_RETURN_IF_ERROR(LoadCertificateAndKey(ctx.get(), spec.cert_file, spec.key_file));
    SSL_CTX_set_session_id_context(ctx.get(), kSessionIdContext, sizeof kSessionIdContext - 1);
    // Resumption through stateless tickets only: a server-side session cache would be shared,
    // locked state across workers and grow with every client.
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
    if (set->verify_clients) {
      FG_RETURN_IF_ERROR(RequireClientCertificates(ctx.get(), options.client_ca_file));
    }
    // The callbacks only read the set; OpenSSL's signature wants a mutable pointer.
    SSL_CTX_set_tlsext_servername_callback(ctx.get(), &ServerCertificates::OnServerName);
    SSL_CTX_set_tlsext_servername_arg(ctx.get(), set.get());
    if (!set->alpn_wire.empty()) {
      SSL_CTX_set_alpn_select_cb(ctx.get(), &ServerCertificates::OnAlpn, set.get());
    }
    set->ctxs.push_back(std::move(ctx));

    if (spec.server_names.empty() && !have_default) {
      set->default_index = i;
      have_default = true;
    }
    for (const std::string& raw : spec.server_names) {
      absl::StatusOr<std::string> name = NormalizeServerName(raw);
      if (!name.ok()) return name.status();
      const bool is_wildcard = name->size() > 2 && (*name)[0] == '*';
      auto& map = is_wildcard ? set->wildcard : set->exact;
      std::string key = is_wildcard ? name->substr(2) : *std::move(name);
      auto [it, inserted] = map.emplace(std::move(key), i);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(
            "TLS: server name '", raw, "' is listed for certificates ", it->second, " and ", i));
      }
    }
  }
  return std::shared_ptr<const ServerCertificates>(std::move(set));
}

// "CN=api.example.com, expires 2027-03-01T12:00:00Z" for the certificate loaded into `ctx`.
std::string DescribeLeaf(SSL_CTX* ctx) {
  X509* cert = SSL_CTX_get0_certificate(ctx);
  if (cert == nullptr) return "no certificate";
  std::string out;
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio != nullptr) {
    X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &data);
    if (len > 0) out.assign(data, static_cast<size_t>(len));
  }
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1) {
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    absl::StrAppend(&out, out.empty() ? "" : ", ", "expires ", when);
  }
  return out;
}

}  // namespace

struct TlsServerContext::Impl {
  TlsServerOptions options;
  // Held across a whole reload (which reads files), so that two reloads cannot interleave; never
  // taken by NewSession.
  absl::Mutex reload_mu;
  // Guards only the pointer swap and its copy in NewSession.
  mutable absl::Mutex mu;
  std::shared_ptr<const ServerCertificates> current ABSL_GUARDED_BY(mu);
  uint64_t generation ABSL_GUARDED_BY(mu) = 0;

  std::shared_ptr<const ServerCertificates> Current() const {
    absl::MutexLock lock(&mu);
    return current;
  }
};

TlsServerContext::TlsServerContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsServerContext::~TlsServerContext() = default;

absl::StatusOr<std::shared_ptr<TlsServerContext>> TlsServerContext::Create(
    TlsServerOptions options) {
  FG_ASSIGN_OR_RETURN(std::shared_ptr<const ServerCertificates> set,
                      LoadServerCertificates(options));
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  {
    absl::MutexLock lock(&impl->mu);
    impl->current = std::move(set);
    impl->generation = 1;
  }
  return std::shared_ptr<TlsServerContext>(new TlsServerContext(std::move(impl)));
}

absl::Status TlsServerContext::ReloadCertificates() {
  absl::MutexLock reload(&impl_->reload_mu);
  FG_ASSIGN_OR_RETURN(std::shared_ptr<const ServerCertificates> set,
                      LoadServerCertificates(impl_->options));
  std::shared_ptr<const ServerCertificates> old;
  {
    absl::MutexLock lock(&impl_->mu);
    old = std::exchange(impl_->current, std::move(set));
    ++impl_->generation;
  }
  // `old` is released here, outside the lock; if no session holds it any more, its SSL_CTXs
  // are freed now.
  return absl::OkStatus();
}

uint64_t TlsServerContext::generation() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->generation;
}

std::vector<std::string> TlsServerContext::DescribeCertificates() const {
  std::shared_ptr<const ServerCertificates> set = impl_->Current();
  std::vector<std::string> out;
  for (size_t i = 0; i < set->ctxs.size(); ++i) {
    out.push_back(absl::StrCat(DescribeLeaf(set->ctxs[i].get()), ", cert_file ",
                               impl_->options.certificates[i].cert_file));
  }
  return out;
}

const TlsServerOptions& TlsServerContext::options() const { return impl_->options; }

absl::StatusOr<std::unique_ptr<TlsSession>> TlsServerContext::NewSession() const {
  std::shared_ptr<const ServerCertificates> set = impl_->Current();
  FG_ASSIGN_OR_RETURN(SslPtr ssl, NewSsl(set->ctxs[set->default_index].get()));
  SSL_set_accept_state(ssl.get());
  const std::vector<SslCtxPtr>* ctxs = &set->ctxs;
  const bool verify_clients = set->verify_clients;
  return std::unique_ptr<TlsSession>(new OpenSslSession(std::move(ssl), std::move(set),
                                                        /*is_client=*/false, verify_clients, "",
                                                        ctxs));
}

// ------------------------------------------------------------------------------------------------
// Client context

struct TlsClientContext::Impl {
  TlsClientOptions options;
  SslCtxPtr ctx;
};

TlsClientContext::TlsClientContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsClientContext::~TlsClientContext() = default;

absl::StatusOr<std::shared_ptr<const TlsClientContext>> TlsClientContext::Create(
    TlsClientOptions options) {
  auto impl = std::make_unique<Impl>();
  FG_ASSIGN_OR_RETURN(impl->ctx, NewBaseContext(TLS_client_method()));
  SSL_CTX* ctx = impl->ctx.get();

  if (!options.ca_file.empty()) {
    FG_RETURN_IF_ERROR(LoadTrustedCas(ctx, options.ca_file, "CA", nullptr));
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    return absl::UnavailableError(
        absl::StrCat("TLS: cannot load the system trust store: ", DrainErrors()));
  }
  SSL_CTX_set_verify(ctx, options.verify_peer ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);

  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS: a client certificate needs both cert_file and key_file");
  }
  if (!options.cert_file.empty()) {
    FG_RETURN_IF_ERROR(LoadCertificateAndKey(ctx, options.cert_file, options.key_file));
  }
  FG_ASSIGN_OR_RETURN(const std::string alpn_wire, AlpnWire(options.alpn));
  if (!alpn_wire.empty() &&
      SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(alpn_wire.data()),
                              static_cast<unsigned int>(alpn_wire.size())) != 0) {
    return absl::InternalError(absl::StrCat("TLS: ALPN: ", DrainErrors()));
  }
  impl->options = std::move(options);
  return std::shared_ptr<const TlsClientContext>(new TlsClientContext(std::move(impl)));
}

const TlsClientOptions& TlsClientContext::options() const { return impl_->options; }

absl::StatusOr<std::unique_ptr<TlsSession>> TlsClientContext::NewSession(
    absl::string_view server_name) const {
  std::string name(server_name);
  if (name.size() > 2 && name.front() == '[' && name.back() == ']')
    name = name.substr(1, name.size() - 2);
  const bool verify = impl_->options.verify_peer;
  if (verify && name.empty()) {
    return absl::InvalidArgumentError(
        "TLS: a server name is needed to verify the upstream's certificate");
  }
  FG_ASSIGN_OR_RETURN(SslPtr ssl, NewSsl(impl_->ctx.get()));
  SSL_set_connect_state(ssl.get());
  const bool is_ip = IsIpLiteral(name);
  // RFC 6066: SNI carries host names only, never address literals.
  if (!is_ip && !name.empty() && SSL_set_tlsext_host_name(ssl.get(), name.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS: server name '", name, "' cannot be sent as SNI: ", DrainErrors()));
  }
  if (verify) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str())
                         : X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size());
    if (ok != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("TLS: cannot verify against server name '", name, "': ", DrainErrors()));
    }
  }
  return std::unique_ptr<TlsSession>(new OpenSslSession(std::move(ssl), shared_from_this(),
                                                        /*is_client=*/true, verify, std::move(name),
                                                        nullptr));
}

}  // namespace flexgate::tls
