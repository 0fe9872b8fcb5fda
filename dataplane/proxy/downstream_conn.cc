// DownstreamConn: one client connection. Parses requests with llhttp (strict, no lenient flags),
// routes them, and streams each request to an upstream and its response back, one exchange at a
// time. Pipelined requests wait as unparsed bytes until the current response is complete.
#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "dataplane/proxy/http_util.h"
#include "dataplane/proxy/worker.h"

namespace flexgate::dataplane::internal {

using namespace std::string_view_literals;  // literal appends without strlen
namespace {

// Back-pressure: stop reading from one side while the other side's unsent bytes exceed the high
// watermark; resume below the low one.
constexpr size_t kHighWatermark = 256 * 1024;
constexpr size_t kLowWatermark = 64 * 1024;
// Unparsed pipelined bytes held per connection before reading stops.
constexpr size_t kMaxPendingInput = 64 * 1024;
// How long a closing connection may take to flush its last response.
constexpr uint64_t kLingerMs = 5000;
constexpr std::string_view kVia = "1.1 flexgate";
// Request bodies up to this size are kept while they stream, so that a retry can send them again;
// a larger body makes the request non-retriable once it starts streaming.
constexpr size_t kMaxReplayBody = 64 * 1024;

DownstreamConn* Self(llhttp_t* p) { return static_cast<DownstreamConn*>(p->data); }

const llhttp_settings_t* Settings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_message_begin = [](llhttp_t* p) { return Self(p)->OnMessageBegin(); };
    s.on_url = [](llhttp_t* p, const char* at, size_t n) { return Self(p)->OnUrl(at, n); };
    s.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
      return Self(p)->OnHeaderField(at, n);
    };
    s.on_header_field_complete = [](llhttp_t* p) { return Self(p)->OnHeaderFieldComplete(); };
    s.on_header_value = [](llhttp_t* p, const char* at, size_t n) {
      return Self(p)->OnHeaderValue(at, n);
    };
    s.on_header_value_complete = [](llhttp_t* p) { return Self(p)->OnHeaderValueComplete(); };
    s.on_headers_complete = [](llhttp_t* p) { return Self(p)->OnHeadersComplete(); };
    s.on_body = [](llhttp_t* p, const char* at, size_t n) { return Self(p)->OnBody(at, n); };
    s.on_message_complete = [](llhttp_t* p) { return Self(p)->OnMessageComplete(); };
    return s;
  }();
  return &settings;
}

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool AllZero(std::string_view s) { return s.find_first_not_of('0') == std::string_view::npos; }

// A W3C trace-context traceparent ("00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>").
// Later versions may append fields after another dash; version ff is invalid.
bool ValidTraceparent(std::string_view v) {
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return false;
  std::string_view version = v.substr(0, 2), trace = v.substr(3, 32), parent = v.substr(36, 16),
                   flags = v.substr(53, 2);
  if (!IsLowerHex(version) || version == "ff" || !IsLowerHex(trace) || !IsLowerHex(parent) ||
      !IsLowerHex(flags) || AllZero(trace) || AllZero(parent)) {
    return false;
  }
  if (version == "00") return v.size() == 55;
  return v.size() == 55 || v[55] == '-';
}

bool IsIdempotent(llhttp_method_t m) {
  return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_PUT ||
         m == HTTP_DELETE;
}

