// The Catch2 half of cp_test_support.h (LaunchCp is in cp_launch.cc).
#include "tests/controlplane/cp_test_support.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "tests/harness/http/http_client.h"
#include "tests/harness/proc/test_postgres.h"

namespace flexgate::testing {

namespace v1 = flexgate::v1;

std::string FreshDatabase(const std::string& prefix) {
  auto pg = TestPostgres::Shared();
  REQUIRE(pg.ok());
  auto url = (*pg)->CreateDatabase(prefix);
  INFO(url.status().ToString());
  REQUIRE(url.ok());
  return *url;
}

v1::Config RouteConfig(uint32_t port, int routes) {
  v1::Config c;
  auto* cluster = c.add_clusters();
  cluster->set_name("web");
  auto* ep = cluster->add_endpoints();
  ep->set_address("127.0.0.1");
  ep->set_port(port);
  for (int i = routes - 1; i >= 0; --i) {
    auto* route = c.add_routes();
    route->set_name(i == 0 ? std::string("all") : absl::StrCat("r", i));
    route->mutable_match()->mutable_path()->set_prefix(i == 0 ? std::string("/")
                                                              : absl::StrCat("/r", i, "/"));
    route->set_cluster("web");
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// CpProcess

CpProcess::CpProcess(CpLaunchOptions options) : bootstrap_key_(options.bootstrap_key) {
  CpPorts ports;
  auto p = LaunchCp(options, &ports);
  INFO(p.status().ToString());
  REQUIRE(p.ok());
  proc = std::move(p).value();
  grpc_port = ports.grpc;
  admin_port = ports.admin;
  channel = grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
  config = v1::ConfigService::NewStub(channel);
  fleet = v1::FleetService::NewStub(channel);
  tenants = v1::TenantService::NewStub(channel);
  keys = v1::KeyService::NewStub(channel);
  audit = v1::AuditService::NewStub(channel);
  agents = v1::AgentService::NewStub(channel);
}

CpProcess::~CpProcess() {
  CloseChannel();
  if (proc != nullptr) proc->Terminate();
}

void CpProcess::CloseChannel() {
  config.reset();
  fleet.reset();
  tenants.reset();
  keys.reset();
  audit.reset();
  agents.reset();
  channel.reset();
}

bool CpProcess::Stop() {
  CloseChannel();
  return proc->Terminate().success();
}

flexgate::v1::ApplyResponse CpProcess::Apply(const flexgate::v1::Config& cfg,
                                             const std::string& key) {
  flexgate::v1::ApplyRequest req;
  *req.mutable_config() = cfg;
  flexgate::v1::ApplyResponse resp;
  grpc::Status s = config->Apply(Ctx(key).get(), req, &resp);
  INFO(s.error_message());
  REQUIRE(s.ok());
  return resp;
}

std::string CpProcess::address() const { return absl::StrCat("127.0.0.1:", grpc_port); }

std::unique_ptr<grpc::ClientContext> CpProcess::Ctx(const std::string& key,
                                                    const std::string& request_id) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!key.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", key));
  if (!request_id.empty()) ctx->AddMetadata("x-request-id", request_id);
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  return ctx;
}

// ---------------------------------------------------------------------------------------------
// FakeAgent

FakeAgent::FakeAgent(CpProcess& cp, v1::Hello hello, const std::string& key, TokenIn token_in) {
  if (token_in == TokenIn::kMetadata) {
    ctx_.AddMetadata("authorization", absl::StrCat("Bearer ", key));
  } else {
    hello.set_token(key);
  }
  ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  stream_ = cp.agents->Connect(&ctx_);
  v1::AgentMessage m;
  *m.mutable_hello() = std::move(hello);
  // Not REQUIREd: a stream the control plane refuses may already be closed; the first read says.
  (void)stream_->Write(m);
}

FakeAgent::~FakeAgent() { Close(); }

void FakeAgent::Close() {
  if (finished_) return;
  finished_ = true;
  ctx_.TryCancel();
  (void)stream_->Finish();
}

grpc::Status FakeAgent::FinishStatus() {
  REQUIRE_FALSE(finished_);
  v1::ControlMessage msg;
  while (stream_->Read(&msg)) {
  }
  finished_ = true;
  return stream_->Finish();
}

bool FakeAgent::Read(v1::ControlMessage* msg) { return stream_->Read(msg); }

v1::Snapshot FakeAgent::Next() {
  v1::ControlMessage msg;
  REQUIRE(stream_->Read(&msg));
  REQUIRE(msg.has_snapshot());
  return msg.snapshot();
}

void FakeAgent::Write(const v1::AgentMessage& m) { REQUIRE(stream_->Write(m)); }

void FakeAgent::Ack(const v1::Snapshot& s) {
  v1::AgentMessage m;
  m.mutable_ack()->set_version(s.version());
  m.mutable_ack()->set_nonce(s.nonce());
  m.mutable_ack()->set_hash(s.hash());
  *m.mutable_ack()->mutable_apply_duration() =
      google::protobuf::util::TimeUtil::MillisecondsToDuration(
          absl::ToInt64Milliseconds(kFakeApplyDuration));
  Write(m);
}

void FakeAgent::AckWithNonce(uint64_t version, const std::string& nonce) {
  v1::AgentMessage m;
  m.mutable_ack()->set_version(version);
  m.mutable_ack()->set_nonce(nonce);
  Write(m);
}

void FakeAgent::Nack(const v1::Snapshot& s, uint64_t current, const std::string& error) {
  v1::AgentMessage m;
  m.mutable_nack()->set_nonce(s.nonce());
  m.mutable_nack()->set_rejected_version(s.version());
  m.mutable_nack()->set_current_version(current);
  m.mutable_nack()->set_error_detail(error);
  Write(m);
}

void FakeAgent::Heartbeat(uint64_t version, const std::string& hash) {
  v1::AgentMessage m;
  m.mutable_heartbeat()->set_applied_version(version);
  m.mutable_heartbeat()->set_applied_hash(hash);
  m.mutable_heartbeat()->set_healthy(true);
  Write(m);
}

// ---------------------------------------------------------------------------------------------
// Admin port

std::string AdminBody(int port, const std::string& path) {
  auto r = HttpGet(static_cast<uint16_t>(port), path);
  return r.ok() ? r->body : std::string();
}

int AdminStatus(int port, const std::string& path) {
  auto r = HttpGet(static_cast<uint16_t>(port), path);
  return r.ok() ? r->status : 0;
}

double MetricValue(const std::string& text, const std::string& sample) {
  // Samples start lines; a leading newline makes the first line match like any other.
  const std::string lines = absl::StrCat("\n", text);
  size_t pos = lines.find(absl::StrCat("\n", sample, " "));
  if (pos == std::string::npos) return -1;
  size_t start = pos + sample.size() + 2;
  double v = -1;
  (void)absl::SimpleAtod(lines.substr(start, lines.find('\n', start) - start), &v);
  return v;
}

double CpMetric(int admin_port, const std::string& sample) {
  return MetricValue(AdminBody(admin_port, "/metrics"), sample);
}

}  // namespace flexgate::testing
