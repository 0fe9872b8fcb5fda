// DownstreamConn: one client connection. Parses requests with llhttp (strict, no lenient flags),
// routes them, and streams each request to an upstream and its response back, one exchange at a
// time. Pipelined requests wait as unparsed bytes until the current response is complete.
#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "dataplane/proxy/http_util.h"
#include "dataplane/proxy/worker.h"

namespace flexgate::dataplane::internal {
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

uint64_t ToMs(absl::Duration d) {
  int64_t ms = absl::ToInt64Milliseconds(d);
  return ms > 0 ? static_cast<uint64_t>(ms) : 1;
}

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

DownstreamConn::DownstreamConn(Worker* worker) : Conn(worker) {
  llhttp_init(&parser_, HTTP_REQUEST, Settings());
  parser_.data = this;
  max_body_ = worker->limits().max_body_bytes;
}

void DownstreamConn::Start() {
  started_ = true;
  WorkerStats& st = worker_->mutable_stats();
  WorkerStats::Add(st.downstream_connections_total);
  WorkerStats::Add(st.downstream_connections_active);
  uv_tcp_nodelay(&tcp_, 1);
  sockaddr_storage peer{};
  int len = sizeof(peer);
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&peer), &len) == 0) {
    char text[INET6_ADDRSTRLEN] = {0};
    if (peer.ss_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&peer)->sin_addr, text, sizeof(text));
    } else if (peer.ss_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr, text, sizeof(text));
    }
    client_ip_ = text;
  }
  UpdateReading();
  // The first request head must arrive within the header timeout.
  StartTimer(ToMs(worker_->limits().header_timeout), OnTimer);
}

void DownstreamConn::BeginDrain() {
  draining_ = true;
  if (phase_ == Phase::kIdle && pending_in_.empty()) {
    Close();
  } else {
    close_after_ = true;
  }
}

void DownstreamConn::UpdateReading() {
  bool want = !closing_ && !shutdown_started_ && !eof_ && !read_blocked_ &&
              pending_in_.size() < kMaxPendingInput;
  if (want && !reading_) {
    reading_ = uv_read_start(stream(), Worker::AllocShared,
                             [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
                               static_cast<DownstreamConn*>(s->data)->OnRead(n, b);
                             }) == 0;
  } else if (!want && reading_) {
    uv_read_stop(stream());
    reading_ = false;
  }
}

void DownstreamConn::OnRead(ssize_t nread, const uv_buf_t* buf) {
  if (closing_ || nread == 0) return;
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
  if (!pending_in_.empty() || (phase_ == Phase::kActive && request_done_)) {
    // A pipelined request behind one still being answered: keep it for later.
    pending_in_.append(buf->base, static_cast<size_t>(nread));
    UpdateReading();
    return;
  }
  Process(buf->base, static_cast<size_t>(nread));
}

void DownstreamConn::Process(const char* data, size_t len) {
  while (len > 0) {
    buf_begin_ = data;
    buf_end_ = data + len;
    llhttp_errno_t err = llhttp_execute(&parser_, data, len);
    if (closing_ || shutdown_started_) return;
    if (err == HPE_OK) return;
    if (err == HPE_PAUSED) {
      size_t used = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data);
      llhttp_resume(&parser_);
      data += used;
      len -= used;
      if (phase_ == Phase::kActive) {
        // Paused at the end of a request whose response is still coming.
        pending_in_.append(data, len);
        UpdateReading();
        return;
      }
      continue;
    }
    // A parse error: the request line or a header is malformed, or a smuggling shape.
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    const char* reason = llhttp_get_error_reason(&parser_);
    std::string body = absl::StrCat("bad request: ", reason != nullptr ? reason : llhttp_errno_name(err), "\n");
    Fail(400, body);
    return;
  }
}

// ---- Parser callbacks --------------------------------------------------------------------------

int DownstreamConn::OnMessageBegin() {
  phase_ = Phase::kHeaders;
  saw_request_bytes_ = true;
  head_.clear();
  spans_.clear();
  header_views_.clear();
  url_len_ = 0;
  new_field_ = true;
  in_value_piece_ = false;
  header_bytes_ = 0;
  body_bytes_ = 0;
  request_done_ = response_started_ = response_done_ = false;
  discard_body_ = req_chunked_ = resp_chunked_ = resp_no_body_ = false;
  retried_ = head_request_ = expect_continue_ = false;
  StartTimer(ToMs(worker_->limits().header_timeout), OnTimer);
  return 0;
}