uint64_t HashBytes(std::string_view s) {
  // FNV-1a: stable across processes, so consistent hashing agrees between workers and agents.
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace

DownstreamConn::DownstreamConn(Worker* worker) : Conn(worker) {}

// Released here rather than in OnClose: Close() may run inside a parser callback, and the
// parser (inside the RequestState) is still executing until that callback returns.
DownstreamConn::~DownstreamConn() { worker_->ReleaseRequestState(std::move(rq_)); }

void DownstreamConn::Start(const tls::TlsServerContext* tls, const sockaddr* peer) {
  started_ = true;
  WorkerStats& st = worker_->mutable_stats();
  WorkerStats::Add(st.downstream_connections_total);
  WorkerStats::Add(st.downstream_connections_active);
  if (tls != nullptr) {
    auto session = tls->NewSession();
    if (!session.ok()) {
      Close();
      return;
    }
    tls_ = *std::move(session);
  }
  SetNoDelay();
  if (peer->sa_family == AF_INET) {
    std::memcpy(client_addr_, &reinterpret_cast<const sockaddr_in*>(peer)->sin_addr, 4);
    client_addr_len_ = 4;
  } else if (peer->sa_family == AF_INET6) {
    std::memcpy(client_addr_, &reinterpret_cast<const sockaddr_in6*>(peer)->sin6_addr, 16);
    client_addr_len_ = 16;
  }
  UpdateReading();
  // The first request head must arrive within the header timeout. On a TLS listener the
  // handshake runs inside that same budget: a client that never finishes it is closed then.
  SetTimeout(worker_->header_timeout_ms());
}

void DownstreamConn::OnTlsHandshakeDone() {
  WorkerStats::Add(worker_->mutable_stats().downstream_tls_handshakes);
}

void DownstreamConn::OnTlsError(const absl::Status&) {
  // A client that does not speak TLS (plain HTTP to a TLS port), offers nothing acceptable, or
  // sends a corrupt record. There is no way to answer it in HTTP: the alert (already flushed)
  // is the answer, then the connection closes. Counted, not logged, so that scanners cannot
  // flood the log.
  if (!tls_->handshake_done()) {
    WorkerStats::Add(worker_->mutable_stats().downstream_tls_handshake_failures);
  }
  if (write_queue_size() > 0) {
    CloseAfterFlush();
  } else {
    Close();
  }
}

void DownstreamConn::BeginDrain() {
  draining_ = true;
  if (phase_ == Phase::kIdle && pending_size() == 0) {
    Close();
  } else {
    close_after_ = true;
  }
}

void DownstreamConn::UpdateReading() {
  bool want = !closing_ && !shutdown_started_ && !eof_ && !read_blocked_ &&
              pending_size() < kMaxPendingInput;
  if (want) {
    ReadStart();
  } else {
    ReadStop();
  }
}

void DownstreamConn::OnRead(ssize_t nread, const uv_buf_t* buf) {
  if (closing_ || nread == 0) return;
  if (tls_ != nullptr) {
    ReadTls(nread, buf);
    return;
  }
  OnData(nread, buf->base);
}

void DownstreamConn::OnData(ssize_t nread, const char* data) {
  if (closing_ || shutdown_started_) return;
  if (tunnel_) {
    if (nread < 0) {
      reading_ = false;
      eof_ = true;
      if (nread == UV_EOF && up_ != nullptr) {
        // The client half-closed: pass the FIN on and keep relaying the upstream's answer until
        // it closes its end (OnTunnelClosed), bounded by the tunnel's idle timeout.
        up_->ShutdownWrite();
        return;
      }
      // A broken client connection ends the tunnel: flush what it sent, then close both.
      EndActiveCount();
      UpstreamConn* u = up_;
      up_ = nullptr;
      if (u != nullptr) {
        u->ClearDownstream();
        u->ShutdownThenClose();
      }
      Close();
      return;
    }
    WorkerStats::Add(worker_->mutable_stats().bytes_received, static_cast<uint64_t>(nread));
    if (up_ == nullptr) return;
    up_->Write(std::string_view(data, static_cast<size_t>(nread)));
    if (up_->write_queue_size() > kHighWatermark && !read_blocked_) {
      read_blocked_ = true;
      UpdateReading();
    }
    SetTimeout(worker_->idle_timeout_ms());
    return;
  }
  if (nread < 0) {
    reading_ = false;
    eof_ = true;
    if (phase_ == Phase::kActive && request_done_ && !response_done_ && nread == UV_EOF) {
      // The client half-closed after a complete request: answer it, then close.
      close_after_ = true;
      return;
    }
    Close();
    return;
  }
  WorkerStats::Add(worker_->mutable_stats().bytes_received, static_cast<uint64_t>(nread));
  if (pending_size() != 0 || (phase_ == Phase::kActive && request_done_)) {
    // A pipelined request behind one still being answered: keep it for later.
    rq_->pending_in.append(data, static_cast<size_t>(nread));
    UpdateReading();
    return;
  }
  Process(data, static_cast<size_t>(nread));
}

void DownstreamConn::AcquireRequest() {
  rq_ = worker_->AcquireRequestState();
  llhttp_init(&rq_->parser, HTTP_REQUEST, Settings());
  rq_->parser.data = this;
}

void DownstreamConn::MaybeReleaseRequest() {
  if (rq_ == nullptr || phase_ != Phase::kIdle || !rq_->pending_in.empty() || closing_ ||
      shutdown_started_) {
    return;
  }
  worker_->ReleaseRequestState(std::move(rq_));
}

void DownstreamConn::Process(const char* data, size_t len) {
  if (rq_ == nullptr) AcquireRequest();
  while (len > 0) {
    rq_->buf_begin = data;
    rq_->buf_end = data + len;
    llhttp_errno_t err = llhttp_execute(&rq_->parser, data, len);
    if (closing_ || shutdown_started_) return;
    if (err == HPE_OK) break;
    if (err == HPE_PAUSED) {
      size_t used = static_cast<size_t>(llhttp_get_error_pos(&rq_->parser) - data);
      llhttp_resume(&rq_->parser);
      data += used;
      len -= used;
      if (phase_ == Phase::kActive) {
        // Paused at the end of a request whose response is still coming.
        rq_->pending_in.append(data, len);
        UpdateReading();
        return;
      }
      continue;
    }
    // A parse error: the request line or a header is malformed, or a smuggling shape.
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    const char* reason = llhttp_get_error_reason(&rq_->parser);
    std::string body = absl::StrCat("bad request: ", reason != nullptr ? reason : llhttp_errno_name(err), "\n");
    Fail(400, body);
    return;
  }
  MaybeReleaseRequest();
}

// ---- Parser callbacks --------------------------------------------------------------------------

int DownstreamConn::OnMessageBegin() {
  phase_ = Phase::kHeaders;
  // rq_ was taken before the parser ran (Process); on a pipelined request it is the previous
  // request's, reused.
  rq_->head.clear();
  rq_->spans.clear();
  rq_->header_views.clear();
  url_len_ = 0;
  new_field_ = true;
  in_value_piece_ = false;
  rq_->header_bytes = 0;
  rq_->body_bytes = 0;
  request_done_ = response_started_ = response_done_ = false;
  discard_body_ = req_chunked_ = resp_chunked_ = resp_no_body_ = false;
  retried_ = head_request_ = expect_continue_ = false;
  idempotent_ = replayable_ = upgrade_requested_ = false;
  rq_->attempts = 0;
  rq_->replay.clear();
  rq_->last_error.clear();
  rq_->last_error_status = 503;
  rq_->try_deadline = 0;
  rq_->request_deadline = 0;  // set once the request goes upstream
  rq_->table_ref = nullptr;
  rq_->route = nullptr;
  rq_->cluster = rq_->endpoint = 0;
  SetTimeout(worker_->header_timeout_ms());
  return 0;
}

int DownstreamConn::OnUrl(const char* at, size_t n) {
  rq_->head.append(at, n);
  url_len_ += static_cast<uint32_t>(n);
  rq_->header_bytes += n;
  if (rq_->header_bytes > worker_->limits().max_header_bytes) {
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    return Fail(414, "request target too long\n");
  }
  return 0;
}

int DownstreamConn::OnHeaderField(const char* at, size_t n) {
  if (new_field_) {
    rq_->spans.push_back({static_cast<uint32_t>(rq_->head.size()), 0, 0, 0});
    new_field_ = false;
    rq_->header_bytes += 4;  // ": " and CRLF
  }
  rq_->head.append(at, n);
  rq_->spans.back().name_len += static_cast<uint32_t>(n);
  rq_->header_bytes += n;
  if (rq_->header_bytes > worker_->limits().max_header_bytes) {
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    return Fail(431, "request headers too large\n");
  }
  return 0;
}

int DownstreamConn::OnHeaderFieldComplete() {
  rq_->spans.back().value_off = static_cast<uint32_t>(rq_->head.size());
  return 0;
}

int DownstreamConn::OnHeaderValue(const char* at, size_t n) {
  if (in_value_piece_) {
    // llhttp accepts obs-fold (a value continued on the next line) and reports the continuation
    // as another piece of the same value. Pieces that are not adjacent, and not split at a read
    // boundary, can only come from a fold; RFC 9112 lets a server reject it, and we do because
    // folded headers are a request smuggling vector.
    bool adjacent = at == rq_->value_end || (value_piece_at_buf_end_ && at == rq_->buf_begin);
    if (!adjacent) {
      WorkerStats::Add(worker_->mutable_stats().bad_requests);
      return Fail(400, "bad request: obsolete line folding in a header value\n");
    }
  }
  in_value_piece_ = true;
  rq_->value_end = at + n;
  value_piece_at_buf_end_ = rq_->value_end == rq_->buf_end;
  rq_->head.append(at, n);
  rq_->spans.back().value_len += static_cast<uint32_t>(n);
  rq_->header_bytes += n;
  if (rq_->header_bytes > worker_->limits().max_header_bytes) {
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    return Fail(431, "request headers too large\n");
  }
  return 0;
}

int DownstreamConn::OnHeaderValueComplete() {
  new_field_ = true;
  in_value_piece_ = false;
  return 0;
}

std::string_view DownstreamConn::HostHeader() const {
  for (size_t i = 0; i < rq_->header_classes.size(); ++i) {
    if (rq_->header_classes[i] & kHeaderHost) return rq_->header_views[i].second;
  }
  return {};
}

std::string_view DownstreamConn::HeaderValue(std::string_view name) const {
  for (const auto& h : rq_->header_views) {
    if (HeaderNameEquals(h.first, name)) return h.second;
  }
  return {};
}

namespace {

// Splits a request target: where its origin-form part ("/path?query") starts, and whether an
// absolute-form target has no path at all ("http://host?q", which means "/?q").
void SplitTarget(std::string_view url, size_t* start, bool* missing_path) {
  *start = 0;
  *missing_path = false;
  if (url.empty() || url.front() == '/' || url == "*") return;
  size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) return;
  size_t end = url.find_first_of("/?#", scheme + 3);
  if (end == std::string_view::npos) end = url.size();
  *start = end;
  *missing_path = end == url.size() || url[end] != '/';
}

}  // namespace

