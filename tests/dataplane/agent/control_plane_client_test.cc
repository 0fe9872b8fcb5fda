// The agent's side of AgentService.Connect against a small in-test control plane (a real gRPC
// server on loopback): Hello contents and metadata, Ack only after every worker swapped and the
// cache holds the snapshot, Nack for every kind of rejection with the old table kept, stale
// versions, heartbeats, reconnects, and prompt stop.
//
// The request path is replaced by a RoutePublisher stand-in that confirms the swap from another
// thread, as ProxyServer's workers do; the agent-level test runs the real workers.
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "absl/synchronization/mutex.h"
#include "common/canonical.h"
#include "common/config_loader.h"
#include "common/validator.h"
#include "dataplane/agent/control_plane_client.h"
#include "fake_control_plane.h"
#include "flexgate/v1/agent.grpc.pb.h"
#include "temp_dir.h"

namespace flexgate::agent {
namespace {

namespace v1 = flexgate::v1;
using testing::AckFor;
using testing::FakeControlPlane;
using testing::IsHello;
using testing::NackFor;
using testing::TempDir;

// --- the request-path stand-in -----------------------------------------------------------------

class TestPublisher final : public RoutePublisher {
 public:
  ~TestPublisher() override {
    for (auto& t : workers_) t.join();
  }
  absl::Status Publish(const v1::Config&, uint64_t version, std::string,
                       std::function<void()> done) override {
    absl::MutexLock lock(&mu_);
    if (fail_next_) {
      fail_next_ = false;
      return absl::InvalidArgumentError("compile failed: test says no");
    }
    published_.push_back(version);
    workers_.emplace_back([done = std::move(done)] { done(); });
    return absl::OkStatus();
  }
  void FailNext() {
    absl::MutexLock lock(&mu_);
    fail_next_ = true;
  }
  std::vector<uint64_t> published() {
    absl::MutexLock lock(&mu_);
    return published_;
  }

 private:
  absl::Mutex mu_;
  bool fail_next_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<uint64_t> published_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_;
};

// --- helpers -----------------------------------------------------------------------------------

v1::Config WebConfig(int port, const std::string& cluster_ref = "web") {
  auto config = ParseConfig(
      "clusters:\n"
      "  - name: web\n"
      "    endpoints:\n"
      "      - { address: 127.0.0.1, port: " + std::to_string(port) + " }\n"
      "routes:\n"
      "  - name: all\n"
      "    match: { path: { prefix: \"/\" } }\n"
      "    cluster: " + cluster_ref + "\n");
  REQUIRE(config.ok());
  return *config;
}

v1::Snapshot MakeSnapshot(uint64_t version, const std::string& nonce, v1::Config config) {
  v1::Snapshot s;
  s.set_version(version);
  s.set_nonce(nonce);
  s.set_hash(ConfigHash(config));
  *s.mutable_config() = std::move(config);
  return s;
}


struct ClientUnderTest {
  AgentState state;
  TestPublisher publisher;
  std::unique_ptr<SnapshotApplier> applier;
  std::unique_ptr<SnapshotCache> cache;
  std::unique_ptr<ControlPlaneClient> client;

