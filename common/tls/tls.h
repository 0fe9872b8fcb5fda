// FlexGate's one TLS interface: server contexts for the agent's listeners (certificate chosen by
// SNI), client contexts for upstream connections (peer verification), and a per-connection
// TlsSession that turns ciphertext into plaintext and back entirely in memory.
//
// Why this shape:
// - No sockets and no blocking inside. The event loop owns the socket; a session only consumes
//   bytes that were read (FeedCiphertext) and produces bytes to write (TakeCiphertext), so it
//   fits a libuv read callback / uv_write pair without any I/O of its own. See docs/TLS.md.
// - No OpenSSL types in this header. Debian's gRPC and libpq link OpenSSL 3, so that is the
//   implementation today (tls_openssl.cc); keeping the library behind this header lets a static
//   BoringSSL build replace it later without touching the engine.
// - Contexts are shared across worker threads. A client context is immutable. A server context
//   reloads its certificates in place (ReloadCertificates): the certificate set it holds is an
//   immutable snapshot behind one pointer, swapped whole; each session pins the snapshot it was
//   created from, so new handshakes present the new certificates while established connections
//   keep theirs. The pointer is read once per NewSession (one short lock per accepted
//   connection), never per read or write.
//
// Thread-safety: contexts are safe to use from any number of threads at once. A TlsSession
// belongs to one thread (the loop of its connection).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace flexgate::tls {

class TlsSession;

// One certificate a listener can present.
struct CertificateSpec {
  // Exact names ("api.example.com") or one-label wildcards ("*.example.org", which matches
  // "a.example.org" but neither "example.org" nor "a.b.example.org", as the certificate itself
  // would). Compared case-insensitively. Empty: this certificate is only a default candidate.
  std::vector<std::string> server_names;
  std::string cert_file;  // PEM: the leaf first, then intermediates
  std::string key_file;   // PEM, unencrypted (there is no one to type a passphrase)
};

struct TlsServerOptions {
  // Selection by SNI: exact name, then wildcard, then the default, which is the first
  // certificate with no server_names, or else the first certificate. At least one is required.
  std::vector<CertificateSpec> certificates;
  // Protocols offered through ALPN, in order of preference. A client whose ALPN list shares none
  // of them is refused with the no_application_protocol alert; a client that sends no ALPN is
  // served.
  std::vector<std::string> alpn = {"http/1.1"};
  // Mutual TLS: when set, every client must present a certificate that chains to one of the CA
  // certificates in this PEM file, or the handshake fails with an alert to the client. Empty:
  // client certificates are neither requested nor checked.
  std::string client_ca_file;
};

// Certificates and settings for accepted connections: TLS 1.2 and 1.3 only, forward-secret AEAD
// cipher suites only, no renegotiation, stateless session tickets for resumption.
//
// Create returns a mutable pointer so that its owner can reload the certificates; everyone else
// (the workers' listeners) holds a shared_ptr<const TlsServerContext> and only creates sessions.
class TlsServerContext {
 public:
  // Reads and checks every certificate and key file (disk I/O: call off the event loop).
  // Errors name the file and the reason: NotFound for a missing file, InvalidArgument for bad
  // PEM, an encrypted key, a key that does not match its certificate, or a bad server name.
  static absl::StatusOr<std::shared_ptr<TlsServerContext>> Create(TlsServerOptions options);

  // Re-reads every file of the options given to Create and, only if all of them load and check
  // out, makes the new certificates the ones that new sessions use (certificate rotation without
  // a restart). Sessions created before keep the certificates they started with until they end.
  // On error nothing changes and the previous certificates keep serving; the status names the
  // file and the reason, as Create's does. Disk I/O: call off the event loop. Safe to call
  // concurrently with NewSession from any thread; concurrent reloads are serialized.
  absl::Status ReloadCertificates();

  // A session for one accepted connection, with the certificates current at this moment.
  // Cheap (no I/O); fails only when out of memory.
  absl::StatusOr<std::unique_ptr<TlsSession>> NewSession() const;

  // Successful loads so far: 1 after Create, +1 per successful ReloadCertificates.
  uint64_t generation() const;

  // One line per configured certificate as currently loaded, in configuration order, for logs:
  // "CN=api.example.com, expires 2027-03-01T12:00:00Z, cert_file /etc/flexgate/api.crt".
  std::vector<std::string> DescribeCertificates() const;

  const TlsServerOptions& options() const;

  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  struct Impl;  // implementation detail, defined by the TLS library backend

