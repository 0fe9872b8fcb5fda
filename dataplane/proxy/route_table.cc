// Compilation of flexgate.v1.Config into the indexed RouteTable and its lookup.
#include "dataplane/proxy/route_table.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "absl/container/inlined_vector.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "dataplane/proxy/http_util.h"
#include "common/tls/tls.h"
#include "re2/re2.h"

namespace flexgate::dataplane {
namespace {

using flexgate::v1::Config;

absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

uint64_t DurationMs(const google::protobuf::Duration& d) {
  int64_t ms = d.seconds() * 1000 + d.nanos() / 1000000;
  return ms > 0 ? static_cast<uint64_t>(ms) : 0;
}

// 64-bit mix (splitmix64 finalizer): spreads ring points and hashed keys evenly.
uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

absl::Status ResolveEndpoint(const flexgate::v1::Endpoint& ep, const HostResolver& resolver,
                             CompiledEndpoint* out) {
  if (ep.port() == 0 || ep.port() > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("endpoint port ", ep.port(), " out of range"));
  }
  uint16_t port = static_cast<uint16_t>(ep.port());
  char text[INET6_ADDRSTRLEN] = {0};
  std::string addr = ep.address();
  if (addr.size() > 2 && addr.front() == '[' && addr.back() == ']') {
    addr = addr.substr(1, addr.size() - 2);
  }
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out->addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out->addr);
  if (inet_pton(AF_INET, addr.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    out->addr_len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, addr.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    out->addr_len = sizeof(sockaddr_in6);
  } else {
    // A host name: resolved once here, on the control thread.
    absl::StatusOr<ResolvedAddress> resolved =
        resolver ? resolver(addr) : ResolveWithGetaddrinfo(addr);
    out->from_hostname = true;
    out->weight = ep.weight() == 0 ? 1 : ep.weight();
    if (resolved.ok() && (resolved->len == 0 || resolved->len > sizeof(out->addr) ||
                          (resolved->addr.ss_family != AF_INET &&
                           resolved->addr.ss_family != AF_INET6))) {
      resolved = absl::InternalError("resolver returned no usable address");
    }
    if (!resolved.ok()) {
      // A name that does not resolve now is not a broken config: the table still compiles (a
      // cached config must load while DNS is down), the endpoint has no address, the balancer
      // skips it, and the publisher re-resolves in the background (see route_publisher).
      out->addr_len = 0;
      out->key = absl::StrCat("unresolved:", addr, ":", port);
      out->resolve_error = std::string(resolved.status().message());
      return absl::OkStatus();
    }
    std::memcpy(&out->addr, &resolved->addr, resolved->len);
    out->addr_len = resolved->len;
    if (out->addr.ss_family == AF_INET) {
      v4->sin_port = htons(port);
    } else {
      v6->sin6_port = htons(port);
    }
  }
  if (out->addr.ss_family == AF_INET) {
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    out->key = absl::StrCat(text, ":", port);
  } else {
    inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
    out->key = absl::StrCat("[", text, "]:", port);
  }
  out->weight = ep.weight() == 0 ? 1 : ep.weight();
  return absl::OkStatus();
}

// Builds a weighted round-robin schedule with smooth interleaving (each step picks the endpoint
// with the largest running credit), so weights 3:1 give a,a,b,a rather than a,a,a,b.
std::vector<uint32_t> BuildSchedule(const std::vector<CompiledEndpoint>& eps) {
  uint64_t g = 0;
  for (const auto& e : eps) g = std::gcd(g, static_cast<uint64_t>(e.weight));
  std::vector<uint64_t> w(eps.size());
  uint64_t total = 0;
  for (size_t i = 0; i < eps.size(); ++i) {
    w[i] = eps[i].weight / (g == 0 ? 1 : g);
    total += w[i];
  }
  // Keep the schedule small: scale weights down if their sum is large (weights stay >= 1).
  constexpr uint64_t kMaxSchedule = 4096;
  if (total > kMaxSchedule) {
    uint64_t sum = 0;
    for (const auto& e : eps) sum += e.weight;
    total = 0;
    for (size_t i = 0; i < eps.size(); ++i) {
      w[i] = std::max<uint64_t>(1, static_cast<uint64_t>(eps[i].weight) * kMaxSchedule / sum);
      total += w[i];
    }
  }
  std::vector<uint32_t> schedule;
  schedule.reserve(total);
  std::vector<int64_t> credit(eps.size(), 0);
  for (uint64_t step = 0; step < total; ++step) {
    size_t best = 0;
    for (size_t i = 0; i < eps.size(); ++i) {
      credit[i] += static_cast<int64_t>(w[i]);
      if (credit[i] > credit[best]) best = i;
    }
    credit[best] -= static_cast<int64_t>(total);
    schedule.push_back(static_cast<uint32_t>(best));
  }
  return schedule;
}

absl::StatusOr<std::shared_ptr<const re2::RE2>> CompileRegex(const std::string& pattern,
                                                            const std::string& where) {
  RE2::Options opts;
  opts.set_log_errors(false);
  auto re = std::make_shared<const re2::RE2>(pattern, opts);
  if (!re->ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": invalid regex \"", pattern, "\": ", re->error()));
  }
  return re;
}

