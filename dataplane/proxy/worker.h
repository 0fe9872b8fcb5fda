// Internal to flexgate_proxy: one worker thread of the proxy (its uv_loop_t, listeners,
// downstream and upstream connections, connection pools and counters).
//
// Everything here runs on the worker's own loop thread, except the members documented as
// "any thread" (posting a route table or a drain request, and reading the counters).
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/tls/tls.h"
#include "dataplane/proxy/proxy_server.h"
#include "dataplane/proxy/route_table.h"
#include "dataplane/proxy/timer_wheel.h"

namespace flexgate::dataplane::internal {

class Worker;
class DownstreamConn;
class UpstreamConn;

// Counters of one worker. Written only by the worker's own thread (a relaxed load + store, no
// read-modify-write on a shared line), read by any thread when stats are collected.
struct WorkerStats {
  using Counter = std::atomic<uint64_t>;
  Counter downstream_connections_total{0};
  Counter downstream_connections_active{0};
  Counter requests_total{0};
  Counter responses[6] = {};  // index = status / 100 (1..5)
  Counter upstream_connections_total{0};
  Counter upstream_connect_failures{0};
  Counter upstream_requests_total{0};
  Counter upstream_timeouts{0};
  Counter upstream_retries{0};
  Counter bytes_received{0};
  Counter bytes_sent{0};
  Counter route_table_swaps{0};
  Counter bad_requests{0};
  Counter upstream_per_try_timeouts{0};
  Counter retry_budget_exhausted{0};
  Counter outlier_ejections{0};
  Counter circuit_breaker_rejections{0};
  Counter upgrades_total{0};
  Counter upgrades_active{0};
  Counter downstream_tls_handshakes{0};
  Counter downstream_tls_handshake_failures{0};
  Counter upstream_tls_failures{0};

  static void Add(Counter& c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  static void Sub(Counter& c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
  }
  void AddTo(ProxyStats& out) const;
};

// Completion of one published table: `done` runs when the last worker has swapped.
struct TableUpdate {
  std::shared_ptr<const RouteTable> table;
  std::atomic<int> remaining{0};
  std::function<void()> done;
  void Arrive() {
    if (remaining.fetch_sub(1, std::memory_order_acq_rel) == 1 && done) done();
  }
};

// Per-worker state of one upstream endpoint, kept across table swaps (keyed by endpoint key):
// passive outlier detection. Loop thread only.
struct EndpointState {
  uint32_t consecutive_5xx = 0;
  uint32_t consecutive_connect_failures = 0;
  uint32_t times_ejected = 0;
  uint64_t ejected_until_ms = 0;  // uv_now() time; ejected while now < this
  bool Ejected(uint64_t now_ms) const { return ejected_until_ms > now_ms; }
};

// Per-worker counters of one cluster, kept across table swaps (keyed by cluster name): what the
// circuit breakers and the retry budget look at. Loop thread only.
struct ClusterCounters {
  uint32_t connections = 0;     // open upstream connections opened for this cluster
  uint32_t pending = 0;         // requests waiting for their connection to be established
  uint32_t active = 0;          // requests in flight
  uint32_t retries_active = 0;  // of those, requests on a retry attempt
};

// Endpoint health as published by the active health checker: the keys ("cluster|ip:port") of
// endpoints currently failing their checks. Immutable, shared by every worker.
struct HealthSnapshot {
  absl::flat_hash_set<std::string> unhealthy;
  static std::string Key(std::string_view cluster, std::string_view endpoint_key);
};

// Idle keep-alive connections to one endpoint (one pool key), most recently used last. Owned by
// the Worker and never freed before it, so tables and connections keep plain pointers to it.
using IdleList = std::vector<UpstreamConn*>;

// Per-worker, per-table mutable load-balancing state and a plain reference count: requests pin
// the table they started with without touching the shared_ptr's atomic count.
struct TableRef {
  struct ClusterState {
    uint32_t rr_cursor = 0;
    std::vector<uint32_t> active;  // requests in flight per endpoint (least request)
    ClusterCounters* counters = nullptr;     // owned by the Worker
    std::vector<EndpointState*> endpoints;   // owned by the Worker, parallel to `active`
    std::vector<uint8_t> unhealthy;          // active health check verdicts, parallel too
    std::vector<IdleList*> pools;            // owned by the Worker, parallel too
  };
  std::shared_ptr<const RouteTable> table;
  std::vector<ClusterState> clusters;
  uint32_t refs = 0;
};

// One write a connection could not hand to the kernel at once: the bytes left, queued on the
// connection until its socket is writable. Pooled per worker (Worker::NewWriteReq) so that a
// write does not allocate.
struct WriteReq {
  WriteReq* next = nullptr;
  size_t sent = 0;  // bytes of `data` already handed to the kernel
  std::string data;
};

// Base of both connection kinds: a non-blocking TCP socket watched by a uv_poll_t (and whatever
// handles a subclass adds, counted in open_handles_), freed in the last close callback.
//
// Socket I/O is the connection's own rather than a libuv stream's: edge-triggered readiness
// (see EdgeTriggered in worker.cc), one recv(2) per readiness event (more while reads fill the
// buffer, or to the end of the stream once the peer has shut down its side) into the worker's shared read buffer, send(2)/sendmsg(2) first and a per-connection
// queue only for what the kernel does not take, all through raw system calls. glibc's
// read/recv/send wrappers are cancellation points, which in a multi-threaded process cost two
// locked atomic operations per call, and read(2) takes the file position lock that recv(2)
// does not; libuv streams add their own bookkeeping on top. The contract towards the
// subclasses is libuv's: OnRead sees n > 0 bytes, UV_EOF or a negative libuv error code (and
// reading has stopped by then), OnWriteDone runs once per queued write, OnConnect once.
//
// TLS: a connection with a TlsSession (tls_ set) carries ciphertext on its socket. Write()
// encrypts, read callbacks go through ReadTls(), which decrypts into the worker's shared read
// buffer and hands plaintext to OnPlaintext(). Plain connections never touch any of it: one
// null check per read and per write, no virtual call, no copy.
class Conn {
 public:
  explicit Conn(Worker* worker);
  virtual ~Conn();
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Takes ownership of the connected (or connecting), non-blocking socket `fd` and initialises
  // the poll handle on it. On failure (a libuv error code) the caller still owns `fd`, and
  // `this` has no handle yet, so it may simply be deleted.
  int Open(int fd);

