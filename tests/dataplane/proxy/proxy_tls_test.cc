// TLS on the request path, over real sockets: a TLS listener that picks its certificate by SNI,
// plain HTTP sent to it, a handshake that never finishes, and upstream TLS with verification that
// succeeds, fails (wrong CA, wrong name) and is skipped on purpose. Certificates are generated at
// test time (TestPki); the client is OpenSSL used directly (TlsTestClient), not common/tls.
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "common/tls/tls.h"
#include "proxy_test_env.h"
#include "tests/harness/http/test_pki.h"
#include "tests/harness/http/tls_client.h"

namespace flexgate::dataplane::test {
namespace {

using flexgate::testing::HttpGet;
using flexgate::testing::TestPki;
using flexgate::testing::TlsTestClient;
using flexgate::testing::TlsTestClientOptions;

struct Certs {
  std::unique_ptr<TestPki> pki;
  std::unique_ptr<TestPki> other;  // an unrelated CA: its certificates are not trusted
  TestPki::Leaf api, org, upstream_ip, upstream_name, untrusted, client;

  Certs() {
    auto p = TestPki::Create();
    REQUIRE(p.ok());
    pki = *std::move(p);
    auto o = TestPki::Create("Unrelated CA");
    REQUIRE(o.ok());
    other = *std::move(o);
    auto issue = [](TestPki& ca, const std::string& stem, std::vector<std::string> names) {
      auto leaf = ca.Issue(stem, names);
      REQUIRE(leaf.ok());
      return *leaf;
    };
    api = issue(*pki, "api", {"api.example.com"});
    org = issue(*pki, "org", {"*.example.org"});
    upstream_ip = issue(*pki, "up-ip", {"127.0.0.1"});
    upstream_name = issue(*pki, "up-name", {"backend.internal"});
    untrusted = issue(*other, "untrusted", {"127.0.0.1"});
    client = issue(*pki, "proxy-client", {"flexgate-proxy.internal"});
  }

  std::shared_ptr<tls::TlsServerContext> ListenerContext() const {
    tls::TlsServerOptions o;
    o.certificates.push_back({{"api.example.com"}, api.cert_file, api.key_file});
    o.certificates.push_back({{"*.example.org"}, org.cert_file, org.key_file});
    auto ctx = tls::TlsServerContext::Create(o);
    INFO(ctx.status().ToString());
    REQUIRE(ctx.ok());
    return *ctx;
  }

  // A server context with one certificate; with `client_ca`, it requires client certificates
  // issued by that CA (an upstream that wants mutual TLS).
  static std::shared_ptr<const tls::TlsServerContext> Single(const TestPki::Leaf& leaf,
                                                             const std::string& client_ca = "") {
    tls::TlsServerOptions o;
    o.certificates.push_back({{}, leaf.cert_file, leaf.key_file});
    o.client_ca_file = client_ca;
    auto ctx = tls::TlsServerContext::Create(o);
    REQUIRE(ctx.ok());
    return *ctx;
  }
};

const Certs& TestCerts() {
  static const Certs certs;
  return certs;
}

// A proxy with one TLS listener (index 0) and one plain listener (index 1), over `upstreams`.
// The TLS listener serves `listener` (default: the api.example.com / *.example.org pair).
class TlsProxy {
 public:
  TlsProxy(const std::string& yaml, std::vector<std::unique_ptr<TestUpstream>> upstreams,
           ProxyLimits limits = {}, int workers = 1,
           std::shared_ptr<tls::TlsServerContext> listener = nullptr)
      : ups_(std::move(upstreams)) {
    std::vector<uint16_t> ports;
    for (auto& u : ups_) ports.push_back(u->port());
    ProxyServerOptions opts;
    opts.listen_addresses = {"127.0.0.1:0", "127.0.0.1:0"};
    opts.listen_tls = {listener != nullptr ? listener : TestCerts().ListenerContext(), nullptr};
    opts.workers = workers;
    opts.limits = limits;
    auto proxy = ProxyServer::Create(opts);
    REQUIRE(proxy.ok());
    proxy_ = *std::move(proxy);
    std::string text = absl::StrReplaceAll(
        yaml, {{"{CA}", TestCerts().pki->ca_file()},
               {"{OTHER_CA}", TestCerts().other->ca_file()},
               {"{CLIENT_CERT}", TestCerts().client.cert_file},
               {"{CLIENT_KEY}", TestCerts().client.key_file}});
    absl::Notification done;
    proxy_->UpdateRouteTable(CompileYaml(text, ports), [&] { done.Notify(); });
    REQUIRE(done.WaitForNotificationWithTimeout(absl::Seconds(5)));
    REQUIRE(proxy_->Start().ok());
    tls_port_ = proxy_->listen_port(0);
    plain_port_ = proxy_->listen_port(1);
  }
  ~TlsProxy() {
    proxy_->Drain(absl::Seconds(2));
    CHECK(proxy_->LoopsClosedCleanly());
  }

