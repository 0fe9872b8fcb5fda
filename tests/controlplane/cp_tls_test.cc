// flexgate-cp's gRPC listener over TLS and mTLS, end to end with the real programs: a real
// flexgate-cp on a real PostgreSQL, real flexgate-agent processes that must (or must not) get a
// snapshot through the encrypted stream, and flexctl applying a config over TLS. Certificates are
// made at test time (TestPki): a CA, a server certificate for 127.0.0.1 and localhost, a client
// certificate, and an unrelated CA that must not be trusted.
#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/controlplane/cp_test_support.h"
#include "tests/harness/http/http_client.h"
#include "tests/harness/http/test_pki.h"
#include "tests/harness/proc/process.h"
#include "tests/harness/proc/test_postgres.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::cp {
namespace {

using flexgate::testing::BinaryPath;
using flexgate::testing::CommandResult;
using flexgate::testing::CpLaunchOptions;
using flexgate::testing::LaunchOptions;
using flexgate::testing::CpPorts;
using flexgate::testing::CpProcessOptions;
using flexgate::testing::FreshDatabase;
using flexgate::testing::HttpGet;
using flexgate::testing::LaunchCp;
using flexgate::testing::Process;
using flexgate::testing::ProcessOptions;
using flexgate::testing::RunCommand;
using flexgate::testing::TempDir;
using flexgate::testing::TestPki;
using flexgate::testing::TestPostgres;
using flexgate::testing::WaitFor;

constexpr char kAdminKey[] = "fgk_tls_test_admin_key";
constexpr absl::Duration kStart = absl::Seconds(30);

// The certificates every case needs.
struct Pki {
  std::unique_ptr<TestPki> ca;     // trusted by servers and clients
  std::unique_ptr<TestPki> other;  // an unrelated CA: trusting it must not be enough
  TestPki::Leaf server;            // 127.0.0.1 and localhost, signed by `ca`
  TestPki::Leaf client;            // an agent's / operator's client certificate, signed by `ca`
  TestPki::Leaf stranger;          // a client certificate signed by `other`
};

Pki MakePki() {
  Pki p;
  auto ca = TestPki::Create("FlexGate CP Test CA");
  REQUIRE(ca.ok());
  p.ca = std::move(ca).value();
  auto other = TestPki::Create("Unrelated CA");
  REQUIRE(other.ok());
  p.other = std::move(other).value();
  auto server = p.ca->Issue("server", {"localhost", "127.0.0.1"});
  REQUIRE(server.ok());
  p.server = *server;
  auto client = p.ca->Issue("client", {"agent-1.example.com"});
  REQUIRE(client.ok());
  p.client = *client;
  auto stranger = p.other->Issue("stranger", {"agent-2.example.com"});
  REQUIRE(stranger.ok());
  p.stranger = *stranger;
  return p;
}

struct Cp {
  std::unique_ptr<Process> proc;
  int grpc_port = 0;
  std::string address() const { return absl::StrCat("127.0.0.1:", grpc_port); }
};

CpLaunchOptions CpOptions(const std::string& db_url, const std::vector<std::string>& tls_args) {
  CpLaunchOptions o = LaunchOptions(db_url, kAdminKey);
  o.shutdown_grace_seconds = 1;
  o.extra_args = tls_args;
  o.start_timeout = kStart;
  return o;
}

Cp StartCp(const std::string& db_url, const std::vector<std::string>& tls_args) {
  CpPorts ports;
  auto proc = LaunchCp(CpOptions(db_url, tls_args), &ports);
  INFO(proc.status().ToString());
  REQUIRE(proc.ok());
  Cp cp;
  cp.proc = std::move(proc).value();
  cp.grpc_port = ports.grpc;
  return cp;
}

struct Agent {
  std::unique_ptr<Process> proc;
  std::unique_ptr<TempDir> cache;
  uint16_t admin_port = 0;

