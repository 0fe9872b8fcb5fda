// The one config validator, shared by the control plane (Validate / Apply), the agent (before it
// applies a snapshot) and flexctl (offline validate). Pure: no I/O, no clock, thread-safe.
//
// Every problem is reported as a flexgate.v1.Diagnostic with a stable code and a field path in
// the form "routes[3].match.path.regex" (names: "clusters[0].name"). A config is valid when no
// diagnostic has severity ERROR. The validator reports every problem it finds, not the first.
//
// The diagnostic codes are part of the API (CI scripts match on them); tests/configs/invalid/
// holds one example per code. Codes: missing_name, invalid_name, duplicate_name, unknown_cluster,
// unknown_policy, unknown_rate_limit, duplicate_reference, unused, missing_action, no_endpoints,
// missing_address, invalid_address, invalid_port, invalid_weight, duplicate_endpoint,
// empty_weighted_clusters, zero_total_weight, missing_path, invalid_path, invalid_regex,
// invalid_host, invalid_method, invalid_header_name, invalid_header_value, missing_header_match,
// hop_by_hop_header, forbidden_header, invalid_redirect_status, invalid_scheme, invalid_status,
// invalid_prefix_rewrite, timeout_out_of_range, invalid_retry_attempts, unknown_retry_on,
// missing_retriable_statuses, invalid_percent, missing_hash_on, invalid_enum, unused_field,
// insecure_tls, incomplete_client_certificate, invalid_cidr, cidr_host_bits, invalid_origin, invalid_frame_options,
// invalid_referrer_policy, invalid_hsts, missing_key_hash, invalid_key_hash, plaintext_secret, duplicate_key,
// no_keys, invalid_sample_rate, empty_policy, missing_rate_key, missing_unit, missing_header,
// rate_zero, rate_absurd, route_shadowed, conflicting_policies, unsupported_feature.
#pragma once

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "flexgate/v1/common.pb.h"
#include "flexgate/v1/config.pb.h"

namespace flexgate {

struct ValidationOptions {
  // When set, features the agent cannot enforce are errors (code "unsupported_feature").
  // The control plane leaves this empty; an agent passes its own capability list.
  bool check_capabilities = false;
  std::set<std::string> capabilities;
};

// Validates `config` and returns every diagnostic, in document order per check. Never fails;
// an empty result means a clean config. Cost is about linear in the size of the config.
std::vector<flexgate::v1::Diagnostic> ValidateConfig(const flexgate::v1::Config& config,
                                                     const ValidationOptions& options = {});

// True when no diagnostic is an ERROR.
bool IsValid(const std::vector<flexgate::v1::Diagnostic>& diagnostics);

// "error: routes[3].match: unknown_cluster: ..." lines, one per diagnostic, for logs and NACK
// details.
std::string FormatDiagnostics(const std::vector<flexgate::v1::Diagnostic>& diagnostics);

// The features this build of the agent enforces (names in common/capabilities.h): every
// routing, cluster and upstream feature; not yet policies and rate limits.
std::set<std::string> AgentCapabilities();

// ---------------------------------------------------------------------------------------------
// Syntax helpers used by the validator, exported so the engine parses exactly what the
// validator accepted (one parser per format, not two that drift apart).
// ---------------------------------------------------------------------------------------------

// An IPv4 or IPv6 CIDR block such as "10.0.0.0/8" or "2001:db8::/32". The prefix length is
// required. `address` holds 4 (IPv4) or 16 (IPv6) significant bytes in network order.
struct CidrBlock {
  bool ipv6 = false;
  std::array<uint8_t, 16> address{};
  int prefix_len = 0;
  // True when bits beyond the prefix were set in the text ("10.1.2.3/8"). `address` keeps them
  // as written; Contains() ignores them.
  bool host_bits_set = false;

  // True when `other` lies entirely within this block (same family).
  bool Contains(const CidrBlock& other) const;
  // True when the two blocks share at least one address.
  bool Overlaps(const CidrBlock& other) const;
};
absl::StatusOr<CidrBlock> ParseCidr(std::string_view text);

// RFC 9110 token (header field names, methods before the upper-case rule).
bool IsHttpToken(std::string_view s);
// A resource name: 1..128 characters of [A-Za-z0-9._-].
bool IsValidResourceName(std::string_view s);
// A DNS host name (letters, digits, '-', '_'; labels 1..63; at most 253 characters; the last
// label not all digits so it cannot be mistaken for an IPv4 address).
bool IsDnsName(std::string_view s);
// An IPv4 or IPv6 literal, without brackets.
bool IsIpLiteral(std::string_view s);

}  // namespace flexgate