  std::unique_ptr<TlsTestClient> Client(const std::string& sni) {
    TlsTestClientOptions o;
    o.sni = sni;
    o.ca_file = TestCerts().pki->ca_file();
    auto c = TlsTestClient::Connect("127.0.0.1", tls_port_, o);
    INFO(c.status().ToString());
    REQUIRE(c.ok());
    return *std::move(c);
  }

  ProxyServer& proxy() { return *proxy_; }
  TestUpstream& up(size_t i) { return *ups_[i]; }
  // Replaces upstream `i` (e.g. by a new server on the port of a stopped one).
  void ReplaceUpstream(size_t i, std::unique_ptr<TestUpstream> u) { ups_[i] = std::move(u); }
  uint16_t tls_port() const { return tls_port_; }
  uint16_t plain_port() const { return plain_port_; }

 private:
  std::vector<std::unique_ptr<TestUpstream>> ups_;
  std::unique_ptr<ProxyServer> proxy_;
  uint16_t tls_port_ = 0, plain_port_ = 0;
};

std::vector<std::unique_ptr<TestUpstream>> PlainUpstream() {
  std::vector<std::unique_ptr<TestUpstream>> v;
  auto u = TestUpstream::Start("u0");
  REQUIRE(u.ok());
  v.push_back(*std::move(u));
  return v;
}

std::vector<std::unique_ptr<TestUpstream>> TlsUpstreams() {
  std::vector<std::unique_ptr<TestUpstream>> v;
  auto a = TestUpstream::StartTls("tls-ip", Certs::Single(TestCerts().upstream_ip));
  REQUIRE(a.ok());
  v.push_back(*std::move(a));
  auto b = TestUpstream::StartTls("tls-name", Certs::Single(TestCerts().upstream_name));
  REQUIRE(b.ok());
  v.push_back(*std::move(b));
  auto c = TestUpstream::StartTls("tls-untrusted", Certs::Single(TestCerts().untrusted));
  REQUIRE(c.ok());
  v.push_back(*std::move(c));
  return v;
}

constexpr char kPlainUpstreamConfig[] = R"(
clusters:
  - name: c0
    endpoints: [{ address: 127.0.0.1, port: {P0} }]
routes:
  - { name: moved, match: { path: { prefix: /old } }, redirect: { path: /new } }
  - { name: all, match: { path: { prefix: / } }, cluster: c0 }
)";

TEST_CASE("a TLS listener presents the certificate chosen by SNI and proxies requests") {
  TlsProxy p(kPlainUpstreamConfig, PlainUpstream());

  auto api = p.Client("api.example.com");
  CHECK(api->PeerCommonName() == "api.example.com");
  auto r = api->Get("/hello", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == "u0 GET /hello\n");
  // Keep-alive on the same TLS connection; the upstream learns the client used https.
  r = api->Get("/headers", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(absl::StrContains(r->body, "x-forwarded-proto: https"));
  // A body larger than one TLS record and than one read.
  r = api->Get("/big?kb=512", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body.size() == 512 * 1024);
  // A redirect without a configured scheme keeps https.
  r = api->Get("/old", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->status / 100 == 3);
  CHECK(r->Header("location") == "https://api.example.com/new");

  auto org = p.Client("www.example.org");
  CHECK(org->PeerCommonName() == "*.example.org");
  r = org->Get("/x", "www.example.org");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == "u0 GET /x\n");

  // The plain listener of the same proxy still says http.
  auto plain = HttpClient::Connect("127.0.0.1", p.plain_port());
  REQUIRE(plain.ok());
  auto pr = plain->Get("/headers");
  REQUIRE(pr.ok());
  CHECK(absl::StrContains(pr->body, "x-forwarded-proto: http"));
  CHECK_FALSE(absl::StrContains(pr->body, "x-forwarded-proto: https"));

  ProxyStats st = p.proxy().CollectStats();
  CHECK(st.downstream_tls_handshakes == 2);
  CHECK(st.downstream_tls_handshake_failures == 0);
}

TEST_CASE("a POST body streams through a TLS listener") {
  TlsProxy p(kPlainUpstreamConfig, PlainUpstream());
  auto c = p.Client("api.example.com");
  std::string body(300 * 1024, 'b');
  for (size_t i = 0; i < body.size(); i += 997) body[i] = static_cast<char>('a' + i % 26);
  REQUIRE(c->SendRaw("POST /echo HTTP/1.1\r\nhost: api.example.com\r\ncontent-length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body)
              .ok());
  auto r = c->ReadResponse();
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == body);
}

TEST_CASE("plain HTTP sent to a TLS listener is refused and the listener keeps serving") {
  TlsProxy p(kPlainUpstreamConfig, PlainUpstream());
  auto plain = HttpClient::Connect("127.0.0.1", p.tls_port());
  REQUIRE(plain.ok());
  REQUIRE(plain->SendRaw("GET / HTTP/1.1\r\nHost: a\r\n\r\n").ok());
  // The answer is at most a TLS alert, never an HTTP response, then the connection closes.
  CHECK(plain->WaitForClose(absl::Seconds(5)));
  CHECK(WaitUntil([&] { return p.proxy().CollectStats().downstream_tls_handshake_failures == 1; }));
  CHECK(p.up(0).requests() == 0);

  auto c = p.Client("api.example.com");
  auto r = c->Get("/after", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
}

TEST_CASE("a TLS handshake that does not finish is closed at the header timeout") {
  ProxyLimits limits;
  limits.header_timeout = absl::Milliseconds(300);
  TlsProxy p(kPlainUpstreamConfig, PlainUpstream(), limits);
  auto silent = HttpClient::Connect("127.0.0.1", p.tls_port());
  REQUIRE(silent.ok());
  // The start of a TLS record (handshake, TLS 1.0 record version) and nothing more.
  REQUIRE(silent->SendRaw(std::string("\x16\x03\x01\x02\x00", 5)).ok());
  absl::Time start = absl::Now();
  CHECK(silent->WaitForClose(absl::Seconds(5)));
  CHECK(absl::Now() - start < absl::Seconds(3));
  auto c = p.Client("api.example.com");
  CHECK(c->Get("/", "api.example.com").ok());
}

constexpr char kTlsUpstreamConfig[] = R"(
clusters:
  - name: by-ip
    endpoints: [{ address: 127.0.0.1, port: {P0} }]
    tls: { enabled: true, ca_file: "{CA}" }
  - name: by-name
    endpoints: [{ address: 127.0.0.1, port: {P1} }]
    tls: { enabled: true, ca_file: "{CA}", sni: backend.internal }
  - name: wrong-ca
    endpoints: [{ address: 127.0.0.1, port: {P0} }]
    tls: { enabled: true, ca_file: "{OTHER_CA}" }
  - name: wrong-name
    endpoints: [{ address: 127.0.0.1, port: {P1} }]
    tls: { enabled: true, ca_file: "{CA}", sni: other.internal }
  - name: untrusted-insecure
    endpoints: [{ address: 127.0.0.1, port: {P2} }]
    tls: { enabled: true, insecure_skip_verify: true }
  - name: plain-to-tls
    endpoints: [{ address: 127.0.0.1, port: {P0} }]
routes:
  - { name: raw, match: { path: { prefix: /raw/ } }, cluster: by-ip, prefix_rewrite: / }
  - { name: ip, match: { path: { prefix: /ip/ } }, cluster: by-ip }
  - { name: name, match: { path: { prefix: /name/ } }, cluster: by-name }
  - { name: ca, match: { path: { prefix: /wrong-ca/ } }, cluster: wrong-ca }
  - { name: wn, match: { path: { prefix: /wrong-name/ } }, cluster: wrong-name }
  - { name: insecure, match: { path: { prefix: /insecure/ } }, cluster: untrusted-insecure }
  - { name: plain, match: { path: { prefix: /plain/ } }, cluster: plain-to-tls }
)";

TEST_CASE("upstream TLS: verified connections are proxied and pooled") {
  TlsProxy p(kTlsUpstreamConfig, TlsUpstreams());
  auto c = HttpClient::Connect("127.0.0.1", p.plain_port());
  REQUIRE(c.ok());
  for (int i = 0; i < 3; ++i) {
    auto r = c->Get("/ip/" + std::to_string(i));
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(r->body == "tls-ip GET /ip/" + std::to_string(i) + "\n");
  }
  // One worker, sequential requests: one pooled TLS connection served all three.
  CHECK(p.up(0).connections() == 1);
  CHECK(p.up(0).requests() == 3);

  auto r = c->Get("/name/x");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == "tls-name GET /name/x\n");

