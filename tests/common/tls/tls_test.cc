// Tests for common/tls: real OpenSSL handshakes between a client and a server TlsSession, with
// the ciphertext carried between them in memory. A throwaway PKI (a CA, a certificate for
// api.example.com, one for *.example.org, and an unrelated CA) is generated at test time.
#include "common/tls/tls.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>

#include <catch2/catch.hpp>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace flexgate::tls {
namespace {

using ReadResult = TlsSession::ReadResult;

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;

// A directory removed with everything in it when the test binary exits.
class TempDir {
 public:
  TempDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "flexgate-tls-XXXXXX").string();
    REQUIRE(mkdtemp(templ.data()) != nullptr);
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

void AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  REQUIRE(ext != nullptr);
  REQUIRE(X509_add_ext(cert, ext, -1) == 1);
  X509_EXTENSION_free(ext);
}

PkeyPtr NewKey() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  REQUIRE(key != nullptr);
  return key;
}

// Issues a certificate for `key`; self-signed when `issuer` is null.
X509Ptr Issue(EVP_PKEY* key, const std::string& cn, const std::string& san, X509* issuer,
              EVP_PKEY* issuer_key) {
  static long serial = 1;
  X509Ptr cert(X509_new());
  REQUIRE(cert != nullptr);
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  const bool is_ca = issuer == nullptr;
  X509* signer = is_ca ? cert.get() : issuer;
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  AddExtension(cert.get(), signer, NID_subject_key_identifier, "hash");
  if (is_ca) {
    AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
    AddExtension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    AddExtension(cert.get(), signer, NID_key_usage, "critical,digitalSignature");
    AddExtension(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
    AddExtension(cert.get(), signer, NID_subject_alt_name, san.c_str());
  }
  REQUIRE(X509_sign(cert.get(), is_ca ? key : issuer_key, EVP_sha256()) > 0);
  return cert;
}

void WriteCert(const std::string& path, X509* cert) {
  BIO* bio = BIO_new_file(path.c_str(), "w");
  REQUIRE(bio != nullptr);
  REQUIRE(PEM_write_bio_X509(bio, cert) == 1);
  BIO_free(bio);
}

void WriteKey(const std::string& path, EVP_PKEY* key, const char* passphrase = nullptr) {
  BIO* bio = BIO_new_file(path.c_str(), "w");
  REQUIRE(bio != nullptr);
  const EVP_CIPHER* cipher = passphrase != nullptr ? EVP_aes_128_cbc() : nullptr;
  REQUIRE(PEM_write_bio_PrivateKey(bio, key, cipher,
                                   reinterpret_cast<const unsigned char*>(passphrase),
                                   passphrase != nullptr ? static_cast<int>(strlen(passphrase)) : 0,
                                   nullptr, nullptr) == 1);
  BIO_free(bio);
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// The test PKI, generated once per test binary (EC keys make it take milliseconds).
struct Pki {
  TempDir dir;
  PkeyPtr ca_key, api_key, org_key, other_ca_key;
  X509Ptr ca, api, org, other_ca;

  Pki() {
    ca_key = NewKey();
    ca = Issue(ca_key.get(), "FlexGate Test CA", "", nullptr, nullptr);
    api_key = NewKey();
    api = Issue(api_key.get(), "api.example.com", "DNS:api.example.com", ca.get(), ca_key.get());
    org_key = NewKey();
    org = Issue(org_key.get(), "*.example.org", "DNS:*.example.org", ca.get(), ca_key.get());
    other_ca_key = NewKey();
    other_ca = Issue(other_ca_key.get(), "Unrelated CA", "", nullptr, nullptr);
    WriteCert(ca_file(), ca.get());
    WriteCert(dir.File("api.crt"), api.get());
    WriteKey(dir.File("api.key"), api_key.get());
    WriteCert(dir.File("org.crt"), org.get());
    WriteKey(dir.File("org.key"), org_key.get());
    WriteCert(other_ca_file(), other_ca.get());
  }

  std::string ca_file() const { return dir.File("ca.crt"); }
  std::string other_ca_file() const { return dir.File("other-ca.crt"); }

  TlsServerOptions ServerOptions() const {
    TlsServerOptions o;
    o.certificates.push_back({{"api.example.com"}, dir.File("api.crt"), dir.File("api.key")});
    o.certificates.push_back({{"*.example.org"}, dir.File("org.crt"), dir.File("org.key")});
    return o;
  }
};

const Pki& TestPki() {
  static const Pki pki;
  return pki;
}

std::shared_ptr<const TlsServerContext> Server() {
  auto ctx = TlsServerContext::Create(TestPki().ServerOptions());
  REQUIRE(ctx.ok());
  return *ctx;
}

std::shared_ptr<const TlsClientContext> Client(std::string ca_file, bool verify = true) {
  TlsClientOptions o;
  o.ca_file = std::move(ca_file);
  o.verify_peer = verify;
  auto ctx = TlsClientContext::Create(o);
  REQUIRE(ctx.ok());
  return *ctx;
}

// One side of an in-memory connection: what it has decrypted and how its last read ended.
struct Side {
  std::unique_ptr<TlsSession> session;
  std::string received;
  ReadResult last = ReadResult::kWantMore;

  void ReadAll() {
    char buf[16384];
    size_t n = 0;
    while ((last = session->ReadPlaintext(buf, sizeof buf, &n)) == ReadResult::kData) {
      received.append(buf, n);
    }
  }
};

// Carries ciphertext both ways and decrypts on both sides until neither side has anything
// left to send. Bounded so that a bug shows up as a failed assertion, not a hang.
void Pump(Side& client, Side& server) {
  std::string wire;
  for (int round = 0; round < 10000; ++round) {
    client.ReadAll();
    wire.clear();
    const size_t to_server = client.session->TakeCiphertext(&wire);
    server.session->FeedCiphertext(wire);
    server.ReadAll();
    wire.clear();
    const size_t to_client = server.session->TakeCiphertext(&wire);
    client.session->FeedCiphertext(wire);
    if (to_server == 0 && to_client == 0) {
      client.ReadAll();
      return;
    }
  }
  FAIL("the sessions kept exchanging bytes");
}

Side NewClient(const TlsClientContext& ctx, const std::string& name) {
  auto session = ctx.NewSession(name);
  REQUIRE(session.ok());
  Side side{std::move(*session), {}, ReadResult::kWantMore};
  REQUIRE(side.session->StartHandshake().ok());
  return side;
}

Side NewServer(const TlsServerContext& ctx) {
  auto session = ctx.NewSession();
  REQUIRE(session.ok());
  return Side{std::move(*session), {}, ReadResult::kWantMore};
}

std::string Pattern(size_t size, char seed) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = static_cast<char>(seed + (i * 31 + i / 977) % 251);
  return s;
}

TEST_CASE("handshake succeeds and SNI picks the exact-name certificate", "[tls]") {
  auto server_ctx = Server();
  auto client_ctx = Client(TestPki().ca_file());
  Side client = NewClient(*client_ctx, "api.example.com");
  Side server = NewServer(*server_ctx);
  CHECK(server.session->certificate_index() == -1);
  Pump(client, server);

  REQUIRE(client.session->status().ok());
  REQUIRE(server.session->status().ok());
  CHECK(client.session->handshake_done());
  CHECK(server.session->handshake_done());
  CHECK(client.session->peer_verified());
  CHECK(client.session->PeerCertificateSubject() == "CN=api.example.com");
  CHECK(std::string(server.session->server_name()) == "api.example.com");
  CHECK(server.session->certificate_index() == 0);
  CHECK(std::string(client.session->alpn_protocol()) == "http/1.1");
  CHECK(std::string(server.session->alpn_protocol()) == "http/1.1");
  CHECK(std::string(client.session->protocol_version()) == "TLSv1.3");
}

TEST_CASE("SNI picks the wildcard certificate for one label, the default otherwise", "[tls]") {
  auto server_ctx = Server();
  SECTION("one label under *.example.org gets the wildcard certificate") {
    auto client_ctx = Client(TestPki().ca_file());
    Side client = NewClient(*client_ctx, "Shop.Example.ORG");
    Side server = NewServer(*server_ctx);
    Pump(client, server);
    REQUIRE(client.session->status().ok());
    CHECK(client.session->peer_verified());
    CHECK(server.session->certificate_index() == 1);
    CHECK(client.session->PeerCertificateSubject() == "CN=*.example.org");
  }
  SECTION("two labels do not match the wildcard: the default (first) certificate is served") {
    auto client_ctx = Client(TestPki().ca_file(), /*verify=*/false);
    Side client = NewClient(*client_ctx, "a.b.example.org");
    Side server = NewServer(*server_ctx);
    Pump(client, server);
    REQUIRE(client.session->status().ok());
    CHECK(server.session->certificate_index() == 0);
    CHECK_FALSE(client.session->peer_verified());  // verification was off
  }
  SECTION("no SNI at all (an IP literal) gets the default certificate") {
    auto client_ctx = Client(TestPki().ca_file(), /*verify=*/false);
    Side client = NewClient(*client_ctx, "127.0.0.1");
    Side server = NewServer(*server_ctx);
    Pump(client, server);
    REQUIRE(server.session->status().ok());
    CHECK(server.session->server_name().empty());
    CHECK(server.session->certificate_index() == 0);
  }
}

TEST_CASE("a certificate with no names is the default", "[tls]") {
  TlsServerOptions o = TestPki().ServerOptions();
  o.certificates[1].server_names.clear();
  auto server_ctx = TlsServerContext::Create(o);
  REQUIRE(server_ctx.ok());
  auto client_ctx = Client(TestPki().ca_file(), /*verify=*/false);
  Side client = NewClient(*client_ctx, "unknown.example.net");
  Side server = NewServer(**server_ctx);
  Pump(client, server);
  REQUIRE(server.session->status().ok());
  CHECK(server.session->certificate_index() == 1);
}

TEST_CASE("ALPN: http/1.1 is chosen, a client without ALPN is served, no overlap is refused",
          "[tls]") {
  auto server_ctx = Server();
  TlsClientOptions o;
  o.ca_file = TestPki().ca_file();
  SECTION("no ALPN from the client") {
    o.alpn.clear();
    auto client_ctx = TlsClientContext::Create(o);
    REQUIRE(client_ctx.ok());
    Side client = NewClient(**client_ctx, "api.example.com");
    Side server = NewServer(*server_ctx);
    Pump(client, server);
    REQUIRE(server.session->status().ok());
    CHECK(client.session->handshake_done());
    CHECK(server.session->alpn_protocol().empty());
  }
  SECTION("only h2 offered") {
    o.alpn = {"h2"};
    auto client_ctx = TlsClientContext::Create(o);
    REQUIRE(client_ctx.ok());
    Side client = NewClient(**client_ctx, "api.example.com");
    Side server = NewServer(*server_ctx);
    Pump(client, server);
    CHECK(server.last == ReadResult::kError);
    CHECK(client.last == ReadResult::kError);
    CHECK_THAT(std::string(client.session->status().message()),
               Catch::Contains("no application protocol"));
  }
}

TEST_CASE("verification fails clearly for a wrong name", "[tls]") {
  auto server_ctx = Server();
  auto client_ctx = Client(TestPki().ca_file());
  Side client = NewClient(*client_ctx, "wrong.example.com");
  Side server = NewServer(*server_ctx);
  Pump(client, server);

  const absl::Status st = client.session->status();
  CHECK(st.code() == absl::StatusCode::kUnauthenticated);
  CHECK_THAT(std::string(st.message()),
             Catch::Contains("hostname mismatch") && Catch::Contains("wrong.example.com"));
  CHECK(client.last == ReadResult::kError);
  CHECK_FALSE(client.session->peer_verified());
  // The server learns why from the client's alert.
  CHECK(server.last == ReadResult::kError);
  CHECK_THAT(std::string(server.session->status().message()), Catch::Contains("alert"));
  // A failed session refuses further use with the same status.
  CHECK(client.session->WritePlaintext("x") == st);
}

TEST_CASE("verification fails clearly for an untrusted CA", "[tls]") {
  auto server_ctx = Server();
  auto client_ctx = Client(TestPki().other_ca_file());
  Side client = NewClient(*client_ctx, "api.example.com");
  Side server = NewServer(*server_ctx);
  Pump(client, server);

  const absl::Status st = client.session->status();
  CHECK(st.code() == absl::StatusCode::kUnauthenticated);
  CHECK_THAT(std::string(st.message()), Catch::Contains("not issued by a trusted CA"));
  CHECK(server.last == ReadResult::kError);
  CHECK_THAT(std::string(server.session->status().message()), Catch::Contains("unknown ca"));
}

TEST_CASE("1 MiB of plaintext round-trips in both directions", "[tls]") {
  auto server_ctx = Server();
  auto client_ctx = Client(TestPki().ca_file());
  Side client = NewClient(*client_ctx, "api.example.com");
  Side server = NewServer(*server_ctx);
  const std::string request = Pattern(1 << 20, 'a');
  const std::string response = Pattern(1 << 20, 'k');

  // The client writes before the handshake is done: its bytes are queued, then sent.
  REQUIRE(client.session->WritePlaintext(absl::string_view(request).substr(0, 1000)).ok());
  Pump(client, server);
  REQUIRE(client.session->handshake_done());
  REQUIRE(client.session->WritePlaintext(absl::string_view(request).substr(1000)).ok());
  // Written in odd-sized pieces, the way a proxy forwards what it has.
  for (size_t off = 0; off < response.size(); off += 70001) {
    REQUIRE(server.session->WritePlaintext(absl::string_view(response).substr(off, 70001)).ok());
  }
  Pump(client, server);

  REQUIRE(server.session->status().ok());
  REQUIRE(client.session->status().ok());
  CHECK(server.received.size() == request.size());
  CHECK(server.received == request);
  CHECK(client.received.size() == response.size());
  CHECK(client.received == response);
}

TEST_CASE("close_notify ends the stream cleanly; a bare EOF is a truncation", "[tls]") {
  auto server_ctx = Server();
  auto client_ctx = Client(TestPki().ca_file());
  Side client = NewClient(*client_ctx, "api.example.com");
  Side server = NewServer(*server_ctx);
  Pump(client, server);
  REQUIRE(client.session->handshake_done());

  SECTION("clean close") {
    REQUIRE(client.session->WritePlaintext("bye").ok());
    client.session->Shutdown();
    CHECK_FALSE(client.session->WritePlaintext("more").ok());
    Pump(client, server);
    CHECK(server.received == "bye");
    CHECK(server.last == ReadResult::kClosed);
    CHECK(server.session->status().ok());
  }
  SECTION("half a record, then EOF") {
    REQUIRE(client.session->WritePlaintext(std::string(1000, 'x')).ok());
    std::string wire;
    client.session->TakeCiphertext(&wire);
    server.session->FeedCiphertext(absl::string_view(wire).substr(0, wire.size() / 2));
    server.ReadAll();
    CHECK(server.last == ReadResult::kWantMore);
    server.session->FeedEof();
    server.ReadAll();
    CHECK(server.last == ReadResult::kError);
    CHECK(server.session->status().code() == absl::StatusCode::kDataLoss);
    CHECK_THAT(std::string(server.session->status().message()), Catch::Contains("close_notify"));
  }
}

TEST_CASE("garbage and tampered records are errors, never crashes", "[tls]") {
  auto server_ctx = Server();
  SECTION("plain HTTP sent to a TLS listener") {
    Side server = NewServer(*server_ctx);
    server.session->FeedCiphertext("GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
    server.ReadAll();
    CHECK(server.last == ReadResult::kError);
    CHECK_THAT(std::string(server.session->status().message()),
               Catch::StartsWith("TLS handshake failed: "));
    // Later input is ignored; the status does not change.
    const absl::Status first = server.session->status();
    server.session->FeedCiphertext(std::string(100, '\x16'));
    server.ReadAll();
    CHECK(server.session->status() == first);
  }
  SECTION("random bytes in a record header") {
    Side server = NewServer(*server_ctx);
    server.session->FeedCiphertext(std::string("\x16\x03\x01\xff\xff", 5) + std::string(64, 'z'));
    server.ReadAll();
    server.session->FeedCiphertext(std::string(70000, '\xee'));
    server.ReadAll();
    CHECK(server.last == ReadResult::kError);
    CHECK_FALSE(server.session->status().ok());
  }
  SECTION("a flipped bit in application data") {
    auto client_ctx = Client(TestPki().ca_file());
    Side client = NewClient(*client_ctx, "api.example.com");
    Side server = NewServer(*server_ctx);
    Pump(client, server);
    REQUIRE(client.session->WritePlaintext("secret").ok());
    std::string wire;
    client.session->TakeCiphertext(&wire);
    REQUIRE(wire.size() > 10);
    wire[wire.size() - 3] ^= 0x01;
    server.session->FeedCiphertext(wire);
    server.ReadAll();
    CHECK(server.last == ReadResult::kError);
    CHECK(server.received.empty());
    CHECK_THAT(std::string(server.session->status().message()), Catch::Contains("bad record mac"));
  }
}

TEST_CASE("bad certificate and key files give clear errors", "[tls]") {
  const Pki& pki = TestPki();
  TlsServerOptions o = pki.ServerOptions();

  SECTION("missing key file") {
    o.certificates[0].key_file = pki.dir.File("missing.key");
    auto ctx = TlsServerContext::Create(o);
    REQUIRE_FALSE(ctx.ok());
    CHECK(ctx.status().code() == absl::StatusCode::kNotFound);
    CHECK_THAT(std::string(ctx.status().message()), Catch::Contains("missing.key"));
  }
  SECTION("garbage key file") {
    WriteText(pki.dir.File("garbage.key"), "this is not a key\n");
    o.certificates[0].key_file = pki.dir.File("garbage.key");
    auto ctx = TlsServerContext::Create(o);
    REQUIRE_FALSE(ctx.ok());
    CHECK(ctx.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(ctx.status().message()),
               Catch::Contains("no PEM private key") && Catch::Contains("garbage.key"));
  }
  SECTION("key of another certificate") {
    o.certificates[0].key_file = pki.dir.File("org.key");
    auto ctx = TlsServerContext::Create(o);
    REQUIRE_FALSE(ctx.ok());
    CHECK_THAT(std::string(ctx.status().message()), Catch::Contains("does not match"));
  }
  SECTION("encrypted key") {
    WriteKey(pki.dir.File("enc.key"), pki.api_key.get(), "passphrase");
    o.certificates[0].key_file = pki.dir.File("enc.key");
    auto ctx = TlsServerContext::Create(o);
    REQUIRE_FALSE(ctx.ok());
    CHECK_THAT(std::string(ctx.status().message()), Catch::Contains("is encrypted"));
  }
  SECTION("certificate file that holds a key") {
    o.certificates[0].cert_file = pki.dir.File("api.key");
    auto ctx = TlsServerContext::Create(o);
    REQUIRE_FALSE(ctx.ok());
    CHECK_THAT(std::string(ctx.status().message()), Catch::Contains("no PEM certificate"));
  }
  SECTION("bad and duplicate server names, no certificates") {
    o.certificates[0].server_names = {"api*.example.com"};
    CHECK_THAT(std::string(TlsServerContext::Create(o).status().message()),
               Catch::Contains("bad server name"));
    o.certificates[0].server_names = {"*.example.org"};
    CHECK_THAT(std::string(TlsServerContext::Create(o).status().message()),
               Catch::Contains("listed for certificates 0 and 1"));
    CHECK_FALSE(TlsServerContext::Create(TlsServerOptions{}).ok());
  }
  SECTION("client context: CA file without certificates, half a client certificate") {
    TlsClientOptions c;
    c.ca_file = pki.dir.File("api.key");
    CHECK_THAT(std::string(TlsClientContext::Create(c).status().message()),
               Catch::Contains("no PEM certificate in CA file"));
    c.ca_file = pki.ca_file();
    c.cert_file = pki.dir.File("api.crt");
    CHECK_FALSE(TlsClientContext::Create(c).ok());
    auto ok = Client(pki.ca_file());
    CHECK(ok->NewSession("").status().code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("reload in place: new sessions get the new certificate and old sessions keep theirs",
          "[tls]") {
  const Pki& pki = TestPki();
  TempDir dir;
  TlsServerOptions o;
  o.certificates.push_back({{"api.example.com"}, dir.File("live.crt"), dir.File("live.key")});
  WriteCert(dir.File("live.crt"), pki.api.get());
  WriteKey(dir.File("live.key"), pki.api_key.get());
  auto created = TlsServerContext::Create(o);
  REQUIRE(created.ok());
  std::shared_ptr<TlsServerContext> ctx = *created;
  CHECK(ctx->generation() == 1);
  auto client_ctx = Client(pki.ca_file());

  Side old_client = NewClient(*client_ctx, "api.example.com");
  Side old_server = NewServer(*ctx);
  Pump(old_client, old_server);
  REQUIRE(old_client.session->peer_verified());

  // A session created before the reload whose handshake has not even started: it was bound to
  // the certificates current when it was created.
  Side early_server = NewServer(*ctx);

  // Rotate: a new key and certificate for the same name, written over the live files. The
  // subject differs only so that the test can tell which certificate was presented.
  PkeyPtr new_key = NewKey();
  X509Ptr new_cert =
      Issue(new_key.get(), "rotated", "DNS:api.example.com", pki.ca.get(), pki.ca_key.get());
  WriteCert(dir.File("live.crt"), new_cert.get());
  WriteKey(dir.File("live.key"), new_key.get());
  REQUIRE(ctx->ReloadCertificates().ok());
  CHECK(ctx->generation() == 2);
  REQUIRE(ctx->DescribeCertificates().size() == 1);
  CHECK_THAT(ctx->DescribeCertificates()[0], Catch::StartsWith("CN=rotated, expires 20"));
  CHECK_THAT(ctx->DescribeCertificates()[0], Catch::EndsWith("live.crt"));

  Side new_client = NewClient(*client_ctx, "api.example.com");
  Side new_server = NewServer(*ctx);
  Pump(new_client, new_server);
  REQUIRE(new_client.session->peer_verified());
  CHECK(new_client.session->PeerCertificateSubject() == "CN=rotated");
  CHECK(old_client.session->PeerCertificateSubject() == "CN=api.example.com");
  // The connection made before the reload keeps working on the old certificates.
  REQUIRE(old_client.session->WritePlaintext("still here").ok());
  Pump(old_client, old_server);
  CHECK(old_server.received == "still here");

  Side early_client = NewClient(*client_ctx, "api.example.com");
  Pump(early_client, early_server);
  REQUIRE(early_client.session->status().ok());
  CHECK(early_client.session->PeerCertificateSubject() == "CN=api.example.com");

  SECTION("a broken key file: the reload fails, nothing changes") {
    WriteText(dir.File("live.key"), "broken");
    absl::Status s = ctx->ReloadCertificates();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::Contains("live.key"));
  }
  SECTION("a key that does not match the certificate: the reload fails, nothing changes") {
    WriteKey(dir.File("live.key"), pki.org_key.get());
    absl::Status s = ctx->ReloadCertificates();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::Contains("does not match the certificate"));
  }
  SECTION("a missing certificate file: the reload fails, nothing changes") {
    std::filesystem::remove(dir.File("live.crt"));
    absl::Status s = ctx->ReloadCertificates();
    CHECK(s.code() == absl::StatusCode::kNotFound);
    CHECK_THAT(std::string(s.message()), Catch::Contains("live.crt"));
  }
  CHECK(ctx->generation() == 2);
  Side after_client = NewClient(*client_ctx, "api.example.com");
  Side after_server = NewServer(*ctx);
  Pump(after_client, after_server);
  REQUIRE(after_client.session->peer_verified());
  CHECK(after_client.session->PeerCertificateSubject() == "CN=rotated");
}

TEST_CASE("reloads and new sessions from several threads at once", "[tls]") {
  // Sessions are created on worker threads while the control thread reloads: every session gets
  // one complete certificate set, and the old sets are freed when their last session ends (ASan
  // and the handshakes below would notice otherwise).
  auto ctx = TlsServerContext::Create(TestPki().ServerOptions());
  REQUIRE(ctx.ok());
  std::shared_ptr<TlsServerContext> server = *ctx;
  auto client_ctx = Client(TestPki().ca_file());
  std::atomic<bool> stop{false};
  std::atomic<int> handshakes{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      while (!stop.load()) {
        auto c = client_ctx->NewSession("shop.example.org");
        auto s = server->NewSession();
        if (!c.ok() || !s.ok()) {
          ++failures;
          continue;
        }
        Side client{*std::move(c), {}, ReadResult::kWantMore};
        Side srv{*std::move(s), {}, ReadResult::kWantMore};
        (void)client.session->StartHandshake();
        std::string wire;
        for (int round = 0; round < 20 && !client.session->handshake_done(); ++round) {
          client.ReadAll();
          wire.clear();
          client.session->TakeCiphertext(&wire);
          srv.session->FeedCiphertext(wire);
          srv.ReadAll();
          wire.clear();
          srv.session->TakeCiphertext(&wire);
          client.session->FeedCiphertext(wire);
          client.ReadAll();
        }
        if (client.session->peer_verified() &&
            client.session->PeerCertificateSubject() == "CN=*.example.org") {
          ++handshakes;
        } else {
          ++failures;
        }
      }
    });
  }
  int reloads = 0;
  for (; reloads < 20; ++reloads) REQUIRE(server->ReloadCertificates().ok());
  // Let the handshakes overlap the reloads, then stop.
  while (handshakes.load() < 20 && failures.load() == 0) std::this_thread::yield();
  stop.store(true);
  for (auto& t : threads) t.join();
  CHECK(failures.load() == 0);
  CHECK(server->generation() == 1 + static_cast<uint64_t>(reloads));
}

TEST_CASE("a server context with client_ca_file requires a client certificate", "[tls]") {
  const Pki& pki = TestPki();
  TlsServerOptions so = pki.ServerOptions();
  so.client_ca_file = pki.ca_file();
  auto server_ctx = TlsServerContext::Create(so);
  INFO(server_ctx.status().ToString());
  REQUIRE(server_ctx.ok());

  SECTION("a client with a certificate from that CA is verified") {
    TlsClientOptions co;
    co.ca_file = pki.ca_file();
    co.cert_file = pki.dir.File("org.crt");  // any certificate of the CA will do
    co.key_file = pki.dir.File("org.key");
    auto client_ctx = TlsClientContext::Create(co);
    REQUIRE(client_ctx.ok());
    Side client = NewClient(**client_ctx, "api.example.com");
    Side server = NewServer(**server_ctx);
    REQUIRE(client.session->WritePlaintext("hello").ok());
    Pump(client, server);
    REQUIRE(server.session->status().ok());
    CHECK(server.session->peer_verified());
    CHECK(server.session->PeerCertificateSubject() == "CN=*.example.org");
    CHECK(server.received == "hello");
  }
  SECTION("a client without a certificate is refused") {
    auto client_ctx = Client(pki.ca_file());
    Side client = NewClient(*client_ctx, "api.example.com");
    Side server = NewServer(**server_ctx);
    (void)client.session->WritePlaintext("hello");
    Pump(client, server);
    CHECK_FALSE(server.session->status().ok());
    CHECK(server.received.empty());
    // TLS 1.3: the client finished its side of the handshake before the server refused; the
    // server's alert arrives as an error on the client's next read.
    CHECK_FALSE(client.session->status().ok());
  }
  SECTION("a client certificate from another CA is refused") {
    TempDir other;
    PkeyPtr key = NewKey();
    X509Ptr cert = Issue(key.get(), "stranger", "DNS:stranger.example.com", pki.other_ca.get(),
                         pki.other_ca_key.get());
    WriteCert(other.File("c.crt"), cert.get());
    WriteKey(other.File("c.key"), key.get());
    TlsClientOptions co;
    co.ca_file = pki.ca_file();
    co.cert_file = other.File("c.crt");
    co.key_file = other.File("c.key");
    auto client_ctx = TlsClientContext::Create(co);
    REQUIRE(client_ctx.ok());
    Side client = NewClient(**client_ctx, "api.example.com");
    Side server = NewServer(**server_ctx);
    (void)client.session->WritePlaintext("hello");
    Pump(client, server);
    CHECK_FALSE(server.session->status().ok());
    CHECK(server.received.empty());
  }
  SECTION("a bad client CA file stops Create") {
    so.client_ca_file = pki.dir.File("missing-ca.crt");
    CHECK(TlsServerContext::Create(so).status().code() == absl::StatusCode::kNotFound);
  }
}

}  // namespace
}  // namespace flexgate::tls