void CompileEdits(const flexgate::v1::HeaderEdits& in, CompiledHeaderEdits* out) {
  for (const auto& h : in.set()) out->set.emplace_back(absl::AsciiStrToLower(h.name()), h.value());
  for (const auto& h : in.add()) out->add.emplace_back(absl::AsciiStrToLower(h.name()), h.value());
  for (const auto& n : in.remove()) out->remove.push_back(absl::AsciiStrToLower(n));
}

}  // namespace

bool CompiledHeaderEdits::Drops(std::string_view name) const {
  for (const auto& r : remove) {
    if (HeaderNameEquals(r, name)) return true;
  }
  for (const auto& s : set) {
    if (HeaderNameEquals(s.first, name)) return true;
  }
  return false;
}

bool CompiledRetryPolicy::RetriesStatus(int status) const {
  if (on_5xx && status >= 500 && status <= 599) return true;
  if (on_gateway_error && (status == 502 || status == 503 || status == 504)) return true;
  if (on_retriable_status) {
    for (uint32_t s : retriable_statuses) {
      if (static_cast<int>(s) == status) return true;
    }
  }
  return false;
}

bool CompiledCluster::HealthCheck::StatusHealthy(int status) const {
  if (expected_statuses.empty()) return status >= 200 && status <= 399;
  for (uint32_t s : expected_statuses) {
    if (static_cast<int>(s) == status) return true;
  }
  return false;
}

uint32_t CompiledCluster::RingLookup(uint64_t hash) const {
  hash = Mix64(hash);
  auto it = std::lower_bound(ring.begin(), ring.end(), std::make_pair(hash, uint32_t{0}));
  if (it == ring.end()) it = ring.begin();
  return it->second;
}

std::string_view NormalizeHost(std::string_view host, std::string& buf) {
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    if (close != std::string_view::npos) host = host.substr(0, close + 1);
  } else {
    size_t colon = host.rfind(':');
    if (colon != std::string_view::npos) host = host.substr(0, colon);
  }
  // Fast path: already lower case (the usual case) needs no copy.
  bool lower = true;
  for (char c : host) {
    if (c >= 'A' && c <= 'Z') {
      lower = false;
      break;
    }
  }
  if (!lower) {
    buf.assign(host.data(), host.size());
    for (char& c : buf) c = absl::ascii_tolower(static_cast<unsigned char>(c));
    host = buf;
  }
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);  // "example.com." == "example.com"
  return host;
}

RouteTable::~RouteTable() = default;