  // Large responses and request bodies cross TLS both ways.
  r = c->Get("/raw/big?kb=300");
  REQUIRE(r.ok());
  CHECK(r->body.size() == 300 * 1024);
  HttpRequest post;
  post.method = "POST";
  post.path = "/raw/echo";
  post.body = std::string(200 * 1024, 'p');
  post.chunked = true;
  r = c->RoundTrip(post);
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == post.body);

  // TLS on both sides at once.
  auto t = p.Client("api.example.com");
  r = t->Get("/name/both", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->body == "tls-name GET /name/both\n");
  CHECK(p.proxy().CollectStats().upstream_tls_failures == 0);
}

TEST_CASE("upstream TLS: a certificate that does not verify gets 502 and is counted") {
  TlsProxy p(kTlsUpstreamConfig, TlsUpstreams());
  auto r = HttpGet(p.plain_port(), "/wrong-ca/x");
  REQUIRE(r.ok());
  CHECK(r->status == 502);
  INFO(r->body);
  CHECK(absl::StrContains(r->body, "upstream TLS error"));
  CHECK(absl::StrContains(r->body, "certificate verification"));
  CHECK(p.proxy().CollectStats().upstream_tls_failures == 1);

  r = HttpGet(p.plain_port(), "/wrong-name/x");
  REQUIRE(r.ok());
  CHECK(r->status == 502);
  CHECK(absl::StrContains(r->body, "other.internal"));
  CHECK(p.proxy().CollectStats().upstream_tls_failures == 2);
  CHECK(p.up(0).requests() == 0);
  CHECK(p.up(1).requests() == 0);

  // Verification turned off on purpose accepts the untrusted certificate.
  r = HttpGet(p.plain_port(), "/insecure/y");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == "tls-untrusted GET /insecure/y\n");

  // Plain HTTP to a TLS upstream fails cleanly (no hang).
  r = HttpGet(p.plain_port(), "/plain/z");
  REQUIRE(r.ok());
  CHECK(r->status >= 500);
  // Still serving.
  r = HttpGet(p.plain_port(), "/ip/ok");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
}

