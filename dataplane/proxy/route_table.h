// RouteTable: a flexgate.v1.Config compiled for the request path.
//
// Immutable once built and shared across worker threads as std::shared_ptr<const RouteTable>.
// A request keeps the table it started with (it holds a reference) until it ends, so a swap
// never changes the routing of an in-flight request.
//
// Lookup is indexed so that its cost does not grow with the number of routes in the common
// cases: routes are bucketed by host (exact name, "*.suffix" wildcard, or any host); inside a
// bucket exact paths sit in a hash map and prefixes in one hash map per distinct prefix length.
// Only regex routes and routes without a path match are scanned. All candidates are then checked
// in configuration order (route index), so "first match wins" holds exactly.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "flexgate/v1/config.pb.h"

namespace re2 {
class RE2;
}

namespace flexgate::tls {
class TlsClientContext;
}

namespace flexgate::dataplane {

class RouteTable;

// One address of a host name (its port is ignored: the endpoint's configured port is used).
struct ResolvedAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
};

// Resolves an endpoint's host name (never an IP literal) to one address. Blocking; runs on the
// thread that compiles. An error is not fatal: the endpoint stays unresolved (see
// CompiledEndpoint::addr_len) and the error text becomes its resolve_error.
using HostResolver = std::function<absl::StatusOr<ResolvedAddress>(const std::string& host)>;

// The system resolver: getaddrinfo, first address returned.
absl::StatusOr<ResolvedAddress> ResolveWithGetaddrinfo(const std::string& host);

struct CompileOptions {
  // How host names are resolved; empty means ResolveWithGetaddrinfo. The seam lets tests drive
  // re-resolution (names that fail, then resolve, then move) without a DNS server.
  HostResolver resolver;
};

// Compiles a config that has passed ValidateConfig. Returns INVALID_ARGUMENT for anything the
// compiler cannot represent (the validator should have caught it first). Endpoint host names
// that are not IP literals are resolved here (options.resolver, getaddrinfo by default), so call
// it off the request path (the control thread), never on a worker loop.
absl::StatusOr<std::shared_ptr<const RouteTable>> CompileRouteTable(
    const flexgate::v1::Config& config, uint64_t version, std::string hash,
    const CompileOptions& options = {});

// One upstream endpoint, resolved to a socket address at compile time.
struct CompiledEndpoint {
  sockaddr_storage addr{};
  // 0 when the endpoint is a host name that did not resolve at compile time: it has no address,
  // the balancer skips it, and picking it anyway (every endpoint unusable) answers 503.
  socklen_t addr_len = 0;
  // True when the configured address is a host name (resolved at compile time, re-resolved by
  // the publisher in the background).
  bool from_hostname = false;
  // Why resolution failed (empty when resolved).
  std::string resolve_error;
  // "ip:port" ("[v6]:port" for IPv6): the key of the per-worker connection pool, so pooled
  // connections survive table swaps that keep the endpoint.
  std::string key;
  uint32_t weight = 1;
  // The idle-pool key: `key` for plain clusters; for TLS clusters it also names the server name
  // and the cluster's TLS context, so a pooled connection is only reused with the same
  // verification settings (a config that changes them starts new connections).
  std::string pool_key;
  // TLS clusters: the name sent as SNI and verified (the cluster's tls.sni, else the endpoint's
  // configured address).
  std::string tls_server_name;
};

