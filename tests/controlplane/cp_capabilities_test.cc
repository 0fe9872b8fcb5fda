// Dry-run fidelity against the fleet: flexgate-cp as a real process on a real PostgreSQL, fake
// agents as real gRPC streams that announce a narrowed capability list in Hello. Validate must
// report, and Apply must refuse (unless allow_unsupported is set), a config that uses a feature
// some of the tenant's agents cannot enforce, because those agents would NACK it.
#include <catch2/catch.hpp>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/capabilities.h"
#include "tests/controlplane/cp_test_support.h"

namespace flexgate::cp {
namespace {

using flexgate::testing::LaunchOptions;
using flexgate::testing::CpProcess;
using flexgate::testing::FreshDatabase;
namespace v1 = flexgate::v1;

constexpr char kOperatorKey[] = "fgk_capabilities_test_operator";

// One cluster and a prefix route; with `regex`, first a route matched by an RE2 regex.
v1::Config MakeConfig(bool regex, uint32_t port = 8081) {
  v1::Config c = flexgate::testing::RouteConfig(port);
  if (regex) {
    v1::Route all = c.routes(0);
    c.clear_routes();
    auto* r = c.add_routes();
    r->set_name("orders");
    r->mutable_match()->mutable_path()->set_regex("^/orders/[0-9]+$");
    r->set_cluster("web");
    *c.add_routes() = std::move(all);
  }
  return c;
}

std::vector<std::string> AllBut(const std::string& missing) {
  std::vector<std::string> out;
  for (const std::string& f : AllFeatures()) {
    if (f != missing) out.push_back(f);
  }
  return out;
}

struct Cp : CpProcess {
  explicit Cp(const std::string& db_url) : CpProcess(LaunchOptions(db_url, kOperatorKey)) {}

  v1::ValidateResponse Validate(const v1::Config& cfg) {
    v1::ValidateRequest req;
    *req.mutable_config() = cfg;
    v1::ValidateResponse resp;
    grpc::Status s = config->Validate(Ctx(kOperatorKey).get(), req, &resp);
    INFO(s.error_message());
    REQUIRE(s.ok());
    return resp;
  }

  grpc::Status Apply(const v1::Config& cfg, bool allow_unsupported, v1::ApplyResponse* resp) {
    v1::ApplyRequest req;
    *req.mutable_config() = cfg;
    req.set_allow_unsupported(allow_unsupported);
    return config->Apply(Ctx(kOperatorKey).get(), req, resp);
  }
};

// A fake agent announcing `capabilities`; the operator key (admin of tenant "default") opens
// agent streams of "default".
struct FakeAgent : flexgate::testing::FakeAgent {
  FakeAgent(Cp& cp, const std::string& id, const std::vector<std::string>& capabilities)
      : flexgate::testing::FakeAgent(cp, Hello(id, capabilities), kOperatorKey) {}

  static v1::Hello Hello(const std::string& id, const std::vector<std::string>& capabilities) {
    v1::Hello hello;
    hello.set_agent_id(id);
    for (const std::string& c : capabilities) hello.add_capabilities(c);
    return hello;
  }
};

std::vector<v1::Diagnostic> WithCode(const google::protobuf::RepeatedPtrField<v1::Diagnostic>& d,
                                     const std::string& code) {
  std::vector<v1::Diagnostic> out;
  for (const auto& x : d) {
    if (x.code() == code) out.push_back(x);
  }
  return out;
}

TEST_CASE("Validate and Apply check the features a config uses against the agents' capabilities") {
  Cp cp(FreshDatabase("cp_caps"));

  // No agents known: nothing to check, a regex route is fine.
  {
    v1::ValidateResponse v = cp.Validate(MakeConfig(true));
    CHECK(v.valid());
    CHECK(WithCode(v.diagnostics(), "unsupported_feature").empty());
  }
  v1::ApplyResponse first;
  REQUIRE(cp.Apply(MakeConfig(false), false, &first).ok());
  REQUIRE(first.version() == 1);

  // Two agents enforce everything, one lacks regex matching, one announces nothing (not counted:
  // its capabilities are unknown).
  FakeAgent full1(cp, "full-1", AllFeatures());
  FakeAgent full2(cp, "full-2", AllFeatures());
  FakeAgent narrow(cp, "narrow", AllBut("route.match.regex"));
  FakeAgent silent(cp, "silent", {});
  for (FakeAgent* a : {&full1, &full2, &narrow, &silent}) CHECK(a->Next().version() == 1);

  SECTION("a feature one agent lacks is an error at its first use, and Apply refuses it") {
    v1::ValidateResponse v = cp.Validate(MakeConfig(true, 8082));
    CHECK_FALSE(v.valid());
    auto unsupported = WithCode(v.diagnostics(), "unsupported_feature");
    REQUIRE(unsupported.size() == 1);
    CHECK(unsupported[0].severity() == v1::Diagnostic::ERROR);
    CHECK(unsupported[0].path() == "routes[0].match.path.regex");
    CHECK(unsupported[0].message() == "1 of 3 agents cannot enforce route.match.regex");

    v1::ApplyResponse resp;
    grpc::Status s = cp.Apply(MakeConfig(true, 8082), false, &resp);
    CHECK(s.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK(s.error_message().find("routes[0].match.path.regex: unsupported_feature: 1 of 3 agents") !=
          std::string::npos);
    CHECK(s.error_message().find("allow_unsupported") != std::string::npos);
    // Nothing was stored.
    CHECK(cp.Validate(MakeConfig(false)).live_version() == 1);

    // A config within every agent's capabilities goes through.
    v1::ValidateResponse ok = cp.Validate(MakeConfig(false, 8083));
    CHECK(ok.valid());
    CHECK(WithCode(ok.diagnostics(), "unsupported_feature").empty());
    v1::ApplyResponse applied;
    REQUIRE(cp.Apply(MakeConfig(false, 8083), false, &applied).ok());
    CHECK(applied.version() == 2);
  }

  SECTION("allow_unsupported stores it anyway and reports the gaps as warnings") {
    v1::ApplyResponse resp;
    grpc::Status s = cp.Apply(MakeConfig(true, 8082), true, &resp);
    INFO(s.error_message());
    REQUIRE(s.ok());
    CHECK(resp.version() == 2);
    auto unsupported = WithCode(resp.diagnostics(), "unsupported_feature");
    REQUIRE(unsupported.size() == 1);
    CHECK(unsupported[0].severity() == v1::Diagnostic::WARNING);
    CHECK(unsupported[0].message() == "1 of 3 agents cannot enforce route.match.regex");
    // Every agent is offered the version; the one that lacks the feature would NACK it.
    CHECK(narrow.Next().version() == 2);
  }

  SECTION("a disconnected agent still counts: it receives the live version when it returns") {
    narrow.Close();
    FakeAgent second_narrow(cp, "narrow-2", AllBut("route.match.regex"));
    CHECK(second_narrow.Next().version() == 1);
    v1::ValidateResponse v = cp.Validate(MakeConfig(true, 8082));
    CHECK_FALSE(v.valid());
    auto unsupported = WithCode(v.diagnostics(), "unsupported_feature");
    REQUIRE(unsupported.size() == 1);
    CHECK(unsupported[0].message() == "2 of 4 agents cannot enforce route.match.regex");
  }
}

}  // namespace
}  // namespace flexgate::cp