int DownstreamConn::OnUrl(const char* at, size_t n) {
  head_.append(at, n);
  url_len_ += static_cast<uint32_t>(n);
  header_bytes_ += n;
  if (header_bytes_ > worker_->limits().max_header_bytes) {
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    return Fail(414, "request target too long\n");
  }
  return 0;
}

int DownstreamConn::OnHeaderField(const char* at, size_t n) {
  if (new_field_) {
    spans_.push_back({static_cast<uint32_t>(head_.size()), 0, 0, 0});
    new_field_ = false;
    header_bytes_ += 4;  // ": " and CRLF
  }
  head_.append(at, n);
  spans_.back().name_len += static_cast<uint32_t>(n);
  header_bytes_ += n;
  if (header_bytes_ > worker_->limits().max_header_bytes) {
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    return Fail(431, "request headers too large\n");
  }
  return 0;
}

int DownstreamConn::OnHeaderFieldComplete() {
  spans_.back().value_off = static_cast<uint32_t>(head_.size());
  return 0;
}

int DownstreamConn::OnHeaderValue(const char* at, size_t n) {
  if (in_value_piece_) {
    // llhttp accepts obs-fold (a value continued on the next line) and reports the continuation
    // as another piece of the same value. Pieces that are not adjacent, and not split at a read
    // boundary, can only come from a fold; RFC 9112 lets a server reject it, and we do because
    // folded headers are a request smuggling vector.
    bool adjacent = at == value_end_ || (value_piece_at_buf_end_ && at == buf_begin_);
    if (!adjacent) {
      WorkerStats::Add(worker_->mutable_stats().bad_requests);
      return Fail(400, "bad request: obsolete line folding in a header value\n");
    }
  }
  in_value_piece_ = true;
  value_end_ = at + n;
  value_piece_at_buf_end_ = value_end_ == buf_end_;
  head_.append(at, n);
  spans_.back().value_len += static_cast<uint32_t>(n);
  header_bytes_ += n;
  if (header_bytes_ > worker_->limits().max_header_bytes) {
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

std::string_view DownstreamConn::HeaderValue(std::string_view name) const {
  for (const auto& h : header_views_) {
    if (HeaderNameEquals(h.first, name)) return h.second;
  }
  return {};
}

std::string_view DownstreamConn::RequestPath() const {
  std::string_view url(head_.data(), url_len_);
  if (!url.empty() && url.front() != '/' && url != "*") {
    // absolute-form ("http://host/path"): routing uses the path.
    size_t scheme = url.find("://");
    if (scheme != std::string_view::npos) {
      size_t slash = url.find('/', scheme + 3);
      url = slash == std::string_view::npos ? std::string_view("/") : url.substr(slash);
    }
  }
  size_t q = url.find_first_of("?#");
  return q == std::string_view::npos ? url : url.substr(0, q);
}

int DownstreamConn::OnHeadersComplete() {
  WorkerStats::Add(worker_->mutable_stats().requests_total);
  phase_ = Phase::kActive;
  http_minor_ = parser_.http_minor;
  head_request_ = parser_.method == HTTP_HEAD;
  client_keep_alive_ = llhttp_should_keep_alive(&parser_) != 0;
  header_views_.clear();
  int hosts = 0;
  for (const auto& s : spans_) {
    std::string_view name(head_.data() + s.name_off, s.name_len);
    std::string_view value(head_.data() + s.value_off, s.value_len);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    header_views_.emplace_back(name, value);
    if (HeaderNameEquals(name, "host")) ++hosts;
    if (HeaderNameEquals(name, "expect")) {
      if (!HeaderNameEquals(value, "100-continue")) {
        return Fail(417, "unsupported expectation\n");
      }
      expect_continue_ = http_minor_ >= 1;
    }
  }
  if (parser_.http_major != 1) return Fail(505, "only HTTP/1.x is supported\n");
  if (hosts > 1 || (hosts == 0 && http_minor_ >= 1)) {
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    return Fail(400, hosts > 1 ? "bad request: more than one Host header\n"
                               : "bad request: missing Host header\n");
  }
  if (parser_.method == HTTP_CONNECT) return Fail(405, "CONNECT is not supported\n");
  // Protocol upgrades are not tunnelled yet: the request is proxied as a plain request (the
  // Upgrade header is hop-by-hop and dropped), so the upstream answers it without switching.
  parser_.upgrade = 0;
  if (max_body_ != 0 && (parser_.flags & F_CONTENT_LENGTH) && parser_.content_length > max_body_) {
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    return Fail(413, "request body too large\n");
  }
  req_chunked_ = (parser_.flags & F_CHUNKED) != 0;
  return Dispatch();
}

int DownstreamConn::OnBody(const char* at, size_t n) {
  body_bytes_ += n;
  if (max_body_ != 0 && body_bytes_ > max_body_) {
    WorkerStats::Add(worker_->mutable_stats().bad_requests);
    if (response_started_) {
      Close();
      return HPE_USER;
    }
    return Fail(413, "request body too large\n");
  }
  if (discard_body_ || up_ == nullptr) return 0;
  if (req_chunked_) {
    out_.clear();
    AppendChunkHeader(out_, n);
    uv_buf_t bufs[3] = {uv_buf_init(out_.data(), static_cast<unsigned>(out_.size())),
                        uv_buf_init(const_cast<char*>(at), static_cast<unsigned>(n)),
                        uv_buf_init(const_cast<char*>("\r\n"), 2)};
    up_->Write(bufs, 3);
  } else {
    up_->Write(std::string_view(at, n));
  }
  if (up_->write_queue_size() > kHighWatermark && !read_blocked_) {
    read_blocked_ = true;
    UpdateReading();
  }
  return 0;
}

int DownstreamConn::OnMessageComplete() {
  request_done_ = true;
  if (req_chunked_ && up_ != nullptr && !discard_body_) up_->Write("0\r\n\r\n");
  if (response_done_) {
    FinishExchange();
    // Parsing of a following pipelined request may continue right away unless we are closing.
    return shutdown_started_ || closing_ ? HPE_PAUSED : 0;
  }
  return HPE_PAUSED;
}

// ---- Dispatch ----------------------------------------------------------------------------------

int DownstreamConn::Dispatch() {
  table_ref_ = worker_->AcquireTable();
  if (table_ref_ == nullptr) return SendLocal(503, "no route table loaded\n", false);
  const RouteTable& table = *table_ref_->table;
  std::string_view path = RequestPath();
  RouteRequest rr;
  rr.host = HeaderValue("host");
  rr.path = path;
  rr.method = llhttp_method_name(static_cast<llhttp_method_t>(parser_.method));
  rr.headers = header_views_;
  route_ = table.Match(rr);
  if (route_ == nullptr) return SendLocal(404, "no route matched\n", false);

  switch (route_->action) {
    case CompiledRoute::ActionKind::kDirectResponse:
      return SendLocal(static_cast<int>(route_->direct_status), route_->direct_body, false, {},
                       route_->direct_content_type);
    case CompiledRoute::ActionKind::kRedirect: {
      const auto& r = route_->redirect;
      std::string location = "location: ";
      absl::StrAppend(&location, r.scheme().empty() ? "http" : r.scheme(), "://");
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
      std::string_view url(head_.data(), url_len_);
      size_t q = url.find('?');
      if (!r.strip_query() && q != std::string_view::npos) location.append(url.substr(q));
      location.append("\r\n");
      return SendLocal(static_cast<int>(r.status()), "", false, location);
    }
    case CompiledRoute::ActionKind::kCluster:
      cluster_ = route_->cluster;
      break;
    case CompiledRoute::ActionKind::kWeightedClusters: {
      uint64_t pick = worker_->NextRandom() % route_->weighted_total;
      cluster_ = route_->weighted.back().first;
      for (const auto& [idx, cumulative] : route_->weighted) {
        if (pick < cumulative) {
          cluster_ = idx;
          break;
        }
      }
      break;
    }
  }
  if (expect_continue_) Write("HTTP/1.1 100 Continue\r\n\r\n");
  BuildUpstreamHead(table.clusters()[cluster_]);
  request_timeout_ms_ =
      route_->timeout_ms != 0 ? route_->timeout_ms : ToMs(worker_->limits().request_timeout);
  StartTimer(request_timeout_ms_, OnTimer);
  if (!StartUpstream(false)) {
    return SendLocal(503, "upstream connect error: cannot start a connection\n", false);
  }
  return 0;
}

void DownstreamConn::BuildUpstreamHead(const CompiledCluster& cluster) {
  (void)cluster;
  const CompiledHeaderEdits& edits = route_->request_headers;
  std::string& h = up_head_;
  h.clear();
  h.append(llhttp_method_name(static_cast<llhttp_method_t>(parser_.method)));
  h.push_back(' ');
  std::string_view url(head_.data(), url_len_);
  std::string_view path = RequestPath();
  if (route_->has_prefix_rewrite && path.size() >= route_->path.size()) {
    h.append(route_->prefix_rewrite);
    // Everything after the matched prefix, including the query string.
    size_t path_start = static_cast<size_t>(path.data() - url.data());
    std::string_view rest = url.substr(path_start + route_->path.size());
    if (route_->prefix_rewrite.empty() && (rest.empty() || rest.front() != '/')) h.push_back('/');
    h.append(rest);
  } else if (!url.empty() && url.front() != '/' && url != "*") {
    size_t path_start = static_cast<size_t>(path.data() - url.data());
    h.append(url.substr(path_start));
  } else {
    h.append(url);
  }
  h.append(" HTTP/1.1\r\n");

  std::string_view connection_tokens;
  std::string_view xff, via;
  bool has_request_id = false;
  for (const auto& [name, value] : header_views_) {
    if (HeaderNameEquals(name, "connection")) connection_tokens = value;
  }
  for (const auto& [name, value] : header_views_) {
    if (IsHopByHopHeader(name)) continue;
    if (!connection_tokens.empty() && TokenListContains(connection_tokens, name)) continue;
    if (!edits.empty() && edits.Drops(name)) continue;
    if (HeaderNameEquals(name, "x-forwarded-for")) {
      xff = value;
      continue;
    }
    if (HeaderNameEquals(name, "via")) {
      via = value;
      continue;
    }
    if (HeaderNameEquals(name, "expect")) continue;  // answered by the proxy
    if (HeaderNameEquals(name, "x-forwarded-proto") || HeaderNameEquals(name, "x-forwarded-host")) {
      continue;  // rewritten below: this proxy is the edge
    }
    if (HeaderNameEquals(name, "x-request-id")) has_request_id = true;
    h.append(name.data(), name.size());
    h.append(": ");
    h.append(value.data(), value.size());
    h.append("\r\n");
  }
  h.append("x-forwarded-for: ");
  if (!xff.empty()) {
    h.append(xff.data(), xff.size());
    h.append(", ");
  }
  h.append(client_ip_);
  h.append("\r\nx-forwarded-proto: http\r\n");
  std::string_view host = HeaderValue("host");
  if (!host.empty()) {
    h.append("x-forwarded-host: ");
    h.append(host.data(), host.size());
    h.append("\r\n");
  }
  h.append("via: ");
  if (!via.empty()) {
    h.append(via.data(), via.size());
    h.append(", ");
  }
  h.append(kVia);
  h.append("\r\n");
  if (!has_request_id) {
    h.append("x-request-id: ");
    worker_->NewRequestId(h);
    h.append("\r\n");
  }
  for (const auto& [name, value] : edits.set) absl::StrAppend(&h, name, ": ", value, "\r\n");
  for (const auto& [name, value] : edits.add) absl::StrAppend(&h, name, ": ", value, "\r\n");
  if (req_chunked_) h.append("transfer-encoding: chunked\r\n");
  h.append("\r\n");
}

bool DownstreamConn::StartUpstream(bool is_retry) {
  const CompiledCluster& cl = table_ref_->table->clusters()[cluster_];
  TableRef::ClusterState& state = table_ref_->clusters[cluster_];
  size_t n = cl.endpoints.size();
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
      std::string_view key = cl.hash_header.empty() ? std::string_view(client_ip_)
                                                    : HeaderValue(cl.hash_header);
      e = cl.ring.empty() ? 0 : cl.RingLookup(HashBytes(key));
      if (is_retry) e = static_cast<uint32_t>((e + 1) % n);
      break;
    }
    default:
      e = cl.rr_schedule[state.rr_cursor++ % cl.rr_schedule.size()];
      break;
  }
  endpoint_ = e;
  int err = 0;
  UpstreamConn* up = worker_->AcquireUpstream(cl, cl.endpoints[e], is_retry, &err);
  if (err != 0) {
    WorkerStats::Add(worker_->mutable_stats().upstream_connect_failures);
    up->Close();
    return false;
  }
  up_ = up;
  up->Attach(this, head_request_);
  ++state.active[e];
  counted_active_ = true;
  WorkerStats::Add(worker_->mutable_stats().upstream_requests_total);
  up->Write(up_head_);
  return true;
}

