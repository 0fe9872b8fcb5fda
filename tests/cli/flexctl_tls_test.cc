// flexctl --tls / --ca-file against a gRPC server that serves TLS. flexgate-cp itself listens in
// plaintext (TLS is terminated in front of it), so this test runs a small in-process
// TenantService over TLS, with a certificate made by the openssl program for 127.0.0.1, and runs
// the real flexctl program against it: the client's half of TLS is what is under test.
#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "flexgate/v1/tenant_service.grpc.pb.h"
#include "tests/harness/proc/process.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::cli {
namespace {

using flexgate::testing::BinaryPath;
using flexgate::testing::CommandResult;
using flexgate::testing::ProcessOptions;
using flexgate::testing::ReadFileToString;
using flexgate::testing::RunCommand;
using flexgate::testing::TempDir;

// Answers ListTenants with one tenant, and only to the expected API key.
class TenantsOverTls final : public v1::TenantService::Service {
 public:
  grpc::Status ListTenants(grpc::ServerContext* ctx, const v1::ListTenantsRequest*,
                           v1::ListTenantsResponse* resp) override {
    auto it = ctx->client_metadata().find("authorization");
    if (it == ctx->client_metadata().end() ||
        std::string(it->second.data(), it->second.size()) != "Bearer fgk_tls_test") {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing or wrong key");
    }
    resp->add_tenants()->set_name("over-tls");
    return grpc::Status::OK;
  }
};

CommandResult Flexctl(std::vector<std::string> args) {
  ProcessOptions o;
  o.args = {BinaryPath("flexctl"), "--token", "fgk_tls_test", "--timeout", "5s"};
  o.args.insert(o.args.end(), args.begin(), args.end());
  o.unset_env = {"FLEXGATE_SERVER", "FLEXGATE_TOKEN"};
  auto r = RunCommand(std::move(o), absl::Seconds(30));
  if (!r.ok()) FAIL("flexctl did not run: " << r.status().ToString());
  return *r;
}

TEST_CASE("flexctl --ca-file verifies a TLS server, plaintext and untrusted TLS exit 2") {
  TempDir dir("flexctl-tls");
  ProcessOptions gen;
  gen.args = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=flexgate-test",
              "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
              "-keyout", dir.File("key.pem"), "-out", dir.File("cert.pem")};
  auto made = RunCommand(gen, absl::Seconds(30));
  REQUIRE(made.ok());
  INFO(made->Describe());
  REQUIRE(made->status.success());
  auto cert = ReadFileToString(dir.File("cert.pem"));
  auto key = ReadFileToString(dir.File("key.pem"));
  REQUIRE(cert.ok());
  REQUIRE(key.ok());

  TenantsOverTls service;
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(ssl), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  REQUIRE(server != nullptr);
  REQUIRE(port > 0);
  const std::string address = absl::StrCat("127.0.0.1:", port);

  SECTION("trusted through --ca-file: the call succeeds") {
    CommandResult r = Flexctl({"tenants", "list", "--server", address, "--ca-file",
                               dir.File("cert.pem")});
    INFO(r.Describe());
    CHECK(r.status.code == 0);
    CHECK(absl::StrContains(r.out, "over-tls"));
  }
  SECTION("--tls with the system roots does not trust a self-signed server") {
    CommandResult r = Flexctl({"tenants", "list", "--server", address, "--tls"});
    INFO(r.Describe());
    CHECK(r.status.code == 2);
    CHECK(absl::StrContains(r.err, "cannot reach flexgate-cp"));
  }
  SECTION("plaintext to a TLS server gets no answer") {
    CommandResult r = Flexctl({"tenants", "list", "--server", address});
    INFO(r.Describe());
    CHECK(r.status.code == 2);
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace
}  // namespace flexgate::cli
