// Output helpers shared by flexctl's commands: JSON in the proto3 mapping, aligned tables, and
// short renderings of timestamps, durations, hashes, labels and diagnostics. No gRPC here.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "flexgate/v1/common.pb.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/map.h"
#include "google/protobuf/message.h"
#include "google/protobuf/repeated_field.h"
#include "google/protobuf/timestamp.pb.h"

namespace flexgate::cli {

// proto3 JSON with the proto field names, indented. Fields at their default value are printed
// too: CI reads fields such as "valid": false, which plain proto3 JSON would omit.
std::string ToJson(const google::protobuf::Message& m);

// Rows of cells (the first row is the header) printed in columns two spaces apart.
using Table = std::vector<std::vector<std::string>>;
void PrintTable(const Table& rows, std::ostream& os);

// "2024-05-01T12:00:00Z"; "-" when unset.
std::string FormatTimestamp(const google::protobuf::Timestamp& t);
// "850us", "12.3ms", "1.52s", "3m4s"; "-" when unset (pass has_x() as `set`).
std::string FormatDuration(const google::protobuf::Duration& d, bool set = true);
// The first 12 hex digits: enough to tell versions apart in a table.
std::string ShortHash(const std::string& hash);
// "k=v,k2=v2" sorted by key; "-" when empty.
std::string FormatLabels(const google::protobuf::Map<std::string, std::string>& labels);

// One diagnostic per line as "path: code: message"; non-errors say what they are.
void PrintDiagnostics(const google::protobuf::RepeatedPtrField<v1::Diagnostic>& diagnostics,
                      std::ostream& os);
int CountErrors(const google::protobuf::RepeatedPtrField<v1::Diagnostic>& diagnostics);

// "1 error" / "2 errors".
std::string Plural(uint64_t n, const std::string& noun);

}  // namespace flexgate::cli