  // Called once per queued write when its last byte has been handed to the kernel (status 0),
  // or once with the error that ended writing (after which nothing more is written). Never
  // from inside Write(), and never once the connection is closing.
  virtual void OnWriteDone(int status) = 0;

  // Closes the socket and the handles; `this` is deleted from the loop once every close
  // callback ran. Queued bytes are dropped.
  void Close();
  // Flushes what is buffered, sends close_notify on TLS, half-closes (FIN after every queued
  // byte), then closes. Returns false when the connection is already closed on return: the FIN
  // went out at once (nothing was queued), or it could not be sent; the caller then arms no
  // linger timer. Returns true while queued bytes are still on their way; the caller bounds
  // that wait with its own timer.
  bool StartShutdown();
  // Sends FIN after queued writes; reading continues (half-close).
  void ShutdownWrite();
  bool closing() const { return closing_; }
  // Bytes accepted by Write() and not yet handed to the kernel: the connection's queue
  // (ciphertext on TLS connections) plus plaintext a TLS session holds until its handshake
  // completes. This is what back-pressure looks at.
  size_t write_queue_size() const { return queued_bytes_ + tls_queued_; }
  bool is_tls() const { return tls_ != nullptr; }

  // Writes `bufs` in order. Tries a direct write first and copies only what the kernel did not
  // take. Returns false when the connection is already broken.
  bool Write(const uv_buf_t* bufs, unsigned n);
  bool Write(std::string_view data) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(data.data()), static_cast<unsigned>(data.size()));
    return Write(&b, 1);
  }

  // Write batching. Between Cork() and Uncork(), small writes are gathered (copied into one
  // per-worker buffer) and leave as one write when the connection is uncorked, or together with
  // the first write that would overflow the buffer. A proxied response's head and body (and a
  // chunked body's framing) then cost one syscall and one TCP segment instead of several.
  // Only one connection per worker can be corked at a time, and only a plain TCP one: Cork()
  // returns false (and changes nothing) otherwise. Closing or shutting down uncorks first.
  bool Cork();
  void Uncork();