  bool Ready() const {
    auto r = HttpGet(admin_port, "/health/ready");
    return r.ok() && r->status == 200;
  }
};

Agent StartAgent(const Cp& cp, const std::vector<std::string>& tls_args) {
  Agent a;
  a.cache = std::make_unique<TempDir>("cp-tls-agent");
  ProcessOptions o;
  o.args = {BinaryPath("flexgate-agent"), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
            "--control-plane", cp.address(), "--token", kAdminKey,
            "--cache-dir", a.cache->path(), "--workers", "1"};
  o.args.insert(o.args.end(), tls_args.begin(), tls_args.end());
  auto proc = Process::Start(std::move(o));
  REQUIRE(proc.ok());
  a.proc = std::move(proc).value();
  auto admin = a.proc->WaitForLogMatch(R"("msg":"admin listening".*"port":(\d+))", kStart);
  INFO(a.proc->LogTail());
  REQUIRE(admin.ok());
  int port = 0;
  REQUIRE(absl::SimpleAtoi(*admin, &port));
  a.admin_port = static_cast<uint16_t>(port);
  return a;
}

CommandResult Flexctl(const Cp& cp, std::vector<std::string> args) {
  ProcessOptions o;
  o.args = {BinaryPath("flexctl"), "--server", cp.address(), "--token", kAdminKey,
            "--timeout", "10s"};
  o.args.insert(o.args.end(), args.begin(), args.end());
  o.unset_env = {"FLEXGATE_SERVER", "FLEXGATE_TOKEN"};
  auto r = RunCommand(std::move(o), absl::Seconds(30));
  if (!r.ok()) FAIL("flexctl did not run: " << r.status().ToString());
  return *r;
}

// The smallest useful config (DESIGN.md section 8), written next to the certificates.
std::string WriteConfig(const TestPki& pki) {
  const std::string path = pki.File("config.yaml");
  FILE* f = std::fopen(path.c_str(), "w");
  REQUIRE(f != nullptr);
  std::fputs(
      "clusters:\n"
      "  - name: web\n"
      "    endpoints:\n"
      "      - { address: 127.0.0.1, port: 8081 }\n"
      "routes:\n"
      "  - name: all\n"
      "    match: { path: { prefix: \"/\" } }\n"
      "    cluster: web\n",
      f);
  std::fclose(f);
  return path;
}

// A line in which the agent says its connection attempt failed in the TLS handshake.
bool LoggedTlsFailure(const Process& agent) {
  std::string log = absl::AsciiStrToLower(agent.ReadLog());
  // gRPC words it "Ssl handshake failed: ... certificate verify failed".
  return absl::StrContains(log, "control plane stream ended") &&
         absl::StrContains(log, "handshake failed") &&
         absl::StrContains(log, "certificate verify failed");
}

// A line in which the agent says a connection attempt ended before its stream was up. With TLS
// 1.3 the server's refusal of a missing client certificate reaches the client only as a closed
// socket after its side of the handshake, so there is no certificate error to look for here.
bool LoggedRefusedStream(const Process& agent) {
  std::string log = agent.ReadLog();
  return absl::StrContains(log, R"("msg":"control plane stream ended")") &&
         absl::StrContains(log, R"("was_open":false)");
}

TEST_CASE("flexgate-cp over TLS: flexctl applies and an agent with the CA gets the snapshot") {
  Pki pki = MakePki();
  Cp cp = StartCp(FreshDatabase("cp_tls"),
                  {"--tls-cert-file", pki.server.cert_file, "--tls-key-file", pki.server.key_file});
  REQUIRE(cp.proc->WaitForLogLine(R"("transport":"tls")", absl::Seconds(5)).ok());
  const std::string config = WriteConfig(*pki.ca);

  // Plaintext to a TLS listener cannot work: flexctl could not run the command (exit 2).
  CommandResult plain = Flexctl(cp, {"apply", config});
  INFO(plain.Describe());
  CHECK(plain.status.exited);
  CHECK(plain.status.code == 2);

  CommandResult applied = Flexctl(cp, {"--tls", "--ca-file", pki.ca->ca_file(), "apply", config});
  INFO(applied.Describe());
  REQUIRE(applied.status.success());

  // An agent that trusts another CA must refuse the server and stay without a snapshot...
  Agent distrustful = StartAgent(cp, {"--cp-ca-file", pki.other->ca_file()});
  // ... while the control plane keeps serving an agent that trusts the right CA.
  Agent trusting = StartAgent(cp, {"--cp-ca-file", pki.ca->ca_file()});
  CHECK(WaitFor([&] { return trusting.Ready(); }, kStart));
  INFO("trusting agent: " << trusting.proc->LogTail());
  INFO("distrustful agent: " << distrustful.proc->LogTail());
  CHECK(WaitFor([&] { return LoggedTlsFailure(*distrustful.proc); }, kStart));
  CHECK_FALSE(distrustful.Ready());
  CHECK(distrustful.proc->Running());
  CHECK(cp.proc->Running());

  CHECK(trusting.proc->Terminate().success());
  CHECK(distrustful.proc->Terminate().success());
  CHECK(cp.proc->Terminate().success());
}

TEST_CASE("flexgate-cp with mTLS refuses clients without a trusted certificate") {
  Pki pki = MakePki();
  Cp cp = StartCp(FreshDatabase("cp_tls"),
                  {"--tls-cert-file", pki.server.cert_file, "--tls-key-file", pki.server.key_file,
                   "--tls-client-ca-file", pki.ca->ca_file()});
  REQUIRE(cp.proc->WaitForLogLine(R"("transport":"mtls")", absl::Seconds(5)).ok());
  const std::string config = WriteConfig(*pki.ca);

  CommandResult anonymous =
      Flexctl(cp, {"--ca-file", pki.ca->ca_file(), "apply", config});
  INFO(anonymous.Describe());
  CHECK(anonymous.status.code == 2);
  CommandResult stranger =
      Flexctl(cp, {"--ca-file", pki.ca->ca_file(), "--cert-file", pki.stranger.cert_file,
                   "--key-file", pki.stranger.key_file, "apply", config});
  INFO(stranger.Describe());
  CHECK(stranger.status.code == 2);
  CommandResult operator_ =
      Flexctl(cp, {"--ca-file", pki.ca->ca_file(), "--cert-file", pki.client.cert_file,
                   "--key-file", pki.client.key_file, "apply", config});
  INFO(operator_.Describe());
  REQUIRE(operator_.status.success());

  Agent without_cert = StartAgent(cp, {"--cp-ca-file", pki.ca->ca_file()});
  Agent with_cert = StartAgent(cp, {"--cp-ca-file", pki.ca->ca_file(), "--cp-cert-file",
                                    pki.client.cert_file, "--cp-key-file", pki.client.key_file});
  CHECK(WaitFor([&] { return with_cert.Ready(); }, kStart));
  INFO("agent with certificate: " << with_cert.proc->LogTail());
  INFO("agent without certificate: " << without_cert.proc->LogTail());
  CHECK(WaitFor([&] { return LoggedRefusedStream(*without_cert.proc); }, kStart));
  CHECK_FALSE(absl::StrContains(without_cert.proc->ReadLog(), "control plane stream open"));
  CHECK_FALSE(without_cert.Ready());

  CHECK(with_cert.proc->Terminate().success());
  CHECK(without_cert.proc->Terminate().success());
  CHECK(cp.proc->Terminate().success());
}

// Start-up refuses bad TLS files before it touches the database (the URL below has no server).
void ExpectStartFailure(const std::vector<std::string>& tls_args, const std::string& needle) {
  ProcessOptions o =
      CpProcessOptions(CpOptions("postgresql://postgres@127.0.0.1:1/none", tls_args));
  auto r = RunCommand(std::move(o), absl::Seconds(30));
  REQUIRE(r.ok());
  INFO(r->Describe());
  CHECK(r->status.exited);
  CHECK(r->status.code == 1);
  CHECK_THAT(r->err, Catch::Contains(needle));
}

TEST_CASE("flexgate-cp exits 1 naming the flag for missing unreadable or mismatched TLS files") {
  Pki pki = MakePki();
  const std::string& cert = pki.server.cert_file;
  const std::string& key = pki.server.key_file;
  ExpectStartFailure({"--tls-cert-file", pki.ca->File("absent.crt"), "--tls-key-file", key},
                     "--tls-cert-file");
  ExpectStartFailure({"--tls-cert-file", cert, "--tls-key-file", pki.ca->File("absent.key")},
                     "--tls-key-file");
  ExpectStartFailure({"--tls-cert-file", cert}, "must be given together");
  ExpectStartFailure({"--tls-client-ca-file", pki.ca->ca_file()}, "needs --tls-cert-file");
  // The client's key does not belong to the server's certificate.
  ExpectStartFailure({"--tls-cert-file", cert, "--tls-key-file", pki.client.key_file},
                     "is not the key of the certificate");
  // A key where a certificate should be.
  ExpectStartFailure({"--tls-cert-file", key, "--tls-key-file", key}, "holds no certificate");
  const std::string not_pem = WriteConfig(*pki.ca);
  ExpectStartFailure({"--tls-cert-file", cert, "--tls-key-file", key, "--tls-client-ca-file",
                      not_pem},
                     "holds no PEM data");
}

}  // namespace
}  // namespace flexgate::cp