void DownstreamConn::EndActiveCount() {
  if (!counted_active_ || table_ref_ == nullptr) return;
  counted_active_ = false;
  --table_ref_->clusters[cluster_].active[endpoint_];
}

int DownstreamConn::SendLocal(int status, std::string_view body, bool close, std::string_view extra,
                              std::string_view content_type) {
  if (response_started_) {
    Close();
    return HPE_USER;
  }
  close = close || close_after_ || draining_ || !client_keep_alive_;
  if (close) close_after_ = true;
  out_.clear();
  AppendSimpleResponse(out_, status, body, close, extra, head_request_, content_type);
  WorkerStats::Add(worker_->mutable_stats().bytes_sent, out_.size());
  Write(out_);
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
    out_.clear();
    AppendSimpleResponse(out_, status, body, true, {}, false);
    WorkerStats::Add(worker_->mutable_stats().bytes_sent, out_.size());
    Write(out_);
    RecordStatus(status);
    response_started_ = response_done_ = true;
  }
  CloseAfterFlush();
  return HPE_USER;
}

void DownstreamConn::RecordStatus(int status) {
  int cls = status / 100;
  if (cls >= 1 && cls <= 5) WorkerStats::Add(worker_->mutable_stats().responses[cls]);
}

// ---- Upstream events ---------------------------------------------------------------------------