  ClientUnderTest(const std::string& address, const std::string& cache_dir = "",
        const std::string& agent_id = "edge-1",
        const std::function<void(ControlPlaneOptions*)>& tweak = nullptr) {
    state.SetAgentId(agent_id);
    ValidationOptions validation;
    validation.check_capabilities = true;
    validation.capabilities = AgentCapabilities();
    applier = std::make_unique<SnapshotApplier>(&publisher, &state, validation);
    if (!cache_dir.empty()) {
      std::vector<std::string> problems;
      auto c = SnapshotCache::Open(cache_dir, &problems);
      REQUIRE(c.ok());
      cache = *std::move(c);
    }
    ControlPlaneClientOptions options;
    options.connection.address = address;
    options.connection.token = "tenant-token";
    options.connection.heartbeat_interval = absl::Milliseconds(100);
    options.connection.reconnect_base = absl::Milliseconds(20);
    options.connection.reconnect_max = absl::Milliseconds(200);
    options.labels = {{"zone", "a"}, {"tier", "edge"}};
    options.agent_version = "9.9.9-test";
    options.capabilities = {"cap.one", "cap.two"};
    if (tweak) tweak(&options.connection);
    auto c = ControlPlaneClient::Create(options, applier.get(), cache.get(), &state);
    REQUIRE(c.ok());
    client = *std::move(c);
  }
  ~ClientUnderTest() { client->Stop(); }
};

// Polls `pred` until it holds or `timeout` passes.
bool Eventually(const std::function<bool()>& pred, absl::Duration timeout = absl::Seconds(10)) {
  absl::Time deadline = absl::Now() + timeout;
  while (!pred()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// Applies v1 through the stream and waits for its Ack.
void ApplyFirst(FakeControlPlane& cp, int port = 8081) {
  REQUIRE(cp.WaitFor([](const v1::AgentMessage& m) { return m.has_hello(); }));
  cp.Send(MakeSnapshot(1, "n1", WebConfig(port)));
  REQUIRE(cp.WaitFor(AckFor("n1")));
}

// --- tests -------------------------------------------------------------------------------------

TEST_CASE("Hello carries identity, labels, capabilities and the bearer token") {
  FakeControlPlane cp;
  ClientUnderTest agent(cp.address());
  agent.client->Start();
  auto hello = cp.WaitFor([](const v1::AgentMessage& m) { return m.has_hello(); });
  REQUIRE(hello);
  const v1::Hello& h = hello->hello();
  CHECK(h.agent_id() == "edge-1");
  CHECK(h.token() == "tenant-token");
  CHECK(h.labels().at("zone") == "a");
  CHECK(h.labels().at("tier") == "edge");
  CHECK(h.agent_version() == "9.9.9-test");
  CHECK(std::vector<std::string>(h.capabilities().begin(), h.capabilities().end()) ==
        std::vector<std::string>{"cap.one", "cap.two"});
  CHECK(h.applied_version() == 0);
  CHECK(h.applied_hash().empty());
  CHECK(cp.authorization() == "Bearer tenant-token");
  CHECK(Eventually([&] { return agent.state.control_plane_connected(); }));
}

TEST_CASE("a valid snapshot is applied, cached, then ACKed; heartbeats report it") {
  FakeControlPlane cp;
  TempDir dir;
  ClientUnderTest agent(cp.address(), dir.path());
  agent.client->Start();
  REQUIRE(cp.WaitFor([](const v1::AgentMessage& m) { return m.has_hello(); }));

  v1::Snapshot snapshot = MakeSnapshot(1, "n1", WebConfig(8081));
  cp.Send(snapshot);
  auto ack = cp.WaitFor(AckFor("n1"));
  REQUIRE(ack);
  CHECK(ack->ack().version() == 1);
  CHECK(ack->ack().hash() == snapshot.hash());
  CHECK(ack->ack().has_apply_duration());

  // By the time the Ack left, every worker served v1 and the cache held it.
  CHECK(agent.publisher.published() == std::vector<uint64_t>{1});
  auto served = agent.state.served();
  REQUIRE(served);
  CHECK(served->version == 1);
  CHECK(served->source == SnapshotSource::kControlPlane);
  CacheLoadResult cached = agent.cache->Load();
  REQUIRE(cached.snapshot);
  CHECK(cached.snapshot->version == 1);
  CHECK(cached.snapshot->hash == snapshot.hash());

  auto hb = cp.WaitFor([](const v1::AgentMessage& m) {
    return m.has_heartbeat() && m.heartbeat().applied_version() == 1;
  });
  REQUIRE(hb);
  CHECK(hb->heartbeat().applied_hash() == snapshot.hash());
  CHECK(hb->heartbeat().healthy());
}

TEST_CASE("rejected snapshots are NACKed and the old table keeps serving") {
  FakeControlPlane cp;
  TempDir dir;
  ClientUnderTest agent(cp.address(), dir.path());
  agent.client->Start();
  ApplyFirst(cp);

  SECTION("hash that does not match the config") {
    v1::Snapshot bad = MakeSnapshot(2, "n2", WebConfig(8082));
    bad.set_hash(std::string(64, '0'));
    cp.Send(bad);
    auto nack = cp.WaitFor(NackFor("n2"));
    REQUIRE(nack);
    CHECK(nack->nack().rejected_version() == 2);
    CHECK(nack->nack().current_version() == 1);
    CHECK_THAT(nack->nack().error_detail(), Catch::Contains("hash_mismatch"));
  }
  SECTION("config the agent's validator rejects") {
    cp.Send(MakeSnapshot(2, "n2", WebConfig(8082, "nowhere")));
    auto nack = cp.WaitFor(NackFor("n2"));
    REQUIRE(nack);
    CHECK(nack->nack().current_version() == 1);
    CHECK_THAT(nack->nack().error_detail(), Catch::Contains("unknown_cluster"));
    CHECK_THAT(nack->nack().error_detail(), Catch::Contains("routes[0].cluster"));
  }
  SECTION("config the compiler rejects") {
    agent.publisher.FailNext();
    cp.Send(MakeSnapshot(2, "n2", WebConfig(8082)));
    auto nack = cp.WaitFor(NackFor("n2"));
    REQUIRE(nack);
    CHECK_THAT(nack->nack().error_detail(), Catch::Contains("compile failed"));
  }

  CHECK(agent.publisher.published() == std::vector<uint64_t>{1});
  CHECK(agent.state.served()->version == 1);
  CHECK(agent.state.snapshots_rejected == 1);
  CHECK(agent.cache->Load().snapshot->version == 1);
  // The stream survives a rejection: the next good version still applies.
  cp.Send(MakeSnapshot(3, "n3", WebConfig(8083)));
  REQUIRE(cp.WaitFor(AckFor("n3")));
  CHECK(agent.state.served()->version == 3);
}

TEST_CASE("same version is confirmed without re-applying; older versions are refused") {
  FakeControlPlane cp;
  ClientUnderTest agent(cp.address());
  agent.client->Start();
  ApplyFirst(cp);
  cp.Send(MakeSnapshot(1, "again", WebConfig(8081)));
  REQUIRE(cp.WaitFor(AckFor("again")));
  CHECK(agent.publisher.published() == std::vector<uint64_t>{1});

  cp.Send(MakeSnapshot(5, "n5", WebConfig(8085)));
  REQUIRE(cp.WaitFor(AckFor("n5")));
  cp.Send(MakeSnapshot(4, "n4", WebConfig(8084)));
  auto nack = cp.WaitFor(NackFor("n4"));
  REQUIRE(nack);
  CHECK(nack->nack().current_version() == 5);
  CHECK_THAT(nack->nack().error_detail(), Catch::Contains("stale_version"));
  CHECK(agent.publisher.published() == std::vector<uint64_t>{1, 5});
  CHECK(agent.state.served()->version == 5);
}

TEST_CASE("a snapshot served from the cache is confirmed by the control plane") {
  FakeControlPlane cp;
  ClientUnderTest agent(cp.address());
  v1::Snapshot snapshot = MakeSnapshot(9, "n9", WebConfig(8089));
  auto served = std::make_shared<ServedSnapshot>();
  served->version = 9;
  served->hash = snapshot.hash();
  served->source = SnapshotSource::kCache;
  served->config = std::make_shared<const v1::Config>(snapshot.config());
  agent.state.SetServed(served);

  agent.client->Start();
  auto hello = cp.WaitFor([](const v1::AgentMessage& m) { return m.has_hello(); });
  REQUIRE(hello);
  CHECK(hello->hello().applied_version() == 9);
  CHECK(hello->hello().applied_hash() == snapshot.hash());
  cp.Send(snapshot);
  REQUIRE(cp.WaitFor(AckFor("n9")));
  CHECK(agent.publisher.published().empty());
  CHECK(agent.state.served()->source == SnapshotSource::kControlPlane);
}

TEST_CASE("a dropped stream is re-opened and Hello reports what is served") {
  FakeControlPlane cp;
  ClientUnderTest agent(cp.address(), "", /*agent_id=*/"");
  agent.client->Start();
  REQUIRE(cp.WaitFor([](const v1::AgentMessage& m) { return m.has_hello(); }));
  v1::Snapshot snapshot = MakeSnapshot(1, "n1", WebConfig(8081));
  snapshot.set_agent_id("assigned-by-cp");
  cp.Send(snapshot);
  REQUIRE(cp.WaitFor(AckFor("n1")));
  CHECK(agent.state.agent_id() == "assigned-by-cp");

  cp.DropStream();
  auto second = cp.WaitFor([](const v1::AgentMessage& m) {
    return m.has_hello() && m.hello().applied_version() == 1;
  });
  REQUIRE(second);
  CHECK(second->hello().applied_hash() == snapshot.hash());
  CHECK(second->hello().agent_id() == "assigned-by-cp");
  CHECK(cp.hellos() == 2);
  // The counter moves just after the Hello is written, so await it rather than race it.
  CHECK(Eventually([&] { return agent.state.control_plane_connects >= 2; }));
  CHECK(agent.state.control_plane_disconnects >= 1);
}

uint16_t ClosedPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

TEST_CASE("an unreachable control plane is retried and Stop is still prompt") {
  ClientUnderTest agent("127.0.0.1:" + std::to_string(ClosedPort()));
  agent.client->Start();
  CHECK(Eventually([&] { return agent.state.control_plane_disconnects >= 3; }));
  CHECK_FALSE(agent.state.control_plane_connected());
  absl::Time t0 = absl::Now();
  agent.client->Stop();
  CHECK(absl::Now() - t0 < absl::Seconds(2));
}

TEST_CASE("TLS files are read when the client is created") {
  AgentState state;
  TestPublisher publisher;
  SnapshotApplier applier(&publisher, &state, {});
  ControlPlaneClientOptions options;
  options.connection.address = "127.0.0.1:1";
  options.connection.tls = true;
  options.connection.ca_file = "/nonexistent/ca.pem";
  auto client = ControlPlaneClient::Create(options, &applier, nullptr, &state);
  REQUIRE_FALSE(client.ok());
  CHECK_THAT(std::string(client.status().message()), Catch::Contains("ca.pem"));
}

// --- TLS to the control plane ------------------------------------------------------------------

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A throwaway PKI made with the openssl command: a CA, a server certificate for
// cp.flexgate.test, a client certificate, and an unrelated CA.
struct TestPki {
  TempDir dir;
  bool ok = false;
  TestPki() {
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    std::string script =
        "set -e; cd '" + dir.path() + "'; "
        "openssl req -x509" + ec + " -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca; "
        "openssl req -x509" + ec + " -keyout other.key -out other.pem -days 2 -subj /CN=other; "
        "printf 'subjectAltName=DNS:cp.flexgate.test\\n' > server.ext; "
        "openssl req" + ec + " -keyout server.key -out server.csr -subj /CN=cp.flexgate.test; "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "  -out server.pem -days 2 -extfile server.ext; "
        "openssl req" + ec + " -keyout client.key -out client.csr -subj /CN=agent; "
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "  -out client.pem -days 2";
    ok = std::system(("(" + script + ") >/dev/null 2>&1").c_str()) == 0;
  }
  std::string file(const std::string& name) const { return dir.file(name); }

  std::shared_ptr<grpc::ServerCredentials> ServerCredentials(bool require_client_cert) const {
    grpc::SslServerCredentialsOptions options(
        require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                            : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    options.pem_root_certs = Slurp(file("ca.pem"));
    options.pem_key_cert_pairs.push_back({Slurp(file("server.key")), Slurp(file("server.pem"))});
    return grpc::SslServerCredentials(options);
  }
};

// True when the agent keeps failing to open a stream and the control plane saw no Hello.
bool NeverConnects(ClientUnderTest& agent, FakeControlPlane& cp) {
  bool failed = Eventually([&] { return agent.state.control_plane_disconnects >= 2; });
  return failed && cp.hellos() == 0 && agent.state.control_plane_connects == 0;
}

TEST_CASE("TLS: the control plane's certificate is verified against the CA and server name") {
  TestPki pki;
  REQUIRE(pki.ok);
  FakeControlPlane cp(pki.ServerCredentials(/*require_client_cert=*/false));

  SECTION("trusted CA and matching name: connects") {
    ClientUnderTest agent(cp.address(), "", "edge-1", [&](ControlPlaneOptions* c) {
      c->tls = true;
      c->ca_file = pki.file("ca.pem");
      c->server_name = "cp.flexgate.test";
    });
    agent.client->Start();
    REQUIRE(cp.WaitFor(IsHello()));
    CHECK(cp.authorization() == "Bearer tenant-token");
  }
  SECTION("a CA that did not sign the server certificate: refused") {
    ClientUnderTest agent(cp.address(), "", "edge-1", [&](ControlPlaneOptions* c) {
      c->tls = true;
      c->ca_file = pki.file("other.pem");
      c->server_name = "cp.flexgate.test";
    });
    agent.client->Start();
    CHECK(NeverConnects(agent, cp));
  }
  SECTION("a name the certificate does not carry: refused") {
    ClientUnderTest agent(cp.address(), "", "edge-1", [&](ControlPlaneOptions* c) {
      c->tls = true;
      c->ca_file = pki.file("ca.pem");
      c->server_name = "impostor.flexgate.test";
    });
    agent.client->Start();
    CHECK(NeverConnects(agent, cp));
  }
  SECTION("plaintext to a TLS control plane: refused") {
    ClientUnderTest agent(cp.address());
    agent.client->Start();
    CHECK(NeverConnects(agent, cp));
  }
}

TEST_CASE("mTLS: a control plane that requires client certificates admits only agents with one") {
  TestPki pki;
  REQUIRE(pki.ok);
  FakeControlPlane cp(pki.ServerCredentials(/*require_client_cert=*/true));
  auto with_tls = [&](bool client_cert) {
    return [&pki, client_cert](ControlPlaneOptions* c) {
      c->tls = true;
      c->ca_file = pki.file("ca.pem");
      c->server_name = "cp.flexgate.test";
      if (client_cert) {
        c->cert_file = pki.file("client.pem");
        c->key_file = pki.file("client.key");
      }
    };
  };
  SECTION("with a client certificate") {
    ClientUnderTest agent(cp.address(), "", "edge-1", with_tls(true));
    agent.client->Start();
    REQUIRE(cp.WaitFor(IsHello()));
  }
  SECTION("without one") {
    ClientUnderTest agent(cp.address(), "", "edge-1", with_tls(false));
    agent.client->Start();
    CHECK(NeverConnects(agent, cp));
  }
}

}  // namespace
}  // namespace flexgate::agent
