// Runs the validator over the config corpus in tests/configs.
//
// invalid/*.yaml: each file says in header comments which diagnostics it must produce
// ("# expect: <code> <path>", one line per diagnostic) and may name secrets that no diagnostic
// message may repeat ("# secret: <value>"). valid/*: no ERROR and no WARNING.
// The agent runs the same validator with its capability list; on every file the agent's view
// must agree with the control plane's (the "the agent's own validation agrees").
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "common/config_loader.h"
#include "common/validator.h"
#include "tests/configs/corpus.h"

namespace {

namespace fs = std::filesystem;
namespace corpus = flexgate::testing::corpus;
using flexgate::v1::Diagnostic;

std::string Describe(const std::vector<Diagnostic>& diags) {
  return diags.empty() ? std::string("(no diagnostics)\n") : flexgate::FormatDiagnostics(diags);
}

}  // namespace

TEST_CASE("the invalid corpus has enough cases", "[corpus]") {
  CHECK(corpus::Files("invalid").size() >= 35);
  CHECK(corpus::Files("valid").size() >= 3);
}

TEST_CASE("every invalid config produces the diagnostics it names", "[corpus]") {
  for (const auto& file : corpus::Files("invalid")) {
    const std::string text = corpus::Read(file);
    INFO("file: " << file.filename().string());
    auto config = flexgate::LoadConfigFile(file.string());
    REQUIRE(config.ok());
    const auto diags = flexgate::ValidateConfig(*config);
    INFO("diagnostics:\n" << Describe(diags));

    const auto expects = corpus::HeaderValues(text, "expect");
    REQUIRE(!expects.empty());
    for (const auto& expect : expects) {
      const auto space = expect.find(' ');
      REQUIRE(space != std::string::npos);
      const std::string code = expect.substr(0, space);
      const std::string path = expect.substr(space + 1);
      const bool found = std::any_of(diags.begin(), diags.end(), [&](const Diagnostic& d) {
        return d.code() == code && d.path() == path;
      });
      INFO("expected: " << code << " at " << path);
      CHECK(found);
    }
    for (const auto& secret : corpus::HeaderValues(text, "secret")) {
      for (const auto& d : diags) {
        INFO("secret echoed in: " << d.message());
        CHECK(d.message().find(secret) == std::string::npos);
      }
    }
  }
}

TEST_CASE("every valid config is clean", "[corpus]") {
  for (const auto& file : corpus::Files("valid")) {
    INFO("file: " << file.filename().string());
    auto config = flexgate::LoadConfigFile(file.string());
    REQUIRE(config.ok());
    const auto diags = flexgate::ValidateConfig(*config);
    INFO("diagnostics:\n" << Describe(diags));
    for (const auto& d : diags) CHECK(d.severity() == Diagnostic::INFO);
  }
}

TEST_CASE("the agent's capability check agrees with the control plane on the corpus", "[corpus]") {
  flexgate::ValidationOptions agent;
  agent.check_capabilities = true;
  agent.capabilities = flexgate::AgentCapabilities();
  for (const char* subdir : {"invalid", "valid"}) {
    for (const auto& file : corpus::Files(subdir)) {
      INFO("file: " << file.filename().string());
      auto config = flexgate::LoadConfigFile(file.string());
      REQUIRE(config.ok());
      // The agent's check says everything the plain check says, plus unsupported_feature for
      // what this agent does not enforce (policies and rate limits), and nothing else.
      const auto plain = flexgate::ValidateConfig(*config);
      const auto checked = flexgate::ValidateConfig(*config, agent);
      size_t unsupported = 0;
      for (const auto& d : checked) {
        if (d.code() != "unsupported_feature") continue;
        ++unsupported;
        INFO(d.path() << ": " << d.message());
        CHECK(d.severity() == Diagnostic::ERROR);
        CHECK((d.path().rfind("policies", 0) == 0 || d.path().rfind("rate_limits", 0) == 0 ||
               d.path().rfind("global_", 0) == 0));
      }
      CHECK(checked.size() == plain.size() + unsupported);
    }
  }
}

// Not run by default: prints what the validator says about every corpus file, for whoever adds
// a case (common_test "[dump]").
TEST_CASE("dump corpus diagnostics", "[.][dump]") {
  for (const char* subdir : {"invalid", "valid"}) {
    for (const auto& file : corpus::Files(subdir)) {
      auto config = flexgate::LoadConfigFile(file.string());
      std::cout << "== " << subdir << "/" << file.filename().string() << "\n"
                << (config.ok() ? Describe(flexgate::ValidateConfig(*config))
                                : std::string(config.status().message()) + "\n");
    }
  }
}