 protected:
  virtual void OnClose() {}
  // Bytes read (n > 0, valid in `buf->base` until return), UV_EOF, or a negative libuv error
  // code; reading has been stopped before the last two are delivered.
  virtual void OnRead(ssize_t nread, const uv_buf_t* buf) = 0;
  // The connect started by StartConnect finished: 0, or a negative libuv error code.
  virtual void OnConnect(int /*status*/) {}
  // TLS connections only: decrypted bytes (n > 0, `data` valid until return) or the end of the
  // stream (n < 0: UV_EOF after close_notify or a socket EOF, or a socket error), exactly as a
  // plain read callback would see them.
  virtual void OnPlaintext(ssize_t n, const char* data) = 0;
  // TLS connections only: the session failed (bad handshake, failed verification, corrupt
  // record). Any alert has been flushed; the implementation closes the connection.
  virtual void OnTlsError(const absl::Status& status) = 0;
  // TLS connections only: the handshake just completed.
  virtual void OnTlsHandshakeDone() {}
  // Starts (or stops) delivering reads to OnRead.
  void ReadStart();
  void ReadStop();
  // Creates a non-blocking socket, opens it and starts connecting to `addr`. 0 when the connect
  // is under way (OnConnect reports how it ends; writes queue until then), else a libuv error
  // code and nothing was opened.
  int StartConnect(const sockaddr* addr, socklen_t len);
  void SetNoDelay();
  // Drives a TLS read callback: feeds ciphertext, flushes what the session wants to send, and
  // delivers plaintext to OnPlaintext until the session needs more input.
  void ReadTls(ssize_t nread, const uv_buf_t* buf);
  // Writes whatever ciphertext the session has produced (handshake, records, alerts).
  void FlushTls();
  // Sends close_notify (once, after the handshake) ahead of a FIN or close.
  void SendCloseNotify();
  // Writes bytes to the socket as they are (ciphertext on TLS connections); gathered while
  // corked.
  bool WriteRaw(const uv_buf_t* bufs, unsigned n);
  // Writes now: a direct write first, copying only what the kernel did not take.
  bool WriteNow(const uv_buf_t* bufs, unsigned n);
  // A non-blocking send of `bufs`: bytes taken (possibly fewer than given), UV_EAGAIN when the
  // socket is full, writes are queued or the connect is still pending, or another negative
  // libuv error.
  int TrySend(const uv_buf_t* bufs, unsigned n);
  static void OnHandleClosed(uv_handle_t* h);

  Worker* worker_;
  bool closing_ = false;
  bool reading_ = false;
  bool tls_handshake_seen_ = false;
  // Plaintext written while the TLS handshake is still running (held inside the session).
  uint32_t tls_queued_ = 0;
  std::unique_ptr<tls::TlsSession> tls_;  // null for plain TCP

  // Handles not yet closed: the poll handle (counted from construction, see Close) plus any a
  // subclass adds.
  int open_handles_ = 1;

 private:
  static void OnPollEvent(uv_poll_t* p, int status, int events);
  void HandlePoll(int status, int events);
  // Asks libuv for the events the connection's state needs (a no-op when they are unchanged:
  // every uv_poll_start/stop costs epoll_ctl calls). Deferred while HandlePoll runs.
  void UpdatePoll();
  void ReadOnce(bool to_end);
  void FinishConnect();
  // Sends from the queue until it is empty or the socket is full; runs OnWriteDone for every
  // write completed, and the pending shutdown once the queue is empty.
  void FlushQueue();
  // The FIN (and the close, for StartShutdown) once nothing is queued.
  void FinishShutdown();
  void FreeQueue();

  uv_poll_t poll_;
  int fd_ = -1;          // -1 until Open, and again once closed
  int poll_events_ = 0;  // what poll_ was last started with
  // Queued writes, oldest first, and their unsent bytes.
  WriteReq* queue_head_ = nullptr;
  WriteReq* queue_tail_ = nullptr;
  size_t queued_bytes_ = 0;
  int delayed_connect_error_ = 0;  // a connect refused at once, reported through OnConnect
  bool connecting_ = false;
  bool in_poll_ = false;
  bool write_failed_ = false;
  bool shutdown_pending_ = false;  // FIN once the queue is empty
  bool close_after_shutdown_ = false;
  bool write_shut_ = false;  // FIN sent
};

// One pooled or fresh connection to an upstream endpoint.
class UpstreamConn final : public Conn {
 public:
  // Why an exchange failed without a usable response (what retries and outlier detection use).
  enum class FailureKind : uint8_t { kNone, kConnect, kReset, kProtocol };

  UpstreamConn(Worker* worker, const CompiledEndpoint& endpoint, const CompiledCluster& cluster,
               IdleList* pool, ClusterCounters* counters);

  // Starts the non-blocking connect; an error status if it could not even start. Writes may be
  // queued right away: the connection holds them until it is established.
  int Connect(uint64_t connect_timeout_ms);
  // Binds to a downstream exchange (fresh or taken from the pool). `upgrade`: the request asks
  // for a protocol switch, so a 101 answer turns the connection into a raw tunnel.
  void Attach(DownstreamConn* down, bool head_request, bool upgrade = false);
  // The downstream side went away: the exchange is abandoned and the connection closed.
  void Abandon();
  // The exchange ended normally; the worker pools or closes the connection next.
  void ClearDownstream() { down_ = nullptr; }
  void StartReading();
  void StopReading();
  // Parks the connection in the pool with an idle timeout.
  void EnterIdle();