std::string_view DownstreamConn::RequestPath() const {
  std::string_view url(rq_->head.data(), url_len_);
  size_t start;
  bool missing;
  SplitTarget(url, &start, &missing);
  // absolute-form ("http://host/path"): routing uses the path.
  if (missing) return "/";
  url.remove_prefix(start);
  size_t q = url.find_first_of("?#");
  return q == std::string_view::npos ? url : url.substr(0, q);
}

int DownstreamConn::OnHeadersComplete() {
  WorkerStats::Add(worker_->mutable_stats().requests_total);
  phase_ = Phase::kActive;
  http_minor_ = rq_->parser.http_minor;
  head_request_ = rq_->parser.method == HTTP_HEAD;
  client_keep_alive_ = llhttp_should_keep_alive(&rq_->parser) != 0;
  rq_->header_views.clear();
  rq_->header_classes.clear();
  int hosts = 0;
  for (const auto& s : rq_->spans) {
    std::string_view name(rq_->head.data() + s.name_off, s.name_len);
    std::string_view value(rq_->head.data() + s.value_off, s.value_len);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    rq_->header_views.emplace_back(name, value);
    uint16_t cls = ClassifyHeader(name);
    rq_->header_classes.push_back(cls);
    if (cls & kHeaderHost) ++hosts;
    if (cls & kHeaderExpect) {
      if (!HeaderNameEquals(value, "100-continue")) {
        return Fail(417, "unsupported expectation\n");
      }
      expect_continue_ = http_minor_ >= 1;
    }
  }
  if (rq_->parser.http_major != 1) return Fail(505, "only HTTP/1.x is supported\n");
  if (hosts > 1 || (hosts == 0 && http_minor_ >= 1)) {
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    return Fail(400, hosts > 1 ? "bad request: more than one Host header\n"
                               : "bad request: missing Host header\n");
  }
  if (rq_->parser.method == HTTP_CONNECT) return Fail(405, "CONNECT is not supported\n");
  // Protocol upgrades: a websocket upgrade (GET without a body) is forwarded with its Upgrade
  // header, and a 101 answer turns both connections into a raw tunnel. The request itself is
  // parsed as a normal bodyless message; bytes after it wait in pending_in until the upstream
  // agrees to switch. Other upgrade tokens are dropped (Upgrade is hop-by-hop), so the upstream
  // answers them as plain requests.
  if (rq_->parser.upgrade && rq_->parser.method == HTTP_GET && http_minor_ >= 1 &&
      !(rq_->parser.flags & F_CHUNKED) &&
      !((rq_->parser.flags & F_CONTENT_LENGTH) && rq_->parser.content_length > 0)) {
    std::string_view upgrade = HeaderValue("upgrade");
    if (TokenListContains(upgrade, "websocket")) {
      upgrade_requested_ = true;
      rq_->upgrade_value.assign(upgrade.data(), upgrade.size());
    }
  }
  rq_->parser.upgrade = 0;
  if (worker_->limits().max_body_bytes != 0 && (rq_->parser.flags & F_CONTENT_LENGTH) && rq_->parser.content_length > worker_->limits().max_body_bytes) {
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    return Fail(413, "request body too large\n");
  }
  req_chunked_ = (rq_->parser.flags & F_CHUNKED) != 0;
  return Dispatch();
}

int DownstreamConn::OnBody(const char* at, size_t n) {
  rq_->body_bytes += n;
  if (worker_->limits().max_body_bytes != 0 && rq_->body_bytes > worker_->limits().max_body_bytes) {
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    if (response_started_) {
      Close();
      return HPE_USER;
    }
    return Fail(413, "request body too large\n");
  }
  if (discard_body_ || up_ == nullptr) return 0;
  if (req_chunked_) {
    worker_->out_scratch().clear();
    AppendChunkHeader(worker_->out_scratch(), n);
    uv_buf_t bufs[3] = {uv_buf_init(worker_->out_scratch().data(), static_cast<unsigned>(worker_->out_scratch().size())),
                        uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(n)),
                        uv_buf_init(const_cast<char*>("\r\n"), 2)};
    up_->Write(bufs, 3);
    if (replayable_) {
      if (rq_->replay.size() + worker_->out_scratch().size() + n + 2 > kMaxReplayBody) {
        replayable_ = false;
        std::string().swap(rq_->replay);
      } else {
        rq_->replay.append(worker_->out_scratch());
        rq_->replay.append(at, n);
        rq_->replay.append("\r\n"sv);
      }
    }
  } else {
    up_->Write(std::string_view(at, n));
    if (replayable_) {
      if (rq_->replay.size() + n > kMaxReplayBody) {
        replayable_ = false;
        std::string().swap(rq_->replay);
      } else {
        rq_->replay.append(at, n);
      }
    }
  }
  if (up_->write_queue_size() > kHighWatermark && !read_blocked_) {
    read_blocked_ = true;
    UpdateReading();
  }
  return 0;
}

int DownstreamConn::OnMessageComplete() {
  request_done_ = true;
  if (req_chunked_ && up_ != nullptr && !discard_body_) {
    up_->Write("0\r\n\r\n");
    if (replayable_) rq_->replay.append("0\r\n\r\n"sv);
  }
  if (response_done_) {
    FinishExchange();
    // Parsing of a following pipelined request may continue right away unless we are closing.
    return shutdown_started_ || closing_ ? HPE_PAUSED : 0;
  }
  return HPE_PAUSED;
}

// ---- Dispatch ----------------------------------------------------------------------------------

