// Listener certificate rotation with the real flexgate-agent binary: the certificate and key files
// of a TLS listener are replaced on disk and the agent gets SIGHUP. New connections must see the
// new certificate at once, a keep-alive connection opened before must keep working, and a broken
// file (a key that does not belong to the certificate, a missing file) must be logged as an error
// while the certificate that was serving keeps serving. Both modes: static (--config, where
// SIGHUP also re-reads the config) and under a control plane (where the config comes from the
// stream, so SIGHUP reloads only the certificates). Clients are OpenSSL used directly
// (TlsTestClient), certificates are made at test time (TestPki).
#include <signal.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "re2/re2.h"
#include "tests/harness/http/http_client.h"
#include "tests/harness/http/test_pki.h"
#include "tests/harness/http/test_upstream.h"
#include "tests/harness/http/tls_client.h"
#include "tests/harness/proc/process.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::testing {
namespace {

// A listener certificate that an operator rotates: the agent reads live.crt / live.key, and the
// test copies one of two issued certificates (or something broken) over them.
struct RotatingCertificate {
  std::unique_ptr<TestPki> pki;
  TestPki::Leaf first;   // subject CN api.example.com
  TestPki::Leaf second;  // subject CN rotated.example.com, also valid for api.example.com
  std::string live_cert, live_key;

  RotatingCertificate() {
    auto p = TestPki::Create();
    REQUIRE(p.ok());
    pki = *std::move(p);
    auto a = pki->Issue("first", {"api.example.com"});
    auto b = pki->Issue("second", {"rotated.example.com", "api.example.com"});
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    first = *a;
    second = *b;
    live_cert = pki->File("live.crt");
    live_key = pki->File("live.key");
    Install(first.cert_file, first.key_file);
  }

  // Overwrites the live files the way a deploy tool would.
  void Install(const std::string& cert_from, const std::string& key_from) const {
    namespace fs = std::filesystem;
    fs::copy_file(cert_from, live_cert, fs::copy_options::overwrite_existing);
    fs::copy_file(key_from, live_key, fs::copy_options::overwrite_existing);
  }

  // A new TLS connection to the agent, verified against the test CA.
  std::unique_ptr<TlsTestClient> Connect(uint16_t port) const {
    TlsTestClientOptions o;
    o.sni = "api.example.com";
    o.ca_file = pki->ca_file();
    auto c = TlsTestClient::Connect("127.0.0.1", port, o);
    INFO(c.status().ToString());
    REQUIRE(c.ok());
    return *std::move(c);
  }
};

std::string BootstrapYaml(const RotatingCertificate& certs) {
  return "listeners:\n"
         "  - name: https\n"
         "    address: \"127.0.0.1:0\"\n"
         "    tls:\n"
         "      certificates:\n"
         "        - { server_names: [api.example.com], cert_file: \"" +
         certs.live_cert + "\", key_file: \"" + certs.live_key +
         "\" }\n"
         "admin_address: \"127.0.0.1:0\"\n";
}

uint16_t PortFromLog(Process& p, const std::string& msg) {
  absl::StatusOr<uint16_t> port = p.WaitForLogPort(msg, absl::Seconds(10));
  INFO(p.LogTail());
  REQUIRE(port.ok());
  return *port;
}

// Lines of the agent's log that match `pattern` (RE2, searched in each line).
int CountLogMatches(Process& p, const std::string& pattern) {
  std::string log = p.ReadLog();
  if (p.stderr_path() != p.stdout_path()) log += p.ReadStderr();
  int n = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (RE2::PartialMatch(re2::StringPiece(line.data(), line.size()), pattern)) ++n;
  }
  return n;
}

// Sends SIGHUP and waits for one more log line matching `pattern` than there was before: an
// earlier reload's line (the messages name the same files) must not count as this one's.
void HangUpAndAwait(Process& p, const std::string& pattern) {
  const int before = CountLogMatches(p, pattern);
  REQUIRE(p.Signal(SIGHUP).ok());
  bool seen = WaitFor([&] { return CountLogMatches(p, pattern) > before; }, absl::Seconds(10));
  INFO(p.LogTail());
  REQUIRE(seen);
}

// The refusals every rotation must survive: a key that does not belong to the certificate, then a
// certificate file that is gone. Each is logged as an error naming the file, and the certificate
// that was serving (CN rotated.example.com) keeps serving.
void CheckBrokenReloadsKeepServing(Process& p, const RotatingCertificate& certs, uint16_t port) {
  certs.Install(certs.second.cert_file, certs.first.key_file);
  HangUpAndAwait(p, R"("level":"error".*listener certificate reload failed.*live\.key.*does not match)");
  CHECK(certs.Connect(port)->PeerCommonName() == "rotated.example.com");

  std::filesystem::remove(certs.live_cert);
  HangUpAndAwait(p, R"("level":"error".*listener certificate reload failed.*live\.crt)");
  CHECK(certs.Connect(port)->PeerCommonName() == "rotated.example.com");
}