  void OnWriteDone(int status) override;
  // Flushes queued writes, sends FIN, then closes (bounded by a linger timer).
  void ShutdownThenClose();

  const std::string& key() const { return key_; }
  IdleList* pool() const { return pool_; }
  bool reused() const { return requests_ > 1; }
  bool idle() const { return idle_; }
  uint32_t max_idle() const { return max_idle_; }
  bool exhausted() const { return max_requests_ != 0 && requests_ >= max_requests_; }
  bool got_response_bytes() const { return got_bytes_; }
  bool connected() const { return connected_; }
  FailureKind failure_kind() const { return failure_; }
  bool tunnel() const { return tunnel_; }

  // Response head as parsed. The views are valid only during DownstreamConn::OnUpstreamHeaders:
  // they usually point into the read buffer the head arrived in (see SpillHead).
  int status() const { return status_; }
  std::string_view reason() const { return reason_view_; }
  const std::vector<std::pair<std::string_view, std::string_view>>& headers() const {
    return header_views_;
  }
  // ClassifyHeader() of each header, parallel to headers().
  const std::vector<uint16_t>& header_classes() const { return header_classes_; }
  // Fast-path heads only (else null): where the last header line ends. The header lines are
  // then contiguous and well-formed as received, line i running from headers()[i].first.data()
  // to the next line's name (or to this), so kept runs of them can be forwarded verbatim.
  const char* raw_headers_end() const { return fast_ ? raw_headers_end_ : nullptr; }
  // Fast-path heads only (else empty): the status line as received, CRLF included. It ends
  // where the first header line starts (a fast-path head has at least Content-Length).
  std::string_view raw_status_line() const {
    if (!fast_) return {};
    return std::string_view(raw_head_begin_,
                            static_cast<size_t>(header_views_[0].first.data() - raw_head_begin_));
  }
  // The Connection and Upgrade values (the last of each), empty when absent.
  std::string_view connection_header() const { return connection_header_; }
  std::string_view upgrade_header() const { return upgrade_header_; }
  bool has_content_length() const { return fast_ || (parser_.flags & F_CONTENT_LENGTH) != 0; }
  bool body_until_eof() const { return eof_body_; }
  bool keep_alive() const {
    return fast_ ? fast_keep_alive_ : llhttp_should_keep_alive(&parser_) != 0;
  }

 private:
  friend struct UpstreamCallbacks;
  void OnClose() override;
  void OnRead(ssize_t nread, const uv_buf_t* buf) override;
  void OnData(ssize_t nread, const char* data);
  void OnPlaintext(ssize_t n, const char* data) override { OnData(n, data); }
  void OnTlsError(const absl::Status& status) override;
  void OnTlsHandshakeDone() override;
  void Fail(int status, std::string message, FailureKind kind);
  void HandleMessageComplete(bool clean);
  // The response fast path (response_head.h): parses a whole simple head from one read without
  // llhttp. False when it declined (nothing consumed; llhttp parses the same bytes).
  bool TryFastHead(const char* data, size_t n);
  // Body bytes of a fast-path response; completes the message once Content-Length is reached.
  void OnFastBody(const char* data, size_t n);
  void EndPending();
  void OnConnect(int status) override;
  static void OnIdleTimer(uv_timer_t* t);
  void StartTimer(uint64_t ms, uv_timer_cb cb);
  void StopTimer() { uv_timer_stop(&timer_); }

  // Connect, idle and linger timeouts. (Client connections use the worker's TimerWheel
  // instead: there are many more of them, and most are idle.)
  uv_timer_t timer_;
  std::string key_;
  IdleList* pool_;  // where this connection waits while idle (owned by the Worker)
  std::shared_ptr<const tls::TlsClientContext> tls_ctx_;  // TLS clusters only
  std::string tls_server_name_;
  sockaddr_storage addr_;
  socklen_t addr_len_;
  uint32_t max_idle_;
  uint64_t idle_timeout_ms_;
  uint32_t max_requests_;
  ClusterCounters* counters_;  // owned by the Worker; counts this connection while open
  DownstreamConn* down_ = nullptr;
  bool connected_ = false;
  bool idle_ = false;
  bool head_request_ = false;
  bool got_bytes_ = false;
  bool message_complete_ = false;
  bool eof_body_ = false;
  bool interim_ = false;  // parsing a 1xx response, which is not forwarded
  bool upgrade_requested_ = false;
  bool tunnel_ = false;   // after a 101: raw bytes both ways, no more parsing
  bool pending_counted_ = false;  // counted in counters_->pending until connected
  bool idle_timer_armed_ = false;  // the timer runs OnIdleTimer (see EnterIdle)
  uint64_t idle_due_ = 0;          // uv_now() ms when an idle connection times out
  FailureKind failure_ = FailureKind::kNone;
  uint32_t requests_ = 0;

