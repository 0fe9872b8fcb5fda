// UpstreamConn: a connection to one upstream endpoint, parsing responses with llhttp and
// handing their parts to the downstream connection of the current exchange.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "dataplane/proxy/http_util.h"
#include "dataplane/proxy/response_head.h"
#include "dataplane/proxy/worker.h"

namespace flexgate::dataplane::internal {

namespace {
constexpr size_t kLowWatermark = 64 * 1024;
constexpr size_t kMaxResponseHead = 64 * 1024;
}  // namespace

struct UpstreamCallbacks {
  static UpstreamConn* Self(llhttp_t* p) { return static_cast<UpstreamConn*>(p->data); }

  static int OnMessageBegin(llhttp_t* p) {
    UpstreamConn* u = Self(p);
    u->head_.clear();
    u->spans_.clear();
    u->header_views_.clear();
    u->reason_off_ = u->reason_len_ = 0;
    u->reason_view_ = {};
    u->head_in_buffer_ = true;
    u->in_head_ = true;
    u->head_bytes_ = 0;
    u->new_field_ = true;
    u->status_ = 0;
    return 0;
  }
  static int OnStatus(llhttp_t* p, const char* at, size_t n) {
    UpstreamConn* u = Self(p);
    return u->AddHeadPiece(&u->reason_off_, &u->reason_len_, at, n) ? 0 : HPE_USER;
  }
  static int OnHeaderField(llhttp_t* p, const char* at, size_t n) {
    UpstreamConn* u = Self(p);
    if (u->new_field_) {
      u->spans_.push_back({0, 0, 0, 0});
      u->new_field_ = false;
    }
    UpstreamConn::Span& s = u->spans_.back();
    return u->AddHeadPiece(&s.name_off, &s.name_len, at, n) ? 0 : HPE_USER;
  }
  static int OnHeaderValue(llhttp_t* p, const char* at, size_t n) {
    UpstreamConn* u = Self(p);
    UpstreamConn::Span& s = u->spans_.back();
    return u->AddHeadPiece(&s.value_off, &s.value_len, at, n) ? 0 : HPE_USER;
  }
  static int OnHeaderValueComplete(llhttp_t* p) {
    Self(p)->new_field_ = true;
    return 0;
  }
  static int OnHeadersComplete(llhttp_t* p) {
    UpstreamConn* u = Self(p);
    u->status_ = p->status_code;
    if (u->status_ >= 100 && u->status_ < 200) {
      // Interim responses (100 Continue, 103 Early Hints) are consumed here: the proxy answers
      // Expect: 100-continue itself. A 101 is only welcome when the request asked to upgrade.
      if (u->status_ == 101) {
        if (!u->upgrade_requested_ || u->down_ == nullptr) return -1;
        u->tunnel_ = true;
      } else {
        u->interim_ = true;
        u->in_head_ = false;
        return 0;
      }
    }
    u->in_head_ = false;
    const char* base = u->HeadBase();
    u->reason_view_ = std::string_view(base + u->reason_off_, u->reason_len_);
    u->header_views_.clear();
    u->header_classes_.clear();
    u->connection_header_ = {};
    u->upgrade_header_ = {};
    for (const auto& s : u->spans_) {
      std::string_view name(base + s.name_off, s.name_len);
      std::string_view value(base + s.value_off, s.value_len);
      while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
      u->header_views_.emplace_back(name, value);
      uint16_t cls = ClassifyHeader(name);
      u->header_classes_.push_back(cls);
      if (cls & kHeaderConnection) u->connection_header_ = value;
      if (cls & kHeaderUpgrade) u->upgrade_header_ = value;
    }
    u->eof_body_ = !u->head_request_ && llhttp_message_needs_eof(p) != 0;
    if (u->down_ != nullptr) u->down_->OnUpstreamHeaders(u);
    // The downstream side may have dropped this connection (to retry elsewhere): stop parsing.
    if (u->closing_) return -1;
    // HEAD responses carry framing headers but no body.
    return u->head_request_ ? 1 : 0;
  }
  static int OnBody(llhttp_t* p, const char* at, size_t n) {
    UpstreamConn* u = Self(p);
    if (u->down_ != nullptr) u->down_->OnUpstreamBody(at, n);
    return 0;
  }
  static int OnMessageComplete(llhttp_t* p) {
    UpstreamConn* u = Self(p);
    if (u->interim_) {
      u->interim_ = false;
      return 0;
    }
    u->message_complete_ = true;
    // Stop here: whatever follows the response is not ours to parse.
    return HPE_PAUSED;
  }