int DownstreamConn::Dispatch() {
  rq_->table_ref = worker_->AcquireTable();
  if (rq_->table_ref == nullptr) return SendLocal(503, "no route table loaded\n", false);
  const RouteTable& table = *rq_->table_ref->table;
  std::string_view path = RequestPath();
  RouteRequest rr;
  rr.host = HostHeader();
  rr.path = path;
  rr.method = llhttp_method_name(static_cast<llhttp_method_t>(rq_->parser.method));
  rr.headers = rq_->header_views;
  rq_->route = table.Match(rr);
  if (rq_->route == nullptr) return SendLocal(404, "no route matched\n", false);

  switch (rq_->route->action) {
    case CompiledRoute::ActionKind::kDirectResponse:
      return SendLocal(static_cast<int>(rq_->route->direct_status), rq_->route->direct_body, false, {},
                       rq_->route->direct_content_type);
    case CompiledRoute::ActionKind::kRedirect: {
      const auto& r = rq_->route->redirect;
      std::string location = "location: ";
      // Without a configured scheme the redirect keeps the request's own.
      absl::StrAppend(&location,
                      r.scheme().empty() ? (tls_ != nullptr ? "https" : "http") : r.scheme(),
                      "://");
      if (r.host().empty()) {
        std::string_view h = rr.host;
        location.append(h.data(), h.size());
      } else {
        location.append(r.host());
      }
      if (r.path().empty()) {
        location.append(path.data(), path.size());
      } else {
        location.append(r.path());
      }
      std::string_view url(rq_->head.data(), url_len_);
      size_t q = url.find('?');
      if (!r.strip_query() && q != std::string_view::npos) location.append(url.substr(q));
      location.append("\r\n"sv);
      return SendLocal(static_cast<int>(r.status()), "", false, location);
    }
    case CompiledRoute::ActionKind::kCluster:
      rq_->cluster = rq_->route->cluster;
      break;
    case CompiledRoute::ActionKind::kWeightedClusters: {
      uint64_t pick = worker_->NextRandom() % rq_->route->weighted_total;
      rq_->cluster = rq_->route->weighted.back().first;
      for (const auto& [idx, cumulative] : rq_->route->weighted) {
        if (pick < cumulative) {
          rq_->cluster = idx;
          break;
        }
      }
      break;
    }
  }
  const CompiledCluster& cluster = table.clusters()[rq_->cluster];
  ClusterCounters* counters = rq_->table_ref->clusters[rq_->cluster].counters;
  if (cluster.max_requests != 0 && counters->active >= cluster.max_requests) {
    WorkerStats::Add(worker_->mutable_stats().circuit_breaker_rejections);
    return SendLocal(503,
                     absl::StrCat("upstream overflow: circuit breaker max_requests (",
                                  cluster.max_requests, " per worker) reached for cluster ",
                                  cluster.name, "\n"),
                     false);
  }
  ++counters->active;
  counted_cluster_ = true;
  idempotent_ = IsIdempotent(static_cast<llhttp_method_t>(rq_->parser.method));
  replayable_ = rq_->route->retry.enabled() && idempotent_;
  BuildUpstreamHead(cluster);
  const uint64_t timeout_ms =
      rq_->route->timeout_ms != 0 ? rq_->route->timeout_ms : worker_->request_timeout_ms();
  rq_->request_deadline = worker_->now_ms() + timeout_ms;
  rq_->try_deadline = 0;
  ArmTimer();
  std::string_view why;
  if (!StartUpstream(false, false, &why)) return SendLocal(503, why, false);
  // Sent only once the request is on its way: a client that waits for it would otherwise send
  // its body to a request about to be refused.
  if (expect_continue_) Write("HTTP/1.1 100 Continue\r\n\r\n");
  return 0;
}

void DownstreamConn::BuildUpstreamHead(const CompiledCluster& cluster) {
  (void)cluster;
  const CompiledHeaderEdits& edits = rq_->route->request_headers;
  std::string& h = rq_->up_head;
  h.clear();
  h.append(llhttp_method_name(static_cast<llhttp_method_t>(rq_->parser.method)));
  h.push_back(' ');
  std::string_view url(rq_->head.data(), url_len_);
  // The origin-form target: absolute-form loses its scheme and authority (the Host header
  // carries the authority), and a missing path becomes "/".
  size_t start;
  bool missing;
  SplitTarget(url, &start, &missing);
  std::string_view target = url.substr(start);
  std::string synthesized;
  if (missing) {
    synthesized = "/";
    synthesized.append(target.data(), target.size());
    target = synthesized;
  }
  std::string_view path = target.substr(0, std::min(target.size(), target.find_first_of("?#")));
  if (rq_->route->has_prefix_rewrite && path.size() >= rq_->route->path.size()) {
    h.append(rq_->route->prefix_rewrite);
    // Everything after the matched prefix, including the query string.
    std::string_view rest = target.substr(rq_->route->path.size());
    if (rq_->route->prefix_rewrite.empty() && (rest.empty() || rest.front() != '/')) h.push_back('/');
    h.append(rest);
  } else {
    h.append(target);
  }
  h.append(" HTTP/1.1\r\n"sv);

  std::string_view connection_tokens;
  std::string_view xff, via;
  bool has_request_id = false;
  int traceparents = 0;
  bool trace_valid = false;
  const auto& headers = rq_->header_views;
  const auto& classes = rq_->header_classes;
  for (size_t i = 0; i < headers.size(); ++i) {
    if (classes[i] & kHeaderConnection) connection_tokens = headers[i].second;
    if (classes[i] & kHeaderTraceparent) {
      ++traceparents;
      trace_valid = ValidTraceparent(headers[i].second);
    }
  }
  // "Connection: keep-alive" names no header that is not dropped anyway: skip the per-header
  // token search.
  if (NamesOnlyHopByHopHeaders(connection_tokens)) connection_tokens = {};
  // One valid traceparent is propagated unchanged; none, several or a malformed one start a new
  // trace (and a tracestate without a valid parent is meaningless, so it goes too).
  trace_valid = trace_valid && traceparents == 1;
  for (size_t i = 0; i < headers.size(); ++i) {
    const auto& [name, value] = headers[i];
    const uint16_t cls = classes[i];
    if (cls & kHeaderHopByHop) continue;
    if (!connection_tokens.empty() && TokenListContains(connection_tokens, name)) continue;
    if (!edits.empty() && edits.Drops(name)) continue;
    if (cls & kHeaderXForwardedFor) {
      xff = value;
      continue;
    }
    if (cls & kHeaderVia) {
      via = value;
      continue;
    }
    if (cls & kHeaderExpect) continue;  // answered by the proxy
    if (cls & kHeaderXForwardedProtoOrHost) continue;  // rewritten below: this proxy is the edge
    if (cls & kHeaderXRequestId) has_request_id = true;
    if (!trace_valid && (cls & (kHeaderTraceparent | kHeaderTracestate))) continue;
    AppendHeaderLine(h, name, value);
  }
  h.append("x-forwarded-for: "sv);
  if (!xff.empty()) {
    h.append(xff.data(), xff.size());
    h.append(", "sv);
  }
  AppendClientIp(h);
  h.append(tls_ != nullptr ? "\r\nx-forwarded-proto: https\r\n" : "\r\nx-forwarded-proto: http\r\n");
  std::string_view host = HostHeader();
  if (!host.empty()) {
    h.append("x-forwarded-host: "sv);
    h.append(host.data(), host.size());
    h.append("\r\n"sv);
  }
  h.append("via: "sv);
  if (!via.empty()) {
    h.append(via.data(), via.size());
    h.append(", "sv);
  }
  h.append(kVia);
  h.append("\r\n"sv);
  if (!has_request_id || !trace_valid) {
    // Both lines are formatted in one buffer and appended once: this runs for nearly every
    // request. A new trace gets a random trace id and span id, flagged sampled, so that services
    // behind the proxy that record traces keep doing so when the proxy starts the trace. A new
    // request id is 128 random bits; when the proxy also starts the trace, the trace id serves
    // as the request id, which ties the two together in logs.
    constexpr std::string_view kRequestId = "x-request-id: ";
    constexpr std::string_view kTraceparent = "traceparent: 00-";
    char buf[128];
    char* p = buf;
    char* trace_id = nullptr;
    if (!trace_valid) {
      std::memcpy(p, kTraceparent.data(), kTraceparent.size());
      p += kTraceparent.size();
      trace_id = p;
      worker_->FillRandomHex(p, 24);  // 16-byte trace id, then the 8-byte span id
      std::memmove(p + 33, p + 32, 16);
      p[32] = '-';
      p += 49;
      std::memcpy(p, "-01\r\n", 5);
      p += 5;
    }
    if (!has_request_id) {
      std::memcpy(p, kRequestId.data(), kRequestId.size());
      p += kRequestId.size();
      if (trace_id != nullptr) {
        std::memcpy(p, trace_id, 32);
      } else {
        worker_->FillRandomHex(p, 16);
      }
      p += 32;
      *p++ = '\r';
      *p++ = '\n';
    }
    h.append(buf, static_cast<size_t>(p - buf));
  }
  if (upgrade_requested_) {
    h.append("connection: upgrade\r\nupgrade: "sv);
    h.append(rq_->upgrade_value);
    h.append("\r\n"sv);
  }
  for (const auto& [name, value] : edits.set) absl::StrAppend(&h, name, ": ", value, "\r\n");
  for (const auto& [name, value] : edits.add) absl::StrAppend(&h, name, ": ", value, "\r\n");
  if (req_chunked_) h.append("transfer-encoding: chunked\r\n"sv);
  h.append("\r\n"sv);
}