  llhttp_t parser_;
  int status_ = 0;
  // Response head storage. A head that arrives within one read (nearly all of them) is not
  // copied: its pieces are offsets into that read's buffer (head_in_buffer_). When a read ends
  // with the head incomplete, or a piece is not contiguous with the one it continues, the head
  // so far is copied into head_ (SpillHead) and later pieces are appended there.
  std::string head_;
  const char* exec_base_ = nullptr;  // the buffer of the llhttp_execute call in progress
  bool head_in_buffer_ = false;
  bool in_head_ = false;  // between message begin and headers complete
  uint32_t head_bytes_ = 0;
  struct Span {
    uint32_t name_off, name_len, value_off, value_len;
  };
  std::vector<Span> spans_;
  uint32_t reason_off_ = 0, reason_len_ = 0;
  std::string_view reason_view_;
  const char* HeadBase() const { return head_in_buffer_ ? exec_base_ : head_.data(); }
  // Adds the piece [at, at+n) to the text at (*off, *len); returns false when the head grew
  // beyond its limit.
  bool AddHeadPiece(uint32_t* off, uint32_t* len, const char* at, size_t n);
  void SpillHead();
  std::vector<std::pair<std::string_view, std::string_view>> header_views_;
  std::vector<uint16_t> header_classes_;
  std::string_view connection_header_;
  std::string_view upgrade_header_;
  bool new_field_ = true;
  // Fast path state. llhttp keeps no trace of a fast-path message: it is left at a message
  // boundary, and llhttp_mid_message_ says when it is not (so that the rest of a message it
  // started, or anything after an interim response, stays with llhttp).
  bool fast_ = false;             // the current response's head was parsed by the fast path
  bool fast_keep_alive_ = false;
  const char* raw_head_begin_ = nullptr;   // valid during OnUpstreamHeaders only
  const char* raw_headers_end_ = nullptr;  // valid during OnUpstreamHeaders only
  bool llhttp_mid_message_ = false;
  uint64_t fast_body_left_ = 0;  // body bytes still to come; nonzero only inside a fast body
};

// The parser and buffers of the request in progress on a DownstreamConn. Taken from a per-worker
// pool when the connection receives bytes and returned once it is idle again with nothing
// unparsed (DownstreamConn::MaybeReleaseRequest), so that an idle keep-alive connection holds no
// request memory — not even a parser — and busy ones reuse warm buffers without allocating.
struct RequestState {
  llhttp_t parser;  // initialised on every acquire
  // The request head, as offsets into `head` (stable while `head` grows).
  std::string head;
  struct Span {
    uint32_t name_off, name_len, value_off, value_len;
  };
  std::vector<Span> spans;
  std::vector<std::pair<std::string_view, std::string_view>> header_views;
  std::vector<uint16_t> header_classes;  // ClassifyHeader(), parallel to header_views
  std::string up_head;        // the upstream request head (kept for retries)
  std::string upgrade_value;  // the client's Upgrade header, forwarded on tunnel requests
  std::string replay;         // framed request body bytes, for a retry
  std::string last_error;     // body of the 5xx answer if retries run out
  // Bytes read but not yet parsed: the next pipelined request(s).
  std::string pending_in;

  // Parse position (obs-fold detection): a header value arriving in two pieces is only legal
  // when the pieces are adjacent in the input or split exactly at a read boundary.
  const char* value_end = nullptr;
  const char* buf_begin = nullptr;
  const char* buf_end = nullptr;

  // The exchange.
  TableRef* table_ref = nullptr;
  const CompiledRoute* route = nullptr;
  uint32_t cluster = 0;
  uint32_t endpoint = 0;
  uint64_t header_bytes = 0;
  uint64_t body_bytes = 0;
  uint64_t request_deadline = 0;  // uv_now() ms
  uint64_t try_deadline = 0;      // uv_now() ms; 0 = no per-try timeout armed
  uint32_t attempts = 0;
  int last_error_status = 503;
};

