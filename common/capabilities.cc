#include "common/capabilities.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace flexgate {
namespace {

using flexgate::v1::Cluster;
using flexgate::v1::Config;
using flexgate::v1::PathMatch;
using flexgate::v1::RateLimit;
using flexgate::v1::Route;

// Records the first path of each feature. Paths are built lazily because a config of 10,000
// routes uses the same handful of features over and over.
class FeatureSet {
 public:
  template <typename PathFn>
  void Use(std::string_view feature, PathFn&& path) {
    std::string key(feature);
    if (used_.find(key) == used_.end()) used_.emplace(std::move(key), path());
  }
  std::map<std::string, std::string> Take() { return std::move(used_); }

 private:
  std::map<std::string, std::string> used_;
};

// A host name needs the resolver; an IP literal does not. The validator checks the syntax, so
// telling the two apart only needs the shape: IPv6 has a ':', IPv4 is digits and dots.
bool IsIpLiteralish(const std::string& address) {
  if (address.find(':') != std::string::npos) return true;
  return !address.empty() && std::all_of(address.begin(), address.end(), [](char c) {
    return (c >= '0' && c <= '9') || c == '.';
  });
}

void ClusterFeatures(const Cluster& c, const std::string& path, FeatureSet& used) {
  for (int j = 0; j < c.endpoints_size(); ++j) {
    const auto& e = c.endpoints(j);
    if (!IsIpLiteralish(e.address())) {
      used.Use(features::kClusterEndpointHostname,
               [&] { return absl::StrCat(path, ".endpoints[", j, "].address"); });
    }
    if (e.weight() > 1) {
      used.Use(features::kClusterEndpointWeight,
               [&] { return absl::StrCat(path, ".endpoints[", j, "].weight"); });
    }
  }
  switch (c.lb_policy()) {
    case Cluster::LEAST_REQUEST:
      used.Use(features::kClusterLbLeastRequest, [&] { return path + ".lb_policy"; });
      break;
    case Cluster::CONSISTENT_HASH:
      used.Use(features::kClusterLbConsistentHash, [&] { return path + ".lb_policy"; });
      break;
    default:
      used.Use(features::kClusterLbRoundRobin, [&] { return path + ".lb_policy"; });
      break;
  }
  if (c.has_connect_timeout() && c.connect_timeout().ByteSizeLong() != 0)
    used.Use(features::kClusterConnectTimeout, [&] { return path + ".connect_timeout"; });
  if (c.pool().ByteSizeLong() != 0) used.Use(features::kClusterPool, [&] { return path + ".pool"; });
  if (c.health_check().ByteSizeLong() != 0)
    used.Use(features::kClusterHealthCheck, [&] { return path + ".health_check"; });
  if (c.outlier_detection().ByteSizeLong() != 0)
    used.Use(features::kClusterOutlierDetection, [&] { return path + ".outlier_detection"; });
  if (c.circuit_breakers().ByteSizeLong() != 0)
    used.Use(features::kClusterCircuitBreakers, [&] { return path + ".circuit_breakers"; });
  if (c.tls().enabled()) used.Use(features::kClusterTls, [&] { return path + ".tls"; });
  if (c.tls().enabled() && !c.tls().client_cert_file().empty()) {
    used.Use(features::kClusterTlsClientCertificate,
             [&] { return path + ".tls.client_cert_file"; });
  }
}

void RouteFeatures(const Route& r, const std::string& path, FeatureSet& used) {
  const auto& m = r.match();
  for (int h = 0; h < m.hosts_size(); ++h) {
    used.Use(features::kRouteMatchHosts, [&] { return absl::StrCat(path, ".match.hosts[", h, "]"); });
    if (m.hosts(h).rfind("*.", 0) == 0) {
      used.Use(features::kRouteMatchHostWildcard,
               [&] { return absl::StrCat(path, ".match.hosts[", h, "]"); });
    }
  }
  switch (m.path().kind_case()) {
    case PathMatch::kExact:
      used.Use(features::kRouteMatchExact, [&] { return path + ".match.path.exact"; });
      break;
    case PathMatch::kPrefix:
      used.Use(features::kRouteMatchPrefix, [&] { return path + ".match.path.prefix"; });
      break;
    case PathMatch::kRegex:
      used.Use(features::kRouteMatchRegex, [&] { return path + ".match.path.regex"; });
      break;
    case PathMatch::KIND_NOT_SET:
      break;
  }
  if (m.methods_size() > 0) used.Use(features::kRouteMatchMethods, [&] { return path + ".match.methods"; });
  if (m.headers_size() > 0) used.Use(features::kRouteMatchHeaders, [&] { return path + ".match.headers"; });

  switch (r.action_case()) {
    case Route::kCluster:
      used.Use(features::kRouteActionCluster, [&] { return path + ".cluster"; });
      break;
    case Route::kWeightedClusters:
      used.Use(features::kRouteActionWeightedClusters, [&] { return path + ".weighted_clusters"; });
      break;
    case Route::kRedirect:
      used.Use(features::kRouteActionRedirect, [&] { return path + ".redirect"; });
      break;
    case Route::kDirectResponse:
      used.Use(features::kRouteActionDirectResponse, [&] { return path + ".direct_response"; });
      break;
    case Route::ACTION_NOT_SET:
      break;
  }
  if (r.timeout().ByteSizeLong() != 0) used.Use(features::kRouteTimeout, [&] { return path + ".timeout"; });
  if (r.retry().attempts() > 1) used.Use(features::kRouteRetry, [&] { return path + ".retry"; });
  if (r.retry().budget_percent() > 0)
    used.Use(features::kRouteRetryBudget, [&] { return path + ".retry.budget_percent"; });
  if (!r.prefix_rewrite().empty())
    used.Use(features::kRoutePrefixRewrite, [&] { return path + ".prefix_rewrite"; });
  if (r.request_headers().ByteSizeLong() != 0)
    used.Use(features::kRouteRequestHeaders, [&] { return path + ".request_headers"; });
  if (r.response_headers().ByteSizeLong() != 0)
    used.Use(features::kRouteResponseHeaders, [&] { return path + ".response_headers"; });
}

void PolicyFeatures(const flexgate::v1::Policy& p, const std::string& path, FeatureSet& used) {
  if (p.cors().ByteSizeLong() != 0) used.Use(features::kPolicyCors, [&] { return path + ".cors"; });
  if (p.ip_access().ByteSizeLong() != 0)
    used.Use(features::kPolicyIpAccess, [&] { return path + ".ip_access"; });
  if (p.security_headers().ByteSizeLong() != 0)
    used.Use(features::kPolicySecurityHeaders, [&] { return path + ".security_headers"; });
  if (p.api_key_auth().ByteSizeLong() != 0)
    used.Use(features::kPolicyApiKeyAuth, [&] { return path + ".api_key_auth"; });
  if (p.max_body_bytes() != 0)
    used.Use(features::kPolicyMaxBodyBytes, [&] { return path + ".max_body_bytes"; });
  if (p.access_log().ByteSizeLong() != 0)
    used.Use(features::kPolicyAccessLog, [&] { return path + ".access_log"; });
}

void RateLimitFeatures(const RateLimit& rl, const std::string& path, FeatureSet& used) {
  if (rl.scope() == RateLimit::GLOBAL) {
    used.Use(features::kRateLimitGlobal, [&] { return path + ".scope"; });
  } else {
    used.Use(features::kRateLimitLocal, [&] { return path; });
  }
  switch (rl.by()) {
    case RateLimit::CLIENT_IP:
      used.Use(features::kRateLimitKeyClientIp, [&] { return path + ".by"; });
      break;
    case RateLimit::HEADER:
      used.Use(features::kRateLimitKeyHeader, [&] { return path + ".by"; });
      break;
    case RateLimit::ROUTE:
      used.Use(features::kRateLimitKeyRoute, [&] { return path + ".by"; });
      break;
    case RateLimit::TENANT:
      used.Use(features::kRateLimitKeyTenant, [&] { return path + ".by"; });
      break;
    default:
      break;
  }
  if (rl.burst() > 0) used.Use(features::kRateLimitBurst, [&] { return path + ".burst"; });
  if (rl.shadow()) used.Use(features::kRateLimitShadow, [&] { return path + ".shadow"; });
}

}  // namespace

