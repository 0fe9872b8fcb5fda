// The agent with a TLS listener from its bootstrap file: the bootstrap is parsed as an operator
// would write it (flags plus --bootstrap), the agent starts, serves HTTPS with the certificate
// chosen by SNI next to a plain listener, and exports the TLS counters in /stats and /metrics.
// A bootstrap whose certificate files cannot be read stops the start with a clear error.
#include <fstream>

#include <catch2/catch.hpp>

#include "dataplane/agent/agent.h"
#include "dataplane/agent/agent_options.h"
#include "temp_dir.h"
#include "tests/harness/http/http_client.h"
#include "tests/harness/http/test_pki.h"
#include "tests/harness/http/test_upstream.h"
#include "tests/harness/http/tls_client.h"

namespace flexgate::agent {
namespace {

using flexgate::testing::HttpGet;
using flexgate::testing::TestPki;
using flexgate::testing::TestUpstream;
using flexgate::testing::TlsTestClient;
using flexgate::testing::TlsTestClientOptions;
using testing::TempDir;

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// A static config that sends every path to the upstream on `port`.
std::string WebConfig(uint16_t port) {
  return "clusters:\n  - name: web\n    endpoints: [{ address: 127.0.0.1, port: " +
         std::to_string(port) +
         " }]\nroutes:\n  - { name: all, match: { path: { prefix: / } }, cluster: web }\n";
}

// Creates and starts the agent; the test stops with the reason otherwise.
std::unique_ptr<Agent> StartAgent(const AgentOptions& options) {
  auto agent = Agent::Create(options);
  INFO(agent.status().ToString());
  REQUIRE(agent.ok());
  absl::Status started = (*agent)->Start();
  INFO(started.ToString());
  REQUIRE(started.ok());
  return *std::move(agent);
}

AgentOptions Parse(const std::vector<std::string>& args) {
  auto o = ParseAgentFlags(args, [](const char*) -> const char* { return nullptr; });
  INFO(o.status().ToString());
  REQUIRE(o.ok());
  return *o;
}

// Writes a config that sends every path to the upstream on `upstream_port` and a bootstrap with
// `listeners` (YAML list items) and an admin address on port 0, and parses the flags an operator
// would pass for them.
AgentOptions BootstrapOptions(const TempDir& dir, uint16_t upstream_port,
                              const std::string& listeners, const std::string& workers) {
  Write(dir.file("config.yaml"), WebConfig(upstream_port));
  Write(dir.file("bootstrap.yaml"),
        "listeners:\n" + listeners + "admin_address: \"127.0.0.1:0\"\n");
  return Parse({"--bootstrap", dir.file("bootstrap.yaml"), "--config", dir.file("config.yaml"),
                "--workers", workers});
}

TEST_CASE("a bootstrap listener with TLS starts and serves HTTPS by SNI") {
  auto pki = TestPki::Create();
  REQUIRE(pki.ok());
  auto api = (*pki)->Issue("api", {"api.example.com"});
  auto org = (*pki)->Issue("org", {"*.example.org"});
  REQUIRE(api.ok());
  REQUIRE(org.ok());
  auto up = TestUpstream::Start("web");
  REQUIRE(up.ok());

  TempDir dir;
  AgentOptions options = BootstrapOptions(
      dir, (*up)->port(),
        "  - name: https\n"
        "    address: \"127.0.0.1:0\"\n"
        "    tls:\n"
        "      certificates:\n"
        "        - { server_names: [api.example.com], cert_file: \"" + api->cert_file +
            "\", key_file: \"" + api->key_file + "\" }\n"
        "        - { server_names: [\"*.example.org\"], cert_file: \"" + org->cert_file +
            "\", key_file: \"" + org->key_file + "\" }\n"
        "  - { name: http, address: \"127.0.0.1:0\" }\n",
      "2");
  REQUIRE(options.listen_addresses.size() == 2);
  REQUIRE(options.listener_tls.size() == 2);
  CHECK(options.listener_tls[0].size() == 2);
  CHECK(options.listener_tls[1].empty());
  auto agent = StartAgent(options);

  TlsTestClientOptions topts;
  topts.ca_file = (*pki)->ca_file();
  topts.sni = "api.example.com";
  auto c = TlsTestClient::Connect("127.0.0.1", agent->proxy_port(0), topts);
  INFO(c.status().ToString());
  REQUIRE(c.ok());
  CHECK((*c)->PeerCommonName() == "api.example.com");
  auto r = (*c)->Get("/secure", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == "web GET /secure\n");

  topts.sni = "shop.example.org";
  auto c2 = TlsTestClient::Connect("127.0.0.1", agent->proxy_port(0), topts);
  REQUIRE(c2.ok());
  CHECK((*c2)->PeerCommonName() == "*.example.org");

  // The plain listener next to it serves HTTP.
  auto plain = HttpGet(agent->proxy_port(1), "/plain");
  REQUIRE(plain.ok());
  CHECK(plain->status == 200);

  // Plain HTTP sent to the TLS port is a failed handshake, counted.
  auto wrong = flexgate::testing::HttpClient::Connect("127.0.0.1", agent->proxy_port(0));
  REQUIRE(wrong.ok());
  REQUIRE(wrong->SendRaw("GET / HTTP/1.1\r\nHost: a\r\n\r\n").ok());
  CHECK(wrong->WaitForClose(absl::Seconds(5)));

  auto stats = HttpGet(agent->admin_port(), "/stats");
  REQUIRE(stats.ok());
  CHECK_THAT(stats->body, Catch::Contains("downstream_tls_handshakes: 2"));
  CHECK_THAT(stats->body, Catch::Contains("downstream_tls_handshake_failures: 1"));
  CHECK_THAT(stats->body, Catch::Contains("upstream_tls_failures: 0"));
  CHECK_THAT(stats->body, Catch::Contains("circuit_breaker_rejections: 0"));
  auto metrics = HttpGet(agent->admin_port(), "/metrics");
  REQUIRE(metrics.ok());
  CHECK_THAT(metrics->body, Catch::Contains("flexgate_downstream_tls_handshakes_total 2"));
  CHECK_THAT(metrics->body, Catch::Contains("flexgate_upstream_tls_failures_total 0"));
  CHECK_THAT(metrics->body, Catch::Contains("flexgate_outlier_ejections_total 0"));
  CHECK_THAT(metrics->body, Catch::Contains("flexgate_upgrades_active 0"));
  CHECK_THAT(metrics->body, Catch::Contains("flexgate_health_checks_total 0"));

  agent->Shutdown();
}

TEST_CASE("a bootstrap listener with client_ca_file requires client certificates") {
  auto pki = TestPki::Create();
  REQUIRE(pki.ok());
  auto server = (*pki)->Issue("api", {"api.example.com"});
  auto client = (*pki)->Issue("client", {"client.example.com"});
  REQUIRE(server.ok());
  REQUIRE(client.ok());
  // A second CA: its certificates must be refused.
  auto other = TestPki::Create("Other CA");
  REQUIRE(other.ok());
  auto stranger = (*other)->Issue("stranger", {"client.example.com"});
  REQUIRE(stranger.ok());
  auto up = TestUpstream::Start("web");
  REQUIRE(up.ok());

  TempDir dir;
  AgentOptions options = BootstrapOptions(
      dir, (*up)->port(),
        "  - name: mtls\n"
        "    address: \"127.0.0.1:0\"\n"
        "    tls:\n"
        "      client_ca_file: \"" + (*pki)->ca_file() + "\"\n"
        "      certificates:\n"
        "        - { cert_file: \"" + server->cert_file + "\", key_file: \"" + server->key_file +
            "\" }\n",
      "1");
  REQUIRE(options.listener_client_ca.size() == 1);
  CHECK(options.listener_client_ca[0] == (*pki)->ca_file());
  auto agent = StartAgent(options);
  const uint16_t port = agent->proxy_port(0);

  TlsTestClientOptions topts;
  topts.ca_file = (*pki)->ca_file();
  topts.sni = "api.example.com";
  topts.cert_file = client->cert_file;
  topts.key_file = client->key_file;
  auto with_cert = TlsTestClient::Connect("127.0.0.1", port, topts);
  INFO(with_cert.status().ToString());
  REQUIRE(with_cert.ok());
  auto r = (*with_cert)->Get("/mtls", "api.example.com");
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->body == "web GET /mtls\n");

