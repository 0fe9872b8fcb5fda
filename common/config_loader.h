// The one YAML/JSON loader for FlexGate configs (flexgate.v1.Config) and any other proto
// message read from a file (bootstrap files).
//
// YAML is converted to JSON guided by the message descriptor (so `port: 8081` and `name: "8081"`
// both land in the right type) and then parsed with the proto3 JSON mapping. Unknown fields are
// errors. Errors name the file and, where the parser says, the field.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "flexgate/v1/config.pb.h"
#include "google/protobuf/message.h"

namespace flexgate {

enum class ConfigFormat { kAuto, kYaml, kJson };

// Parses `text` into `message` (cleared first). kAuto treats text starting with '{' as JSON and
// everything else as YAML (JSON is valid YAML, but the JSON path gives better errors).
absl::Status ParseMessageText(std::string_view text, ConfigFormat format,
                              google::protobuf::Message* message);

// Reads and parses a file; the format follows the extension (.json, .yaml, .yml) or content.
absl::Status LoadMessageFile(const std::string& path, google::protobuf::Message* message);

absl::StatusOr<flexgate::v1::Config> ParseConfig(std::string_view text,
                                                 ConfigFormat format = ConfigFormat::kAuto);
absl::StatusOr<flexgate::v1::Config> LoadConfigFile(const std::string& path);

// Converts a message to pretty JSON (proto field names) or YAML for display and export.
std::string MessageToJson(const google::protobuf::Message& message, bool pretty = true);
std::string MessageToYaml(const google::protobuf::Message& message);

}  // namespace flexgate