const std::vector<std::string>& AllFeatures() {
  static const std::vector<std::string>* const kAll = [] {
    auto* all = new std::vector<std::string>{
        std::string(features::kClusterEndpointHostname),
        std::string(features::kClusterEndpointWeight),
        std::string(features::kClusterLbRoundRobin),
        std::string(features::kClusterLbLeastRequest),
        std::string(features::kClusterLbConsistentHash),
        std::string(features::kClusterConnectTimeout),
        std::string(features::kClusterPool),
        std::string(features::kClusterHealthCheck),
        std::string(features::kClusterOutlierDetection),
        std::string(features::kClusterCircuitBreakers),
        std::string(features::kClusterTls),
        std::string(features::kClusterTlsClientCertificate),
        std::string(features::kRouteMatchHosts),
        std::string(features::kRouteMatchHostWildcard),
        std::string(features::kRouteMatchExact),
        std::string(features::kRouteMatchPrefix),
        std::string(features::kRouteMatchRegex),
        std::string(features::kRouteMatchMethods),
        std::string(features::kRouteMatchHeaders),
        std::string(features::kRouteActionCluster),
        std::string(features::kRouteActionWeightedClusters),
        std::string(features::kRouteActionRedirect),
        std::string(features::kRouteActionDirectResponse),
        std::string(features::kRouteTimeout),
        std::string(features::kRouteRetry),
        std::string(features::kRouteRetryBudget),
        std::string(features::kRoutePrefixRewrite),
        std::string(features::kRouteRequestHeaders),
        std::string(features::kRouteResponseHeaders),
        std::string(features::kPolicyCors),
        std::string(features::kPolicyIpAccess),
        std::string(features::kPolicySecurityHeaders),
        std::string(features::kPolicyApiKeyAuth),
        std::string(features::kPolicyMaxBodyBytes),
        std::string(features::kPolicyAccessLog),
        std::string(features::kPolicyTenantWide),
        std::string(features::kRateLimitLocal),
        std::string(features::kRateLimitGlobal),
        std::string(features::kRateLimitKeyClientIp),
        std::string(features::kRateLimitKeyHeader),
        std::string(features::kRateLimitKeyRoute),
        std::string(features::kRateLimitKeyTenant),
        std::string(features::kRateLimitBurst),
        std::string(features::kRateLimitShadow),
        std::string(features::kRateLimitTenantWide),
    };
    std::sort(all->begin(), all->end());
    return all;
  }();
  return *kAll;
}