struct CompiledCluster {
  std::string name;
  std::vector<CompiledEndpoint> endpoints;
  flexgate::v1::Cluster::LbPolicy lb_policy = flexgate::v1::Cluster::ROUND_ROBIN;
  // Round robin: endpoint indices repeated by weight (weights reduced by their gcd, capped),
  // interleaved so that consecutive picks spread over endpoints.
  std::vector<uint32_t> rr_schedule;
  // Consistent hash: sorted (point, endpoint index) ring, and what is hashed.
  std::vector<std::pair<uint64_t, uint32_t>> ring;
  std::string hash_header;  // lower case; empty = hash the client IP
  uint64_t connect_timeout_ms = 0;       // 0 = the agent default
  uint32_t max_idle_per_endpoint = 32;
  uint64_t idle_timeout_ms = 30000;
  uint32_t max_requests_per_connection = 0;  // 0 = unlimited
  // Upstream TLS (tls.enabled): built at compile time on the control thread (it reads the CA
  // file); immutable and shared by every worker. nullptr = plain TCP.
  std::shared_ptr<const tls::TlsClientContext> tls;

  // Passive outlier ejection (per worker): after `consecutive_5xx` 5xx answers or
  // `consecutive_connect_failures` failed connects in a row, an endpoint is skipped for
  // base_ejection_ms * times it was ejected, while at most max_ejection_percent of the cluster's
  // endpoints (but always at least one) are ejected. 0 thresholds disable that trigger.
  struct Outlier {
    bool enabled = false;
    uint32_t consecutive_5xx = 0;
    uint32_t consecutive_connect_failures = 0;
    uint64_t base_ejection_ms = 30000;
    uint32_t max_ejection_percent = 10;
  };
  Outlier outlier;

  // Active HTTP health checks, run by one checker per ProxyServer (not per worker).
  struct HealthCheck {
    bool enabled = false;
    std::string path = "/";
    std::string host;  // empty = the endpoint's address
    uint64_t interval_ms = 10000;
    uint64_t timeout_ms = 1000;
    uint32_t healthy_threshold = 1;
    uint32_t unhealthy_threshold = 2;
    std::vector<uint32_t> expected_statuses;  // empty = 200-399
    bool StatusHealthy(int status) const;
  };
  HealthCheck health_check;

  // Circuit breakers, enforced per worker (each worker counts only its own connections and
  // requests, so the effective cluster-wide limit is N workers times these). 0 = unlimited.
  uint32_t max_connections = 0;
  uint32_t max_pending_requests = 0;
  uint32_t max_requests = 0;

  // Index into `ring` for a hash value.
  uint32_t RingLookup(uint64_t hash) const;
};

// A request/response header edit list, names lower-cased at compile time.
struct CompiledHeaderEdits {
  std::vector<std::pair<std::string, std::string>> set;
  std::vector<std::pair<std::string, std::string>> add;
  std::vector<std::string> remove;
  bool empty() const { return set.empty() && add.empty() && remove.empty(); }
  // True when a header of this (lower-case or not) name must be dropped from the forwarded
  // message because it is removed or replaced.
  bool Drops(std::string_view name) const;
};

struct CompiledHeaderMatch {
  enum class Kind { kExact, kPrefix, kRegex, kPresent };
  std::string name;  // lower case
  Kind kind = Kind::kPresent;
  std::string value;
  std::shared_ptr<const re2::RE2> regex;
  bool present = true;  // for kPresent: whether the header must be present
  bool invert = false;
};

// Route retry policy. Retries happen only for idempotent methods and only while the request body
// can be replayed (no body, or a body small enough to keep a copy of).
struct CompiledRetryPolicy {
  uint32_t attempts = 1;  // total, including the first; 1 = no retry
  bool on_connect_failure = false;
  bool on_reset = false;           // the connection broke before a response head arrived
  bool on_5xx = false;             // any 5xx answer (and connect failures and resets)
  bool on_gateway_error = false;   // 502, 503, 504 answers (and connect failures)
  bool on_retriable_status = false;
  std::vector<uint32_t> retriable_statuses;
  uint64_t per_try_timeout_ms = 0;  // 0 = only the whole-request timeout
  uint32_t budget_percent = 20;     // retries in flight <= this % of active requests (min 3)
  bool enabled() const { return attempts > 1; }
  // Whether an upstream answer with `status` should be retried.
  bool RetriesStatus(int status) const;
};