void RouteTable::PathIndex::Add(const CompiledRoute& route) {
  switch (route.path_kind) {
    case CompiledRoute::PathKind::kExact:
      exact[route.path].push_back(route.index);
      break;
    case CompiledRoute::PathKind::kPrefix: {
      size_t len = route.path.size();
      auto it = std::find_if(prefixes.begin(), prefixes.end(),
                             [len](const auto& p) { return p.first == len; });
      if (it == prefixes.end()) {
        prefixes.emplace_back(len, absl::flat_hash_map<std::string, std::vector<uint32_t>>{});
        std::sort(prefixes.begin(), prefixes.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        it = std::find_if(prefixes.begin(), prefixes.end(),
                          [len](const auto& p) { return p.first == len; });
      }
      it->second[route.path].push_back(route.index);
      break;
    }
    case CompiledRoute::PathKind::kRegex:
    case CompiledRoute::PathKind::kAny:
      scanned.push_back(route.index);
      break;
  }
}

template <typename Out>
void RouteTable::PathIndex::Candidates(std::string_view path, Out& out) const {
  if (!exact.empty()) {
    auto it = exact.find(AV(path));
    if (it != exact.end()) out.insert(out.end(), it->second.begin(), it->second.end());
  }
  for (const auto& [len, map] : prefixes) {
    if (len > path.size()) break;
    auto it = map.find(AV(path.substr(0, len)));
    if (it != map.end()) out.insert(out.end(), it->second.begin(), it->second.end());
  }
  out.insert(out.end(), scanned.begin(), scanned.end());
}

bool RouteTable::Verify(const CompiledRoute& route, const RouteRequest& request) const {
  if (route.path_kind == CompiledRoute::PathKind::kRegex &&
      !RE2::FullMatch(re2::StringPiece(request.path.data(), request.path.size()),
                      *route.path_regex)) {
    return false;
  }
  if (!route.methods.empty()) {
    bool ok = false;
    for (const auto& m : route.methods) {
      if (m == request.method) {
        ok = true;
        break;
      }
    }
    if (!ok) return false;
  }
  for (const auto& hm : route.headers) {
    const std::string_view* value = nullptr;
    for (const auto& h : request.headers) {
      if (HeaderNameEquals(h.first, hm.name)) {
        value = &h.second;
        break;
      }
    }
    bool matched = false;
    switch (hm.kind) {
      case CompiledHeaderMatch::Kind::kPresent:
        matched = (value != nullptr) == hm.present;
        break;
      case CompiledHeaderMatch::Kind::kExact:
        matched = value != nullptr && *value == hm.value;
        break;
      case CompiledHeaderMatch::Kind::kPrefix:
        matched = value != nullptr && value->substr(0, hm.value.size()) == hm.value;
        break;
      case CompiledHeaderMatch::Kind::kRegex:
        matched = value != nullptr &&
                  RE2::FullMatch(re2::StringPiece(value->data(), value->size()), *hm.regex);
        break;
    }
    if (matched == hm.invert) return false;
  }
  return true;
}

const CompiledRoute* RouteTable::Match(const RouteRequest& request) const {
  absl::InlinedVector<uint32_t, 16> candidates;
  // A table where no route names a host (the usual sidecar table) never looks at the Host
  // header.
  if (!exact_hosts_.empty() || !wildcard_lengths_.empty()) {
    std::string host_buf;
    std::string_view host = NormalizeHost(request.host, host_buf);
    if (!exact_hosts_.empty()) {
      auto it = exact_hosts_.find(AV(host));
      if (it != exact_hosts_.end()) it->second.Candidates(request.path, candidates);
    }
    // "*.example.com" matches "a.example.com" and "a.b.example.com" but not "example.com".
    for (size_t len : wildcard_lengths_) {
      if (len >= host.size()) break;
      auto it = wildcard_hosts_.find(AV(host.substr(host.size() - len)));
      if (it != wildcard_hosts_.end()) it->second.Candidates(request.path, candidates);
    }
  }
  any_host_.Candidates(request.path, candidates);
  std::sort(candidates.begin(), candidates.end());
  for (uint32_t idx : candidates) {
    const CompiledRoute& r = routes_[idx];
    if (Verify(r, request)) return &r;
  }
  return nullptr;
}

absl::StatusOr<ResolvedAddress> ResolveWithGetaddrinfo(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) {
    if (res != nullptr) freeaddrinfo(res);
    return absl::UnavailableError(rc != 0 ? gai_strerror(rc) : "no address");
  }
  // The first address wins.
  ResolvedAddress out;
  std::memcpy(&out.addr, res->ai_addr, res->ai_addrlen);
  out.len = res->ai_addrlen;
  freeaddrinfo(res);
  return out;
}

