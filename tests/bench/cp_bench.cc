// flexgate-cp-bench: measures the control plane's dry-run and apply paths against a running
// flexgate-cp (it starts nothing itself; tests/bench/run_cp_bench.sh starts a throwaway
// PostgreSQL and control plane and runs it).
//
//   flexgate-cp-bench --server HOST:PORT --token KEY [--tenant NAME] [--validate-calls N]
//                     [--applies N] [--apply-routes N]
//
// For configs of 100, 1,000 and 10,000 routes it applies the config as the live version, then
// calls ConfigService.Validate N times with a one-field change of it (after a warm-up call) and
// reports the client-observed latency p50/p99/max: validation, hash, semantic diff against the
// live version and the impact query, as CI sees them. Then it applies N distinct configs in a row and reports
// applies per second (each apply: validate, canonical hash, diff against the live version for
// the audit summary, one PostgreSQL transaction, one NOTIFY).
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "flexgate/v1/config_service.grpc.pb.h"

namespace {

namespace v1 = flexgate::v1;
using Clock = std::chrono::steady_clock;

// A realistic tenant config: 20 clusters, `routes` routes with distinct prefixes, a few with
// regex paths, host matches, policies and rate limits. `variant` changes one endpoint port so
// consecutive configs are distinct.
v1::Config MakeConfig(int routes, int variant) {
  v1::Config c;
  for (int i = 0; i < 20; ++i) {
    auto* cl = c.add_clusters();
    cl->set_name(absl::StrCat("svc-", i));
    auto* ep = cl->add_endpoints();
    ep->set_address(absl::StrCat("10.0.", i, ".1"));
    ep->set_port(static_cast<uint32_t>(i == 0 ? 20000 + variant % 40000 : 8080));
  }
  auto* rl = c.add_rate_limits();
  rl->set_name("per-ip");
  rl->set_by(v1::RateLimit::CLIENT_IP);
  rl->set_requests_per_unit(10);
  rl->set_unit(v1::RateLimit::MINUTE);
  auto* pol = c.add_policies();
  pol->set_name("deny-internal");
  pol->mutable_ip_access()->add_deny("10.0.0.0/8");
  for (int i = 0; i < routes; ++i) {
    auto* r = c.add_routes();
    r->set_name(absl::StrCat("route-", i));
    if (i % 50 == 7) {
      r->mutable_match()->mutable_path()->set_regex(absl::StrCat("/re", i, "/[a-z]+/[0-9]+"));
    } else {
      r->mutable_match()->mutable_path()->set_prefix(absl::StrCat("/api/v1/svc", i, "/"));
    }
    if (i % 10 == 3) r->mutable_match()->add_hosts(absl::StrCat("h", i, ".example.com"));
    r->set_cluster(absl::StrCat("svc-", i % 20));
    if (i % 5 == 0) r->add_rate_limits("per-ip");
    if (i % 7 == 0) r->add_policies("deny-internal");
  }
  return c;
}

struct Args {
  std::string server;
  std::string token;
  std::string tenant;
  int validate_calls = 50;
  int applies = 100;
  int apply_routes = 1000;
};

std::unique_ptr<grpc::ClientContext> Ctx(const Args& a) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->AddMetadata("authorization", absl::StrCat("Bearer ", a.token));
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  return ctx;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

int Usage(const char* msg) {
  std::fprintf(stderr,
               "flexgate-cp-bench: %s\nusage: flexgate-cp-bench --server HOST:PORT --token KEY "
               "[--tenant NAME] [--validate-calls N] [--applies N] [--apply-routes N]\n",
               msg);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) return Usage("every flag needs a value");
    std::string value = argv[++i];
    if (flag == "--server") a.server = value;
    else if (flag == "--token") a.token = value;
    else if (flag == "--tenant") a.tenant = value;
    else if (flag == "--validate-calls") { if (!absl::SimpleAtoi(value, &a.validate_calls) || a.validate_calls < 1) return Usage("bad --validate-calls"); }
    else if (flag == "--applies") { if (!absl::SimpleAtoi(value, &a.applies) || a.applies < 1) return Usage("bad --applies"); }
    else if (flag == "--apply-routes") { if (!absl::SimpleAtoi(value, &a.apply_routes) || a.apply_routes < 1) return Usage("bad --apply-routes"); }
    else return Usage(absl::StrCat("unknown flag ", flag).c_str());
  }
  if (a.server.empty() || a.token.empty()) return Usage("--server and --token are required");

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  auto channel =
      grpc::CreateCustomChannel(a.server, grpc::InsecureChannelCredentials(), args);
  auto stub = v1::ConfigService::NewStub(channel);

  std::printf("%-10s %8s %10s %10s %10s %10s %8s\n", "routes", "calls", "bytes", "p50_ms",
              "p99_ms", "max_ms", "changed");
  for (int routes : {100, 1000, 10000}) {
    // The live version is the same config with one endpoint port different: the usual CI case
    // of a pull request that changes one thing in a large config.
    {
      v1::ApplyRequest areq;
      areq.set_tenant(a.tenant);
      *areq.mutable_config() = MakeConfig(routes, 0);
      areq.set_message("bench baseline");
      v1::ApplyResponse aresp;
      grpc::Status s = stub->Apply(Ctx(a).get(), areq, &aresp);
      if (!s.ok()) {
        std::fprintf(stderr, "baseline apply failed: %s\n", s.error_message().c_str());
        return 1;
      }
    }
    v1::ValidateRequest req;
    req.set_tenant(a.tenant);
    *req.mutable_config() = MakeConfig(routes, 1);
    std::vector<double> ms;
    v1::ValidateResponse resp;
    for (int i = 0; i <= a.validate_calls; ++i) {
      resp.Clear();
      auto start = Clock::now();
      grpc::Status s = stub->Validate(Ctx(a).get(), req, &resp);
      double took = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      if (!s.ok() || !resp.valid()) {
        std::fprintf(stderr, "validate failed: %s (valid=%d)\n", s.error_message().c_str(),
                     resp.valid());
        return 1;
      }
      if (i > 0) ms.push_back(took);  // call 0 warms caches and connections
    }
    std::printf("%-10d %8d %10zu %10.2f %10.2f %10.2f %8d\n", routes, a.validate_calls,
                req.ByteSizeLong(), Percentile(ms, 0.5), Percentile(ms, 0.99),
                Percentile(ms, 1.0),
                resp.diff().added() + resp.diff().removed() + resp.diff().changed());
  }

  // Apply throughput: distinct configs back to back, each on top of the last.
  std::vector<v1::Config> configs;
  for (int i = 0; i < a.applies; ++i) configs.push_back(MakeConfig(a.apply_routes, 100 + i));
  auto start = Clock::now();
  for (int i = 0; i < a.applies; ++i) {
    v1::ApplyRequest req;
    req.set_tenant(a.tenant);
    *req.mutable_config() = configs[i];
    v1::ApplyResponse resp;
    grpc::Status s = stub->Apply(Ctx(a).get(), req, &resp);
    if (!s.ok() || resp.unchanged()) {
      std::fprintf(stderr, "apply %d failed: %s\n", i, s.error_message().c_str());
      return 1;
    }
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("\napply: %d distinct configs of %d routes in %.2f s = %.1f applies/s "
              "(%.2f ms each)\n",
              a.applies, a.apply_routes, secs, a.applies / secs, 1000.0 * secs / a.applies);
  return 0;
}