void DownstreamConn::OnUpstreamHeaders(UpstreamConn* up) {
  if (closing_) return;
  response_started_ = true;
  int status = up->status();
  resp_no_body_ = head_request_ || status == 204 || status == 304;
  bool close = close_after_ || draining_ || !client_keep_alive_;
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
  const CompiledHeaderEdits& edits = route_->response_headers;
  std::string& o = out_;
  o.clear();
  o.append("HTTP/1.1 ");
  AppendDecimal(o, static_cast<uint64_t>(status));
  o.push_back(' ');
  std::string_view reason = up->reason();
  if (reason.empty()) reason = ReasonPhrase(status);
  o.append(reason.data(), reason.size());
  o.append("\r\n");
  std::string_view connection_tokens, via;
  for (const auto& [name, value] : up->headers()) {
    if (HeaderNameEquals(name, "connection")) connection_tokens = value;
  }
  for (const auto& [name, value] : up->headers()) {
    if (IsHopByHopHeader(name)) continue;
    if (!connection_tokens.empty() && TokenListContains(connection_tokens, name)) continue;
    if (!edits.empty() && edits.Drops(name)) continue;
    if (HeaderNameEquals(name, "via")) {
      via = value;
      continue;
    }
    o.append(name.data(), name.size());
    o.append(": ");
    o.append(value.data(), value.size());
    o.append("\r\n");
  }
  o.append("via: ");
  if (!via.empty()) {
    o.append(via.data(), via.size());
    o.append(", ");
  }
  o.append(kVia);
  o.append("\r\n");
  for (const auto& [name, value] : edits.set) absl::StrAppend(&o, name, ": ", value, "\r\n");
  for (const auto& [name, value] : edits.add) absl::StrAppend(&o, name, ": ", value, "\r\n");
  if (resp_chunked_) o.append("transfer-encoding: chunked\r\n");
  if (close) {
    o.append("connection: close\r\n");
  } else if (http_minor_ == 0) {
    o.append("connection: keep-alive\r\n");
  }
  o.append("\r\n");
  WorkerStats::Add(worker_->mutable_stats().bytes_sent, o.size());
  Write(o);
  RecordStatus(status);
}