  static const llhttp_settings_t* Settings() {
    static const llhttp_settings_t settings = [] {
      llhttp_settings_t s;
      llhttp_settings_init(&s);
      s.on_message_begin = OnMessageBegin;
      s.on_status = OnStatus;
      s.on_header_field = OnHeaderField;
      s.on_header_value = OnHeaderValue;
      s.on_header_value_complete = OnHeaderValueComplete;
      s.on_headers_complete = OnHeadersComplete;
      s.on_body = OnBody;
      s.on_message_complete = OnMessageComplete;
      return s;
    }();
    return &settings;
  }
};

bool UpstreamConn::AddHeadPiece(uint32_t* off, uint32_t* len, const char* at, size_t n) {
  head_bytes_ += static_cast<uint32_t>(std::min<size_t>(n, kMaxResponseHead + 1));
  if (head_bytes_ > kMaxResponseHead) return false;
  if (head_in_buffer_) {
    if (*len == 0) {
      *off = static_cast<uint32_t>(at - exec_base_);
      *len = static_cast<uint32_t>(n);
      return true;
    }
    if (exec_base_ + *off + *len == at) {
      *len += static_cast<uint32_t>(n);
      return true;
    }
    SpillHead();  // a piece that does not continue the last one: copy what we have
  }
  // Pieces are appended in the order they arrive, so a continued text is always the last one.
  if (*len == 0) *off = static_cast<uint32_t>(head_.size());
  head_.append(at, n);
  *len += static_cast<uint32_t>(n);
  return true;
}

void UpstreamConn::SpillHead() {
  if (!head_in_buffer_) return;
  head_.clear();
  auto move = [&](uint32_t* off, uint32_t len) {
    if (len == 0) return;
    uint32_t to = static_cast<uint32_t>(head_.size());
    head_.append(exec_base_ + *off, len);
    *off = to;
  };
  // In arrival order: the reason phrase, then each name and its value.
  move(&reason_off_, reason_len_);
  for (Span& s : spans_) {
    move(&s.name_off, s.name_len);
    move(&s.value_off, s.value_len);
  }
  head_in_buffer_ = false;
}

UpstreamConn::UpstreamConn(Worker* worker, const CompiledEndpoint& endpoint,
                           const CompiledCluster& cluster, IdleList* pool,
                           ClusterCounters* counters)
    : Conn(worker),
      key_(endpoint.key),
      pool_(pool),
      tls_ctx_(cluster.tls),
      tls_server_name_(cluster.tls != nullptr ? endpoint.tls_server_name : std::string()),
      addr_(endpoint.addr),
      addr_len_(endpoint.addr_len),
      max_idle_(cluster.max_idle_per_endpoint),
      idle_timeout_ms_(cluster.idle_timeout_ms),
      max_requests_(cluster.max_requests_per_connection),
      counters_(counters) {
  uv_timer_init(worker->loop(), &timer_);
  timer_.data = this;
  open_handles_ = 2;
  ++counters_->connections;
  llhttp_init(&parser_, HTTP_RESPONSE, UpstreamCallbacks::Settings());
  parser_.data = this;
}

int UpstreamConn::Connect(uint64_t connect_timeout_ms) {
  if (addr_len_ == 0) return UV_EAI_NONAME;  // a host name that did not resolve
  if (tls_ctx_ != nullptr) {
    auto session = tls_ctx_->NewSession(tls_server_name_);
    if (!session.ok()) return UV_EINVAL;
    tls_ = *std::move(session);
  }
  int rc = StartConnect(reinterpret_cast<const sockaddr*>(&addr_), addr_len_);
  if (rc != 0) return rc;
  if (tls_ != nullptr) {
    // The ClientHello is queued now and leaves as soon as the TCP connection is up. The connect
    // timeout below covers the TLS handshake too.
    if (!tls_->StartHandshake().ok()) return UV_EINVAL;
    FlushTls();
  }
  StartTimer(connect_timeout_ms, [](uv_timer_t* t) {
    auto* u = static_cast<UpstreamConn*>(t->data);
    WorkerStats& st = u->worker_->mutable_stats();
    WorkerStats::Add(st.upstream_connect_failures);
    WorkerStats::Add(st.upstream_timeouts);
    u->Fail(503, absl::StrCat("upstream connect timeout (", u->key_, ")"), FailureKind::kConnect);
  });
  return 0;
}

void UpstreamConn::OnConnect(int status) {
  if (closing_) return;
  if (status < 0) {
    StopTimer();
    EndPending();
    WorkerStats::Add(worker_->mutable_stats().upstream_connect_failures);
    Fail(503, absl::StrCat("upstream connect error (", key_, "): ", uv_strerror(status)),
         FailureKind::kConnect);
    return;
  }
  connected_ = true;
  SetNoDelay();
  // A TLS connection is established (and stops waiting) once its handshake is done.
  if (tls_ == nullptr) {
    StopTimer();
    EndPending();
  }
  StartReading();
}

void UpstreamConn::OnTlsHandshakeDone() {
  StopTimer();
  EndPending();
  // Request bytes written during the handshake counted against back-pressure until now.
  if (down_ != nullptr && write_queue_size() < kLowWatermark) down_->OnUpstreamWritable();
}

void UpstreamConn::OnTlsError(const absl::Status& status) {
  WorkerStats& st = worker_->mutable_stats();
  WorkerStats::Add(st.upstream_tls_failures);
  bool handshake = !tls_->handshake_done();
  if (handshake) {
    StopTimer();
    EndPending();
  }
  // A failed handshake (including a certificate that does not verify) never reached the
  // upstream application: it counts as a connect failure for retries and outlier detection.
  Fail(502, absl::StrCat("upstream TLS error (", key_, "): ", status.message()),
       handshake ? FailureKind::kConnect : FailureKind::kProtocol);
}

void UpstreamConn::EndPending() {
  if (!pending_counted_) return;
  pending_counted_ = false;
  --counters_->pending;
}

void UpstreamConn::Attach(DownstreamConn* down, bool head_request, bool upgrade) {
  down_ = down;
  upgrade_requested_ = upgrade;
  failure_ = FailureKind::kNone;
  if (!connected_ && !pending_counted_) {
    // The request waits for this connection's handshake (circuit breaker max_pending_requests).
    pending_counted_ = true;
    ++counters_->pending;
  }
  // A fresh connection keeps its connect timer running. A pooled one leaves its idle timer
  // armed: it does nothing while the connection is in use (OnIdleTimer), which saves stopping
  // and restarting it for every request.
  idle_ = false;
  head_request_ = head_request;
  got_bytes_ = false;
  message_complete_ = false;
  interim_ = false;
  eof_body_ = false;
  fast_ = false;
  fast_body_left_ = 0;
  ++requests_;
}

void UpstreamConn::Abandon() {
  down_ = nullptr;
  Close();
}

void UpstreamConn::EnterIdle() {
  down_ = nullptr;
  idle_ = true;
  // Keep reading while idle: an upstream that closes its end is noticed at once.
  StartReading();
  idle_due_ = worker_->now_ms() + idle_timeout_ms_;
  if (!idle_timer_armed_) {
    idle_timer_armed_ = true;
    StartTimer(idle_timeout_ms_, OnIdleTimer);
  }
}

void UpstreamConn::OnIdleTimer(uv_timer_t* t) {
  auto* u = static_cast<UpstreamConn*>(t->data);
  u->idle_timer_armed_ = false;
  if (u->closing_ || !u->idle_) return;  // in use again: EnterIdle re-arms
  uint64_t now = u->worker_->now_ms();
  if (now < u->idle_due_) {
    // Pooled again since the timer was armed: wait for the rest of the new idle period.
    u->idle_timer_armed_ = true;
    u->StartTimer(u->idle_due_ - now, OnIdleTimer);
    return;
  }
  u->Close();
}

void UpstreamConn::StartReading() {
  if (reading_ || closing_ || !connected_) return;
  ReadStart();
}

void UpstreamConn::StopReading() { ReadStop(); }

void UpstreamConn::OnRead(ssize_t nread, const uv_buf_t* buf) {
  if (closing_ || nread == 0) return;
  if (tls_ != nullptr) {
    ReadTls(nread, buf);
    return;
  }
  OnData(nread, buf->base);
}

void UpstreamConn::OnData(ssize_t nread, const char* data) {
  if (closing_) return;
  if (nread < 0) {
    reading_ = false;
    if (idle_ || down_ == nullptr) {
      Close();
      return;
    }
    if (tunnel_) {
      DownstreamConn* d = down_;
      down_ = nullptr;
      Close();
      d->OnTunnelClosed();
      return;
    }
    if (nread == UV_EOF && eof_body_) {
      // The body was delimited by the connection's end: that end completes it.
      llhttp_finish(&parser_);
      if (message_complete_) {
        HandleMessageComplete(false);
        return;
      }
    }
    Fail(502,
         got_bytes_ ? "upstream closed the connection before the response was complete"
                    : "upstream closed the connection before responding",
         FailureKind::kReset);
    return;
  }
  if (tunnel_) {
    down_->OnTunnelData(data, static_cast<size_t>(nread));
    return;
  }
  if (idle_ || down_ == nullptr) {
    // Bytes nobody asked for: this connection's framing can no longer be trusted.
    Close();
    return;
  }
  got_bytes_ = true;
  // Everything this read produces for the client (response head, body, chunk framing, and any
  // local answers to pipelined requests that follow) leaves in as few writes as possible. The
  // downstream connection outlives this call even if it closes meanwhile (it is freed from the
  // loop), and closing it flushes what was gathered.
  struct CorkGuard {
    Conn* c;
    ~CorkGuard() {
      if (c != nullptr) c->Uncork();
    }
  } cork{down_->Cork() ? down_ : nullptr};
  if (fast_body_left_ != 0) {
    OnFastBody(data, static_cast<size_t>(nread));
    return;
  }
  if (!llhttp_mid_message_ && TryFastHead(data, static_cast<size_t>(nread))) return;
  fast_ = false;
  llhttp_mid_message_ = true;  // until llhttp completes a final response
  exec_base_ = data;
  llhttp_errno_t err = llhttp_execute(&parser_, data, static_cast<size_t>(nread));
  // The buffer is reused once this returns: a head still incomplete keeps its own copy.
  if (in_head_) SpillHead();
  exec_base_ = nullptr;
  if (closing_) return;
  if (err == HPE_PAUSED && message_complete_) {
    size_t used = static_cast<size_t>(llhttp_get_error_pos(&parser_) - data);
    llhttp_resume(&parser_);
    llhttp_mid_message_ = false;
    if (tunnel_) {
      // After the 101 the bytes belong to the upgraded protocol: relay them as they are.
      message_complete_ = false;
      if (used < static_cast<size_t>(nread) && down_ != nullptr) {
        down_->OnTunnelData(data + used, static_cast<size_t>(nread) - used);
      }
      return;
    }
    HandleMessageComplete(used == static_cast<size_t>(nread));
    return;
  }
  if (err != HPE_OK) {
    Fail(502, absl::StrCat("invalid response from upstream: ", llhttp_errno_name(err)),
         FailureKind::kProtocol);
  }
}

bool UpstreamConn::TryFastHead(const char* data, size_t n) {
  // HEAD answers and protocol switches have their own framing rules: llhttp handles them.
  if (head_request_ || upgrade_requested_) return false;
  SimpleResponseHead h;
  if (!ParseSimpleResponseHead(std::string_view(data, n), kMaxResponseHead, &h, &header_views_,
                               &header_classes_)) {
    return false;
  }
  fast_ = true;
  fast_keep_alive_ = h.keep_alive;
  raw_head_begin_ = data;
  raw_headers_end_ = data + h.head_size - 2;  // the blank line
  status_ = h.status;
  reason_view_ = h.reason;
  connection_header_ = h.connection;
  upgrade_header_ = {};
  eof_body_ = false;
  in_head_ = false;
  down_->OnUpstreamHeaders(this);
  // The downstream side may have dropped this connection (to retry elsewhere).
  if (closing_) return true;
  fast_body_left_ = h.content_length;
  OnFastBody(data + h.head_size, n - h.head_size);
  return true;
}

void UpstreamConn::OnFastBody(const char* data, size_t n) {
  size_t take = static_cast<size_t>(std::min<uint64_t>(n, fast_body_left_));
  if (take != 0) {
    fast_body_left_ -= take;
    if (down_ != nullptr) down_->OnUpstreamBody(data, take);
    if (closing_) return;
  }
  if (fast_body_left_ != 0) return;
  // Bytes after the body were not asked for: the connection is not reused (as with llhttp).
  HandleMessageComplete(take == n);
}

void UpstreamConn::HandleMessageComplete(bool clean) {
  message_complete_ = false;
  bool reusable = clean && !eof_body_ && keep_alive();
  DownstreamConn* d = down_;
  if (d == nullptr) {
    Close();
    return;
  }
  d->OnUpstreamComplete(this, reusable);
}

void UpstreamConn::Fail(int status, std::string message, FailureKind kind) {
  failure_ = kind;
  DownstreamConn* d = down_;
  down_ = nullptr;
  if (d != nullptr) d->OnUpstreamError(this, status, message);
  Close();
}

void UpstreamConn::OnWriteDone(int status) {
  if (closing_) return;
  if (status < 0) {
    if (status != UV_ECANCELED) {
      Fail(502, absl::StrCat("upstream write failed: ", uv_strerror(status)), FailureKind::kReset);
    }
    return;
  }
  if (down_ != nullptr && write_queue_size() < kLowWatermark) down_->OnUpstreamWritable();
}

void UpstreamConn::StartTimer(uint64_t ms, uv_timer_cb cb) {
  if (closing_) return;
  uv_timer_start(&timer_, cb, ms, 0);
}

void UpstreamConn::ShutdownThenClose() {
  if (closing_) return;
  StopReading();
  if (StartShutdown()) {
    StartTimer(5000, [](uv_timer_t* t) { static_cast<UpstreamConn*>(t->data)->Close(); });
  }
}

void UpstreamConn::OnClose() {
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), OnHandleClosed);
  worker_->Forget(this);
  EndPending();
  --counters_->connections;
  DownstreamConn* d = down_;
  down_ = nullptr;
  if (failure_ == FailureKind::kNone) failure_ = FailureKind::kReset;
  if (d != nullptr) d->OnUpstreamError(this, 502, "upstream connection closed");
}

}  // namespace flexgate::dataplane::internal
