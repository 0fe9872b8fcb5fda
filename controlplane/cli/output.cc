#include "controlplane/cli/output.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"

namespace flexgate::cli {

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  // The printer ends with a newline when it indents; normalize so callers add exactly one.
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

void PrintTable(const Table& rows, std::ostream& os) {
  if (rows.empty()) return;
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i]);
      if (i + 1 < row.size()) line.append(width[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    os << line << "\n";
  }
}

std::string FormatTimestamp(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(t.seconds()),
                          absl::UTCTimeZone());
}

std::string FormatDuration(const google::protobuf::Duration& d, bool set) {
  if (!set) return "-";
  const int64_t us = d.seconds() * 1000000 + d.nanos() / 1000;
  if (us < 1000) return absl::StrCat(us, "us");
  if (us < 1000000) return absl::StrFormat("%.1fms", static_cast<double>(us) / 1e3);
  if (us < 60000000) return absl::StrFormat("%.2fs", static_cast<double>(us) / 1e6);
  return absl::FormatDuration(absl::Seconds(d.seconds()));
}

std::string ShortHash(const std::string& hash) { return hash.empty() ? "-" : hash.substr(0, 12); }

std::string FormatLabels(const google::protobuf::Map<std::string, std::string>& labels) {
  if (labels.empty()) return "-";
  std::vector<std::pair<std::string, std::string>> sorted(labels.begin(), labels.end());
  std::sort(sorted.begin(), sorted.end());
  return absl::StrJoin(sorted, ",", absl::PairFormatter("="));
}

void PrintDiagnostics(const google::protobuf::RepeatedPtrField<v1::Diagnostic>& diagnostics,
                      std::ostream& os) {
  for (const v1::Diagnostic& d : diagnostics) {
    os << (d.path().empty() ? "(config)" : d.path()) << ": " << d.code() << ": " << d.message();
    if (d.severity() == v1::Diagnostic::WARNING) os << " (warning)";
    if (d.severity() == v1::Diagnostic::INFO) os << " (info)";
    os << "\n";
  }
}

int CountErrors(const google::protobuf::RepeatedPtrField<v1::Diagnostic>& diagnostics) {
  int n = 0;
  for (const v1::Diagnostic& d : diagnostics) n += d.severity() == v1::Diagnostic::ERROR ? 1 : 0;
  return n;
}

std::string Plural(uint64_t n, const std::string& noun) {
  return absl::StrCat(n, " ", noun, n == 1 ? "" : "s");
}

}  // namespace flexgate::cli