absl::StatusOr<std::shared_ptr<const RouteTable>> CompileRouteTable(const Config& config,
                                                                    uint64_t version,
                                                                    std::string hash,
                                                                    const CompileOptions& options) {
  std::shared_ptr<RouteTable> table(new RouteTable());
  table->version_ = version;
  table->hash_ = std::move(hash);

  absl::flat_hash_map<std::string, uint32_t> cluster_index;
  for (int i = 0; i < config.clusters_size(); ++i) {
    const auto& c = config.clusters(i);
    std::string where = absl::StrCat("clusters[", i, "]");
    if (c.endpoints().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": cluster has no endpoints"));
    }
    if (!cluster_index.emplace(c.name(), static_cast<uint32_t>(i)).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": duplicate cluster ", c.name()));
    }
    CompiledCluster& cc = table->clusters_.emplace_back();
    cc.name = c.name();
    for (int j = 0; j < c.endpoints_size(); ++j) {
      absl::Status s =
          ResolveEndpoint(c.endpoints(j), options.resolver, &cc.endpoints.emplace_back());
      if (!s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".endpoints[", j, "]: ", s.message()));
      }
    }
    cc.lb_policy = c.lb_policy() == flexgate::v1::Cluster::LB_POLICY_UNSPECIFIED
                       ? flexgate::v1::Cluster::ROUND_ROBIN
                       : c.lb_policy();
    cc.rr_schedule = BuildSchedule(cc.endpoints);
    for (int j = 0; j < c.endpoints_size(); ++j) cc.endpoints[j].pool_key = cc.endpoints[j].key;
    if (c.tls().enabled()) {
      tls::TlsClientOptions topts;
      topts.ca_file = c.tls().ca_file();
      topts.verify_peer = !c.tls().insecure_skip_verify();
      topts.cert_file = c.tls().client_cert_file();
      topts.key_file = c.tls().client_key_file();
      auto ctx = tls::TlsClientContext::Create(std::move(topts));
      if (!ctx.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".tls: ", ctx.status().message()));
      }
      cc.tls = *std::move(ctx);
      // The context's address tells pooled connections of different TLS settings apart; a
      // pooled session keeps its context alive, so the address cannot be reused meanwhile.
      std::string tag = absl::StrCat("|tls|", reinterpret_cast<uintptr_t>(cc.tls.get()), "|");
      for (int j = 0; j < c.endpoints_size(); ++j) {
        CompiledEndpoint& ep = cc.endpoints[j];
        std::string name = c.tls().sni();
        if (name.empty()) {
          name = c.endpoints(j).address();
          if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
            name = name.substr(1, name.size() - 2);
          }
        }
        ep.tls_server_name = name;
        ep.pool_key = absl::StrCat(ep.key, tag, name);
      }
    }
    if (cc.lb_policy == flexgate::v1::Cluster::CONSISTENT_HASH) {
      if (c.hash_on().key_case() == flexgate::v1::Cluster::HashOn::kHeader) {
        cc.hash_header = absl::AsciiStrToLower(c.hash_on().header());
      }
      // About 100 points per unit of weight gives an even spread for small fleets.
      for (uint32_t e = 0; e < cc.endpoints.size(); ++e) {
        uint32_t points = 100 * std::min<uint32_t>(cc.endpoints[e].weight, 100);
        uint64_t seed = std::hash<std::string>{}(cc.endpoints[e].key);
        for (uint32_t p = 0; p < points; ++p) cc.ring.emplace_back(Mix64(seed + p * 0x1000193ULL), e);
      }
      std::sort(cc.ring.begin(), cc.ring.end());
    }
    cc.connect_timeout_ms = DurationMs(c.connect_timeout());
    if (c.pool().max_idle_per_endpoint() > 0) cc.max_idle_per_endpoint = c.pool().max_idle_per_endpoint();
    if (DurationMs(c.pool().idle_timeout()) > 0) cc.idle_timeout_ms = DurationMs(c.pool().idle_timeout());
    cc.max_requests_per_connection = c.pool().max_requests_per_connection();
    if (c.has_outlier_detection()) {
      const auto& od = c.outlier_detection();
      cc.outlier.enabled = true;
      cc.outlier.consecutive_5xx = od.consecutive_5xx();
      cc.outlier.consecutive_connect_failures = od.consecutive_connect_failures();
      if (cc.outlier.consecutive_5xx == 0 && cc.outlier.consecutive_connect_failures == 0) {
        // An empty block turns detection on with the usual thresholds.
        cc.outlier.consecutive_5xx = 5;
        cc.outlier.consecutive_connect_failures = 5;
      }
      if (DurationMs(od.base_ejection_time()) > 0) {
        cc.outlier.base_ejection_ms = DurationMs(od.base_ejection_time());
      }
      if (od.max_ejection_percent() > 0) {
        cc.outlier.max_ejection_percent = std::min<uint32_t>(od.max_ejection_percent(), 100);
      }
    }
    if (c.has_health_check()) {
      const auto& hc = c.health_check();
      auto& h = cc.health_check;
      h.enabled = true;
      if (!hc.path().empty()) h.path = hc.path();
      h.host = hc.host();
      if (DurationMs(hc.interval()) > 0) h.interval_ms = DurationMs(hc.interval());
      if (DurationMs(hc.timeout()) > 0) h.timeout_ms = DurationMs(hc.timeout());
      if (hc.healthy_threshold() > 0) h.healthy_threshold = hc.healthy_threshold();
      if (hc.unhealthy_threshold() > 0) h.unhealthy_threshold = hc.unhealthy_threshold();
      h.expected_statuses.assign(hc.expected_statuses().begin(), hc.expected_statuses().end());
    }
    cc.max_connections = c.circuit_breakers().max_connections();
    cc.max_pending_requests = c.circuit_breakers().max_pending_requests();
    cc.max_requests = c.circuit_breakers().max_requests();
  }

  auto find_cluster = [&](const std::string& name, const std::string& where)
      -> absl::StatusOr<uint32_t> {
    auto it = cluster_index.find(name);
    if (it == cluster_index.end()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown cluster \"", name, "\""));
    }
    return it->second;
  };

  table->routes_.reserve(config.routes_size());
  for (int i = 0; i < config.routes_size(); ++i) {
    const auto& r = config.routes(i);
    std::string where = absl::StrCat("routes[", i, "]");
    CompiledRoute& cr = table->routes_.emplace_back();
    cr.index = static_cast<uint32_t>(i);
    cr.name = r.name();
    const auto& pm = r.match().path();
    switch (pm.kind_case()) {
      case flexgate::v1::PathMatch::kExact:
        cr.path_kind = CompiledRoute::PathKind::kExact;
        cr.path = pm.exact();
        break;
      case flexgate::v1::PathMatch::kPrefix:
        // An empty prefix matches everything; scanning it is as cheap as indexing it.
        cr.path_kind = pm.prefix().empty() ? CompiledRoute::PathKind::kAny
                                           : CompiledRoute::PathKind::kPrefix;
        cr.path = pm.prefix();
        break;
      case flexgate::v1::PathMatch::kRegex: {
        cr.path_kind = CompiledRoute::PathKind::kRegex;
        auto re = CompileRegex(pm.regex(), where + ".match.path.regex");
        if (!re.ok()) return re.status();
        cr.path_regex = *std::move(re);
        break;
      }
      case flexgate::v1::PathMatch::KIND_NOT_SET:
        cr.path_kind = CompiledRoute::PathKind::kAny;
        break;
    }
    for (const auto& m : r.match().methods()) cr.methods.push_back(absl::AsciiStrToUpper(m));
    for (int h = 0; h < r.match().headers_size(); ++h) {
      const auto& in = r.match().headers(h);
      CompiledHeaderMatch& hm = cr.headers.emplace_back();
      hm.name = absl::AsciiStrToLower(in.name());
      hm.invert = in.invert();
      switch (in.kind_case()) {
        case flexgate::v1::HeaderMatch::kExact:
          hm.kind = CompiledHeaderMatch::Kind::kExact;
          hm.value = in.exact();
          break;
        case flexgate::v1::HeaderMatch::kPrefix:
          hm.kind = CompiledHeaderMatch::Kind::kPrefix;
          hm.value = in.prefix();
          break;
        case flexgate::v1::HeaderMatch::kRegex: {
          hm.kind = CompiledHeaderMatch::Kind::kRegex;
          auto re = CompileRegex(in.regex(), absl::StrCat(where, ".match.headers[", h, "].regex"));
          if (!re.ok()) return re.status();
          hm.regex = *std::move(re);
          break;
        }
        case flexgate::v1::HeaderMatch::kPresent:
          hm.kind = CompiledHeaderMatch::Kind::kPresent;
          hm.present = in.present();
          break;
        case flexgate::v1::HeaderMatch::KIND_NOT_SET:
          hm.kind = CompiledHeaderMatch::Kind::kPresent;
          hm.present = true;
          break;
      }
    }

    switch (r.action_case()) {
      case flexgate::v1::Route::kCluster: {
        cr.action = CompiledRoute::ActionKind::kCluster;
        auto idx = find_cluster(r.cluster(), where + ".cluster");
        if (!idx.ok()) return idx.status();
        cr.cluster = *idx;
        break;
      }
      case flexgate::v1::Route::kWeightedClusters: {
        cr.action = CompiledRoute::ActionKind::kWeightedClusters;
        for (int k = 0; k < r.weighted_clusters().clusters_size(); ++k) {
          const auto& wc = r.weighted_clusters().clusters(k);
          auto idx = find_cluster(wc.name(),
                                  absl::StrCat(where, ".weighted_clusters.clusters[", k, "]"));
          if (!idx.ok()) return idx.status();
          if (wc.weight() == 0) continue;
          cr.weighted_total += wc.weight();
          cr.weighted.emplace_back(*idx, cr.weighted_total);
        }
        if (cr.weighted.empty()) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ".weighted_clusters: no cluster with a positive weight"));
        }
        break;
      }
      case flexgate::v1::Route::kRedirect:
        cr.action = CompiledRoute::ActionKind::kRedirect;
        cr.redirect = r.redirect();
        if (cr.redirect.status() == 0) cr.redirect.set_status(301);
        break;
      case flexgate::v1::Route::kDirectResponse:
        cr.action = CompiledRoute::ActionKind::kDirectResponse;
        cr.direct_status = r.direct_response().status() == 0 ? 200 : r.direct_response().status();
        if (cr.direct_status < 100 || cr.direct_status > 599) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ".direct_response.status: ", cr.direct_status, " is invalid"));
        }
        cr.direct_body = r.direct_response().body();
        cr.direct_content_type = r.direct_response().content_type().empty()
                                     ? "text/plain; charset=utf-8"
                                     : r.direct_response().content_type();
        break;
      case flexgate::v1::Route::ACTION_NOT_SET:
        return absl::InvalidArgumentError(absl::StrCat(where, ": route has no action"));
    }
    cr.timeout_ms = DurationMs(r.timeout());
    if (r.has_retry()) {
      const auto& rp = r.retry();
      CompiledRetryPolicy& p = cr.retry;
      p.attempts = std::max<uint32_t>(1, std::min<uint32_t>(rp.attempts(), 10));
      for (const auto& on : rp.retry_on()) {
        std::string o = absl::AsciiStrToLower(on);
        if (o == "connect-failure") {
          p.on_connect_failure = true;
        } else if (o == "reset") {
          p.on_reset = true;
        } else if (o == "5xx") {
          p.on_5xx = true;
        } else if (o == "gateway-error") {
          p.on_gateway_error = true;
        } else if (o == "retriable-status") {
          p.on_retriable_status = true;
        } else {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ".retry.retry_on: unknown condition \"", on, "\""));
        }
      }
      // 5xx and gateway-error also cover failures that never produced an answer.
      if (p.on_5xx) p.on_connect_failure = p.on_reset = true;
      if (p.on_gateway_error) p.on_connect_failure = true;
      if (rp.retry_on().empty()) p.on_connect_failure = true;
      p.retriable_statuses.assign(rp.retriable_statuses().begin(), rp.retriable_statuses().end());
      p.per_try_timeout_ms = DurationMs(rp.per_try_timeout());
      if (rp.budget_percent() > 0) p.budget_percent = std::min<uint32_t>(rp.budget_percent(), 100);
    }
    if (!r.prefix_rewrite().empty()) {
      if (cr.path_kind != CompiledRoute::PathKind::kPrefix &&
          !(pm.kind_case() == flexgate::v1::PathMatch::kPrefix)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".prefix_rewrite: needs a prefix path match"));
      }
      cr.prefix_rewrite = r.prefix_rewrite();
      cr.has_prefix_rewrite = true;
    }
    CompileEdits(r.request_headers(), &cr.request_headers);
    CompileEdits(r.response_headers(), &cr.response_headers);
  }

  // Index every route by host, then by path.
  for (const CompiledRoute& cr : table->routes_) {
    const auto& hosts = config.routes(static_cast<int>(cr.index)).match().hosts();
    if (hosts.empty()) {
      table->any_host_.Add(cr);
      continue;
    }
    for (const auto& h : hosts) {
      std::string lower = absl::AsciiStrToLower(h);
      if (lower == "*") {
        table->any_host_.Add(cr);
      } else if (absl::StartsWith(lower, "*.")) {
        std::string suffix = lower.substr(1);
        table->wildcard_hosts_[suffix].Add(cr);
        if (std::find(table->wildcard_lengths_.begin(), table->wildcard_lengths_.end(),
                      suffix.size()) == table->wildcard_lengths_.end()) {
          table->wildcard_lengths_.push_back(suffix.size());
        }
      } else {
        std::string buf;
        std::string_view n = NormalizeHost(lower, buf);
        table->exact_hosts_[std::string(n)].Add(cr);
      }
    }
  }
  std::sort(table->wildcard_lengths_.begin(), table->wildcard_lengths_.end());
  return std::shared_ptr<const RouteTable>(std::move(table));
}

}  // namespace flexgate::dataplane
