#include "tests/integration/fault_support.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/config_loader.h"
#include "flexgate/v1/config_service.grpc.pb.h"
#include "flexgate/v1/fleet_service.grpc.pb.h"
#include "re2/re2.h"
#include "tests/harness/proc/test_util.h"
#include "tests/integration/http_probe.h"

namespace flexgate::testing {

namespace v1 = flexgate::v1;
using probe::HttpConnection;
using probe::HttpGet;
using probe::HttpRequest;
using probe::HttpResponse;

// Generous on purpose: these bound a wait on a live process, and every wait ends as soon as the
// answer arrives. On a loaded 2-core CI machine (ctest -j2 next to other suites) a proxied
// request or an admin call can stall for seconds without anything being wrong; a short timeout
// would turn that stall into a "failed request" or a missed readiness check.
constexpr absl::Duration kRequestTimeout = absl::Seconds(20);
constexpr absl::Duration kAdminTimeout = absl::Seconds(10);

// ---------------------------------------------------------------------------------------------
// LoadGenerator

LoadGenerator::LoadGenerator(uint16_t port) : port_(port) {
  threads_.emplace_back([this] { KeepAliveLoop(); });
  threads_.emplace_back([this] { FreshLoop(); });
}

LoadGenerator::~LoadGenerator() { Stop(); }

void LoadGenerator::Stop() {
  stop_ = true;
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

int64_t LoadGenerator::answered_by(char upstream) const {
  if (upstream < 'A' || upstream > 'Z') return 0;
  return by_upstream_[upstream - 'A'].load();
}

std::string LoadGenerator::Summary() const {
  std::lock_guard<std::mutex> lock(mu_);
  return absl::StrCat(total_.load(), " requests (keep-alive ", keepalive_.load(), ", fresh ",
                      fresh_.load(), "; A: ", answered_by('A'), ", B: ", answered_by('B'), "), ",
                      failures_.load(), " failed", first_failures_.empty() ? "" : ":\n",
                      absl::StrJoin(first_failures_, "\n"));
}

bool LoadGenerator::AwaitMore(int64_t n, absl::Duration timeout) const {
  const int64_t target = total_.load() + n;
  return WaitFor([&] { return total_.load() >= target; }, timeout, absl::Milliseconds(5));
}

void LoadGenerator::Record(const absl::Status& error, int status, const std::string& body,
                           const char* kind) {
  ++total_;
  if (error.ok() && status >= 200 && status < 300) {
    if (!body.empty() && body[0] >= 'A' && body[0] <= 'Z' && body.size() > 1 && body[1] == ' ') {
      ++by_upstream_[body[0] - 'A'];
    }
    return;
  }
  ++failures_;
  std::lock_guard<std::mutex> lock(mu_);
  if (first_failures_.size() < 10) {
    first_failures_.push_back(
        error.ok() ? absl::StrCat(kind, ": status ", status, " body \"", body.substr(0, 200), "\"")
                   : absl::StrCat(kind, ": ", error.ToString()));
  }
}

void LoadGenerator::KeepAliveLoop() {
  std::unique_ptr<HttpConnection> conn;
  for (int64_t i = 0; !stop_; ++i) {
    if (conn == nullptr || !conn->open()) {
      auto c = HttpConnection::Connect(port_, kRequestTimeout);
      if (!c.ok()) {
        Record(c.status(), 0, "", "keep-alive connect");
        ++keepalive_;
        continue;
      }
      conn = std::move(*c);
    }
    HttpRequest req;
    req.path = absl::StrCat("/load/keepalive/", i);
    auto r = conn->Send(req);
    if (r.ok()) {
      Record(absl::OkStatus(), r->status, r->body, "keep-alive");
    } else {
      Record(r.status(), 0, "", "keep-alive");
    }
    ++keepalive_;
  }
}

void LoadGenerator::FreshLoop() {
  for (int64_t i = 0; !stop_; ++i) {
    auto r = HttpGet(port_, absl::StrCat("/load/fresh/", i), kRequestTimeout);
    if (r.ok()) {
      Record(absl::OkStatus(), r->status, r->body, "fresh");
    } else {
      Record(r.status(), 0, "", "fresh");
    }
    ++fresh_;
  }
}

// ---------------------------------------------------------------------------------------------
// CpClient

namespace {

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

}  // namespace

class CpClient::Impl {
 public:
  Impl(const std::string& address, std::string key)
      : channel_(grpc::CreateChannel(address, grpc::InsecureChannelCredentials())),
        config_(v1::ConfigService::NewStub(channel_)),
        fleet_(v1::FleetService::NewStub(channel_)),
        key_(std::move(key)) {}

  void Prepare(grpc::ClientContext* ctx) const {
    ctx->AddMetadata("authorization", absl::StrCat("Bearer ", key_));
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ConfigService::Stub> config_;
  std::unique_ptr<v1::FleetService::Stub> fleet_;
  std::string key_;
};

CpClient::CpClient(const std::string& address, const std::string& api_key)
    : impl_(std::make_unique<Impl>(address, api_key)) {}
CpClient::~CpClient() = default;

absl::StatusOr<v1::ValidateResponse> CpClient::Validate(const v1::Config& config) {
  grpc::ClientContext ctx;
  impl_->Prepare(&ctx);
  v1::ValidateRequest req;
  *req.mutable_config() = config;
  v1::ValidateResponse resp;
  if (absl::Status s = FromGrpc(impl_->config_->Validate(&ctx, req, &resp), "Validate"); !s.ok()) {
    return s;
  }
  return resp;
}

absl::StatusOr<v1::ApplyResponse> CpClient::Apply(const v1::Config& config,
                                                  const std::string& message,
                                                  bool allow_unsupported) {
  grpc::ClientContext ctx;
  impl_->Prepare(&ctx);
  v1::ApplyRequest req;
  *req.mutable_config() = config;
  req.set_message(message);
  req.set_allow_unsupported(allow_unsupported);
  v1::ApplyResponse resp;
  if (absl::Status s = FromGrpc(impl_->config_->Apply(&ctx, req, &resp), "Apply"); !s.ok()) {
    return s;
  }
  return resp;
}

absl::StatusOr<std::vector<v1::ConfigVersion>> CpClient::ListAllVersions() {
  std::vector<v1::ConfigVersion> out;
  std::string token;
  do {
    grpc::ClientContext ctx;
    impl_->Prepare(&ctx);
    v1::ListVersionsRequest req;
    req.set_page_size(1000);
    req.set_page_token(token);
    v1::ListVersionsResponse resp;
    if (absl::Status s = FromGrpc(impl_->config_->ListVersions(&ctx, req, &resp), "ListVersions");
        !s.ok()) {
      return s;
    }
    for (auto& v : *resp.mutable_versions()) out.push_back(std::move(v));
    token = resp.next_page_token();
  } while (!token.empty());
  return out;
}

absl::StatusOr<v1::ListAgentsResponse> CpClient::ListAgents() {
  grpc::ClientContext ctx;
  impl_->Prepare(&ctx);
  v1::ListAgentsRequest req;
  v1::ListAgentsResponse resp;
  if (absl::Status s = FromGrpc(impl_->fleet_->ListAgents(&ctx, req, &resp), "ListAgents");
      !s.ok()) {
    return s;
  }
  return resp;
}

// ---------------------------------------------------------------------------------------------
// Configs and admin readers

std::string MarkedConfigYaml(const std::vector<uint16_t>& upstream_ports,
                             absl::string_view route_to, absl::string_view marker,
                             absl::string_view extra_routes_yaml) {
  std::string yaml = "clusters:\n";
  for (size_t i = 0; i < upstream_ports.size(); ++i) {
    absl::StrAppend(&yaml, "  - name: ", std::string(1, static_cast<char>('a' + i)), "\n",
                    "    endpoints:\n", "      - { address: 127.0.0.1, port: ", upstream_ports[i],
                    " }\n");
  }
  absl::StrAppend(&yaml,
                  "routes:\n"
                  "  - name: version\n"
                  "    match: { path: { exact: \"/version\" } }\n"
                  "    direct_response: { status: 200, body: \"",
                  marker, "\" }\n", extra_routes_yaml,
                  "  - name: all\n"
                  "    match: { path: { prefix: \"/\" } }\n"
                  "    cluster: ",
                  route_to, "\n");
  return yaml;
}

absl::StatusOr<v1::Config> MarkedConfig(const std::vector<uint16_t>& upstream_ports,
                                        absl::string_view route_to, absl::string_view marker,
                                        absl::string_view extra_routes_yaml) {
  std::string yaml = MarkedConfigYaml(upstream_ports, route_to, marker, extra_routes_yaml);
  auto config = ParseConfig(yaml);
  if (!config.ok()) {
    return absl::InternalError(absl::StrCat(config.status().message(), " in:\n", yaml));
  }
  return config;
}

AgentReadiness GetReadiness(uint16_t admin_port) {
  AgentReadiness out;
  auto r = HttpGet(admin_port, "/health/ready", kAdminTimeout);
  if (!r.ok()) return out;
  out.status = r->status;
  out.body = r->body;
  uint64_t version = 0;
  if (RE2::PartialMatch(r->body, R"re("version":(\d+))re", &version)) out.version = version;
  RE2::PartialMatch(r->body, R"re("source":"([a-z_]+)")re", &out.source);
  out.control_plane_connected =
      r->body.find("\"control_plane_connected\":true") != std::string::npos;
  return out;
}

absl::StatusOr<uint64_t> GetAgentStat(uint16_t admin_port, absl::string_view name) {
  auto r = HttpGet(admin_port, "/stats", kAdminTimeout);
  if (!r.ok()) return r.status();
  if (r->status != 200) return absl::UnavailableError(absl::StrCat("/stats: ", r->status));
  for (absl::string_view line : absl::StrSplit(r->body, '\n')) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(line, absl::MaxSplits(": ", 1));
    uint64_t value = 0;
    if (kv.first == name && absl::SimpleAtoi(kv.second, &value)) return value;
  }
  return absl::NotFoundError(absl::StrCat("/stats has no ", name));
}

const v1::FleetAgent* FindAgent(const v1::ListAgentsResponse& fleet, absl::string_view agent_id) {
  for (const auto& a : fleet.agents()) {
    if (a.agent_id() == agent_id) return &a;
  }
  return nullptr;
}

StackOptions RestartableStackOptions() {
  return {.upstreams = 2,
          .agent = true,
          .agent_workers = 2,
          .agent_args = {"--reconnect-max-backoff", "500ms"}};
}

bool AwaitServedAndCached(uint16_t admin_port, uint64_t version) {
  return WaitFor(
      [&] {
        auto writes = GetAgentStat(admin_port, "agent.cache_writes");
        return GetReadiness(admin_port).version == version && writes.ok() && *writes >= 1;
      },
      kConverge);
}

}  // namespace flexgate::testing