// One client connection. Requests are handled one at a time (pipelined requests wait, parsed
// but unprocessed, in RequestState::pending_in), with both bodies streamed.
//
// Memory: an idle keep-alive connection is this object alone (the TCP handle, a TimerWheel node
// and a few flags), which is what thousands of idle clients cost; everything a request needs
// lives in its RequestState.
class DownstreamConn final : public Conn, public TimerWheel::Node {
 public:
  explicit DownstreamConn(Worker* worker);
  ~DownstreamConn() override;
  // Called once after the accepted socket was opened (Conn::Open). `tls`: the listener's
  // context, or null for plain HTTP. `peer`: the client's address as accept returned it.
  void Start(const tls::TlsServerContext* tls, const sockaddr* peer);
  // Drain: close now if idle, else after the current response.
  void BeginDrain();
  // The worker's TimerWheel reached this connection's deadline.
  void OnTimeout();

  void OnWriteDone(int status) override;

  // Events from the upstream side of the current exchange.
  void OnUpstreamHeaders(UpstreamConn* up);
  void OnUpstreamBody(const char* data, size_t len);
  void OnUpstreamComplete(UpstreamConn* up, bool reusable);
  void OnUpstreamError(UpstreamConn* up, int status, std::string_view message);
  void OnUpstreamWritable();
  // Tunnel (after a 101): bytes from the upstream, and the upstream's end of the tunnel.
  void OnTunnelData(const char* data, size_t len);
  void OnTunnelClosed();

  // Parser callbacks (invoked through static trampolines).
  int OnMessageBegin();
  int OnHeaderField(const char* at, size_t len);
  int OnHeaderFieldComplete();
  int OnHeaderValue(const char* at, size_t len);
  int OnHeaderValueComplete();
  int OnUrl(const char* at, size_t len);
  int OnHeadersComplete();
  int OnBody(const char* at, size_t len);
  int OnMessageComplete();

 private:
  void OnClose() override;
  void OnRead(ssize_t nread, const uv_buf_t* buf) override;
  void OnData(ssize_t nread, const char* data);
  void OnPlaintext(ssize_t n, const char* data) override { OnData(n, data); }
  void OnTlsError(const absl::Status& status) override;
  void OnTlsHandshakeDone() override;
  void Process(const char* data, size_t len);
  // Takes a RequestState (with a fresh parser) when none is held.
  void AcquireRequest();
  // Returns the RequestState when the connection is idle with nothing unparsed. Only outside
  // the parser.
  void MaybeReleaseRequest();
  size_t pending_size() const { return rq_ != nullptr ? rq_->pending_in.size() : 0; }
  void UpdateReading();
  void CloseAfterFlush();

  // Request handling.
  int Dispatch();
  int SendLocal(int status, std::string_view body, bool close, std::string_view extra = {},
                std::string_view content_type = "text/plain; charset=utf-8");
  int Fail(int status, std::string_view body);  // a local error that closes the connection
  // Picks an endpoint (skipping ejected and unhealthy ones, and `avoid` when there is a choice)
  // and sends the request head (and any replayable body) on a pooled or fresh connection.
  // Returns false with `why` set when no attempt could start.
  bool StartUpstream(bool is_retry, bool fresh, std::string_view* why);
  uint32_t PickEndpoint(bool is_retry, int avoid);
  bool MayRetry();
  void Retry();  // starts the next attempt or answers with the last failure
  void RecordOutcome(uint32_t endpoint, int status, bool connect_failure);
  void StartTunnel();
  void ArmTimer();
  // (Re)sets the connection's one timeout to `ms` from now; OnTimeout runs when it passes.
  void SetTimeout(uint64_t ms);
  void EndRequestCounts();
  void BuildUpstreamHead(const CompiledCluster& cluster);
  void ResponseDone();
  void FinishExchange();
  void ResumePending();
  void EndActiveCount();
  std::string_view RequestPath() const;
  std::string_view HeaderValue(std::string_view name) const;
  std::string_view HostHeader() const;  // the (only) Host value
  void ReleaseTable();
  void RecordStatus(int status);
  // The client's address as text ("192.0.2.1", "2001:db8::1"), appended to `out`.
  void AppendClientIp(std::string& out) const;

  // The current request (null while idle).
  std::unique_ptr<RequestState> rq_;
  UpstreamConn* up_ = nullptr;
  uint64_t timeout_due_ = 0;  // uv_now() ms when the current timeout passes
  uint32_t url_len_ = 0;

  // The client's address, binary (4 or 16 bytes of client_addr_).
  uint8_t client_addr_[16] = {};
  uint8_t client_addr_len_ = 0;

