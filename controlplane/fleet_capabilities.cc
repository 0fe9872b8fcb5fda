#include "controlplane/fleet_capabilities.h"

#include "absl/strings/str_cat.h"

namespace flexgate::cp {

std::vector<flexgate::v1::Diagnostic> UnsupportedFeatureDiagnostics(
    const std::map<std::string, std::string>& used, const FleetFeatureSupport& fleet) {
  std::vector<flexgate::v1::Diagnostic> out;
  if (fleet.agents == 0) return out;
  for (const auto& [feature, path] : used) {
    auto it = fleet.lacking.find(feature);
    if (it == fleet.lacking.end() || it->second == 0) continue;
    flexgate::v1::Diagnostic& d = out.emplace_back();
    d.set_severity(flexgate::v1::Diagnostic::ERROR);
    d.set_code("unsupported_feature");
    d.set_path(path);
    d.set_message(absl::StrCat(it->second, " of ", fleet.agents, " agents cannot enforce ",
                               feature));
  }
  return out;
}

}  // namespace flexgate::cp