 private:
  explicit TlsServerContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct TlsClientOptions {
  // PEM file of trusted CA certificates; empty = the system trust store.
  std::string ca_file;
  // Verify the server's chain and name. Off only for explicit "insecure" configurations.
  bool verify_peer = true;
  // Optional client certificate for mutual TLS; both or neither.
  std::string cert_file;
  std::string key_file;
  // Offered through ALPN; empty = no ALPN extension.
  std::vector<std::string> alpn = {"http/1.1"};
};

// Settings for outgoing connections (upstreams, the control plane when not through gRPC).
class TlsClientContext : public std::enable_shared_from_this<TlsClientContext> {
 public:
  // Loads the trust store and the optional client certificate (disk I/O: call off the loop).
  static absl::StatusOr<std::shared_ptr<const TlsClientContext>> Create(TlsClientOptions options);

  // A session for one connection to `server_name`: a DNS name (sent as SNI and verified against
  // the certificate) or an IP literal (verified against the certificate's IP addresses; not
  // sent as SNI). InvalidArgument when verification is on and the name is empty.
  absl::StatusOr<std::unique_ptr<TlsSession>> NewSession(absl::string_view server_name) const;

  const TlsClientOptions& options() const;

  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  struct Impl;

 private:
  explicit TlsClientContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// One TLS connection, driven by the caller's event loop:
//
//   socket read  -> FeedCiphertext(bytes) -> ReadPlaintext() until kWantMore -> HTTP parser
//   to send      -> WritePlaintext(bytes)
//   after ANY call above (the handshake, tickets and alerts also produce bytes):
//                   if (HasCiphertext()) TakeCiphertext(&buf) -> uv_write(buf)
//   socket EOF   -> FeedEof() -> ReadPlaintext() reports kClosed or a truncation error
//
// Plaintext written before the handshake finishes is queued and sent when it does. Once a call
// fails, the session stays failed: every later call reports the same status(), and whatever
// alert TLS wants to send is left in TakeCiphertext for a best-effort write before closing.
class TlsSession {
 public:
  enum class ReadResult {
    kData,      // `*bytes_read` > 0 bytes of plaintext were written to the buffer
    kWantMore,  // nothing to read until more ciphertext arrives (the handshake may be pending)
    kClosed,    // the peer sent close_notify: a clean end of the stream
    kError,     // the connection is unusable; status() says why
  };

  virtual ~TlsSession() = default;

  // Hands bytes read from the socket to TLS. The bytes are copied; nothing is decrypted yet.
  virtual void FeedCiphertext(absl::string_view bytes) = 0;

  // The socket reached end of file. Pending ciphertext is still processed first.
  virtual void FeedEof() = 0;

  // Advances the handshake if needed and decrypts up to `capacity` bytes into `buffer`.
  // Call repeatedly until it returns something other than kData. `capacity` must be > 0.
  virtual ReadResult ReadPlaintext(char* buffer, size_t capacity, size_t* bytes_read) = 0;

  // Encrypts `bytes` for the peer (queued until the handshake is done). Errors once the
  // session has failed or after Shutdown().
  virtual absl::Status WritePlaintext(absl::string_view bytes) = 0;

  // Sends close_notify. Later writes are refused; reads still work until the peer closes.
  virtual void Shutdown() = 0;

  // Bytes ready to be written to the socket.
  virtual bool HasCiphertext() const = 0;
  virtual size_t PendingCiphertextBytes() const = 0;
  // Appends every pending output byte to `*out` (reuse the string to avoid allocations) and
  // returns how many were appended.
  virtual size_t TakeCiphertext(std::string* out) = 0;

  // Client sessions: starts the handshake so that the ClientHello is ready to take; ReadPlaintext
  // does this too. Server sessions: no-op. Returns status().
  virtual absl::Status StartHandshake() = 0;

  virtual bool handshake_done() const = 0;
  // OK until something fails; then why, e.g. Unauthenticated "TLS handshake with
  // 'x.example.com' failed: certificate verification: hostname mismatch".
  virtual absl::Status status() const = 0;

  // Server sessions: the SNI name the client sent (empty if none). Client sessions: the name
  // passed to NewSession.
  virtual absl::string_view server_name() const = 0;
  // Server sessions: index into TlsServerOptions::certificates of the certificate presented
  // (-1 before the ClientHello). Client sessions: -1.
  virtual int certificate_index() const = 0;
  // True when the peer presented a certificate whose chain (and, for a client session, name)
  // was verified: the upstream's certificate, or a client certificate under client_ca_file.
  virtual bool peer_verified() const = 0;
  // The peer certificate's subject in one-line form ("CN=api.example.com"), empty if none.
  virtual std::string PeerCertificateSubject() const = 0;
  // The negotiated ALPN protocol ("http/1.1") or empty; "TLSv1.3" / "TLSv1.2" after handshake.
  virtual absl::string_view alpn_protocol() const = 0;
  virtual absl::string_view protocol_version() const = 0;
};

}  // namespace flexgate::tls
