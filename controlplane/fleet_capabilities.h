// Fleet capabilities: does the tenant's fleet enforce every feature a config uses?
//
// Agents announce the features they enforce in Hello (stored in agents.capabilities) and reject
// a snapshot that needs anything else. Validate and Apply use this to say so before a version is
// stored: for each feature the config uses (common/capabilities.h FeaturesUsed) that some agent
// lacks, an ERROR diagnostic "unsupported_feature" at the feature's first use. Agents that
// announced nothing (an empty list: older agents and tools that do not announce) are not counted,
// and with no counted agent there is nothing to check. Pure functions, no I/O.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "flexgate/v1/common.pb.h"

namespace flexgate::cp {

// What the fleet of one tenant enforces, for a given list of features.
struct FleetFeatureSupport {
  // Agents of the tenant that announced capabilities (the M of "N of M agents").
  uint32_t agents = 0;
  // Feature -> agents among them that do not announce it (absent or 0 = every agent has it).
  std::map<std::string, uint32_t> lacking;
};

// One ERROR diagnostic (code "unsupported_feature", path of the feature's first use, message
// "N of M agents cannot enforce FEATURE") per feature in `used` (feature -> path, as FeaturesUsed
// returns it) that at least one agent lacks, in feature-name order.
std::vector<flexgate::v1::Diagnostic> UnsupportedFeatureDiagnostics(
    const std::map<std::string, std::string>& used, const FleetFeatureSupport& fleet);

}  // namespace flexgate::cp