uint32_t DownstreamConn::PickEndpoint(bool is_retry, int avoid) {
  const CompiledCluster& cl = rq_->table_ref->table->clusters()[rq_->cluster];
  TableRef::ClusterState& state = rq_->table_ref->clusters[rq_->cluster];
  uint32_t n = static_cast<uint32_t>(cl.endpoints.size());
  uint32_t e = 0;
  switch (cl.lb_policy) {
    case flexgate::v1::Cluster::LEAST_REQUEST: {
      // Power of two choices over this worker's in-flight counts.
      uint32_t a = static_cast<uint32_t>(worker_->NextRandom() % n);
      uint32_t b = static_cast<uint32_t>(worker_->NextRandom() % n);
      e = state.active[b] < state.active[a] ? b : a;
      break;
    }
    case flexgate::v1::Cluster::CONSISTENT_HASH: {
      std::string ip;
      std::string_view key;
      if (cl.hash_header.empty()) {
        AppendClientIp(ip);
        key = ip;
      } else {
        key = HeaderValue(cl.hash_header);
      }
      e = cl.ring.empty() ? 0 : cl.RingLookup(HashBytes(key));
      break;
    }
    default:
      e = cl.rr_schedule[state.rr_cursor++ % cl.rr_schedule.size()];
      break;
  }
  if (n == 1) return e;
  (void)is_retry;
  // Skip endpoints that are ejected, failing health checks, or (on a retry) the one that just
  // failed. Round robin moves on along its schedule, so the skipped endpoint's share is spread
  // over the others by weight; the other policies take the next usable endpoint in index order,
  // which keeps consistent hashing stable for every key that did not map to the skipped one.
  uint64_t now = worker_->now_ms();
  auto usable = [&](uint32_t i) {
    return static_cast<int>(i) != avoid && !state.unhealthy[i] && !state.endpoints[i]->Ejected(now);
  };
  if (usable(e)) return e;
  if (cl.lb_policy != flexgate::v1::Cluster::LEAST_REQUEST &&
      cl.lb_policy != flexgate::v1::Cluster::CONSISTENT_HASH) {
    for (size_t k = 0; k < cl.rr_schedule.size(); ++k) {
      uint32_t i = cl.rr_schedule[state.rr_cursor++ % cl.rr_schedule.size()];
      if (usable(i)) return i;
    }
  }
  for (uint32_t k = 1; k < n; ++k) {
    uint32_t i = (e + k) % n;
    if (usable(i)) return i;
  }
  // Everything is ejected or unhealthy: fail open rather than refuse all traffic, but still move
  // away from the endpoint that just failed.
  if (static_cast<int>(e) == avoid) e = (e + 1) % n;
  return e;
}

bool DownstreamConn::StartUpstream(bool is_retry, bool fresh, std::string_view* why) {
  const CompiledCluster& cl = rq_->table_ref->table->clusters()[rq_->cluster];
  TableRef::ClusterState& state = rq_->table_ref->clusters[rq_->cluster];
  int avoid = is_retry && !fresh ? static_cast<int>(rq_->endpoint) : -1;
  uint32_t e = PickEndpoint(is_retry, avoid);
  rq_->endpoint = e;
  int err = 0;
  const char* overflow = nullptr;
  UpstreamConn* up =
      worker_->AcquireUpstream(cl, cl.endpoints[e], state.pools[e], state.counters, fresh, &err,
                               &overflow);
  if (up == nullptr) {
    WorkerStats::Add(worker_->mutable_stats().circuit_breaker_rejections);
    rq_->last_error = absl::StrCat("upstream overflow: circuit breaker ", overflow, " (per worker) ",
                               "reached for cluster ", cl.name, "\n");
    *why = rq_->last_error;
    return false;
  }
  if (err != 0) {
    WorkerStats::Add(worker_->mutable_stats().upstream_connect_failures);
    up->Close();
    RecordOutcome(e, 0, true);
    if (cl.endpoints[e].addr_len == 0) {
      rq_->last_error = absl::StrCat("upstream endpoint ", cl.endpoints[e].key,
                                 " has no address: ", cl.endpoints[e].resolve_error, "\n");
      *why = rq_->last_error;
    } else {
      *why = "upstream connect error: cannot start a connection\n";
    }
    return false;
  }
  up_ = up;
  up->Attach(this, head_request_, upgrade_requested_);
  ++state.active[e];
  counted_active_ = true;
  ++rq_->attempts;
  WorkerStats::Add(worker_->mutable_stats().upstream_requests_total);
  up->Write(rq_->up_head);
  if (!rq_->replay.empty()) up->Write(rq_->replay);
  if (rq_->route->retry.per_try_timeout_ms != 0) {
    rq_->try_deadline = worker_->now_ms() + rq_->route->retry.per_try_timeout_ms;
    ArmTimer();
  }
  return true;
}

void DownstreamConn::ArmTimer() {
  uint64_t now = worker_->now_ms();
  uint64_t deadline = rq_->request_deadline;
  if (rq_->try_deadline != 0 && rq_->try_deadline < deadline) deadline = rq_->try_deadline;
  SetTimeout(deadline > now ? deadline - now : 1);
}

