// Converts the shared semantic config diff (common/config_diff.h) to its API form
// (flexgate.v1.ConfigDiff), redacting values that may be credentials, and summarizes it in one
// line for the audit trail. Pure and thread-safe.
#pragma once

#include <string>

#include "common/config_diff.h"
#include "flexgate/v1/config_service.pb.h"

namespace flexgate::cp {

// Values under header edits, header matches and API-key auth are redacted: quoted strings are
// replaced by "<redacted>" except header and resource names, so a diff never shows a secret
// that was written into a config.
flexgate::v1::ConfigDiff DiffToProto(const ConfigDiff& diff);

// Redaction of one rendered value at a resource-relative field path (exported for tests).
std::string RedactFieldValue(const std::string& path, const std::string& value);

// "1 added, 2 changed, 0 removed; routes affected: 3" or "no changes".
std::string DiffSummary(const ConfigDiff& diff);

}  // namespace flexgate::cp