TEST_CASE("static mode: SIGHUP rotates listener certificates without dropping connections") {
  REQUIRE(BinaryExists("flexgate-agent"));
  RotatingCertificate certs;
  auto web = TestUpstream::Start("web");
  REQUIRE(web.ok());
  TempDir dir("flexgate-tls-reload");
  const std::string config = dir.WriteFile(
      "config.yaml", "clusters:\n  - name: web\n    endpoints: [{ address: 127.0.0.1, port: " +
                         std::to_string((*web)->port()) +
                         " }]\nroutes:\n  - { name: all, match: { path: { prefix: / } }, "
                         "cluster: web }\n");
  const std::string bootstrap = dir.WriteFile("bootstrap.yaml", BootstrapYaml(certs));
  ProcessOptions o;
  o.args = {BinaryPath("flexgate-agent"), "--bootstrap", bootstrap, "--config", config,
            "--workers", "2"};
  auto agent = Process::Start(o);
  REQUIRE(agent.ok());
  Process& p = **agent;
  const uint16_t port = PortFromLog(p, "listening");
  const uint16_t admin = PortFromLog(p, "admin listening");
  REQUIRE(WaitFor(
      [&] {
        auto ready = HttpGet(admin, "/health/ready");
        return ready.ok() && ready->status == 200;
      },
      absl::Seconds(10)));

  auto before = certs.Connect(port);
  CHECK(before->PeerCommonName() == "api.example.com");
  auto r = before->Get("/one", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->body == "web GET /one\n");

  certs.Install(certs.second.cert_file, certs.second.key_file);
  HangUpAndAwait(p, "listener certificates reloaded");
  // SIGHUP in static mode still re-reads the config too.
  CHECK(p.WaitForLogLine("config reloaded", absl::Seconds(5)).ok());
  // The log says what is served now.
  CHECK(p.WaitForLogMatch(R"("msg":"listener certificates".*CN=rotated\.example\.com)",
                          absl::Seconds(5))
            .ok());
  // Every new connection (two workers: several tries) presents the new certificate...
  for (int i = 0; i < 4; ++i) {
    auto after = certs.Connect(port);
    CHECK(after->PeerCommonName() == "rotated.example.com");
    auto a = after->Get("/after", "api.example.com");
    REQUIRE(a.ok());
    CHECK(a->status == 200);
  }
  // ...while the keep-alive connection made before the reload keeps working.
  r = before->Get("/two", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == "web GET /two\n");

  CheckBrokenReloadsKeepServing(p, certs, port);
  r = before->Get("/three", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->status == 200);

  auto stats = HttpGet(admin, "/stats");
  REQUIRE(stats.ok());
  CHECK_THAT(stats->body, Catch::Contains("tls_certificate_reloads: 1\n"));
  CHECK_THAT(stats->body, Catch::Contains("tls_certificate_reload_failures: 2\n"));
  auto metrics = HttpGet(admin, "/metrics");
  REQUIRE(metrics.ok());
  CHECK_THAT(metrics->body, Catch::Contains("flexgate_tls_certificate_reload_failures_total 2"));

  before.reset();
  ExitStatus exit = p.Terminate(absl::Seconds(10));
  INFO(p.LogTail());
  CHECK(exit.success());
}

TEST_CASE("control-plane mode: SIGHUP rotates listener certificates") {
  REQUIRE(BinaryExists("flexgate-agent"));
  RotatingCertificate certs;
  TempDir dir("flexgate-tls-reload");
  const std::string bootstrap = dir.WriteFile("bootstrap.yaml", BootstrapYaml(certs));
  // Nothing listens on the control-plane address: the agent keeps retrying in the background
  // and answers 503 meanwhile, but its listener (and TLS) is up, which is all this test needs.
  ProcessOptions o;
  o.args = {BinaryPath("flexgate-agent"), "--bootstrap", bootstrap, "--control-plane",
            "127.0.0.1:" + std::to_string(FreePort()), "--token", "test-token", "--workers", "1"};
  o.unset_env = {"FLEXGATE_TOKEN"};
  auto agent = Process::Start(o);
  REQUIRE(agent.ok());
  Process& p = **agent;
  const uint16_t port = PortFromLog(p, "listening");

  auto before = certs.Connect(port);
  CHECK(before->PeerCommonName() == "api.example.com");

  certs.Install(certs.second.cert_file, certs.second.key_file);
  HangUpAndAwait(p, "listener certificates reloaded");
  CHECK(certs.Connect(port)->PeerCommonName() == "rotated.example.com");
  // The connection from before is still open and answered (503: no config yet, which is the
  // point of this mode's set-up, not a failure).
  auto r = before->Get("/still-open", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->status == 503);

  CheckBrokenReloadsKeepServing(p, certs, port);

  before.reset();
  ExitStatus exit = p.Terminate(absl::Seconds(10));
  INFO(p.LogTail());
  CHECK(exit.success());
}

}  // namespace
}  // namespace flexgate::testing