void DownstreamConn::RecordOutcome(uint32_t endpoint, int status, bool connect_failure) {
  if (rq_ == nullptr || rq_->table_ref == nullptr) return;
  const CompiledCluster& cl = rq_->table_ref->table->clusters()[rq_->cluster];
  if (!cl.outlier.enabled) return;
  worker_->RecordEndpointOutcome(cl, rq_->table_ref->clusters[rq_->cluster], endpoint, status,
                                 connect_failure);
}

bool DownstreamConn::MayRetry() {
  if (rq_ == nullptr || rq_->route == nullptr || rq_->table_ref == nullptr) return false;
  const CompiledRetryPolicy& p = rq_->route->retry;
  if (!p.enabled() || rq_->attempts >= p.attempts) return false;
  if (!idempotent_ || !replayable_ || response_started_ || draining_) return false;
  // Retry budget: retries in flight on this worker and cluster stay under budget_percent of the
  // requests in flight (at least 3), so that retries cannot multiply the load of an upstream
  // that is already failing.
  ClusterCounters* cc = rq_->table_ref->clusters[rq_->cluster].counters;
  uint32_t others = cc->retries_active - (retry_in_flight_ ? 1 : 0);
  uint64_t allowed =
      std::max<uint64_t>(3, static_cast<uint64_t>(cc->active) * p.budget_percent / 100);
  if (others >= allowed) {
    WorkerStats::Add(worker_->mutable_stats().retry_budget_exhausted);
    return false;
  }
  return true;
}

void DownstreamConn::Retry() {
  WorkerStats::Add(worker_->mutable_stats().upstream_retries);
  if (!retry_in_flight_) {
    retry_in_flight_ = true;
    ++rq_->table_ref->clusters[rq_->cluster].counters->retries_active;
  }
  // The previous attempt may have blocked reading on back-pressure from its connection.
  if (read_blocked_) {
    read_blocked_ = false;
    UpdateReading();
  }
  std::string_view why;
  if (StartUpstream(true, false, &why)) return;
  std::string body = rq_->last_error;
  if (body.empty() || body.back() != '\n') body.push_back('\n');
  SendLocal(rq_->last_error_status, body, false);
}

void DownstreamConn::EndRequestCounts() {
  if (rq_ == nullptr || rq_->table_ref == nullptr) return;
  ClusterCounters* cc = rq_->table_ref->clusters[rq_->cluster].counters;
  if (counted_cluster_) {
    counted_cluster_ = false;
    --cc->active;
  }
  if (retry_in_flight_) {
    retry_in_flight_ = false;
    --cc->retries_active;
  }
}

void DownstreamConn::EndActiveCount() {
  if (!counted_active_ || rq_ == nullptr || rq_->table_ref == nullptr) return;
  counted_active_ = false;
  --rq_->table_ref->clusters[rq_->cluster].active[rq_->endpoint];
}

int DownstreamConn::SendLocal(int status, std::string_view body, bool close, std::string_view extra,
                              std::string_view content_type) {
  if (response_started_) {
    Close();
    return HPE_USER;
  }
  close = close || close_after_ || draining_ || !client_keep_alive_;
  if (close) close_after_ = true;
  worker_->out_scratch().clear();
  AppendSimpleResponse(worker_->out_scratch(), status, body, close, extra, head_request_, content_type);
  WorkerStats::Add(worker_->mutable_stats().bytes_sent, worker_->out_scratch().size());
  Write(worker_->out_scratch());
  RecordStatus(status);
  response_started_ = true;
  // Any request body still to come is read and dropped, keeping the connection in sync.
  discard_body_ = true;
  ResponseDone();
  return 0;
}

int DownstreamConn::Fail(int status, std::string_view body) {
  if (phase_ == Phase::kIdle || phase_ == Phase::kHeaders) phase_ = Phase::kActive;
  client_keep_alive_ = false;
  if (!response_started_) {
    close_after_ = true;
    worker_->out_scratch().clear();
    AppendSimpleResponse(worker_->out_scratch(), status, body, true, {}, false);
    WorkerStats::Add(worker_->mutable_stats().bytes_sent, worker_->out_scratch().size());
    Write(worker_->out_scratch());
    RecordStatus(status);
    response_started_ = response_done_ = true;
  }
  CloseAfterFlush();
  return HPE_USER;
}

void DownstreamConn::AppendClientIp(std::string& out) const {
  if (client_addr_len_ == 4) {
    // Dotted quad from a table of the 256 octets: this runs for every proxied request.
    static constexpr auto kOctets = [] {
      std::array<std::array<char, 4>, 256> t{};  // up to 3 digits, then the length
      for (int i = 0; i < 256; ++i) {
        int n = 0;
        if (i >= 100) t[i][n++] = static_cast<char>('0' + i / 100);
        if (i >= 10) t[i][n++] = static_cast<char>('0' + i / 10 % 10);
        t[i][n++] = static_cast<char>('0' + i % 10);
        t[i][3] = static_cast<char>(n);
      }
      return t;
    }();
    char buf[16];
    char* p = buf;
    for (int i = 0; i < 4; ++i) {
      const auto& o = kOctets[client_addr_[i]];
      std::memcpy(p, o.data(), 3);
      p += o[3];
      *p++ = '.';
    }
    out.append(buf, static_cast<size_t>(p - buf - 1));
  } else if (client_addr_len_ == 16) {
    char text[INET6_ADDRSTRLEN] = {0};
    inet_ntop(AF_INET6, client_addr_, text, sizeof(text));
    out.append(text);
  }
}

void DownstreamConn::RecordStatus(int status) {
  int cls = status / 100;
  if (cls >= 1 && cls <= 5) WorkerStats::Add(worker_->mutable_stats().responses[cls]);
}

// ---- Upstream events ---------------------------------------------------------------------------