// ---------------------------------------------------------------------------------------------
// Listener certificate reload

// Overwrites `to` with the bytes of `from` (how an operator's deploy tool rotates a file).
void CopyOver(const std::string& from, const std::string& to) {
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing);
}

TEST_CASE("listener certificates reload in place: new handshakes get the new certificate") {
  auto pki = TestPki::Create();
  REQUIRE(pki.ok());
  // Both certificates are valid for api.example.com; their subjects tell them apart.
  auto first = (*pki)->Issue("first", {"api.example.com"});
  auto second = (*pki)->Issue("second", {"rotated.example.com", "api.example.com"});
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  const std::string live_cert = (*pki)->File("live.crt");
  const std::string live_key = (*pki)->File("live.key");
  CopyOver(first->cert_file, live_cert);
  CopyOver(first->key_file, live_key);
  tls::TlsServerOptions o;
  o.certificates.push_back({{"api.example.com"}, live_cert, live_key});
  auto listener = tls::TlsServerContext::Create(o);
  REQUIRE(listener.ok());
  TlsProxy p(kPlainUpstreamConfig, PlainUpstream(), {}, /*workers=*/2, *listener);

  TlsTestClientOptions copts;
  copts.sni = "api.example.com";
  copts.ca_file = (*pki)->ca_file();
  auto connect = [&] {
    auto c = TlsTestClient::Connect("127.0.0.1", p.tls_port(), copts);
    INFO(c.status().ToString());
    REQUIRE(c.ok());
    return *std::move(c);
  };
  auto before = connect();
  CHECK(before->PeerCommonName() == "api.example.com");
  REQUIRE(before->Get("/one", "api.example.com").ok());

  CopyOver(second->cert_file, live_cert);
  CopyOver(second->key_file, live_key);
  REQUIRE(p.proxy().ReloadListenerCertificates().ok());
  CHECK(p.proxy().CollectStats().tls_certificate_reloads == 1);
  // Every new connection, whichever worker accepts it, presents the new certificate.
  for (int i = 0; i < 4; ++i) {
    auto after = connect();
    CHECK(after->PeerCommonName() == "rotated.example.com");
    auto r = after->Get("/after", "api.example.com");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
  }
  // The keep-alive connection from before the reload still works, on its old session.
  auto r = before->Get("/two", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == "u0 GET /two\n");

  SECTION("a key that does not match: refused, the current certificate keeps serving") {
    CopyOver(first->key_file, live_key);
    absl::Status s = p.proxy().ReloadListenerCertificates();
    CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(s.message()), Catch::Contains("does not match the certificate"));
    CHECK_THAT(std::string(s.message()),
               Catch::Contains("listener 127.0.0.1:0"));  // names the listener
  }
  SECTION("a missing certificate file: refused, the current certificate keeps serving") {
    std::filesystem::remove(live_cert);
    absl::Status s = p.proxy().ReloadListenerCertificates();
    CHECK(s.code() == absl::StatusCode::kNotFound);
    CHECK_THAT(std::string(s.message()), Catch::Contains("live.crt"));
  }
  SECTION("a file that is not PEM: refused, the current certificate keeps serving") {
    std::ofstream(live_cert, std::ios::trunc) << "-----BEGIN CERTIFICATE-----\ngarbage\n";
    CHECK_FALSE(p.proxy().ReloadListenerCertificates().ok());
  }
  ProxyStats st = p.proxy().CollectStats();
  CHECK(st.tls_certificate_reloads == 1);
  CHECK(st.tls_certificate_reload_failures == 1);
  auto later = connect();
  CHECK(later->PeerCommonName() == "rotated.example.com");
  CHECK(later->Get("/later", "api.example.com").ok());
  r = before->Get("/three", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
}