  // Without a certificate, or with one from another CA, no request gets through. With TLS 1.3
  // the refusal can arrive after the client's side of the handshake is done, so the request is
  // what must fail.
  auto refused = [&](TlsTestClientOptions o) {
    auto c = TlsTestClient::Connect("127.0.0.1", port, o);
    if (!c.ok()) return true;
    auto resp = (*c)->Get("/mtls", "api.example.com");
    return !resp.ok();
  };
  TlsTestClientOptions none = topts;
  none.cert_file.clear();
  none.key_file.clear();
  CHECK(refused(none));
  TlsTestClientOptions foreign = topts;
  foreign.cert_file = stranger->cert_file;
  foreign.key_file = stranger->key_file;
  CHECK(refused(foreign));
  CHECK((*up)->requests() == 1);

  // The listener keeps serving clients that have a certificate.
  auto again = TlsTestClient::Connect("127.0.0.1", port, topts);
  REQUIRE(again.ok());
  auto r2 = (*again)->Get("/again", "api.example.com");
  REQUIRE(r2.ok());
  CHECK(r2->status == 200);
  agent->Shutdown();
}

TEST_CASE("a bootstrap client_ca_file without certificates is refused") {
  TempDir dir;
  Write(dir.file("bootstrap.yaml"),
        "listeners:\n"
        "  - name: bad\n"
        "    address: \"127.0.0.1:0\"\n"
        "    tls: { client_ca_file: \"/nonexistent/ca.crt\" }\n");
  auto o = ParseAgentFlags({"--bootstrap", dir.file("bootstrap.yaml")},
                           [](const char*) -> const char* { return nullptr; });
  REQUIRE_FALSE(o.ok());
  CHECK_THAT(std::string(o.status().message()), Catch::Contains("client_ca_file"));
}

TEST_CASE("a TLS listener whose certificate cannot be read stops the start") {
  AgentOptions options;
  options.listen_addresses = {"127.0.0.1:0"};
  options.listener_tls = {{{{"a.example.com"}, "/nonexistent/cert.pem", "/nonexistent/key.pem"}}};
  options.admin_address = "127.0.0.1:0";
  options.workers = 1;
  auto agent = Agent::Create(options);
  REQUIRE(agent.ok());
  absl::Status s = (*agent)->Start();
  CHECK_FALSE(s.ok());
  CHECK_THAT(std::string(s.message()), Catch::Contains("cert.pem"));
  (*agent)->Shutdown();
}

}  // namespace
}  // namespace flexgate::agent