void DownstreamConn::OnUpstreamHeaders(UpstreamConn* up) {
  if (closing_) return;
  int status = up->status();
  RecordOutcome(rq_->endpoint, status, false);
  bool tunnel = up->tunnel();
  if (!tunnel && rq_->route->retry.RetriesStatus(status) && MayRetry()) {
    // Drop this answer and its connection (its body is unread) and try another endpoint.
    EndActiveCount();
    up_ = nullptr;
    up->Abandon();
    rq_->last_error_status = status;
    rq_->last_error = absl::StrCat("upstream answered ", status, " after ", rq_->attempts, " attempts");
    Retry();
    return;
  }
  // The per-try timeout covers the wait for the response head only.
  if (rq_->try_deadline != 0) {
    rq_->try_deadline = 0;
    ArmTimer();
  }
  response_started_ = true;
  resp_no_body_ = head_request_ || status == 204 || status == 304 || tunnel;
  bool close = !tunnel && (close_after_ || draining_ || !client_keep_alive_);
  if (!resp_no_body_ && !up->has_content_length()) {
    // Chunked or close-delimited upstream body: re-frame as chunked for HTTP/1.1 clients; an
    // HTTP/1.0 client learns the end from the connection closing.
    if (http_minor_ >= 1) {
      resp_chunked_ = true;
    } else {
      close = true;
    }
  }
  if (close) close_after_ = true;
  const CompiledHeaderEdits& edits = rq_->route->response_headers;
  std::string& o = worker_->out_scratch();
  o.clear();
  // A fast-path head's status line is already what this proxy would write ("HTTP/1.1 NNN
  // reason" with a reason): it starts the first run of received lines copied below.
  const char* raw_end = up->raw_headers_end();
  const char* run = nullptr;
  const char* run_end = nullptr;
  std::string_view reason = up->reason();
  if (raw_end != nullptr && !reason.empty()) {
    std::string_view status_line = up->raw_status_line();
    run = status_line.data();
    run_end = run + status_line.size();
  } else {
    o.append("HTTP/1.1 "sv);
    AppendDecimal(o, static_cast<uint64_t>(status));
    o.push_back(' ');
    if (reason.empty()) reason = ReasonPhrase(status);
    o.append(reason.data(), reason.size());
    o.append("\r\n"sv);
  }
  // One pass: each header's class was found once, when the upstream's parser completed the head.
  std::string_view connection_tokens = up->connection_header(), via;
  std::string_view upgrade = up->upgrade_header();
  if (NamesOnlyHopByHopHeaders(connection_tokens)) connection_tokens = {};
  const auto& headers = up->headers();
  const auto& classes = up->header_classes();
  // Lines of a fast-path head that are already in this proxy's form ("name: value") are copied
  // as received, one append per run of them instead of one per header.
  for (size_t i = 0; i < headers.size(); ++i) {
    const auto& [name, value] = headers[i];
    uint16_t cls = classes[i];
    if (cls & kHeaderHopByHop) continue;
    if (!connection_tokens.empty() && TokenListContains(connection_tokens, name)) continue;
    if (!edits.empty() && edits.Drops(name)) continue;
    if (cls & kHeaderVia) {
      via = value;
      continue;
    }
    if (raw_end == nullptr || !(cls & kHeaderLineCanonical)) {
      // Parsed by llhttp, or spaced differently: written afresh, in this proxy's form.
      if (run != nullptr) o.append(run, static_cast<size_t>(run_end - run));
      run = run_end = nullptr;
      AppendHeaderLine(o, name, value);
      continue;
    }
    const char* line_end = i + 1 < headers.size() ? headers[i + 1].first.data() : raw_end;
    if (run_end != name.data()) {
      if (run != nullptr) o.append(run, static_cast<size_t>(run_end - run));
      run = name.data();
    }
    run_end = line_end;
  }
  if (run != nullptr) o.append(run, static_cast<size_t>(run_end - run));
  o.append("via: "sv);
  if (!via.empty()) {
    o.append(via.data(), via.size());
    o.append(", "sv);
  }
  o.append(kVia);
  o.append("\r\n"sv);
  for (const auto& [name, value] : edits.set) absl::StrAppend(&o, name, ": ", value, "\r\n");
  for (const auto& [name, value] : edits.add) absl::StrAppend(&o, name, ": ", value, "\r\n");
  if (resp_chunked_) o.append("transfer-encoding: chunked\r\n"sv);
  if (tunnel) {
    o.append("connection: upgrade\r\nupgrade: "sv);
    o.append(upgrade.empty() ? std::string_view(rq_->upgrade_value) : upgrade);
    o.append("\r\n"sv);
  } else if (close) {
    o.append("connection: close\r\n"sv);
  } else if (http_minor_ == 0) {
    o.append("connection: keep-alive\r\n"sv);
  }
  o.append("\r\n"sv);
  WorkerStats::Add(worker_->mutable_stats().bytes_sent, o.size());
  Write(o);
  RecordStatus(status);
  if (tunnel) StartTunnel();
}

void DownstreamConn::StartTunnel() {
  tunnel_ = true;
  WorkerStats& st = worker_->mutable_stats();
  WorkerStats::Add(st.upgrades_total);
  WorkerStats::Add(st.upgrades_active);
  // From here on the timer is an idle timeout, restarted by traffic in either direction.
  rq_->try_deadline = 0;
  SetTimeout(worker_->idle_timeout_ms());
  if (pending_size() != 0 && up_ != nullptr) {
    // Bytes the client sent right behind the upgrade request belong to the new protocol.
    up_->Write(rq_->pending_in);
    std::string().swap(rq_->pending_in);
  }
  // The client may have half-closed already, right behind its request.
  if (eof_ && up_ != nullptr) up_->ShutdownWrite();
  UpdateReading();
}

void DownstreamConn::OnTunnelData(const char* data, size_t len) {
  if (closing_) return;
  Write(std::string_view(data, len));
  WorkerStats::Add(worker_->mutable_stats().bytes_sent, len);
  if (up_ != nullptr && write_queue_size() > kHighWatermark) up_->StopReading();
  SetTimeout(worker_->idle_timeout_ms());
}

void DownstreamConn::OnTunnelClosed() {
  // The upstream closed its end (it closes itself): flush what it sent, then close.
  EndActiveCount();
  up_ = nullptr;
  CloseAfterFlush();
}

void DownstreamConn::OnUpstreamBody(const char* data, size_t len) {
  if (closing_ || resp_no_body_ || len == 0) return;
  if (resp_chunked_) {
    worker_->out_scratch().clear();
    AppendChunkHeader(worker_->out_scratch(), len);
    uv_buf_t bufs[3] = {uv_buf_init(worker_->out_scratch().data(), static_cast<unsigned>(worker_->out_scratch().size())),
                        uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len)),
                        uv_buf_init(const_cast<char*>("\r\n"), 2)};
    Write(bufs, 3);
  } else {
    Write(std::string_view(data, len));
  }
  WorkerStats::Add(worker_->mutable_stats().bytes_sent, len);
  if (up_ != nullptr && write_queue_size() > kHighWatermark) up_->StopReading();
}

void DownstreamConn::OnUpstreamComplete(UpstreamConn* up, bool reusable) {
  if (resp_chunked_ && !resp_no_body_) Write("0\r\n\r\n");
  EndActiveCount();
  up_ = nullptr;
  // After a declined upgrade the upstream's parser may still expect the other protocol: do not
  // reuse that connection.
  worker_->ReleaseUpstream(up, reusable && request_done_ && !upgrade_requested_);
  if (closing_) return;
  ResponseDone();
}

