#include "common/validator.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/capabilities.h"
#include "re2/re2.h"

namespace flexgate {
namespace {

using flexgate::v1::ApiKeyAuth;
using flexgate::v1::Cluster;
using flexgate::v1::Config;
using flexgate::v1::Cors;
using flexgate::v1::Diagnostic;
using flexgate::v1::HeaderEdits;
using flexgate::v1::HeaderMatch;
using flexgate::v1::PathMatch;
using flexgate::v1::Policy;
using flexgate::v1::RateLimit;
using flexgate::v1::Route;
using flexgate::v1::RouteMatch;

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// --- Limits ---------------------------------------------------------------------------------
// Ranges an operator would never exceed on purpose; values outside them are typos ("5000s" for
// "5s") that would otherwise hold connections or requests open for hours.
constexpr size_t kMaxNameLength = 128;
constexpr uint32_t kMaxEndpointWeight = 1'000'000;
constexpr uint32_t kMaxRetryAttempts = 10;
constexpr size_t kMaxRegexLength = 4096;
// Requests per second above which a rate limit cannot be meant: no agent serves that much.
constexpr uint64_t kMaxRatePerSecond = 10'000'000;
constexpr uint64_t kMaxBurst = 1'000'000'000;

const absl::Duration kMinTimeout = absl::Milliseconds(1);
const absl::Duration kMaxConnectTimeout = absl::Minutes(5);
const absl::Duration kMaxRouteTimeout = absl::Hours(1);
const absl::Duration kMaxIdleTimeout = absl::Hours(1);
const absl::Duration kMinHealthInterval = absl::Milliseconds(100);
const absl::Duration kMaxHealthInterval = absl::Hours(1);
const absl::Duration kMaxEjectionTime = absl::Hours(1);
const absl::Duration kMaxCorsMaxAge = absl::Hours(24);
const absl::Duration kMaxHstsMaxAge = absl::Hours(24 * 365 * 2);

// --- Syntax helpers ---------------------------------------------------------------------------

bool IsTchar(unsigned char c) {
  if (absl::ascii_isalnum(c)) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

// Method names: upper-case letters, digits, '-' and '_' (a subset of token).
bool IsMethod(std::string_view s) {
  if (s.empty() || s.size() > 32) return false;
  for (unsigned char c : s) {
    if (!(absl::ascii_isupper(c) || absl::ascii_isdigit(c) || c == '-' || c == '_')) return false;
  }
  return true;
}

// Header values may not contain CR, LF or NUL: they would split or truncate the header block.
bool IsSafeHeaderValue(std::string_view s) {
  for (unsigned char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

// Hop-by-hop headers belong to one connection; the agent manages them itself.
bool IsHopByHop(std::string_view lower) {
  return lower == "connection" || lower == "keep-alive" || lower == "proxy-connection" ||
         lower == "transfer-encoding" || lower == "te" || lower == "trailer" ||
         lower == "upgrade" || lower == "proxy-authenticate";
}

bool IsLowerHex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool IsHex64AnyCase(std::string_view s) {
  if (s.size() != 64) return false;
  for (unsigned char c : s) {
    if (!absl::ascii_isxdigit(c)) return false;
  }
  return true;
}

// Shannon entropy in bits per character.
double Entropy(std::string_view s) {
  std::array<int, 256> counts{};
  for (unsigned char c : s) ++counts[c];
  double h = 0;
  for (int n : counts) {
    if (n == 0) continue;
    double p = static_cast<double>(n) / static_cast<double>(s.size());
    h -= p * std::log2(p);
  }
  return h;
}

// Headers whose values are credentials by their name.
bool IsSecretHeaderName(std::string_view lower) {
  static constexpr std::string_view kExact[] = {"authorization", "proxy-authorization", "cookie",
                                                "set-cookie", "x-api-key", "api-key", "apikey"};
  for (auto n : kExact) {
    if (lower == n) return true;
  }
  static constexpr std::string_view kParts[] = {"token", "secret", "password", "passwd",
                                                "api-key", "apikey", "session", "credential"};
  for (auto part : kParts) {
    if (lower.find(part) != std::string_view::npos) return true;
  }
  return false;
}

// Values that look like credentials whatever the header: an auth scheme with a credential, a
// compact JWS, or a long random-looking token. "Random-looking" is deliberately narrow so media
// types, dates and cache directives never trip it: either a long run of hex digits (keys,
// digests) or a string that mixes upper case, lower case and digits with high entropy.
bool LooksLikeSecretValue(std::string_view value) {
  absl::string_view v = absl::StripAsciiWhitespace(AV(value));
  for (absl::string_view scheme : {"bearer ", "basic ", "token ", "digest "}) {
    if (v.size() > scheme.size() + 7 &&
        absl::EqualsIgnoreCase(v.substr(0, scheme.size()), scheme)) {
      return true;
    }
  }
  if (absl::StartsWith(v, "eyJ") && std::count(v.begin(), v.end(), '.') == 2) return true;
  if (v.size() < 20) return false;
  bool lower = false, upper = false, digit = false, all_hex = true;
  for (unsigned char c : v) {
    if (!absl::ascii_isxdigit(c)) all_hex = false;
    if (absl::ascii_islower(c)) lower = true;
    else if (absl::ascii_isupper(c)) upper = true;
    else if (absl::ascii_isdigit(c)) digit = true;
    else if (!(c == '-' || c == '_' || c == '+' || c == '/' || c == '=' || c == '.' || c == '~'))
      return false;  // spaces, ';', ',' ...: prose or a structured value, not a token
  }
  if (all_hex && v.size() >= 32) return true;
  if (!(lower && upper && digit)) return false;
  return Entropy(std::string_view(v.data(), v.size())) >= 3.5;
}

bool IsValidHostPattern(std::string_view host, std::string* why) {
  if (host.empty()) {
    *why = "host is empty";
    return false;
  }
  if (host == "*") {
    *why = "\"*\" is not a host pattern; leave hosts empty to match any host";
    return false;
  }
  std::string_view name = host;
  if (absl::StartsWith(AV(host), "*.")) name = host.substr(2);
  if (name.find('*') != std::string_view::npos) {
    *why = "a wildcard is allowed only as a leading \"*.\"";
    return false;
  }
  if (host.front() == '[' && host.back() == ']') {
    if (IsIpLiteral(host.substr(1, host.size() - 2)) &&
        host.find(':') != std::string_view::npos) {
      return true;
    }
  }
  if (name.find(':') != std::string_view::npos) {
    *why = "hosts match without the port; remove \":port\"";
    return false;
  }
  if (IsIpLiteral(name) && name == host) return true;
  if (!IsDnsName(name)) {
    *why = "not a valid host name";
    return false;
  }
  return true;
}

// "https://app.example.com", "http://localhost:3000", "https://*.example.com" or "*".
bool IsValidOrigin(std::string_view origin, std::string* why) {
  if (origin == "*") return true;
  std::string_view rest;
  if (absl::StartsWith(AV(origin), "https://")) rest = origin.substr(8);
  else if (absl::StartsWith(AV(origin), "http://")) rest = origin.substr(7);
  else {
    *why = "an origin is \"*\" or scheme://host[:port] with scheme http or https";
    return false;
  }
  if (rest.find('/') != std::string_view::npos) {
    *why = "an origin has no path (not even a trailing \"/\")";
    return false;
  }
  std::string_view host = rest;
  if (!rest.empty() && rest.front() == '[') {
    size_t close = rest.find(']');
    if (close == std::string_view::npos) {
      *why = "unterminated IPv6 literal";
      return false;
    }
    host = rest.substr(0, close + 1);
    rest = rest.substr(close + 1);
  } else {
    size_t colon = rest.find(':');
    host = rest.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon);
  }
  if (!rest.empty()) {
    uint32_t port = 0;
    if (rest.front() != ':' || !absl::SimpleAtoi(AV(rest.substr(1)), &port) || port == 0 ||
        port > 65535) {
      *why = "invalid port";
      return false;
    }
  }
  std::string host_why;
  if (!IsValidHostPattern(host, &host_why)) {
    *why = host_why;
    return false;
  }
  return true;
}

std::optional<absl::Duration> ToDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string DurationText(absl::Duration d) { return absl::FormatDuration(d); }

// Prefix-match keys for route shadowing: kind ('P' prefix, 'E' exact, 'R' regex) + path.
std::string PathKey(char kind, std::string_view path) {
  std::string key;
  key.reserve(path.size() + 1);
  key.push_back(kind);
  key.append(path.data(), path.size());
  return key;
}

// --- The checker ------------------------------------------------------------------------------

// A route's match in the form the shadowing check needs, prepared once per route.
struct MatchShape {
  bool usable = false;  // false when the match itself is invalid: no shadowing claims then
  char kind = 0;
  std::string path;
  std::vector<std::string> hosts;    // lower-case; empty = any host
  std::vector<std::string> methods;  // empty = any method
  bool has_headers = false;
};

class Validator {
 public:
  Validator(const Config& config, const ValidationOptions& options, std::vector<Diagnostic>* out)
      : config_(config), options_(options), out_(out) {}

  void Run() {
    IndexNames();
    for (int i = 0; i < config_.clusters_size(); ++i) CheckCluster(i);
    for (int i = 0; i < config_.policies_size(); ++i) CheckPolicy(i);
    for (int i = 0; i < config_.rate_limits_size(); ++i) CheckRateLimit(i);
    CheckGlobals();
    shapes_.resize(config_.routes_size());
    for (int i = 0; i < config_.routes_size(); ++i) CheckRoute(i);
    CheckUnused();
    if (options_.check_capabilities) CheckCapabilities();
  }

 private:
  void Add(Diagnostic::Severity severity, std::string path, absl::string_view code,
           std::string message) {
    Diagnostic& d = out_->emplace_back();
    d.set_severity(severity);
    d.set_path(std::move(path));
    d.set_code(std::string(code));
    d.set_message(std::move(message));
  }
  void Error(std::string path, absl::string_view code, std::string message) {
    Add(Diagnostic::ERROR, std::move(path), code, std::move(message));
  }
  void Warning(std::string path, absl::string_view code, std::string message) {
    Add(Diagnostic::WARNING, std::move(path), code, std::move(message));
  }
  void Info(std::string path, absl::string_view code, std::string message) {
    Add(Diagnostic::INFO, std::move(path), code, std::move(message));
  }

  // --- Names ---

  // Checks one name and records it in `index` (first occurrence wins).
  void CheckName(const std::string& name, const std::string& path, absl::string_view kind,
                 absl::flat_hash_map<std::string, int>& index, int i) {
    if (name.empty()) {
      Error(path, "missing_name", absl::StrCat(kind, " name is required"));
      return;
    }
    if (!IsValidResourceName(name)) {
      Error(path, "invalid_name",
            absl::StrCat(kind, " name must be 1..", kMaxNameLength,
                         " characters of letters, digits, '.', '_' and '-'"));
    }
    auto [it, inserted] = index.emplace(name, i);
    if (!inserted) {
      Error(path, "duplicate_name",
            absl::StrCat("duplicate ", kind, " name \"", name, "\" (first defined at index ",
                         it->second, ")"));
    }
  }

  void IndexNames() {
    for (int i = 0; i < config_.clusters_size(); ++i)
      CheckName(config_.clusters(i).name(), absl::StrCat("clusters[", i, "].name"), "cluster",
                clusters_, i);
    for (int i = 0; i < config_.routes_size(); ++i)
      CheckName(config_.routes(i).name(), absl::StrCat("routes[", i, "].name"), "route", routes_, i);
    for (int i = 0; i < config_.policies_size(); ++i)
      CheckName(config_.policies(i).name(), absl::StrCat("policies[", i, "].name"), "policy",
                policies_, i);
    for (int i = 0; i < config_.rate_limits_size(); ++i)
      CheckName(config_.rate_limits(i).name(), absl::StrCat("rate_limits[", i, "].name"),
                "rate limit", rate_limits_, i);
    cluster_used_.assign(config_.clusters_size(), false);
    policy_used_.assign(config_.policies_size(), false);
    rate_limit_used_.assign(config_.rate_limits_size(), false);
    policy_cidrs_.resize(config_.policies_size());
  }

  // --- Shared field checks ---

  // Zero or unset means "the default" everywhere in the config model, so it is always accepted.
  void CheckDuration(const google::protobuf::Duration& d, const std::string& path,
                     absl::Duration min, absl::Duration max) {
    if (d.seconds() == 0 && d.nanos() == 0) return;
    absl::Duration value = *ToDuration(d);
    if (value < absl::ZeroDuration()) {
      Error(path, "timeout_out_of_range", "a duration cannot be negative");
    } else if (value < min || value > max) {
      Error(path, "timeout_out_of_range",
            absl::StrCat(DurationText(value), " is outside the accepted range ", DurationText(min),
                         "..", DurationText(max)));
    }
  }

  void CheckHeaderName(const std::string& name, const std::string& path) {
    if (name.empty()) {
      Error(path, "invalid_header_name", "header name is required");
    } else if (!IsHttpToken(name)) {
      Error(path, "invalid_header_name",
            absl::StrCat("\"", absl::CEscape(name), "\" is not a valid header name (RFC 9110 token)"));
    }
  }

  void CheckRegex(const std::string& pattern, const std::string& path) {
    if (pattern.size() > kMaxRegexLength) {
      Error(path, "invalid_regex",
            absl::StrCat("regex is ", pattern.size(), " characters; the limit is ", kMaxRegexLength));
      return;
    }
    RE2::Options opts;
    opts.set_log_errors(false);
    RE2 re(pattern, opts);
    if (!re.ok()) Error(path, "invalid_regex", absl::StrCat("RE2 rejects the regex: ", re.error()));
  }

  void CheckStatus(uint32_t status, const std::string& path) {
    if (status < 100 || status > 599)
      Error(path, "invalid_status", absl::StrCat("status ", status, " is not in 100..599"));
  }

  void CheckPercent(uint32_t value, const std::string& path) {
    if (value > 100) Error(path, "invalid_percent", absl::StrCat(value, " is not a percentage (0..100)"));
  }

  // --- Clusters ---

  void CheckCluster(int i) {
    const Cluster& c = config_.clusters(i);
    const std::string p = absl::StrCat("clusters[", i, "]");
    if (c.endpoints().empty())
      Error(p + ".endpoints", "no_endpoints", "a cluster needs at least one endpoint");
    absl::flat_hash_set<std::string> seen;
    for (int j = 0; j < c.endpoints_size(); ++j) {
      const auto& e = c.endpoints(j);
      const std::string ep = absl::StrCat(p, ".endpoints[", j, "]");
      if (e.address().empty()) {
        Error(ep + ".address", "missing_address", "endpoint address is required");
      } else if (!IsIpLiteral(e.address()) && !IsDnsName(e.address())) {
        Error(ep + ".address", "invalid_address",
              absl::StrCat("\"", absl::CEscape(e.address()),
                           "\" is neither an IP literal (IPv6 without brackets) nor a host name"));
      }
      if (e.port() == 0 || e.port() > 65535)
        Error(ep + ".port", "invalid_port", absl::StrCat("port ", e.port(), " is not in 1..65535"));
      if (e.weight() > kMaxEndpointWeight)
        Error(ep + ".weight", "invalid_weight",
              absl::StrCat("weight ", e.weight(), " exceeds ", kMaxEndpointWeight));
      if (!e.address().empty() &&
          !seen.insert(absl::StrCat(absl::AsciiStrToLower(e.address()), "|", e.port())).second) {
        Warning(ep, "duplicate_endpoint",
                absl::StrCat("endpoint ", e.address(), ":", e.port(), " is listed twice"));
      }
    }

    if (!Cluster::LbPolicy_IsValid(c.lb_policy()))
      Error(p + ".lb_policy", "invalid_enum", absl::StrCat("unknown lb_policy ", c.lb_policy()));
    const bool hash_key_set =
        c.hash_on().key_case() == Cluster::HashOn::kHeader ||
        (c.hash_on().key_case() == Cluster::HashOn::kClientIp && c.hash_on().client_ip());
    if (c.lb_policy() == Cluster::CONSISTENT_HASH && !hash_key_set) {
      Error(p + ".hash_on", "missing_hash_on",
            "CONSISTENT_HASH needs hash_on: a header or client_ip: true");
    } else if (c.lb_policy() != Cluster::CONSISTENT_HASH && hash_key_set) {
      Warning(p + ".hash_on", "unused_field", "hash_on is used only with lb_policy CONSISTENT_HASH");
    }
    if (c.hash_on().key_case() == Cluster::HashOn::kHeader)
      CheckHeaderName(c.hash_on().header(), p + ".hash_on.header");

    CheckDuration(c.connect_timeout(), p + ".connect_timeout", kMinTimeout, kMaxConnectTimeout);
    CheckDuration(c.pool().idle_timeout(), p + ".pool.idle_timeout", kMinTimeout, kMaxIdleTimeout);

    if (c.health_check().ByteSizeLong() != 0) {
      const auto& hc = c.health_check();
      const std::string hp = p + ".health_check";
      if (hc.path().empty() || hc.path().front() != '/')
        Error(hp + ".path", "invalid_path", "health check path must start with \"/\"");
      CheckDuration(hc.interval(), hp + ".interval", kMinHealthInterval, kMaxHealthInterval);
      CheckDuration(hc.timeout(), hp + ".timeout", kMinTimeout, kMaxConnectTimeout);
      if (hc.interval().seconds() > 0 || hc.interval().nanos() > 0) {
        if (*ToDuration(hc.timeout()) > *ToDuration(hc.interval()))
          Warning(hp + ".timeout", "timeout_out_of_range",
                  "health check timeout is longer than its interval");
      }
      for (int k = 0; k < hc.expected_statuses_size(); ++k)
        CheckStatus(hc.expected_statuses(k), absl::StrCat(hp, ".expected_statuses[", k, "]"));
      std::string why;
      if (!hc.host().empty() && !IsValidHostPattern(hc.host(), &why))
        Error(hp + ".host", "invalid_host", why);
    }

    const auto& od = c.outlier_detection();
    CheckPercent(od.max_ejection_percent(), p + ".outlier_detection.max_ejection_percent");
    CheckDuration(od.base_ejection_time(), p + ".outlier_detection.base_ejection_time", kMinTimeout,
                  kMaxEjectionTime);

    const auto& tls = c.tls();
    if (!tls.enabled() && (!tls.sni().empty() || !tls.ca_file().empty() || tls.insecure_skip_verify() ||
                           !tls.client_cert_file().empty() || !tls.client_key_file().empty())) {
      Warning(p + ".tls.enabled", "unused_field", "TLS settings are ignored while tls.enabled is false");
    }
    // A client certificate is useless without its key and vice versa; a half-configured pair
    // would only show up as refused handshakes in production.
    if (tls.client_cert_file().empty() != tls.client_key_file().empty()) {
      const bool cert_missing = tls.client_cert_file().empty();
      Error(p + (cert_missing ? ".tls.client_cert_file" : ".tls.client_key_file"),
            "incomplete_client_certificate",
            cert_missing ? "tls.client_key_file is set: set tls.client_cert_file too (both or neither)"
                         : "tls.client_cert_file is set: set tls.client_key_file too (both or neither)");
    }
    if (tls.enabled() && tls.insecure_skip_verify()) {
      Warning(p + ".tls.insecure_skip_verify", "insecure_tls",
              "upstream certificates are not verified: anyone on the path can impersonate the upstream");
    }
    if (!tls.sni().empty() && !IsDnsName(tls.sni()))
      Error(p + ".tls.sni", "invalid_host", "SNI must be a DNS host name");
  }

  // --- Policies ---

  void CheckPolicy(int i) {
    const Policy& pol = config_.policies(i);
    const std::string p = absl::StrCat("policies[", i, "]");
    if (pol.cors().ByteSizeLong() == 0 && pol.ip_access().ByteSizeLong() == 0 &&
        pol.security_headers().ByteSizeLong() == 0 && pol.api_key_auth().ByteSizeLong() == 0 &&
        pol.max_body_bytes() == 0 && pol.access_log().ByteSizeLong() == 0) {
      // Attaching a policy that sets nothing does nothing, which is rarely what was meant.
      Warning(p, "empty_policy", "the policy sets nothing");
    }

    const Cors& cors = pol.cors();
    bool wildcard_origin = false;
    for (int k = 0; k < cors.allow_origins_size(); ++k) {
      std::string why;
      if (cors.allow_origins(k) == "*") wildcard_origin = true;
      if (!IsValidOrigin(cors.allow_origins(k), &why))
        Error(absl::StrCat(p, ".cors.allow_origins[", k, "]"), "invalid_origin",
              absl::StrCat("\"", absl::CEscape(cors.allow_origins(k)), "\": ", why));
    }
    if (wildcard_origin && cors.allow_credentials())
      Error(p + ".cors.allow_credentials", "invalid_origin",
            "browsers refuse credentials with the \"*\" origin; list the origins instead");
    for (int k = 0; k < cors.allow_methods_size(); ++k) {
      if (cors.allow_methods(k) != "*" && !IsMethod(cors.allow_methods(k)))
        Error(absl::StrCat(p, ".cors.allow_methods[", k, "]"), "invalid_method",
              absl::StrCat("\"", absl::CEscape(cors.allow_methods(k)), "\" is not an upper-case method name"));
    }
    for (int k = 0; k < cors.allow_headers_size(); ++k) {
      if (cors.allow_headers(k) != "*")
        CheckHeaderName(cors.allow_headers(k), absl::StrCat(p, ".cors.allow_headers[", k, "]"));
    }
    for (int k = 0; k < cors.expose_headers_size(); ++k) {
      if (cors.expose_headers(k) != "*")
        CheckHeaderName(cors.expose_headers(k), absl::StrCat(p, ".cors.expose_headers[", k, "]"));
    }
    CheckDuration(cors.max_age(), p + ".cors.max_age", absl::Seconds(1), kMaxCorsMaxAge);

    auto& cidrs = policy_cidrs_[i];
    const auto& ip = pol.ip_access();
    for (int k = 0; k < ip.allow_size(); ++k) {
      if (auto block = CheckCidr(ip.allow(k), absl::StrCat(p, ".ip_access.allow[", k, "]")))
        cidrs.push_back(*block);
    }
    for (int k = 0; k < ip.deny_size(); ++k)
      CheckCidr(ip.deny(k), absl::StrCat(p, ".ip_access.deny[", k, "]"));

    const auto& sh = pol.security_headers();
    if (!sh.frame_options().empty() && sh.frame_options() != "DENY" &&
        sh.frame_options() != "SAMEORIGIN") {
      Error(p + ".security_headers.frame_options", "invalid_frame_options",
            "frame_options must be DENY or SAMEORIGIN");
    }
    if (!sh.referrer_policy().empty()) {
      static constexpr std::string_view kPolicies[] = {
          "no-referrer", "no-referrer-when-downgrade", "origin", "origin-when-cross-origin",
          "same-origin", "strict-origin", "strict-origin-when-cross-origin", "unsafe-url"};
      for (absl::string_view part : absl::StrSplit(sh.referrer_policy(), ',')) {
        part = absl::StripAsciiWhitespace(part);
        if (std::find(std::begin(kPolicies), std::end(kPolicies),
                      std::string_view(part.data(), part.size())) == std::end(kPolicies)) {
          Error(p + ".security_headers.referrer_policy", "invalid_referrer_policy",
                absl::StrCat("unknown referrer policy \"", absl::CEscape(part), "\""));
          break;
        }
      }
    }
    if (!IsSafeHeaderValue(sh.content_security_policy()))
      Error(p + ".security_headers.content_security_policy", "invalid_header_value",
            "header values cannot contain CR, LF or NUL");
    CheckDuration(sh.hsts_max_age(), p + ".security_headers.hsts_max_age", absl::Seconds(1),
                  kMaxHstsMaxAge);
    if (sh.hsts_preload() && (!sh.hsts_include_subdomains() ||
                              *ToDuration(sh.hsts_max_age()) < absl::Hours(24 * 365))) {
      Warning(p + ".security_headers.hsts_preload", "invalid_hsts",
              "HSTS preload lists require include_subdomains and a max age of at least one year");
    }

    if (pol.api_key_auth().ByteSizeLong() != 0) CheckApiKeyAuth(pol.api_key_auth(), p + ".api_key_auth");

    const auto& log = pol.access_log();
    if (!(log.sample_rate() >= 0.0 && log.sample_rate() <= 1.0))
      Error(p + ".access_log.sample_rate", "invalid_sample_rate", "sample_rate must be within 0..1");
    for (int k = 0; k < log.redact_headers_size(); ++k)
      CheckHeaderName(log.redact_headers(k), absl::StrCat(p, ".access_log.redact_headers[", k, "]"));
  }

  std::optional<CidrBlock> CheckCidr(const std::string& text, const std::string& path) {
    auto block = ParseCidr(text);
    if (!block.ok()) {
      Error(path, "invalid_cidr", std::string(block.status().message()));
      return std::nullopt;
    }
    if (block->host_bits_set) {
      Warning(path, "cidr_host_bits",
              absl::StrCat("\"", text, "\" has bits set beyond the /", block->prefix_len,
                           " prefix; they are ignored"));
    }
    return *block;
  }

  void CheckApiKeyAuth(const ApiKeyAuth& auth, const std::string& p) {
    if (!auth.header().empty()) CheckHeaderName(auth.header(), p + ".header");
    if (auth.keys().empty())
      Warning(p + ".keys", "no_keys", "no keys are configured: every request will be refused");
    absl::flat_hash_set<std::string> hashes;
    for (int k = 0; k < auth.keys_size(); ++k) {
      const auto& key = auth.keys(k);
      const std::string kp = absl::StrCat(p, ".keys[", k, "]");
      if (key.name().empty())
        Warning(kp + ".name", "missing_name", "name the key so logs can say which key was used");
      const std::string& h = key.sha256();
      if (h.empty()) {
        Error(kp + ".sha256", "missing_key_hash", "sha256 of the key is required");
      } else if (IsLowerHex64(h)) {
        if (!hashes.insert(h).second)
          Warning(kp + ".sha256", "duplicate_key", "the same key hash is listed twice");
      } else if (IsHex64AnyCase(h)) {
        Error(kp + ".sha256", "invalid_key_hash", "write the SHA-256 in lower-case hex");
      } else {
        // Never echo the value: it may be the key itself.
        Error(kp + ".sha256", "plaintext_secret",
              absl::StrCat("expected the 64 hex digit SHA-256 of the key, got ", h.size(),
                           " characters (value redacted); if this is the key itself, revoke it"));
      }
    }
  }

  // --- Rate limits ---

  void CheckRateLimit(int i) {
    const RateLimit& rl = config_.rate_limits(i);
    const std::string p = absl::StrCat("rate_limits[", i, "]");
    if (!RateLimit::Key_IsValid(rl.by())) {
      Error(p + ".by", "invalid_enum", absl::StrCat("unknown key kind ", rl.by()));
    } else if (rl.by() == RateLimit::KEY_UNSPECIFIED) {
      Error(p + ".by", "missing_rate_key", "set by: CLIENT_IP, HEADER, ROUTE or TENANT");
    }
    if (rl.by() == RateLimit::HEADER) {
      if (rl.header().empty()) Error(p + ".header", "missing_header", "by: HEADER needs header");
      else CheckHeaderName(rl.header(), p + ".header");
    } else if (!rl.header().empty()) {
      Warning(p + ".header", "unused_field", "header is used only with by: HEADER");
    }
    double unit_seconds = 0;
    if (!RateLimit::Unit_IsValid(rl.unit())) {
      Error(p + ".unit", "invalid_enum", absl::StrCat("unknown unit ", rl.unit()));
    } else {
      switch (rl.unit()) {
        case RateLimit::SECOND: unit_seconds = 1; break;
        case RateLimit::MINUTE: unit_seconds = 60; break;
        case RateLimit::HOUR: unit_seconds = 3600; break;
        default:
          Error(p + ".unit", "missing_unit", "set unit: SECOND, MINUTE or HOUR");
      }
    }
    if (rl.requests_per_unit() == 0) {
      Error(p + ".requests_per_unit", "rate_zero",
            "requests_per_unit is 0: every request would be refused (remove the limit instead)");
    } else if (unit_seconds > 0 &&
               static_cast<double>(rl.requests_per_unit()) / unit_seconds >
                   static_cast<double>(kMaxRatePerSecond)) {
      Error(p + ".requests_per_unit", "rate_absurd",
            absl::StrCat(rl.requests_per_unit(), " per ", unit_seconds == 1 ? "second" : unit_seconds == 60 ? "minute" : "hour",
                         " exceeds ", kMaxRatePerSecond, " requests per second: a typo?"));
    }
    if (rl.burst() > kMaxBurst)
      Error(p + ".burst", "rate_absurd", absl::StrCat("burst ", rl.burst(), " exceeds ", kMaxBurst));
    if (!RateLimit::Scope_IsValid(rl.scope()))
      Error(p + ".scope", "invalid_enum", absl::StrCat("unknown scope ", rl.scope()));
  }

  // --- Global lists ---

  void CheckGlobals() {
    absl::flat_hash_set<int> seen;
    for (int k = 0; k < config_.global_policies_size(); ++k) {
      const std::string path = absl::StrCat("global_policies[", k, "]");
      int idx = ResolvePolicy(config_.global_policies(k), path);
      if (idx < 0) continue;
      if (!seen.insert(idx).second) {
        Warning(path, "duplicate_reference", "policy listed twice");
        continue;
      }
      MergePolicy(idx, path, global_policy_state_);
    }
    seen.clear();
    for (int k = 0; k < config_.global_rate_limits_size(); ++k) {
      const std::string path = absl::StrCat("global_rate_limits[", k, "]");
      int idx = ResolveRateLimit(config_.global_rate_limits(k), path);
      if (idx >= 0 && !seen.insert(idx).second) Warning(path, "duplicate_reference", "rate limit listed twice");
    }
  }

  int ResolvePolicy(const std::string& name, const std::string& path) {
    auto it = policies_.find(name);
    if (it == policies_.end()) {
      Error(path, "unknown_policy", absl::StrCat("no policy named \"", name, "\""));
      return -1;
    }
    policy_used_[it->second] = true;
    return it->second;
  }

  int ResolveRateLimit(const std::string& name, const std::string& path) {
    auto it = rate_limits_.find(name);
    if (it == rate_limits_.end()) {
      Error(path, "unknown_rate_limit", absl::StrCat("no rate limit named \"", name, "\""));
      return -1;
    }
    rate_limit_used_[it->second] = true;
    return it->second;
  }

  // The policies in effect on a route so far, for conflict detection: which policy supplies
  // each single-valued part, and the intersection of every allow list.
  struct PolicyState {
    int cors = -1;
    int security_headers = -1;
    int api_key_auth = -1;
    int access_log = -1;
    int max_body = -1;
    bool has_allow = false;
    std::vector<CidrBlock> allow;  // intersection of all allow lists seen
    std::vector<int> allow_from;   // policies that contributed to `allow`
  };

  void Conflict(const std::string& path, int first, int second, absl::string_view what) {
    Error(path, "conflicting_policies",
          absl::StrCat("policies \"", config_.policies(first).name(), "\" and \"",
                       config_.policies(second).name(), "\" both set ", what,
                       "; only one may apply to a route"));
  }

  void MergePolicy(int idx, const std::string& path, PolicyState& st) {
    const Policy& pol = config_.policies(idx);
    auto single = [&](bool set, int& holder, absl::string_view what) {
      if (!set) return;
      if (holder >= 0) Conflict(path, holder, idx, what);
      else holder = idx;
    };
    single(pol.cors().ByteSizeLong() != 0, st.cors, "cors");
    single(pol.security_headers().ByteSizeLong() != 0, st.security_headers, "security_headers");
    single(pol.api_key_auth().ByteSizeLong() != 0, st.api_key_auth, "api_key_auth");
    single(pol.access_log().ByteSizeLong() != 0, st.access_log, "access_log");
    if (pol.max_body_bytes() != 0) {
      if (st.max_body >= 0 && config_.policies(st.max_body).max_body_bytes() != pol.max_body_bytes())
        Conflict(path, st.max_body, idx, "different max_body_bytes");
      else if (st.max_body < 0)
        st.max_body = idx;
    }
    const auto& allow = policy_cidrs_[idx];
    // Only lists that parsed completely take part; a broken list already has its own error.
    if (pol.ip_access().allow_size() > 0 &&
        static_cast<int>(allow.size()) == pol.ip_access().allow_size()) {
      if (!st.has_allow) {
        st.has_allow = true;
        st.allow = allow;
        st.allow_from = {idx};
        return;
      }
      std::vector<CidrBlock> next;
      for (const auto& a : st.allow) {
        for (const auto& b : allow) {
          if (a.Contains(b)) next.push_back(b);
          else if (b.Contains(a)) next.push_back(a);
        }
      }
      if (next.empty()) {
        Error(path, "conflicting_policies",
              absl::StrCat("the ip_access allow list of policy \"", pol.name(),
                           "\" does not intersect that of policy \"",
                           config_.policies(st.allow_from.front()).name(),
                           "\": no client could reach the route"));
        return;
      }
      st.allow = std::move(next);
      st.allow_from.push_back(idx);
    }
  }

  // --- Routes ---

  void CheckRoute(int i) {
    const Route& r = config_.routes(i);
    const std::string p = absl::StrCat("routes[", i, "]");
    MatchShape& shape = shapes_[i];
    CheckMatch(r.match(), p, shape);

    switch (r.action_case()) {
      case Route::kCluster: {
        auto it = clusters_.find(r.cluster());
        if (it == clusters_.end()) {
          Error(p + ".cluster", "unknown_cluster",
                absl::StrCat("route refers to unknown cluster \"", r.cluster(), "\""));
        } else {
          cluster_used_[it->second] = true;
        }
        break;
      }
      case Route::kWeightedClusters: {
        const auto& wc = r.weighted_clusters();
        if (wc.clusters().empty()) {
          Error(p + ".weighted_clusters.clusters", "empty_weighted_clusters",
                "weighted_clusters needs at least one cluster");
          break;
        }
        uint64_t total = 0;
        for (int k = 0; k < wc.clusters_size(); ++k) {
          const auto& w = wc.clusters(k);
          const std::string wp = absl::StrCat(p, ".weighted_clusters.clusters[", k, "]");
          auto it = clusters_.find(w.name());
          if (it == clusters_.end()) {
            Error(wp + ".name", "unknown_cluster",
                  absl::StrCat("weighted cluster refers to unknown cluster \"", w.name(), "\""));
          } else {
            cluster_used_[it->second] = true;
          }
          if (w.weight() > kMaxEndpointWeight)
            Error(wp + ".weight", "invalid_weight",
                  absl::StrCat("weight ", w.weight(), " exceeds ", kMaxEndpointWeight));
          total += w.weight();
        }
        if (total == 0)
          Error(p + ".weighted_clusters", "zero_total_weight",
                "the weights add up to 0: no cluster could be chosen");
        break;
      }
      case Route::kRedirect: {
        const auto& rd = r.redirect();
        const uint32_t s = rd.status();
        if (!(s == 0 || s == 301 || s == 302 || s == 303 || s == 307 || s == 308))
          Error(p + ".redirect.status", "invalid_redirect_status",
                absl::StrCat("redirect status ", s, " is not one of 301, 302, 303, 307, 308"));
        if (!rd.scheme().empty() && rd.scheme() != "http" && rd.scheme() != "https")
          Error(p + ".redirect.scheme", "invalid_scheme", "scheme must be http or https");
        if (!rd.host().empty()) {
          std::string why;
          if (!IsValidOrigin(absl::StrCat("http://", rd.host()), &why) || rd.host().front() == '*')
            Error(p + ".redirect.host", "invalid_host",
                  absl::StrCat("\"", absl::CEscape(rd.host()), "\" is not a host[:port]"));
        }
        if (!rd.path().empty() && (rd.path().front() != '/' || !IsSafeHeaderValue(rd.path())))
          Error(p + ".redirect.path", "invalid_path", "redirect path must start with \"/\"");
        break;
      }
      case Route::kDirectResponse: {
        const auto& dr = r.direct_response();
        CheckStatus(dr.status(), p + ".direct_response.status");
        if (!IsSafeHeaderValue(dr.content_type()))
          Error(p + ".direct_response.content_type", "invalid_header_value",
                "header values cannot contain CR, LF or NUL");
        break;
      }
      case Route::ACTION_NOT_SET:
        Error(p, "missing_action",
              "route needs one of cluster, weighted_clusters, redirect, direct_response");
        break;
    }
    const bool proxies = r.action_case() == Route::kCluster || r.action_case() == Route::kWeightedClusters;

    CheckDuration(r.timeout(), p + ".timeout", kMinTimeout, kMaxRouteTimeout);
    CheckRetry(r, p, proxies);

    if (!r.prefix_rewrite().empty()) {
      if (r.match().path().kind_case() != PathMatch::kPrefix) {
        Error(p + ".prefix_rewrite", "invalid_prefix_rewrite",
              "prefix_rewrite needs a prefix path match");
      } else if (r.prefix_rewrite().front() != '/' || !IsSafeHeaderValue(r.prefix_rewrite())) {
        Error(p + ".prefix_rewrite", "invalid_prefix_rewrite", "prefix_rewrite must start with \"/\"");
      }
      if (!proxies && r.action_case() != Route::ACTION_NOT_SET)
        Warning(p + ".prefix_rewrite", "unused_field", "prefix_rewrite applies only to proxied routes");
    }
    CheckHeaderEdits(r.request_headers(), p + ".request_headers", /*request=*/true);
    CheckHeaderEdits(r.response_headers(), p + ".response_headers", /*request=*/false);

    // Policies in effect: the tenant-wide ones first, then the route's own.
    PolicyState st = global_policy_state_;
    absl::flat_hash_set<int> seen;
    for (int k = 0; k < config_.global_policies_size(); ++k) {
      auto it = policies_.find(config_.global_policies(k));
      if (it != policies_.end()) seen.insert(it->second);
    }
    for (int k = 0; k < r.policies_size(); ++k) {
      const std::string path = absl::StrCat(p, ".policies[", k, "]");
      int idx = ResolvePolicy(r.policies(k), path);
      if (idx < 0) continue;
      if (!seen.insert(idx).second) {
        Warning(path, "duplicate_reference", "policy already applies to this route");
        continue;
      }
      MergePolicy(idx, path, st);
    }
    seen.clear();
    for (int k = 0; k < r.rate_limits_size(); ++k) {
      const std::string path = absl::StrCat(p, ".rate_limits[", k, "]");
      int idx = ResolveRateLimit(r.rate_limits(k), path);
      if (idx >= 0 && !seen.insert(idx).second)
        Warning(path, "duplicate_reference", "rate limit listed twice on this route");
    }

    CheckShadowed(i, p);
  }

  void CheckMatch(const RouteMatch& m, const std::string& p, MatchShape& shape) {
    bool usable = true;
    shape.hosts.reserve(m.hosts_size());
    for (int k = 0; k < m.hosts_size(); ++k) {
      std::string why;
      if (!IsValidHostPattern(m.hosts(k), &why)) {
        Error(absl::StrCat(p, ".match.hosts[", k, "]"), "invalid_host",
              absl::StrCat("\"", absl::CEscape(m.hosts(k)), "\": ", why));
        usable = false;
      }
      shape.hosts.push_back(absl::AsciiStrToLower(m.hosts(k)));
    }
    const auto& path = m.path();
    switch (path.kind_case()) {
      case PathMatch::kExact:
      case PathMatch::kPrefix: {
        const bool exact = path.kind_case() == PathMatch::kExact;
        const std::string& value = exact ? path.exact() : path.prefix();
        if (value.empty() || value.front() != '/') {
          Error(absl::StrCat(p, ".match.path.", exact ? "exact" : "prefix"), "invalid_path",
                absl::StrCat(exact ? "exact" : "prefix", " path must start with \"/\""));
          usable = false;
        }
        shape.kind = exact ? 'E' : 'P';
        shape.path = value;
        break;
      }
      case PathMatch::kRegex: {
        size_t before = out_->size();
        CheckRegex(path.regex(), p + ".match.path.regex");
        if (out_->size() != before) usable = false;
        shape.kind = 'R';
        shape.path = path.regex();
        break;
      }
      case PathMatch::KIND_NOT_SET:
        Error(p + ".match.path", "missing_path",
              "route needs a path match: exact, prefix (use \"/\" for every path) or regex");
        usable = false;
        break;
    }
    for (int k = 0; k < m.methods_size(); ++k) {
      if (!IsMethod(m.methods(k))) {
        Error(absl::StrCat(p, ".match.methods[", k, "]"), "invalid_method",
              absl::StrCat("\"", absl::CEscape(m.methods(k)), "\" is not an upper-case method name"));
        usable = false;
      }
      shape.methods.push_back(m.methods(k));
    }
    for (int k = 0; k < m.headers_size(); ++k) {
      const HeaderMatch& h = m.headers(k);
      const std::string hp = absl::StrCat(p, ".match.headers[", k, "]");
      CheckHeaderName(h.name(), hp + ".name");
      switch (h.kind_case()) {
        case HeaderMatch::kRegex:
          CheckRegex(h.regex(), hp + ".regex");
          break;
        case HeaderMatch::KIND_NOT_SET:
          Error(hp, "missing_header_match", "header match needs one of exact, prefix, regex, present");
          break;
        default:
          break;
      }
    }
    shape.has_headers = m.headers_size() > 0;
    shape.usable = usable;
  }

  void CheckRetry(const Route& r, const std::string& p, bool proxies) {
    const auto& rt = r.retry();
    if (rt.ByteSizeLong() == 0) return;
    if (!proxies && r.action_case() != Route::ACTION_NOT_SET)
      Warning(p + ".retry", "unused_field", "retry applies only to proxied routes");
    if (rt.attempts() > kMaxRetryAttempts)
      Error(p + ".retry.attempts", "invalid_retry_attempts",
            absl::StrCat(rt.attempts(), " attempts exceed the limit of ", kMaxRetryAttempts));
    bool retriable_status = false;
    for (int k = 0; k < rt.retry_on_size(); ++k) {
      const std::string& on = rt.retry_on(k);
      if (on == "retriable-status") retriable_status = true;
      if (on != "connect-failure" && on != "reset" && on != "5xx" && on != "gateway-error" &&
          on != "retriable-status") {
        Error(absl::StrCat(p, ".retry.retry_on[", k, "]"), "unknown_retry_on",
              absl::StrCat("\"", absl::CEscape(on),
                           "\" is not one of connect-failure, reset, 5xx, gateway-error, retriable-status"));
      }
    }
    if (retriable_status && rt.retriable_statuses().empty())
      Error(p + ".retry.retriable_statuses", "missing_retriable_statuses",
            "retry_on retriable-status needs retriable_statuses");
    for (int k = 0; k < rt.retriable_statuses_size(); ++k)
      CheckStatus(rt.retriable_statuses(k), absl::StrCat(p, ".retry.retriable_statuses[", k, "]"));
    CheckDuration(rt.per_try_timeout(), p + ".retry.per_try_timeout", kMinTimeout, kMaxRouteTimeout);
    const absl::Duration route_timeout = *ToDuration(r.timeout());
    if (route_timeout > absl::ZeroDuration() && *ToDuration(rt.per_try_timeout()) > route_timeout)
      Warning(p + ".retry.per_try_timeout", "timeout_out_of_range",
              "per_try_timeout is longer than the route timeout, so no retry can happen in time");
    CheckPercent(rt.budget_percent(), p + ".retry.budget_percent");
  }

  void CheckHeaderEdits(const HeaderEdits& edits, const std::string& p, bool request) {
    auto check_values = [&](const auto& list, absl::string_view field) {
      for (int k = 0; k < list.size(); ++k) {
        const auto& hv = list.Get(k);
        const std::string hp = absl::StrCat(p, ".", field, "[", k, "]");
        CheckHeaderName(hv.name(), hp + ".name");
        const std::string lower = absl::AsciiStrToLower(hv.name());
        if (IsHopByHop(lower)) {
          Error(hp + ".name", "hop_by_hop_header",
                absl::StrCat("\"", hv.name(), "\" is a hop-by-hop header; the agent manages it"));
        } else if (lower == "content-length" || (!request && lower == "host")) {
          Error(hp + ".name", "forbidden_header",
                absl::StrCat("\"", hv.name(), "\" frames the message and cannot be edited"));
        }
        if (!IsSafeHeaderValue(hv.value())) {
          Error(hp + ".value", "invalid_header_value", "header values cannot contain CR, LF or NUL");
        } else if (!hv.value().empty() && (IsSecretHeaderName(lower) || LooksLikeSecretValue(hv.value()))) {
          Warning(hp + ".value", "plaintext_secret",
                  absl::StrCat("the value of \"", hv.name(), "\" looks like a credential (",
                               hv.value().size(),
                               " characters, redacted); it is stored and shown in plain text"));
        }
      }
    };
    check_values(edits.set(), "set");
    check_values(edits.add(), "add");
    for (int k = 0; k < edits.remove_size(); ++k) {
      const std::string hp = absl::StrCat(p, ".remove[", k, "]");
      CheckHeaderName(edits.remove(k), hp);
      if (IsHopByHop(absl::AsciiStrToLower(edits.remove(k))))
        Warning(hp, "hop_by_hop_header", "hop-by-hop headers are removed by the agent already");
    }
  }

  // --- Shadowing ---
  //
  // Route j can never match when an earlier route i matches every request j would: i has no
  // header matches, its hosts and methods cover j's, and its path covers j's path (a prefix of
  // it, the identical exact path or regex, or the prefix "/"). Earlier routes are indexed by
  // (path key, host key) so the check costs O(path length) lookups per route, not O(routes).

  bool HostsCover(const MatchShape& a, const MatchShape& b) const {
    if (a.hosts.empty()) return true;
    if (b.hosts.empty()) return false;
    for (const auto& h : b.hosts) {
      bool covered = false;
      for (const auto& pat : a.hosts) {
        if (pat == h) {
          covered = true;
        } else if (pat.size() > 2 && pat[0] == '*') {
          // "*.example.com" covers "a.example.com", "a.b.example.com" and "*.b.example.com".
          std::string_view suffix = std::string_view(pat).substr(1);
          covered = h.size() > suffix.size() + (h[0] == '*' ? 1 : 0) &&
                    absl::EndsWith(h, AV(suffix));
        }
        if (covered) break;
      }
      if (!covered) return false;
    }
    return true;
  }

  static bool MethodsCover(const MatchShape& a, const MatchShape& b) {
    if (a.methods.empty()) return true;
    if (b.methods.empty()) return false;
    for (const auto& m : b.methods) {
      if (std::find(a.methods.begin(), a.methods.end(), m) == a.methods.end()) return false;
    }
    return true;
  }

  // Host keys under which a shadowing route could be indexed for host `h` (lower-case).
  static void CoveringHostKeys(const std::string& h, std::vector<std::string>& keys) {
    keys.push_back(h);
    for (size_t pos = 1; pos < h.size(); ++pos) {
      if (h[pos] == '.') keys.push_back(absl::StrCat("*", h.substr(pos)));
    }
  }

  void CheckShadowed(int j, const std::string& p) {
    const MatchShape& s = shapes_[j];
    if (!s.usable) return;

    std::vector<std::string> host_keys{""};
    if (!s.hosts.empty()) CoveringHostKeys(s.hosts.front(), host_keys);

    int best = -1;
    auto probe = [&](absl::string_view path_key) {
      auto it = shadow_index_.find(path_key);
      if (it == shadow_index_.end()) return;
      for (const auto& hk : host_keys) {
        auto hit = it->second.find(hk);
        if (hit == it->second.end()) continue;
        for (int i : hit->second) {
          if (best >= 0 && i >= best) break;
          if (HostsCover(shapes_[i], s) && MethodsCover(shapes_[i], s)) {
            best = i;
            break;
          }
        }
      }
    };
    std::string key = PathKey(s.kind, s.path);
    if (s.kind == 'R') {
      probe(key);
      probe("P/");
    } else {
      if (s.kind == 'E') probe(key);
      // Every prefix of the path, as a prefix match.
      key[0] = 'P';
      for (size_t len = 2; len <= key.size(); ++len) probe(absl::string_view(key.data(), len));
    }
    if (best >= 0) {
      Warning(p + ".match", "route_shadowed",
              absl::StrCat("route \"", config_.routes(j).name(), "\" can never match: the earlier route routes[",
                           best, "] (\"", config_.routes(best).name(), "\") matches every request it would"));
    }

    // Index this route as a potential shadower of later ones.
    if (!s.has_headers) {
      auto& by_host = shadow_index_[PathKey(s.kind, s.path)];
      if (s.hosts.empty()) {
        by_host[""].push_back(j);
      } else {
        for (const auto& h : s.hosts) {
          auto& v = by_host[h];
          if (v.empty() || v.back() != j) v.push_back(j);
        }
      }
    }
  }

  // --- Leftovers ---

  // Duplicates and nameless resources cannot be referenced at all; they have their own errors.
  static bool IsFirstOfName(const absl::flat_hash_map<std::string, int>& index, const std::string& name,
                            int i) {
    auto it = index.find(name);
    return !name.empty() && it != index.end() && it->second == i;
  }

  void CheckUnused() {
    for (int i = 0; i < config_.clusters_size(); ++i) {
      if (!cluster_used_[i] && IsFirstOfName(clusters_, config_.clusters(i).name(), i))
        Info(absl::StrCat("clusters[", i, "]"), "unused", "no route uses this cluster");
    }
    for (int i = 0; i < config_.policies_size(); ++i) {
      if (!policy_used_[i] && IsFirstOfName(policies_, config_.policies(i).name(), i))
        Info(absl::StrCat("policies[", i, "]"), "unused", "no route or global_policies uses this policy");
    }
    for (int i = 0; i < config_.rate_limits_size(); ++i) {
      if (!rate_limit_used_[i] && IsFirstOfName(rate_limits_, config_.rate_limits(i).name(), i))
        Info(absl::StrCat("rate_limits[", i, "]"), "unused",
             "no route or global_rate_limits uses this rate limit");
    }
  }

  void CheckCapabilities() {
    for (const auto& [feature, path] : FeaturesUsed(config_)) {
      if (options_.capabilities.count(feature) == 0)
        Error(path, "unsupported_feature",
              absl::StrCat("this agent does not support \"", feature, "\""));
    }
  }

  const Config& config_;
  const ValidationOptions& options_;
  std::vector<Diagnostic>* out_;

  absl::flat_hash_map<std::string, int> clusters_, routes_, policies_, rate_limits_;
  std::vector<bool> cluster_used_, policy_used_, rate_limit_used_;
  std::vector<std::vector<CidrBlock>> policy_cidrs_;  // parsed allow lists, per policy
  PolicyState global_policy_state_;
  std::vector<MatchShape> shapes_;
  absl::flat_hash_map<std::string, absl::flat_hash_map<std::string, std::vector<int>>> shadow_index_;
};

}  // namespace

// --- Exported syntax helpers ------------------------------------------------------------------

bool IsHttpToken(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!IsTchar(c)) return false;
  }
  return true;
}

bool IsValidResourceName(std::string_view s) {
  if (s.empty() || s.size() > kMaxNameLength) return false;
  for (unsigned char c : s) {
    if (!(absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

bool IsDnsName(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  size_t start = 0;
  bool last_all_digits = false;
  while (start <= s.size()) {
    size_t end = s.find('.', start);
    if (end == std::string_view::npos) end = s.size();
    std::string_view label = s.substr(start, end - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    last_all_digits = true;
    for (unsigned char c : label) {
      if (!(absl::ascii_isalnum(c) || c == '-' || c == '_')) return false;
      if (!absl::ascii_isdigit(c)) last_all_digits = false;
    }
    start = end + 1;
  }
  return !last_all_digits;
}

bool IsIpLiteral(std::string_view s) {
  if (s.empty() || s.size() > 45) return false;
  char buf[64];
  std::copy(s.begin(), s.end(), buf);
  buf[s.size()] = '\0';
  unsigned char out[16];
  return inet_pton(AF_INET, buf, out) == 1 || inet_pton(AF_INET6, buf, out) == 1;
}

absl::StatusOr<CidrBlock> ParseCidr(std::string_view text) {
  auto invalid = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", absl::CEscape(AV(text)), "\" is not a CIDR block: ", AV(why)));
  };
  size_t slash = text.find('/');
  if (slash == std::string_view::npos)
    return invalid("the prefix length is required (e.g. 10.0.0.1/32)");
  std::string_view addr = text.substr(0, slash);
  std::string_view len_text = text.substr(slash + 1);
  CidrBlock block;
  block.ipv6 = addr.find(':') != std::string_view::npos;
  if (addr.empty() || addr.size() > 45) return invalid("bad address");
  char buf[64];
  std::copy(addr.begin(), addr.end(), buf);
  buf[addr.size()] = '\0';
  if (inet_pton(block.ipv6 ? AF_INET6 : AF_INET, buf, block.address.data()) != 1)
    return invalid(block.ipv6 ? "bad IPv6 address" : "bad IPv4 address");
  const int max_len = block.ipv6 ? 128 : 32;
  if (len_text.empty() || len_text.size() > 3 ||
      !std::all_of(len_text.begin(), len_text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return invalid("bad prefix length");
  int len = 0;
  for (char c : len_text) len = len * 10 + (c - '0');
  if (len > max_len) return invalid(absl::StrCat("prefix length exceeds ", max_len));
  block.prefix_len = len;
  const int bytes = max_len / 8;
  for (int bit = len; bit < bytes * 8; ++bit) {
    if (block.address[bit / 8] & (0x80 >> (bit % 8))) {
      block.host_bits_set = true;
      break;
    }
  }
  return block;
}

bool CidrBlock::Contains(const CidrBlock& other) const {
  if (ipv6 != other.ipv6 || other.prefix_len < prefix_len) return false;
  for (int bit = 0; bit < prefix_len; ++bit) {
    const uint8_t mask = 0x80 >> (bit % 8);
    if ((address[bit / 8] & mask) != (other.address[bit / 8] & mask)) return false;
  }
  return true;
}

bool CidrBlock::Overlaps(const CidrBlock& other) const {
  return Contains(other) || other.Contains(*this);
}

// --- Public entry points ----------------------------------------------------------------------

std::vector<Diagnostic> ValidateConfig(const Config& config, const ValidationOptions& options) {
  std::vector<Diagnostic> out;
  Validator(config, options, &out).Run();
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
    const char* severity = d.severity() == Diagnostic::ERROR     ? "error"
                           : d.severity() == Diagnostic::WARNING ? "warning"
                                                                 : "info";
    absl::StrAppend(&out, severity, ": ", d.path(), ": ", d.code(), ": ", d.message(), "\n");
  }
  return out;
}

std::set<std::string> AgentCapabilities() {
  // Everything the request path enforces. Policies and rate limits are part of the config model
  // but this build of the agent does not enforce them yet, so it says so: a config that uses
  // them is refused (NACK) rather than served without the protection it asks for, and the
  // control plane's dry-run reports unsupported_feature for it once such agents are known.
  std::set<std::string> out;
  for (const auto& feature : AllFeatures()) {
    const std::string name(feature);
    if (name.rfind("policy.", 0) == 0 || name.rfind("rate_limit.", 0) == 0) continue;
    out.insert(name);
  }
  return out;
}

}  // namespace flexgate
