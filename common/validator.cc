#include "common/validator.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace flexgate {
namespace {

using flexgate::v1::Config;
using flexgate::v1::Diagnostic;

class Checker {
 public:
  explicit Checker(std::vector<Diagnostic>* out) : out_(out) {}

  void Error(std::string path, std::string code, std::string message) {
    Add(Diagnostic::ERROR, std::move(path), std::move(code), std::move(message));
  }
  void Warning(std::string path, std::string code, std::string message) {
    Add(Diagnostic::WARNING, std::move(path), std::move(code), std::move(message));
  }

 private:
  void Add(Diagnostic::Severity severity, std::string path, std::string code, std::string message) {
    Diagnostic& d = out_->emplace_back();
    d.set_severity(severity);
    d.set_path(std::move(path));
    d.set_code(std::move(code));
    d.set_message(std::move(message));
  }
  std::vector<Diagnostic>* out_;
};

}  // namespace

std::vector<Diagnostic> ValidateConfig(const Config& config, const ValidationOptions& options) {
  (void)options;
  std::vector<Diagnostic> out;
  Checker check(&out);

  absl::flat_hash_set<std::string> clusters;
  for (int i = 0; i < config.clusters_size(); ++i) {
    const auto& c = config.clusters(i);
    std::string path = absl::StrCat("clusters[", i, "]");
    if (c.name().empty()) check.Error(path + ".name", "missing_name", "cluster name is required");
    else if (!clusters.insert(c.name()).second)
      check.Error(path + ".name", "duplicate_name", absl::StrCat("duplicate cluster name \"", c.name(), "\""));
    if (c.endpoints().empty())
      check.Error(path + ".endpoints", "no_endpoints", "a cluster needs at least one endpoint");
    for (int j = 0; j < c.endpoints_size(); ++j) {
      const auto& e = c.endpoints(j);
      std::string ep = absl::StrCat(path, ".endpoints[", j, "]");
      if (e.address().empty()) check.Error(ep + ".address", "missing_address", "endpoint address is required");
      if (e.port() == 0 || e.port() > 65535)
        check.Error(ep + ".port", "invalid_port", absl::StrCat("port ", e.port(), " is not in 1..65535"));
    }
  }

  absl::flat_hash_set<std::string> routes;
  for (int i = 0; i < config.routes_size(); ++i) {
    const auto& r = config.routes(i);
    std::string path = absl::StrCat("routes[", i, "]");
    if (r.name().empty()) check.Error(path + ".name", "missing_name", "route name is required");
    else if (!routes.insert(r.name()).second)
      check.Error(path + ".name", "duplicate_name", absl::StrCat("duplicate route name \"", r.name(), "\""));
    switch (r.action_case()) {
      case flexgate::v1::Route::kCluster:
        if (!clusters.contains(r.cluster()))
          check.Error(path + ".cluster", "unknown_cluster",
                      absl::StrCat("route refers to unknown cluster \"", r.cluster(), "\""));
        break;
      case flexgate::v1::Route::ACTION_NOT_SET:
        check.Error(path, "missing_action",
                    "route needs one of cluster, weighted_clusters, redirect, direct_response");
        break;
      default:
        break;
    }
  }
  return out;
}

bool IsValid(const std::vector<Diagnostic>& diagnostics) {
  for (const auto& d : diagnostics) {
    if (d.severity() == Diagnostic::ERROR) return false;
  }
  return true;
}

std::string FormatDiagnostics(const std::vector<Diagnostic>& diagnostics) {
  std::string out;
  for (const auto& d : diagnostics) {
    absl::StrAppend(&out, d.severity() == Diagnostic::ERROR ? "error" : "warning", ": ", d.path(),
                    ": ", d.code(), ": ", d.message(), "\n");
  }
  return out;
}

std::set<std::string> AgentCapabilities() { return {}; }

}  // namespace flexgate