void DownstreamConn::OnUpstreamError(UpstreamConn* up, int status, std::string_view message) {
  EndActiveCount();
  if (up_ == up) up_ = nullptr;
  if (closing_ || shutdown_started_) return;
  if (response_started_ || rq_ == nullptr || rq_->route == nullptr) {
    // Part of the response is already on its way: the only honest signal left is to close.
    Close();
    return;
  }
  // A reused keep-alive connection may have been closed by the upstream just as we sent on it.
  // Without a body the request can be sent again safely on a fresh connection.
  bool bodyless = !req_chunked_ && !(rq_->parser.flags & F_CONTENT_LENGTH && rq_->parser.content_length > 0) &&
                  rq_->body_bytes == 0;
  bool stale = up->reused() && !up->got_response_bytes();
  if (!retried_ && stale && bodyless) {
    retried_ = true;
    WorkerStats::Add(worker_->mutable_stats().upstream_retries);
    std::string_view why;
    if (StartUpstream(true, true, &why)) return;
  }
  using Kind = UpstreamConn::FailureKind;
  Kind kind = up->failure_kind();
  if (!stale) RecordOutcome(rq_->endpoint, 502, kind == Kind::kConnect);
  rq_->last_error_status = status;
  rq_->last_error.assign(message.data(), message.size());
  const CompiledRetryPolicy& p = rq_->route->retry;
  bool retriable = (kind == Kind::kConnect && p.on_connect_failure) ||
                   ((kind == Kind::kReset || kind == Kind::kProtocol) && p.on_reset);
  if (retriable && MayRetry()) {
    Retry();
    return;
  }
  std::string body(message);
  body.push_back('\n');
  SendLocal(status, body, false);
}

void DownstreamConn::OnUpstreamWritable() {
  if (read_blocked_) {
    read_blocked_ = false;
    UpdateReading();
  }
}

void DownstreamConn::OnWriteDone(int status) {
  if (closing_) return;
  if (status < 0) {
    Close();
    return;
  }
  if (up_ != nullptr && write_queue_size() < kLowWatermark) up_->StartReading();
}

// ---- Exchange end ------------------------------------------------------------------------------

void DownstreamConn::ResponseDone() {
  response_done_ = true;
  if (!request_done_) {
    // The response finished before the request body: drop the rest of the body as it arrives.
    discard_body_ = true;
    if (read_blocked_) {
      read_blocked_ = false;
      UpdateReading();
    }
    return;
  }
  // Called outside the parser (from an upstream event or a timer): finish, then continue with
  // any pipelined request that arrived meanwhile.
  FinishExchange();
  ResumePending();
}

void DownstreamConn::FinishExchange() {
  EndActiveCount();
  ReleaseTable();
  if (rq_ != nullptr) rq_->route = nullptr;
  phase_ = Phase::kIdle;
  // rq_ stays until the caller is out of the parser and knows nothing is left to parse
  // (MaybeReleaseRequest).
  if (close_after_ || draining_) {
    CloseAfterFlush();
    return;
  }
  SetTimeout(worker_->idle_timeout_ms());
}

void DownstreamConn::ResumePending() {
  if (closing_ || shutdown_started_) return;
  if (pending_size() != 0 && phase_ == Phase::kIdle) {
    std::string pending;
    pending.swap(rq_->pending_in);
    Process(pending.data(), pending.size());
  } else {
    MaybeReleaseRequest();
  }
  UpdateReading();
}

void DownstreamConn::ReleaseTable() {
  EndRequestCounts();
  if (rq_ != nullptr && rq_->table_ref != nullptr) {
    worker_->ReleaseTable(rq_->table_ref);
    rq_->table_ref = nullptr;
  }
}

void DownstreamConn::CloseAfterFlush() {
  if (shutdown_started_ || closing_) return;
  shutdown_started_ = true;
  UpdateReading();
  if (up_ != nullptr) {
    EndActiveCount();
    UpstreamConn* u = up_;
    up_ = nullptr;
    u->Abandon();
  }
  if (StartShutdown()) SetTimeout(kLingerMs);
}

void DownstreamConn::SetTimeout(uint64_t ms) {
  if (closing_) return;
  uint64_t due = worker_->now_ms() + ms;
  timeout_due_ = due;
  // A wheel position no later than the new due time is kept: OnTimeout moves the node on when
  // it comes early. A keep-alive exchange moves its deadline three times (header, request,
  // idle), and usually later each time, so this saves most relinks.
  if (TimerWheel::Node::scheduled() && tick * TimerWheel::kTickMs <= due) return;
  worker_->timeouts().Schedule(this, due);
}

void DownstreamConn::OnTimeout() {
  if (closing_) return;
  uint64_t fired_at = worker_->now_ms();
  if (fired_at < timeout_due_) {
    SetTimeout(timeout_due_ - fired_at);
    return;
  }
  if (shutdown_started_) {
    Close();
    return;
  }
  switch (phase_) {
    case Phase::kIdle:
      // Keep-alive idle timeout, or a connection that never sent a byte.
      Close();
      return;
    case Phase::kHeaders:
      // Slow-loris: the request head did not arrive in time.
      WorkerStats::Add(worker_->mutable_stats().bad_requests);
      Fail(408, "request header timeout\n");
      return;
    case Phase::kActive: {
      if (tunnel_) {
        Close();  // an idle tunnel
        return;
      }
      uint64_t now = worker_->now_ms();
      if (now < rq_->request_deadline) {
        if (rq_->try_deadline == 0 || now < rq_->try_deadline || response_started_) {
          ArmTimer();
          return;
        }
        // The attempt's per-try timeout passed before a response head arrived.
        WorkerStats& st = worker_->mutable_stats();
        WorkerStats::Add(st.upstream_timeouts);
        WorkerStats::Add(st.upstream_per_try_timeouts);
        rq_->try_deadline = 0;
        if (up_ != nullptr) {
          EndActiveCount();
          UpstreamConn* u = up_;
          up_ = nullptr;
          u->Abandon();
        }
        rq_->last_error_status = 504;
        rq_->last_error = "upstream per-try timeout";
        const CompiledRetryPolicy& p = rq_->route->retry;
        if ((p.on_5xx || p.on_gateway_error || p.on_reset) && MayRetry()) {
          Retry();
        } else {
          SendLocal(504, "upstream per-try timeout\n", false);
        }
        return;
      }
      WorkerStats::Add(worker_->mutable_stats().upstream_timeouts);
      if (response_started_) {
        Close();
        return;
      }
      if (up_ != nullptr) {
        EndActiveCount();
        UpstreamConn* u = up_;
        up_ = nullptr;
        u->Abandon();
      }
      Fail(504, "upstream request timeout\n");
      return;
    }
  }
}

void DownstreamConn::OnClose() {
  if (tunnel_) WorkerStats::Sub(worker_->mutable_stats().upgrades_active);
  if (up_ != nullptr) {
    EndActiveCount();
    UpstreamConn* u = up_;
    up_ = nullptr;
    u->Abandon();
  }
  EndActiveCount();
  ReleaseTable();
  worker_->timeouts().Cancel(this);
  if (started_) WorkerStats::Sub(worker_->mutable_stats().downstream_connections_active);
  worker_->Forget(this);
}

}  // namespace flexgate::dataplane::internal
