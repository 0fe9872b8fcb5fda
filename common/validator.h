// The one config validator, shared by the control plane (Validate / Apply), the agent (before it
// applies a snapshot) and flexctl (offline validate). Pure: no I/O, no clock, thread-safe.
//
// Every problem is reported as a flexgate.v1.Diagnostic with a stable code and a field path in
// the form "routes[3].match.path.regex". A config is valid when no diagnostic has severity ERROR.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "flexgate/v1/common.pb.h"
#include "flexgate/v1/config.pb.h"

namespace flexgate {

struct ValidationOptions {
  // When set, features the agent cannot enforce are errors (code "unsupported_feature").
  // The control plane leaves this empty; an agent passes its own capability list.
  bool check_capabilities = false;
  std::set<std::string> capabilities;
};

std::vector<flexgate::v1::Diagnostic> ValidateConfig(const flexgate::v1::Config& config,
                                                     const ValidationOptions& options = {});

// True when no diagnostic is an ERROR.
bool IsValid(const std::vector<flexgate::v1::Diagnostic>& diagnostics);

// "routes[3].match: unknown_cluster: ..." lines, one per diagnostic, for logs and NACK details.
std::string FormatDiagnostics(const std::vector<flexgate::v1::Diagnostic>& diagnostics);

// The features this build of the agent enforces (see capabilities.cc for the names).
std::set<std::string> AgentCapabilities();

}  // namespace flexgate