// ---------------------------------------------------------------------------------------------
// Active health checks through TLS

std::unique_ptr<TestUpstream> BackendUpstream(const std::string& name, uint16_t port = 0) {
  auto u = TestUpstream::StartTls(name, Certs::Single(TestCerts().upstream_name),
                                  "127.0.0.1:" + std::to_string(port));
  INFO(u.status().ToString());
  REQUIRE(u.ok());
  return *std::move(u);
}

constexpr char kTlsHealthConfig[] = R"(
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1, port: {P0} }, { address: 127.0.0.1, port: {P1} }]
    tls: { enabled: true, ca_file: "{CA}", sni: backend.internal }
    health_check: { path: /health, interval: 0.05s, timeout: 1s, healthy_threshold: 1, unhealthy_threshold: 2 }
routes:
  - { name: r, match: { path: { prefix: / } }, cluster: c }
)";

// True once `n` requests in a row were answered 200 by `upstream`.
bool AllGoTo(uint16_t port, const std::string& upstream, int n) {
  for (int i = 0; i < n; ++i) {
    auto r = HttpGet(port, "/");
    if (!r.ok() || r->status != 200 || r->Header("x-upstream") != upstream) return false;
  }
  return true;
}

TEST_CASE("active health checks of a TLS cluster probe through TLS") {
  std::vector<std::unique_ptr<TestUpstream>> ups;
  ups.push_back(BackendUpstream("tls-a"));
  ups.push_back(BackendUpstream("tls-b"));
  TlsProxy p(kTlsHealthConfig, std::move(ups), {}, /*workers=*/2);
  // TLS upstreams answer nothing but TLS: a /health request seen by both means the probes
  // handshook (CA, SNI and name verification as on the data path) and spoke HTTP inside.
  REQUIRE(WaitUntil([&] { return p.up(0).health_requests() >= 2 && p.up(1).health_requests() >= 2; }));
  CHECK(p.proxy().CollectStats().health_check_failures == 0);

  // /health fails on tls-b: regular traffic there would still succeed, so only the health
  // checker can take it out of rotation.
  p.up(1).SetHealthStatus(500);
  REQUIRE(WaitUntil([&] { return p.proxy().CollectStats().health_check_failures >= 2; }));
  REQUIRE(WaitUntil([&] { return AllGoTo(p.plain_port(), "tls-a", 3); }));
  CHECK(AllGoTo(p.plain_port(), "tls-a", 20));

  p.up(1).SetHealthStatus(200);
  REQUIRE(WaitUntil([&] {
    auto r = HttpGet(p.plain_port(), "/");
    return r.ok() && r->status == 200 && r->Header("x-upstream") == "tls-b";
  }));

  // tls-b stops altogether: its probes fail to connect and it leaves the rotation; every
  // request is answered by tls-a.
  const uint16_t b_port = p.up(1).port();
  uint64_t failures = p.proxy().CollectStats().health_check_failures;
  p.up(1).Stop();
  REQUIRE(WaitUntil([&] { return p.proxy().CollectStats().health_check_failures >= failures + 2; }));
  REQUIRE(WaitUntil([&] { return AllGoTo(p.plain_port(), "tls-a", 3); }));
  CHECK(AllGoTo(p.plain_port(), "tls-a", 20));

  // It comes back on the same port: the checks see it healthy and traffic returns.
  p.ReplaceUpstream(1, BackendUpstream("tls-b-again", b_port));
  REQUIRE(WaitUntil([&] {
    auto r = HttpGet(p.plain_port(), "/");
    return r.ok() && r->status == 200 && r->Header("x-upstream") == "tls-b-again";
  }));
  CHECK(p.up(1).health_requests() >= 1);
}

