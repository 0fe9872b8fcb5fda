// Capabilities: a stable name for every config feature, and which of them a config uses.
//
// An agent announces the features it enforces (Hello.capabilities) and validates each snapshot
// with check_capabilities set, so a config that needs something the agent cannot enforce is
// rejected (NACKed) instead of silently half-applied. The names below are part of the protocol:
// never rename one; add new names for new features.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "flexgate/v1/config.pb.h"

namespace flexgate {
namespace features {

// Clusters.
inline constexpr std::string_view kClusterEndpointHostname = "cluster.endpoint.hostname";
inline constexpr std::string_view kClusterEndpointWeight = "cluster.endpoint.weight";
inline constexpr std::string_view kClusterLbRoundRobin = "cluster.lb.round_robin";
inline constexpr std::string_view kClusterLbLeastRequest = "cluster.lb.least_request";
inline constexpr std::string_view kClusterLbConsistentHash = "cluster.lb.consistent_hash";
inline constexpr std::string_view kClusterConnectTimeout = "cluster.connect_timeout";
inline constexpr std::string_view kClusterPool = "cluster.pool";
inline constexpr std::string_view kClusterHealthCheck = "cluster.health_check";
inline constexpr std::string_view kClusterOutlierDetection = "cluster.outlier_detection";
inline constexpr std::string_view kClusterCircuitBreakers = "cluster.circuit_breakers";
inline constexpr std::string_view kClusterTls = "cluster.tls";
// The agent presents a client certificate to TLS upstreams (tls.client_cert_file).
inline constexpr std::string_view kClusterTlsClientCertificate = "cluster.tls.client_certificate";

// Route matching.
inline constexpr std::string_view kRouteMatchHosts = "route.match.hosts";
inline constexpr std::string_view kRouteMatchHostWildcard = "route.match.host_wildcard";
inline constexpr std::string_view kRouteMatchExact = "route.match.exact";
inline constexpr std::string_view kRouteMatchPrefix = "route.match.prefix";
inline constexpr std::string_view kRouteMatchRegex = "route.match.regex";
inline constexpr std::string_view kRouteMatchMethods = "route.match.methods";
inline constexpr std::string_view kRouteMatchHeaders = "route.match.headers";

// Route actions.
inline constexpr std::string_view kRouteActionCluster = "route.action.cluster";
inline constexpr std::string_view kRouteActionWeightedClusters = "route.action.weighted_clusters";
inline constexpr std::string_view kRouteActionRedirect = "route.action.redirect";
inline constexpr std::string_view kRouteActionDirectResponse = "route.action.direct_response";

// Route behaviour.
inline constexpr std::string_view kRouteTimeout = "route.timeout";
inline constexpr std::string_view kRouteRetry = "route.retry";
inline constexpr std::string_view kRouteRetryBudget = "route.retry.budget";
inline constexpr std::string_view kRoutePrefixRewrite = "route.prefix_rewrite";
inline constexpr std::string_view kRouteRequestHeaders = "route.request_headers";
inline constexpr std::string_view kRouteResponseHeaders = "route.response_headers";

// Policies.
inline constexpr std::string_view kPolicyCors = "policy.cors";
inline constexpr std::string_view kPolicyIpAccess = "policy.ip_access";
inline constexpr std::string_view kPolicySecurityHeaders = "policy.security_headers";
inline constexpr std::string_view kPolicyApiKeyAuth = "policy.api_key_auth";
inline constexpr std::string_view kPolicyMaxBodyBytes = "policy.max_body_bytes";
inline constexpr std::string_view kPolicyAccessLog = "policy.access_log";
inline constexpr std::string_view kPolicyTenantWide = "policy.tenant_wide";

// Rate limits.
inline constexpr std::string_view kRateLimitLocal = "rate_limit.local";
inline constexpr std::string_view kRateLimitGlobal = "rate_limit.global";
inline constexpr std::string_view kRateLimitKeyClientIp = "rate_limit.key.client_ip";
inline constexpr std::string_view kRateLimitKeyHeader = "rate_limit.key.header";
inline constexpr std::string_view kRateLimitKeyRoute = "rate_limit.key.route";
inline constexpr std::string_view kRateLimitKeyTenant = "rate_limit.key.tenant";
inline constexpr std::string_view kRateLimitBurst = "rate_limit.burst";
inline constexpr std::string_view kRateLimitShadow = "rate_limit.shadow";
inline constexpr std::string_view kRateLimitTenantWide = "rate_limit.tenant_wide";

}  // namespace features

// Every feature name above, sorted. The reference for what a capability list may contain.
const std::vector<std::string>& AllFeatures();

// True when `name` is one of AllFeatures().
bool IsKnownFeature(std::string_view name);

// The features `config` uses, each mapped to the field path of its first use in document order
// (clusters, then routes, then policies, rate limits, global lists), e.g.
// "route.match.regex" -> "routes[3].match.path.regex". Empty sub-messages and zero values count
// as unused, the same way the validator and the config diff treat them.
std::map<std::string, std::string> FeaturesUsed(const flexgate::v1::Config& config);

}  // namespace flexgate
