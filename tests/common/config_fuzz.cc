// libFuzzer target: arbitrary bytes through the config loader (as YAML and as JSON), then the
// validator with a capability check, the feature scan, the canonical hash and the diff.
//
// Besides "no crash, no sanitizer report" it checks invariants a caller relies on: every
// diagnostic has a code and a path, a config diffs empty against itself, and the hash of a
// config equals the hash of its own JSON export re-parsed.
//
// Build: CC=clang CXX=clang++ cmake -DFLEXGATE_FUZZ=ON ...; run from the build dir with the
// corpus as seeds (the first directory receives new inputs, so keep it in the build tree):
//   mkdir -p fuzz/config_corpus
//   bin/config_fuzz -dict=../tests/common/config_fuzz.dict fuzz/config_corpus \
//       ../tests/configs/valid ../tests/configs/invalid
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/canonical.h"
#include "common/capabilities.h"
#include "common/config_diff.h"
#include "common/config_loader.h"
#include "common/validator.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

void Exercise(const flexgate::v1::Config& config) {
  // An agent that lacks a few features, so the unsupported_feature path runs too.
  static const flexgate::ValidationOptions* const kAgent = [] {
    auto* options = new flexgate::ValidationOptions;
    options->check_capabilities = true;
    options->capabilities = flexgate::AgentCapabilities();
    options->capabilities.erase("route.match.regex");
    options->capabilities.erase("rate_limit.global");
    return options;
  }();
  const auto diagnostics = flexgate::ValidateConfig(config, *kAgent);
  for (const auto& d : diagnostics) Check(!d.code().empty() && !d.path().empty());
  (void)flexgate::FormatDiagnostics(diagnostics);
  (void)flexgate::FeaturesUsed(config);
  Check(flexgate::DiffConfigs(config, config).empty());
  (void)flexgate::RenderDiff(flexgate::DiffConfigs(flexgate::v1::Config(), config));

  const std::string hash = flexgate::ConfigHash(config);
  auto reparsed = flexgate::ParseConfig(flexgate::MessageToJson(config, false), flexgate::ConfigFormat::kJson);
  // The export of any loaded config must load again, to the same content.
  Check(reparsed.ok());
  Check(flexgate::ConfigHash(*reparsed) == hash);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Real configs of 10,000 routes are a few MB; the fuzzer learns nothing more from huge inputs.
  if (size > 64 * 1024) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (auto format : {flexgate::ConfigFormat::kYaml, flexgate::ConfigFormat::kJson}) {
    auto config = flexgate::ParseConfig(text, format);
    if (config.ok()) Exercise(*config);
  }
  return 0;
}