  enum class Phase : uint8_t { kIdle, kHeaders, kActive };
  Phase phase_ = Phase::kIdle;
  uint8_t http_minor_ = 1;
  // Flags, one bit each: thousands of idle connections make every byte count.
  bool request_done_ : 1 = false;
  bool response_started_ : 1 = false;
  bool response_done_ : 1 = false;
  bool close_after_ : 1 = false;  // close once the current response is written
  bool draining_ : 1 = false;
  bool read_blocked_ : 1 = false;  // back-pressure from the upstream side
  bool shutdown_started_ : 1 = false;
  bool discard_body_ : 1 = false;  // request body after a local response: read and dropped
  bool req_chunked_ : 1 = false;   // request body forwarded with chunked framing
  bool resp_chunked_ : 1 = false;  // response body re-framed as chunked to the client
  bool resp_no_body_ : 1 = false;
  bool retried_ : 1 = false;
  bool idempotent_ : 1 = false;
  bool replayable_ : 1 = false;  // replay holds every request body byte sent so far
  bool upgrade_requested_ : 1 = false;
  bool tunnel_ : 1 = false;
  bool counted_cluster_ : 1 = false;  // counted in ClusterCounters::active
  bool retry_in_flight_ : 1 = false;  // counted in ClusterCounters::retries_active
  bool started_ : 1 = false;
  bool eof_ : 1 = false;
  bool client_keep_alive_ : 1 = true;
  bool counted_active_ : 1 = false;
  bool head_request_ : 1 = false;
  bool expect_continue_ : 1 = false;
  bool new_field_ : 1 = true;
  bool in_value_piece_ : 1 = false;
  bool value_piece_at_buf_end_ : 1 = false;
};

// A worker thread's state. Constructed and initialised on the creating thread; from Run() on,
// owned by the worker thread.
class Worker {
 public:
  Worker(int id, const ProxyLimits& limits);
  ~Worker();

  // Initialises the loop and async handles (creating thread).
  absl::Status Init();
  // Adopts a bound, non-listening socket for one listener and starts listening (creating
  // thread, before Run).
  absl::Status AddListener(int fd, std::shared_ptr<const tls::TlsServerContext> tls = nullptr);
  // Sets the first table before the thread starts.
  void SetInitialTable(std::shared_ptr<const RouteTable> table);
  // Thread body: runs the loop until drained, then closes it.
  void Run();

  // Any thread: posts a new table; update->Arrive() runs once this worker has swapped.
  void PostTable(std::shared_ptr<TableUpdate> update);
  // Any thread: begin a graceful drain bounded by `deadline`.
  void PostDrain(absl::Duration deadline);

  const WorkerStats& stats() const { return stats_; }
  int loop_close_result() const { return loop_close_result_; }

  // ---- Loop thread only ----
  WorkerStats& mutable_stats() { return stats_; }
  const ProxyLimits& limits() const { return limits_; }
  // The limits' timeouts in milliseconds (at least 1), converted once.
  uint64_t header_timeout_ms() const { return header_timeout_ms_; }
  uint64_t idle_timeout_ms() const { return idle_timeout_ms_; }
  uint64_t request_timeout_ms() const { return request_timeout_ms_; }
  uv_loop_t* loop() { return &loop_; }
  bool draining() const { return draining_; }
  TableRef* AcquireTable();  // nullptr when no table yet
  void ReleaseTable(TableRef* ref);
  // A connection from the pool, or a new one (connect started). Never null; failures arrive as
  // OnUpstreamError.
  //
  // Returns nullptr (with *overflow naming the limit) when no idle connection is available and
  // a circuit breaker (max_connections, max_pending_requests) forbids a new one.
  UpstreamConn* AcquireUpstream(const CompiledCluster& cluster, const CompiledEndpoint& ep,
                                IdleList* pool, ClusterCounters* counters, bool fresh,
                                int* connect_error, const char** overflow);
  // Returns an exchange's connection: pooled when `reusable`, else closed.
  void ReleaseUpstream(UpstreamConn* up, bool reusable);
  void RemoveIdle(UpstreamConn* up);
  void Forget(DownstreamConn* c);
  void Forget(UpstreamConn* c);
  void Track(UpstreamConn* c) { upstreams_.insert(c); }
  uint64_t NextRandom();
  // Writes `bytes` random bytes as 2 * `bytes` lower-case hex digits to `out`.
  void FillRandomHex(char* out, size_t bytes);
  // Any thread: publishes the active health checker's latest verdicts.
  void PostHealth(std::shared_ptr<const HealthSnapshot> health);
  // Passive outlier detection: an endpoint's answer (status, or a connect failure) was seen.
  void RecordEndpointOutcome(const CompiledCluster& cluster, TableRef::ClusterState& state,
                             uint32_t endpoint, int status, bool connect_failure);
  uint64_t now_ms() { return uv_now(&loop_); }
  // The client connections' timeouts.
  TimerWheel& timeouts() { return timeouts_; }