TEST_CASE("a TLS health check fails when the upstream's certificate does not verify") {
  std::vector<std::unique_ptr<TestUpstream>> ups;
  ups.push_back(BackendUpstream("tls-a"));
  // The certificate is for backend.internal; the cluster expects other.internal.
  TlsProxy p(R"(
clusters:
  - name: c
    endpoints: [{ address: 127.0.0.1, port: {P0} }]
    tls: { enabled: true, ca_file: "{CA}", sni: other.internal }
    health_check: { path: /health, interval: 0.05s, timeout: 1s }
routes:
  - { name: r, match: { path: { prefix: / } }, cluster: c }
)",
             std::move(ups));
  REQUIRE(WaitUntil([&] { return p.proxy().CollectStats().health_check_failures >= 3; }));
  // Refused at the handshake: not one request reached the upstream.
  CHECK(p.up(0).health_requests() == 0);
  CHECK(p.up(0).requests() == 0);
}

// ---------------------------------------------------------------------------------------------
// Upstream mutual TLS

TEST_CASE("upstream mutual TLS: the proxy presents its client certificate when configured") {
  // Two upstreams that both require a client certificate from the test CA: one behind a cluster
  // that has one (and health checks), one behind a cluster that has none.
  std::vector<std::unique_ptr<TestUpstream>> ups;
  for (const char* name : {"mtls-a", "mtls-b"}) {
    auto u = TestUpstream::StartTls(
        name, Certs::Single(TestCerts().upstream_name, TestCerts().pki->ca_file()));
    REQUIRE(u.ok());
    ups.push_back(*std::move(u));
  }
  TlsProxy p(R"(
clusters:
  - name: with-cert
    endpoints: [{ address: 127.0.0.1, port: {P0} }]
    tls:
      enabled: true
      ca_file: "{CA}"
      sni: backend.internal
      client_cert_file: "{CLIENT_CERT}"
      client_key_file: "{CLIENT_KEY}"
    health_check: { path: /health, interval: 0.05s, timeout: 1s }
  - name: without-cert
    endpoints: [{ address: 127.0.0.1, port: {P1} }]
    tls: { enabled: true, ca_file: "{CA}", sni: backend.internal }
routes:
  - { name: with, match: { path: { prefix: /with/ } }, cluster: with-cert }
  - { name: without, match: { path: { prefix: /without/ } }, cluster: without-cert }
)",
             std::move(ups));
  auto r = HttpGet(p.plain_port(), "/with/x");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == "mtls-a GET /with/x\n");
  // The health checker's probes carry the same client certificate.
  REQUIRE(WaitUntil([&] { return p.up(0).health_requests() >= 1; }));

  r = HttpGet(p.plain_port(), "/without/x");
  REQUIRE(r.ok());
  INFO(r->body);
  CHECK((r->status == 502 || r->status == 503));
  CHECK(absl::StrContains(r->body, "upstream TLS error"));
  CHECK(p.proxy().CollectStats().upstream_tls_failures >= 1);
  // The upstream refused the handshake: the request never reached it.
  CHECK(p.up(1).requests() == 0);

  // Still serving, with the certificate.
  r = HttpGet(p.plain_port(), "/with/y");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == "mtls-a GET /with/y\n");
}

