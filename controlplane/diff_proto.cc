#include "controlplane/diff_proto.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace flexgate::cp {
namespace {

namespace v1 = flexgate::v1;

bool IsSensitivePath(const std::string& path) {
  return absl::StrContains(path, "headers") || absl::StrContains(path, "api_key");
}

// The identifier right before position `quote` in a ShortDebugString-like rendering
// ("name: \"x\"" -> "name"); empty when the quote does not follow "identifier: ".
std::string FieldBefore(const std::string& s, size_t quote) {
  size_t end = quote;
  while (end > 0 && s[end - 1] == ' ') --end;
  if (end == 0 || s[end - 1] != ':') return "";
  --end;
  size_t begin = end;
  while (begin > 0 && (std::isalnum(static_cast<unsigned char>(s[begin - 1])) ||
                       s[begin - 1] == '_')) {
    --begin;
  }
  return s.substr(begin, end - begin);
}

v1::FieldChange ToProto(const std::string& prefix, const FieldChange& f) {
  v1::FieldChange out;
  out.set_path(f.path);
  const std::string full = prefix.empty() ? f.path : absl::StrCat(prefix, ".", f.path);
  out.set_old_value(RedactFieldValue(full, f.old_value));
  out.set_new_value(RedactFieldValue(full, f.new_value));
  return out;
}

}  // namespace

std::string RedactFieldValue(const std::string& path, const std::string& value) {
  if (!IsSensitivePath(path) || value.find('"') == std::string::npos) return value;
  // The last path component names a bare value ("request_headers.set[0].value" -> "value").
  std::string last = path.substr(path.find_last_of('.') + 1);
  last = last.substr(0, last.find('['));
  std::string out;
  size_t i = 0;
  while (i < value.size()) {
    if (value[i] != '"') {
      out += value[i++];
      continue;
    }
    size_t j = i + 1;
    while (j < value.size() && value[j] != '"') j += value[j] == '\\' ? 2 : 1;
    const size_t end = std::min(j + 1, value.size());
    std::string field = FieldBefore(value, i);
    if (field.empty()) field = last;
    if (field == "name" || field == "header") {
      out.append(value, i, end - i);
    } else {
      out += "\"<redacted>\"";
    }
    i = end;
  }
  return out;
}

v1::ConfigDiff DiffToProto(const ConfigDiff& diff) {
  v1::ConfigDiff out;
  uint32_t added = 0, removed = 0, changed = 0;
  for (const ResourceChange& r : diff.resources) {
    v1::ResourceChange* p = out.add_resources();
    switch (r.kind) {
      case ResourceChange::Kind::kAdded: p->set_kind(v1::ResourceChange::ADDED); ++added; break;
      case ResourceChange::Kind::kRemoved: p->set_kind(v1::ResourceChange::REMOVED); ++removed; break;
      case ResourceChange::Kind::kChanged: p->set_kind(v1::ResourceChange::CHANGED); ++changed; break;
    }
    p->set_resource_type(r.resource_type);
    p->set_name(r.name);
    p->set_old_index(r.old_index);
    p->set_new_index(r.new_index);
    for (const FieldChange& f : r.fields) *p->add_fields() = ToProto(r.resource_type, f);
  }
  for (const FieldChange& g : diff.globals) *out.add_globals() = ToProto("", g);
  out.set_route_order_changed(diff.route_order_changed);
  for (const std::string& r : diff.affected_routes) out.add_affected_routes(r);
  out.set_added(added);
  out.set_removed(removed);
  out.set_changed(changed);
  // The text is rendered from the redacted form, so it cannot leak what the fields hide.
  ConfigDiff redacted = diff;
  for (ResourceChange& r : redacted.resources) {
    for (FieldChange& f : r.fields) {
      const std::string full = absl::StrCat(r.resource_type, ".", f.path);
      f.old_value = RedactFieldValue(full, f.old_value);
      f.new_value = RedactFieldValue(full, f.new_value);
    }
  }
  for (FieldChange& g : redacted.globals) {
    g.old_value = RedactFieldValue(g.path, g.old_value);
    g.new_value = RedactFieldValue(g.path, g.new_value);
  }
  out.set_text(RenderDiff(redacted));
  return out;
}

std::string DiffSummary(const ConfigDiff& diff) {
  if (diff.empty()) return "no changes";
  int added = 0, removed = 0, changed = 0;
  for (const ResourceChange& r : diff.resources) {
    if (r.kind == ResourceChange::Kind::kAdded) ++added;
    else if (r.kind == ResourceChange::Kind::kRemoved) ++removed;
    else ++changed;
  }
  return absl::StrCat(added, " added, ", changed, " changed, ", removed, " removed",
                      diff.globals.empty() ? "" : ", tenant-wide lists changed",
                      "; routes affected: ", diff.affected_routes.size());
}

}  // namespace flexgate::cp