void DownstreamConn::OnUpstreamBody(const char* data, size_t len) {
  if (closing_ || resp_no_body_ || len == 0) return;
  if (resp_chunked_) {
    out_.clear();
    AppendChunkHeader(out_, len);
    uv_buf_t bufs[3] = {uv_buf_init(out_.data(), static_cast<unsigned>(out_.size())),
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
  worker_->ReleaseUpstream(up, reusable && request_done_);
  if (closing_) return;
  ResponseDone();
}

void DownstreamConn::OnUpstreamError(UpstreamConn* up, int status, std::string_view message) {
  EndActiveCount();
  if (up_ == up) up_ = nullptr;
  if (closing_ || shutdown_started_) return;
  if (response_started_) {
    // Part of the response is already on its way: the only honest signal left is to close.
    Close();
    return;
  }
  // A reused keep-alive connection may have been closed by the upstream just as we sent on it.
  // Without a body the request can be sent again safely on a fresh connection.
  bool bodyless = !req_chunked_ && !(parser_.flags & F_CONTENT_LENGTH && parser_.content_length > 0) &&
                  body_bytes_ == 0;
  if (!retried_ && up->reused() && !up->got_response_bytes() && bodyless) {
    retried_ = true;
    WorkerStats::Add(worker_->mutable_stats().upstream_retries);
    if (StartUpstream(true)) return;
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
  route_ = nullptr;
  phase_ = Phase::kIdle;
  if (close_after_ || draining_) {
    CloseAfterFlush();
    return;
  }
  StartTimer(ToMs(worker_->limits().idle_timeout), OnTimer);
}

void DownstreamConn::ResumePending() {
  if (closing_ || shutdown_started_) return;
  if (!pending_in_.empty() && phase_ == Phase::kIdle) {
    std::string pending;
    pending.swap(pending_in_);
    Process(pending.data(), pending.size());
  }
  UpdateReading();
}

void DownstreamConn::ReleaseTable() {
  if (table_ref_ != nullptr) {
    worker_->ReleaseTable(table_ref_);
    table_ref_ = nullptr;
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
  auto* req = new uv_shutdown_t;
  req->data = this;
  int rc = uv_shutdown(req, stream(), [](uv_shutdown_t* r, int) {
    auto* c = static_cast<DownstreamConn*>(r->data);
    delete r;
    c->Close();
  });
  if (rc != 0) {
    delete req;
    Close();
    return;
  }
  StartTimer(kLingerMs, OnTimer);
}

void DownstreamConn::OnTimer(uv_timer_t* t) {
  auto* c = static_cast<DownstreamConn*>(t->data);
  if (c->closing_) return;
  if (c->shutdown_started_) {
    c->Close();
    return;
  }
  switch (c->phase_) {
    case Phase::kIdle:
      // Keep-alive idle timeout, or a connection that never sent a byte.
      c->Close();
      return;
    case Phase::kHeaders:
      // Slow-loris: the request head did not arrive in time.
      WorkerStats::Add(c->worker_->mutable_stats().bad_requests);
      c->Fail(408, "request header timeout\n");
      return;
    case Phase::kActive:
      WorkerStats::Add(c->worker_->mutable_stats().upstream_timeouts);
      if (c->response_started_) {
        c->Close();
        return;
      }
      if (c->up_ != nullptr) {
        c->EndActiveCount();
        UpstreamConn* u = c->up_;
        c->up_ = nullptr;
        u->Abandon();
      }
      c->Fail(504, "upstream request timeout\n");
      return;
  }
}

void DownstreamConn::OnClose() {
  if (up_ != nullptr) {
    EndActiveCount();
    UpstreamConn* u = up_;
    up_ = nullptr;
    u->Abandon();
  }
  EndActiveCount();
  ReleaseTable();
  if (started_) WorkerStats::Sub(worker_->mutable_stats().downstream_connections_active);
  worker_->Forget(this);
}

}  // namespace flexgate::dataplane::internal