// ---------------------------------------------------------------------------------------------
// Websocket tunnels through a TLS listener

constexpr char kUpgradeConfig[] = R"(
clusters:
  - name: plain
    endpoints: [{ address: 127.0.0.1, port: {P0} }]
  - name: tls
    endpoints: [{ address: 127.0.0.1, port: {P1} }]
    tls: { enabled: true, ca_file: "{CA}", sni: backend.internal }
routes:
  - { name: tls, match: { path: { prefix: /tls/ } }, cluster: tls, prefix_rewrite: / }
  - { name: all, match: { path: { prefix: / } }, cluster: plain }
)";

TEST_CASE("a websocket tunnel works end to end through a TLS listener") {
  std::vector<std::unique_ptr<TestUpstream>> ups;
  auto plain = TestUpstream::Start("ws-plain");
  REQUIRE(plain.ok());
  ups.push_back(*std::move(plain));
  ups.push_back(BackendUpstream("ws-tls"));
  TlsProxy p(kUpgradeConfig, std::move(ups));

  // The path is /ws on the plain upstream, /tls/ws (rewritten to /ws) on the TLS one: TLS to
  // the client only, then TLS on both sides.
  for (const std::string& path : {std::string("/ws"), std::string("/tls/ws")}) {
    DYNAMIC_SECTION("path " << path) {
      auto c = p.Client("api.example.com");
      REQUIRE(c->SendRaw("GET " + path +
                         " HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade\r\n"
                         "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
                  .ok());
      auto head = c->ReadResponse();
      REQUIRE(head.ok());
      REQUIRE(head->status == 101);
      CHECK(absl::AsciiStrToLower(head->Header("upgrade")) == "websocket");
      CHECK(WaitUntil([&] { return p.proxy().CollectStats().upgrades_active == 1; }));

      // The upstream echoes raw bytes. The client sends bytes shaped like an HTTP response so
      // that the test client can read the echo back with its response reader; the tunnel sees
      // opaque bytes either way. Several rounds, one larger than many TLS records.
      for (size_t size : {size_t{5}, size_t{1000}, size_t{256 * 1024}}) {
        std::string payload(size, 'w');
        for (size_t i = 0; i < payload.size(); i += 101) payload[i] = static_cast<char>('a' + i % 26);
        REQUIRE(c->SendRaw("HTTP/1.1 200 OK\r\ncontent-length: " + std::to_string(size) +
                           "\r\n\r\n" + payload)
                    .ok());
        auto echo = c->ReadResponse();
        REQUIRE(echo.ok());
        CHECK(echo->status == 200);
        CHECK(echo->body == payload);
      }
      c.reset();  // the client goes away: the tunnel closes on both sides
      CHECK(WaitUntil([&] { return p.proxy().CollectStats().upgrades_active == 0; }));
    }
  }
  CHECK(p.proxy().CollectStats().upgrades_total >= 1);
}

}  // namespace
}  // namespace flexgate::dataplane::test
