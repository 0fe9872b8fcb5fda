// Semantic diff between two FlexGate configs, for Validate (diff against the live version),
// Diff between versions, flexctl diff, and audit summaries.
//
// Named resources (clusters, routes, policies, rate limits) are matched by name, so reordering
// a list of clusters, policies or rate limits is not a change. Route order IS a change (the first
// matching route wins): a route whose position relative to the other routes moved is reported as
// changed with the field "order". Unset and default values compare equal ("connect_timeout: 0s"
// or "cors: {}" is the same config as leaving them out), so a round trip through YAML, JSON or the
// database never shows a phantom change. Lists that are sets by meaning (hosts, methods, CIDRs,
// origins, retry_on, ...) compare without regard to order.
//
// Pure and thread-safe. The result is a plain struct; the control plane converts it to its API.
#pragma once

#include <string>
#include <vector>

#include "flexgate/v1/config.pb.h"

namespace flexgate {

// One field that differs, e.g. {"match.path.prefix", "\"/api\"", "\"/api/\""}. `path` is relative
// to the resource; values are short renderings ("" when the field is unset), truncated if long.
struct FieldChange {
  std::string path;
  std::string old_value;
  std::string new_value;
};

struct ResourceChange {
  enum class Kind { kAdded, kRemoved, kChanged };
  Kind kind = Kind::kChanged;
  // "cluster", "route", "policy" or "rate_limit".
  std::string resource_type;
  std::string name;
  // Position in the old and new lists (-1 where absent).
  int old_index = -1;
  int new_index = -1;
  // For kChanged: every differing field, in field order ("order" for a moved route).
  std::vector<FieldChange> fields;
};

struct ConfigDiff {
  // Clusters, then routes, policies, rate limits; within each, in the order of the new config
  // (removed resources in the order of the old config, after the others of their type).
  std::vector<ResourceChange> resources;
  // Changes to the tenant-wide lists: paths "global_policies", "global_rate_limits".
  std::vector<FieldChange> globals;
  // True when the relative order of routes present in both configs differs.
  bool route_order_changed = false;

  // Routes whose behaviour may change, by name, in new-config order then removed ones: routes
  // added, removed, changed or moved, and routes that use a changed cluster, policy or rate limit
  // (every route when a tenant-wide list or a policy or rate limit in one changed).
  std::vector<std::string> affected_routes;

  bool empty() const { return resources.empty() && globals.empty(); }
};

ConfigDiff DiffConfigs(const flexgate::v1::Config& old_config, const flexgate::v1::Config& new_config);

// Human-readable rendering, one line per change, e.g.
//   + route "api" (at 2)
//   ~ cluster "web": connect_timeout: "1s" -> "2s"
//   ~ route "all": order: 0 -> 3
//   - policy "old"
// Empty diff: "no changes\n".
std::string RenderDiff(const ConfigDiff& diff);

}  // namespace flexgate