bool IsKnownFeature(std::string_view name) {
  const auto& all = AllFeatures();
  return std::binary_search(all.begin(), all.end(), name,
                            [](const auto& a, const auto& b) { return std::string_view(a) < std::string_view(b); });
}

std::map<std::string, std::string> FeaturesUsed(const Config& config) {
  FeatureSet used;
  std::string path;
  for (int i = 0; i < config.clusters_size(); ++i) {
    path = absl::StrCat("clusters[", i, "]");
    ClusterFeatures(config.clusters(i), path, used);
  }
  for (int i = 0; i < config.routes_size(); ++i) {
    path = absl::StrCat("routes[", i, "]");
    RouteFeatures(config.routes(i), path, used);
  }
  for (int i = 0; i < config.policies_size(); ++i) {
    path = absl::StrCat("policies[", i, "]");
    PolicyFeatures(config.policies(i), path, used);
  }
  for (int i = 0; i < config.rate_limits_size(); ++i) {
    path = absl::StrCat("rate_limits[", i, "]");
    RateLimitFeatures(config.rate_limits(i), path, used);
  }
  if (config.global_policies_size() > 0)
    used.Use(features::kPolicyTenantWide, [] { return std::string("global_policies[0]"); });
  if (config.global_rate_limits_size() > 0)
    used.Use(features::kRateLimitTenantWide, [] { return std::string("global_rate_limits[0]"); });
  return used.Take();
}

}  // namespace flexgate