struct CompiledRoute {
  enum class PathKind { kAny, kExact, kPrefix, kRegex };
  enum class ActionKind { kCluster, kWeightedClusters, kRedirect, kDirectResponse };

  uint32_t index = 0;  // position in config.routes: lower wins
  std::string name;
  PathKind path_kind = PathKind::kAny;
  std::string path;  // exact path or prefix
  std::shared_ptr<const re2::RE2> path_regex;
  std::vector<std::string> methods;  // upper case; empty = any
  std::vector<CompiledHeaderMatch> headers;

  ActionKind action = ActionKind::kCluster;
  uint32_t cluster = 0;  // index into RouteTable::clusters()
  // Weighted clusters: (cluster index, cumulative weight); pick r in [0, total).
  std::vector<std::pair<uint32_t, uint64_t>> weighted;
  uint64_t weighted_total = 0;
  flexgate::v1::Redirect redirect;
  uint32_t direct_status = 200;
  std::string direct_body;
  std::string direct_content_type;

  uint64_t timeout_ms = 0;  // 0 = the agent default
  CompiledRetryPolicy retry;
  std::string prefix_rewrite;
  bool has_prefix_rewrite = false;
  CompiledHeaderEdits request_headers;
  CompiledHeaderEdits response_headers;
};

// What routing looks at in a request. Views stay valid for the duration of Match().
struct RouteRequest {
  std::string_view host;    // the Host header, may include a port; case-insensitive
  std::string_view path;    // without the query string
  std::string_view method;  // upper case
  // Request headers in arrival order; names in any case.
  absl::Span<const std::pair<std::string_view, std::string_view>> headers;
};

class RouteTable {
 public:
  RouteTable(const RouteTable&) = delete;
  RouteTable& operator=(const RouteTable&) = delete;
  ~RouteTable();

  // The first route (in configuration order) matching `request`, or nullptr. Thread-safe.
  const CompiledRoute* Match(const RouteRequest& request) const;

  uint64_t version() const { return version_; }
  const std::string& hash() const { return hash_; }
  const std::vector<CompiledRoute>& routes() const { return routes_; }
  const std::vector<CompiledCluster>& clusters() const { return clusters_; }

 private:
  friend absl::StatusOr<std::shared_ptr<const RouteTable>> CompileRouteTable(
      const flexgate::v1::Config& config, uint64_t version, std::string hash,
      const CompileOptions& options);
  RouteTable() = default;

  // The routes of one host bucket, indexed by path.
  struct PathIndex {
    absl::flat_hash_map<std::string, std::vector<uint32_t>> exact;
    // Distinct prefix lengths, ascending, each with its own map prefix -> routes.
    std::vector<std::pair<size_t, absl::flat_hash_map<std::string, std::vector<uint32_t>>>>
        prefixes;
    std::vector<uint32_t> scanned;  // regex and any-path routes, ascending
    void Add(const CompiledRoute& route);
    // Appends every route of this bucket that may match `path` to `out`.
    template <typename Out>
    void Candidates(std::string_view path, Out& out) const;
  };

  bool Verify(const CompiledRoute& route, const RouteRequest& request) const;

  uint64_t version_ = 0;
  std::string hash_;
  std::vector<CompiledRoute> routes_;
  std::vector<CompiledCluster> clusters_;
  absl::flat_hash_map<std::string, PathIndex> exact_hosts_;
  // Keyed by the suffix including its leading dot: "*.example.com" -> ".example.com".
  absl::flat_hash_map<std::string, PathIndex> wildcard_hosts_;
  std::vector<size_t> wildcard_lengths_;  // distinct suffix lengths, ascending
  PathIndex any_host_;
};

// Lower-cases `host` and strips a port (":8080") and IPv6 brackets' port. Writes into `buf`.
std::string_view NormalizeHost(std::string_view host, std::string& buf);

}  // namespace flexgate::dataplane