  // Shared read buffer: reads are parsed synchronously inside the read callback, so one buffer
  // per loop serves every connection.
  char* read_buffer() { return read_buf_.get(); }
  static size_t read_buffer_size();
  // Scratch strings for TLS: plaintext gathered from several buffers, and ciphertext taken from
  // a session. Safe to share: both are consumed before the call that filled them returns
  // (WriteRaw copies what the kernel does not take at once).
  std::string& tls_plain_scratch() { return tls_plain_scratch_; }
  std::string& tls_cipher_scratch() { return tls_cipher_scratch_; }
  // Scratch for building what a connection writes (a response head, a chunk header, a local
  // answer). Safe to share: Write() consumes it before returning.
  std::string& out_scratch() { return out_scratch_; }
  // Per-request buffers (see RequestState), pooled.
  std::unique_ptr<RequestState> AcquireRequestState();
  void ReleaseRequestState(std::unique_ptr<RequestState> rq);
  // Write batching (Conn::Cork): the corked connection, if any, and its gathered bytes.
  Conn* corked() const { return corked_; }
  void set_corked(Conn* c) { corked_ = c; }
  std::string& cork_buffer() { return cork_buf_; }

  // Pool of queued writes (with their copy buffers) to avoid per-write allocation.
  WriteReq* NewWriteReq();
  void FreeWriteReq(WriteReq* w);

 private:
  // A listening socket watched by a uv_poll_t; accepts run in OnAcceptable. `retry` resumes
  // accepting after the process ran out of file descriptors (see PauseAccepting).
  struct Listener {
    uv_poll_t poll;
    uv_timer_t retry;
    int fd = -1;  // -1 until the handles are open, and again once they are closed
    Worker* worker = nullptr;
    std::shared_ptr<const tls::TlsServerContext> tls;  // null = plain HTTP
  };
  static void OnAcceptable(uv_poll_t* p, int status, int events);
  void PauseAccepting(Listener* l, int error);
  void CloseListener(Listener* l);
  static void OnAsync(uv_async_t* a);
  static void OnDrainDeadline(uv_timer_t* t);
  void HandleMessages();
  void StartDrain(absl::Duration deadline);
  void MaybeFinishDrain();
  void SwapTable(std::shared_ptr<const RouteTable> table);
  void ApplyHealth(TableRef* ref);

  int id_;
  ProxyLimits limits_;
  uint64_t header_timeout_ms_;
  uint64_t idle_timeout_ms_;
  uint64_t request_timeout_ms_;
  uv_loop_t loop_;
  uv_async_t async_;
  uv_timer_t drain_timer_;
  TimerWheel timeouts_;
  bool loop_initialized_ = false;
  std::vector<std::unique_ptr<Listener>> listeners_;
  WorkerStats stats_;
  int loop_close_result_ = -1;

  // Cross-thread inbox.
  absl::Mutex mu_;
  std::vector<std::shared_ptr<TableUpdate>> inbox_ ABSL_GUARDED_BY(mu_);
  bool drain_requested_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration drain_deadline_ ABSL_GUARDED_BY(mu_);
  bool inbox_open_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<const HealthSnapshot> health_inbox_ ABSL_GUARDED_BY(mu_);

  // Loop-thread state.
  TableRef* current_ = nullptr;
  bool draining_ = false;
  bool shut_down_ = false;
  uint64_t accept_error_logged_ms_ = 0;  // uv_now() of the last accept error logged; 0 = never
  absl::flat_hash_set<DownstreamConn*> downstreams_;
  absl::flat_hash_set<UpstreamConn*> upstreams_;
  // Keyed by pool key; looked up when a table is installed, not per request (TableRef pools).
  absl::flat_hash_map<std::string, std::unique_ptr<IdleList>> idle_;
  // State that outlives table swaps; entries are never erased while the worker runs, so the
  // raw pointers held by TableRefs and connections stay valid.
  absl::flat_hash_map<std::string, std::unique_ptr<EndpointState>> endpoint_states_;
  absl::flat_hash_map<std::string, std::unique_ptr<ClusterCounters>> cluster_counters_;
  std::shared_ptr<const HealthSnapshot> health_;
  std::vector<std::unique_ptr<WriteReq>> free_writes_;
  std::unique_ptr<char[]> read_buf_;
  std::string tls_plain_scratch_;
  std::string tls_cipher_scratch_;
  std::string out_scratch_;
  std::vector<std::unique_ptr<RequestState>> free_requests_;
  Conn* corked_ = nullptr;
  std::string cork_buf_;
  uint64_t rng_state_;
};

}  // namespace flexgate::dataplane::internal
