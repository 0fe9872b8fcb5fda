// Worker: the loop, listeners, cross-thread inbox, connection pools, and the connections' socket
// I/O (Conn: reads, the write queue, connect, shutdown and close over uv_poll_t).
#include "dataplane/proxy/worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace flexgate::dataplane::internal {
namespace {

constexpr size_t kReadBufferSize = 64 * 1024;
// Write requests keep their copy buffer for reuse unless it grew beyond this.
constexpr size_t kMaxPooledWriteCapacity = 64 * 1024;
constexpr size_t kMaxPooledWrites = 256;
// Pooled request buffers: how many, and the largest buffer a pooled one may keep.
constexpr size_t kMaxPooledRequests = 256;
constexpr size_t kMaxPooledRequestBytes = 16 * 1024;
// Gathered bytes of a corked connection; a write that would exceed this goes out at once,
// together with what was gathered, so that large bodies are never copied just to batch them.
constexpr size_t kMaxCorked = 16 * 1024;
// Queued writes sent by one sendmsg(2) when a connection's socket becomes writable.
constexpr unsigned kMaxFlushIov = 16;
// Connections accepted per readiness event of a listener, so that a flood on one listener
// cannot starve the loop's other work (the rest waits for the next loop iteration).
constexpr int kMaxAcceptsPerEvent = 64;
// How long a listener stops accepting after the process ran out of file descriptors (or
// kernel memory): polling it meanwhile would spin, since the pending connection keeps it
// readable.
constexpr uint64_t kAcceptPauseMs = 100;
// At most one log line per worker per this many milliseconds about failing accepts.
constexpr uint64_t kAcceptErrorLogIntervalMs = 60 * 1000;

// The socket calls below go through syscall(2) rather than glibc's recv/send/sendmsg/accept4
// wrappers: those are cancellation points, and in a multi-threaded process every call then
// enables and disables asynchronous cancellation (locked atomic operations), a measurable part
// of the cost per proxied request. Nothing here is ever cancelled. Each returns what the
// system call returns, with errno set on -1, and retries EINTR.
ssize_t SysRecv(int fd, char* buf, size_t len) {
  ssize_t r;
  do {
    r = ::syscall(SYS_recvfrom, fd, buf, len, 0, nullptr, nullptr);
  } while (r < 0 && errno == EINTR);
  return r;
}

ssize_t SysSend(int fd, const iovec* iov, unsigned n) {
  ssize_t r;
  do {
    if (n == 1) {
      r = ::syscall(SYS_sendto, fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL, nullptr, 0);
    } else {
      msghdr m{};
      m.msg_iov = const_cast<iovec*>(iov);
      m.msg_iovlen = std::min<unsigned>(n, IOV_MAX);
      r = ::syscall(SYS_sendmsg, fd, &m, MSG_NOSIGNAL);
    }
  } while (r < 0 && errno == EINTR);
  return r;
}

int SysAccept(int fd, sockaddr_storage* peer, socklen_t* len) {
  long r;
  do {
    *len = sizeof(*peer);
    r = ::syscall(SYS_accept4, fd, peer, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  return static_cast<int>(r);
}

// Edge-triggered readiness for a connection's poll handle. libuv 1.44 polls level-triggered only,
// which costs every socket that was reported ready a second look (a poll of the socket and two
// list operations under the epoll lock) in the next epoll_wait, about 3% of the CPU of a
// proxied keep-alive request. libuv passes a watcher's `pevents` to epoll_ctl as they are, so
// the flag is added there, after uv_poll_start, and taken out again before any libuv call that
// stops or restarts the watcher (uv_poll_start, uv_poll_stop, uv_close): libuv decides whether
// a watcher is still registered by `pevents` being zero, and a stray flag would leave a closed
// handle registered. Only for the libuv this was checked against; any other keeps
// level-triggered polling, which the I/O code handles as well (see ReadOnce).
void EdgeTriggered(uv_poll_t* p, bool on) {
#if UV_VERSION_MAJOR == 1 && UV_VERSION_MINOR == 44 && defined(__linux__)
  if (!on) {
    p->io_watcher.pevents &= ~static_cast<unsigned>(EPOLLET);
  } else if (p->io_watcher.pevents != 0) {
    p->io_watcher.pevents |= static_cast<unsigned>(EPOLLET);
  }
#else
  (void)p;
  (void)on;
#endif
}

uint64_t DurationToMs(absl::Duration d) {
  int64_t ms = absl::ToInt64Milliseconds(d);
  return ms > 0 ? static_cast<uint64_t>(ms) : 1;
}

}  // namespace

void WorkerStats::AddTo(ProxyStats& out) const {
  auto r = [](const Counter& c) { return c.load(std::memory_order_relaxed); };
  out.downstream_connections_total += r(downstream_connections_total);
  out.downstream_connections_active += r(downstream_connections_active);
  out.requests_total += r(requests_total);
  out.responses_1xx += r(responses[1]);
  out.responses_2xx += r(responses[2]);
  out.responses_3xx += r(responses[3]);
  out.responses_4xx += r(responses[4]);
  out.responses_5xx += r(responses[5]);
  out.upstream_connections_total += r(upstream_connections_total);
  out.upstream_connect_failures += r(upstream_connect_failures);
  out.upstream_requests_total += r(upstream_requests_total);
  out.upstream_timeouts += r(upstream_timeouts);
  out.upstream_retries += r(upstream_retries);
  out.bytes_received += r(bytes_received);
  out.bytes_sent += r(bytes_sent);
  out.route_table_swaps += r(route_table_swaps);
  out.bad_requests += r(bad_requests);
  out.upstream_per_try_timeouts += r(upstream_per_try_timeouts);
  out.retry_budget_exhausted += r(retry_budget_exhausted);
  out.outlier_ejections += r(outlier_ejections);
  out.circuit_breaker_rejections += r(circuit_breaker_rejections);
  out.upgrades_total += r(upgrades_total);
  out.upgrades_active += r(upgrades_active);
  out.downstream_tls_handshakes += r(downstream_tls_handshakes);
  out.downstream_tls_handshake_failures += r(downstream_tls_handshake_failures);
  out.upstream_tls_failures += r(upstream_tls_failures);
}

std::string HealthSnapshot::Key(std::string_view cluster, std::string_view endpoint_key) {
  std::string k(cluster);
  k.push_back('|');
  k.append(endpoint_key);
  return k;
}

// ---------------------------------------------------------------------------------------------
// Conn

Conn::Conn(Worker* worker) : worker_(worker) {}

Conn::~Conn() { FreeQueue(); }

int Conn::Open(int fd) {
  int rc = uv_poll_init(worker_->loop(), &poll_, fd);
  if (rc != 0) return rc;
  poll_.data = this;
  fd_ = fd;
  return 0;
}

void Conn::SetNoDelay() {
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void Conn::Close() {
  if (closing_) return;
  // Gathered bytes were accepted by Write(): they get the same best-effort direct write an
  // uncorked write would have had.
  Uncork();
  // Best effort: a close_notify that fits in the socket buffer tells the peer this end was
  // deliberate; whatever the kernel does not take is dropped with the handle.
  if (tls_ != nullptr) SendCloseNotify();
  closing_ = true;
  reading_ = false;
  OnClose();
  FreeQueue();
  if (fd_ < 0) {
    // Never opened (an upstream connect that could not start). The handle counted for it is
    // released here; a subclass handle closed by OnClose keeps the count above zero until its
    // own close callback, which frees `this` from the loop.
    --open_handles_;
    if (open_handles_ <= 0) std::abort();  // nothing would ever free `this`
    return;
  }
  // uv_close stops the poll handle (and drops its pending events) at once, so the descriptor
  // can be closed now: the peer sees the end without waiting for the close callback, and a new
  // socket may reuse the number right away.
  EdgeTriggered(&poll_, false);
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), OnHandleClosed);
  ::close(fd_);
  fd_ = -1;
}

bool Conn::StartShutdown() {
  Uncork();  // the FIN follows every byte written so far
  // close_notify goes out after the last bytes and before the FIN.
  if (tls_ != nullptr) SendCloseNotify();
  if (closing_ || fd_ < 0 || write_shut_) {
    // Already half-closed (or never connected): nothing to wait for.
    Close();
    return false;
  }
  // A FIN already pending (ShutdownWrite) now closes the connection too once it is sent.
  shutdown_pending_ = true;
  close_after_shutdown_ = true;
  if (queue_head_ == nullptr && !connecting_) {
    FinishShutdown();  // closes
    return false;
  }
  UpdatePoll();
  return true;
}

void Conn::ShutdownWrite() {
  if (closing_) return;
  Uncork();
  if (tls_ != nullptr) SendCloseNotify();
  if (fd_ < 0 || shutdown_pending_ || write_shut_) return;
  shutdown_pending_ = true;
  if (queue_head_ == nullptr && !connecting_) {
    FinishShutdown();
    return;
  }
  UpdatePoll();
}

void Conn::FinishShutdown() {
  shutdown_pending_ = false;
  write_shut_ = true;
  ::shutdown(fd_, SHUT_WR);
  // Like libuv's shutdown callback, the close follows whether or not the FIN could be sent.
  if (close_after_shutdown_) Close();
}

void Conn::OnHandleClosed(uv_handle_t* h) {
  Conn* c = static_cast<Conn*>(h->data);
  if (--c->open_handles_ == 0) delete c;
}

void Conn::ReadStart() {
  if (reading_ || closing_ || fd_ < 0) return;
  reading_ = true;
  UpdatePoll();
}

void Conn::ReadStop() {
  if (!reading_) return;
  reading_ = false;
  UpdatePoll();
}

void Conn::UpdatePoll() {
  if (in_poll_ || closing_ || fd_ < 0) return;
  // UV_DISCONNECT (EPOLLRDHUP): with edge-triggered polling, a FIN that arrived together with
  // the last bytes raises no edge of its own after they are read; this says it is there.
  int want = reading_ ? UV_READABLE | UV_DISCONNECT : 0;
  if (connecting_ || queue_head_ != nullptr || shutdown_pending_) want |= UV_WRITABLE;
  if (want == poll_events_) return;
  poll_events_ = want;
  EdgeTriggered(&poll_, false);
  if (want == 0) {
    uv_poll_stop(&poll_);
  } else {
    uv_poll_start(&poll_, want, OnPollEvent);
    EdgeTriggered(&poll_, true);
  }
}

void Conn::OnPollEvent(uv_poll_t* p, int status, int events) {
  static_cast<Conn*>(p->data)->HandlePoll(status, events);
}

void Conn::HandlePoll(int status, int events) {
  if (closing_) return;
  if (status < 0) {
    // POLLERR: libuv has stopped the handle and reports UV_EBADF instead of the socket's
    // error. The calls below (connect check, recv, send) fetch the real error.
    poll_events_ = 0;
    events = UV_READABLE | UV_WRITABLE | UV_DISCONNECT;
  } else if (events == 0) {
    // POLLHUP alone (no direction to report): the next call on the socket says what happened.
    events = UV_READABLE | UV_WRITABLE | UV_DISCONNECT;
  }
  // Callbacks below may start or stop reading and queue writes; the poll handle is updated
  // once, at the end.
  in_poll_ = true;
  if (connecting_) {
    if (events & UV_WRITABLE) FinishConnect();
  } else {
    // Read before write, as libuv streams do.
    if ((events & (UV_READABLE | UV_DISCONNECT)) && reading_) {
      ReadOnce((events & UV_DISCONNECT) != 0);
    }
    if (!closing_ && (events & UV_WRITABLE)) FlushQueue();
  }
  in_poll_ = false;
  UpdatePoll();
}

void Conn::ReadOnce(bool to_end) {
  // One recv per readiness event unless it filled the buffer: a short read means the socket is
  // drained (the next byte to arrive raises a new edge), while a full one may have left more
  // behind, which an edge-triggered poll would not report again. Reading on until EAGAIN would
  // cost one more system call per request. `to_end`: the peer has shut down its side, so the
  // reads go on to the end of the stream, which raises no further edge.
  char* buf = worker_->read_buffer();
  const size_t size = Worker::read_buffer_size();
  uv_buf_t b = uv_buf_init(buf, static_cast<unsigned>(size));
  ssize_t n;
  while ((n = SysRecv(fd_, buf, size)) > 0) {
    OnRead(n, &b);
    if (!reading_ || closing_) return;
    if (static_cast<size_t>(n) < size && !to_end) return;
  }
  int err = n == 0 ? UV_EOF : uv_translate_sys_error(errno);
  if (err == UV_EAGAIN) return;
  // The end of the stream, or an error: reading stops before the callback, as with libuv.
  reading_ = false;
  OnRead(err, &b);
}

int Conn::StartConnect(const sockaddr* addr, socklen_t len) {
  int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return uv_translate_sys_error(errno);
  int rc = ::connect(fd, addr, len);
  int err = rc == 0 ? 0 : errno;
  if (err != 0 && err != EINPROGRESS && err != EINTR && err != ECONNREFUSED) {
    ::close(fd);
    return uv_translate_sys_error(err);
  }
  rc = Open(fd);
  if (rc != 0) {
    ::close(fd);
    return rc;
  }
  // Every outcome, even a connect that finished or was refused at once (loopback can do
  // both), is reported from the loop, never from inside this call: a refused socket reports
  // POLLHUP, a connected one POLLOUT.
  if (err == ECONNREFUSED) delayed_connect_error_ = UV_ECONNREFUSED;
  connecting_ = true;
  UpdatePoll();
  return 0;
}

void Conn::FinishConnect() {
  int status = delayed_connect_error_;
  if (status == 0) {
    int so_error = 0;
    socklen_t len = sizeof(so_error);
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) so_error = errno;
    if (so_error == EINPROGRESS) return;  // spurious wake-up: still connecting
    status = so_error == 0 ? 0 : uv_translate_sys_error(so_error);
  }
  connecting_ = false;
  OnConnect(status);
  if (closing_) return;
  if (status < 0) {
    // libuv cancels the writes queued behind a failed connect after its callback.
    bool had_queue = queue_head_ != nullptr;
    FreeQueue();
    write_failed_ = true;
    if (had_queue) OnWriteDone(UV_ECANCELED);
    return;
  }
  // Writes queued during the connect leave now, without waiting for another wake-up.
  FlushQueue();
}

void Conn::FreeQueue() {
  while (queue_head_ != nullptr) {
    WriteReq* w = queue_head_;
    queue_head_ = w->next;
    worker_->FreeWriteReq(w);
  }
  queue_tail_ = nullptr;
  queued_bytes_ = 0;
}

void Conn::FlushQueue() {
  while (queue_head_ != nullptr) {
    iovec iov[kMaxFlushIov];
    unsigned k = 0;
    size_t want = 0;
    for (WriteReq* w = queue_head_; w != nullptr && k < kMaxFlushIov; w = w->next) {
      iov[k].iov_base = w->data.data() + w->sent;
      iov[k].iov_len = w->data.size() - w->sent;
      want += iov[k].iov_len;
      ++k;
    }
    ssize_t r = SysSend(fd_, iov, k);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return;
      int err = uv_translate_sys_error(errno);
      // Reported once; nothing more is written on this connection.
      FreeQueue();
      write_failed_ = true;
      OnWriteDone(err);
      return;
    }
    size_t left = static_cast<size_t>(r);
    queued_bytes_ -= left;
    // Unlink what is complete before running any callback: OnWriteDone may write (appending
    // to the queue) or close (freeing it).
    WriteReq* done = nullptr;
    WriteReq** done_tail = &done;
    while (queue_head_ != nullptr) {
      WriteReq* w = queue_head_;
      size_t rest = w->data.size() - w->sent;
      if (left < rest) {
        w->sent += left;
        break;
      }
      left -= rest;
      queue_head_ = w->next;
      w->next = nullptr;
      *done_tail = w;
      done_tail = &w->next;
    }
    if (queue_head_ == nullptr) queue_tail_ = nullptr;
    while (done != nullptr) {
      WriteReq* w = done;
      done = w->next;
      worker_->FreeWriteReq(w);
      if (!closing_) OnWriteDone(0);
    }
    if (closing_) return;
    if (static_cast<size_t>(r) < want) return;  // the socket is full
  }
  if (shutdown_pending_) FinishShutdown();
}

bool Conn::Write(const uv_buf_t* bufs, unsigned n) {
  if (closing_) return false;
  if (tls_ == nullptr) return WriteRaw(bufs, n);
  absl::Status st;
  size_t total = 0;
  if (n == 1) {
    total = bufs[0].len;
    if (total == 0) return true;
    st = tls_->WritePlaintext(absl::string_view(bufs[0].base, bufs[0].len));
  } else {
    // One TLS record for the pieces of one logical write (a chunk header, its data and CRLF).
    std::string& plain = worker_->tls_plain_scratch();
    plain.clear();
    for (unsigned i = 0; i < n; ++i) plain.append(bufs[i].base, bufs[i].len);
    total = plain.size();
    if (total == 0) return true;
    st = tls_->WritePlaintext(absl::string_view(plain.data(), plain.size()));
  }
  if (!st.ok()) return false;
  if (!tls_->handshake_done()) {
    tls_queued_ += static_cast<uint32_t>(std::min<size_t>(total, UINT32_MAX - tls_queued_));
  }
  FlushTls();
  return true;
}

void Conn::FlushTls() {
  if (!tls_->HasCiphertext()) return;
  std::string& out = worker_->tls_cipher_scratch();
  out.clear();
  tls_->TakeCiphertext(&out);
  uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
  WriteRaw(&b, 1);
}

void Conn::SendCloseNotify() {
  if (closing_ || !tls_->handshake_done()) return;
  tls_->Shutdown();  // idempotent: a second call sends nothing
  FlushTls();
}

void Conn::ReadTls(ssize_t nread, const uv_buf_t* buf) {
  if (nread > 0) {
    tls_->FeedCiphertext(absl::string_view(buf->base, static_cast<size_t>(nread)));
  } else if (nread == UV_EOF) {
    tls_->FeedEof();
  } else {
    OnPlaintext(nread, nullptr);  // a socket error: nothing left to decrypt
    return;
  }
  // FeedCiphertext copied the bytes, so the shared read buffer is free to receive plaintext.
  // Everything the read made decryptable is delivered now, even if the handler stops reading
  // meanwhile: that bounds the excess by one read's worth (the buffer size), and nothing is
  // left stranded inside the session while the socket is not being read.
  char* scratch = worker_->read_buffer();
  const size_t capacity = Worker::read_buffer_size();
  for (;;) {
    size_t got = 0;
    tls::TlsSession::ReadResult r = tls_->ReadPlaintext(scratch, capacity, &got);
    if (!tls_handshake_seen_ && tls_->handshake_done()) {
      tls_handshake_seen_ = true;
      tls_queued_ = 0;  // queued plaintext was encrypted when the handshake finished
      FlushTls();
      OnTlsHandshakeDone();
      if (closing_) return;
    }
    if (tls_->HasCiphertext()) FlushTls();
    switch (r) {
      case tls::TlsSession::ReadResult::kData:
        OnPlaintext(static_cast<ssize_t>(got), scratch);
        if (closing_) return;
        continue;
      case tls::TlsSession::ReadResult::kWantMore:
        if (nread < 0) OnPlaintext(UV_EOF, nullptr);
        return;
      case tls::TlsSession::ReadResult::kClosed:
        // close_notify: the end of the peer's stream. The socket may still be open: stop
        // reading so that the handler's view (no more reads) matches libuv's.
        ReadStop();
        OnPlaintext(UV_EOF, nullptr);
        return;
      case tls::TlsSession::ReadResult::kError:
        if (nread < 0 && tls_->handshake_done()) {
          // The socket ended without close_notify. Peers commonly close that way after a
          // complete message, so it is an end of stream like a plain EOF; the HTTP framing
          // still tells a complete message from a cut one.
          OnPlaintext(UV_EOF, nullptr);
          return;
        }
        FlushTls();  // the alert, if TLS produced one
        OnTlsError(tls_->status());
        return;
    }
  }
}

bool Conn::Cork() {
  if (closing_ || tls_ != nullptr || worker_->corked() != nullptr) return false;
  worker_->set_corked(this);
  return true;
}

void Conn::Uncork() {
  if (worker_->corked() != this) return;
  worker_->set_corked(nullptr);
  std::string& gathered = worker_->cork_buffer();
  if (gathered.empty()) return;
  uv_buf_t b = uv_buf_init(gathered.data(), static_cast<unsigned>(gathered.size()));
  WriteNow(&b, 1);
  gathered.clear();
}

bool Conn::WriteRaw(const uv_buf_t* bufs, unsigned n) {
  if (closing_) return false;
  if (worker_->corked() != this) return WriteNow(bufs, n);
  std::string& gathered = worker_->cork_buffer();
  size_t total = 0;
  for (unsigned i = 0; i < n; ++i) total += bufs[i].len;
  if (gathered.size() + total <= kMaxCorked) {
    for (unsigned i = 0; i < n; ++i) gathered.append(bufs[i].base, bufs[i].len);
    return true;
  }
  if (gathered.empty()) return WriteNow(bufs, n);
  // Too much to gather: one write of the gathered bytes followed by these buffers.
  constexpr unsigned kMaxBufs = 8;
  uv_buf_t all[kMaxBufs];
  all[0] = uv_buf_init(gathered.data(), static_cast<unsigned>(gathered.size()));
  unsigned k = 1;
  bool ok = true;
  for (unsigned i = 0; i < n; ++i) {
    if (k == kMaxBufs) {
      ok = WriteNow(all, k) && ok;
      k = 0;
    }
    all[k++] = bufs[i];
  }
  ok = WriteNow(all, k) && ok;
  gathered.clear();
  return ok;
}

int Conn::TrySend(const uv_buf_t* bufs, unsigned n) {
  // Only when nothing is queued and no connect is pending, so that bytes never overtake queued
  // ones.
  if (connecting_ || queue_head_ != nullptr) return UV_EAGAIN;
  if (fd_ < 0 || write_failed_) return UV_EPIPE;
  // uv_buf_t is laid out as struct iovec on Unix (libuv guarantees it).
  ssize_t r = SysSend(fd_, reinterpret_cast<const iovec*>(bufs), n);
  if (r >= 0) return static_cast<int>(std::min<ssize_t>(r, INT_MAX));
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return UV_EAGAIN;
  return uv_translate_sys_error(errno);
}

bool Conn::WriteNow(const uv_buf_t* bufs, unsigned n) {
  if (closing_ || write_failed_ || write_shut_) return false;
  size_t total = 0;
  for (unsigned i = 0; i < n; ++i) total += bufs[i].len;
  if (total == 0) return true;
  // Most writes fit in the socket buffer: write directly and copy nothing.
  int r = TrySend(bufs, n);
  size_t done = 0;
  if (r >= 0) {
    done = static_cast<size_t>(r);
    if (done == total) return true;
  } else if (r != UV_EAGAIN) {
    return false;
  }
  WriteReq* w = worker_->NewWriteReq();
  for (unsigned i = 0; i < n; ++i) {
    size_t len = bufs[i].len;
    if (done >= len) {
      done -= len;
      continue;
    }
    w->data.append(bufs[i].base + done, len - done);
    done = 0;
  }
  queued_bytes_ += w->data.size();
  if (queue_tail_ != nullptr) {
    queue_tail_->next = w;
  } else {
    queue_head_ = w;
  }
  queue_tail_ = w;
  UpdatePoll();
  return true;
}

// ---------------------------------------------------------------------------------------------
// Worker

Worker::Worker(int id, const ProxyLimits& limits)
    : id_(id),
      limits_(limits),
      header_timeout_ms_(DurationToMs(limits.header_timeout)),
      idle_timeout_ms_(DurationToMs(limits.idle_timeout)),
      request_timeout_ms_(DurationToMs(limits.request_timeout)),
      read_buf_(new char[kReadBufferSize]) {
  std::random_device rd;
  rng_state_ = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(id) << 17;
}

Worker::~Worker() {
  if (loop_initialized_ && loop_close_result_ == -1) {
    // Never ran (Start failed part-way): close what Init and AddListener opened.
    uv_walk(
        &loop_,
        [](uv_handle_t* h, void*) {
          if (!uv_is_closing(h)) uv_close(h, nullptr);
        },
        nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    loop_close_result_ = uv_loop_close(&loop_);
  }
  // Listening sockets the loop never closed (their handles were closed above).
  for (auto& l : listeners_) {
    if (l->fd >= 0) ::close(l->fd);
  }
}

absl::Status Worker::Init() {
  int rc = uv_loop_init(&loop_);
  if (rc != 0) return absl::InternalError(absl::StrCat("uv_loop_init: ", uv_strerror(rc)));
  loop_initialized_ = true;
  loop_.data = this;
  uv_async_init(&loop_, &async_, OnAsync);
  async_.data = this;
  uv_timer_init(&loop_, &drain_timer_);
  drain_timer_.data = this;
  timeouts_.Init(
      &loop_, [](TimerWheel::Node* n, void*) { static_cast<DownstreamConn*>(n)->OnTimeout(); },
      nullptr);
  absl::MutexLock lock(&mu_);
  inbox_open_ = true;
  return absl::OkStatus();
}

size_t Worker::read_buffer_size() { return kReadBufferSize; }

absl::Status Worker::AddListener(int fd, std::shared_ptr<const tls::TlsServerContext> tls) {
  auto l = std::make_unique<Listener>();
  l->worker = this;
  l->tls = std::move(tls);
  if (::listen(fd, 1024) != 0) {
    int e = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("listen: ", std::strerror(e)));
  }
  int rc = uv_poll_init(&loop_, &l->poll, fd);
  if (rc != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("uv_poll_init: ", uv_strerror(rc)));
  }
  l->fd = fd;
  l->poll.data = l.get();
  uv_timer_init(&loop_, &l->retry);
  l->retry.data = l.get();
  uv_poll_start(&l->poll, UV_READABLE, OnAcceptable);
  // The memory must outlive the handles' close callbacks: listeners_ lives as long as the
  // worker.
  listeners_.push_back(std::move(l));
  return absl::OkStatus();
}

void Worker::CloseListener(Listener* l) {
  if (l->fd < 0) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&l->poll), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&l->retry), nullptr);
  ::close(l->fd);
  l->fd = -1;
}

void Worker::SetInitialTable(std::shared_ptr<const RouteTable> table) {
  if (table) SwapTable(std::move(table));
}

void Worker::Run() {
  uv_run(&loop_, UV_RUN_DEFAULT);
  if (current_ != nullptr) {
    ReleaseTable(current_);
    current_ = nullptr;
  }
  loop_close_result_ = uv_loop_close(&loop_);
}

void Worker::PostTable(std::shared_ptr<TableUpdate> update) {
  {
    absl::MutexLock lock(&mu_);
    if (inbox_open_) {
      // Only the transition from empty needs a wake-up; uv_async_send coalesces anyway.
      bool was_empty = inbox_.empty();
      inbox_.push_back(std::move(update));
      if (was_empty) uv_async_send(&async_);
      return;
    }
  }
  update->Arrive();  // this worker is gone: nothing left to swap
}

void Worker::PostDrain(absl::Duration deadline) {
  absl::MutexLock lock(&mu_);
  if (!inbox_open_ || drain_requested_) return;
  drain_requested_ = true;
  drain_deadline_ = deadline;
  uv_async_send(&async_);
}

void Worker::OnAsync(uv_async_t* a) { static_cast<Worker*>(a->data)->HandleMessages(); }

void Worker::HandleMessages() {
  std::vector<std::shared_ptr<TableUpdate>> updates;
  bool drain = false;
  absl::Duration deadline;
  {
    absl::MutexLock lock(&mu_);
    updates.swap(inbox_);
    drain = drain_requested_ && !draining_;
    deadline = drain_deadline_;
    if (health_inbox_) health_ = std::move(health_inbox_);
  }
  if (current_ != nullptr) ApplyHealth(current_);
  if (!updates.empty()) {
    // Coalesced: only the newest table matters, but every update's countdown must arrive.
    SwapTable(updates.back()->table);
    WorkerStats::Add(stats_.route_table_swaps, updates.size());
    for (auto& u : updates) u->Arrive();
  }
  if (drain) StartDrain(deadline);
}

void Worker::SwapTable(std::shared_ptr<const RouteTable> table) {
  auto* ref = new TableRef;
  ref->clusters.resize(table->clusters().size());
  for (size_t i = 0; i < ref->clusters.size(); ++i) {
    const CompiledCluster& cl = table->clusters()[i];
    TableRef::ClusterState& cs = ref->clusters[i];
    cs.active.assign(cl.endpoints.size(), 0);
    auto& counters = cluster_counters_[cl.name];
    if (!counters) counters = std::make_unique<ClusterCounters>();
    cs.counters = counters.get();
    for (const CompiledEndpoint& ep : cl.endpoints) {
      auto& st = endpoint_states_[ep.key];
      if (!st) st = std::make_unique<EndpointState>();
      cs.endpoints.push_back(st.get());
      auto& pool = idle_[ep.pool_key];
      if (!pool) pool = std::make_unique<IdleList>();
      cs.pools.push_back(pool.get());
    }
    // Start round robin at a different place on every worker so that workers do not all hit
    // the first endpoint first.
    ref->clusters[i].rr_cursor = static_cast<uint32_t>(id_);
  }
  ref->table = std::move(table);
  ref->refs = 1;  // held by current_
  ApplyHealth(ref);
  TableRef* old = current_;
  current_ = ref;
  if (old != nullptr) ReleaseTable(old);
}

void Worker::ApplyHealth(TableRef* ref) {
  const auto& clusters = ref->table->clusters();
  for (size_t i = 0; i < clusters.size(); ++i) {
    TableRef::ClusterState& cs = ref->clusters[i];
    cs.unhealthy.assign(clusters[i].endpoints.size(), 0);
    // An endpoint without an address (its host name did not resolve) is never picked while any
    // other endpoint is usable.
    for (size_t e = 0; e < clusters[i].endpoints.size(); ++e) {
      if (clusters[i].endpoints[e].addr_len == 0) cs.unhealthy[e] = 1;
    }
    if (!health_ || !clusters[i].health_check.enabled) continue;
    for (size_t e = 0; e < clusters[i].endpoints.size(); ++e) {
      cs.unhealthy[e] |= health_->unhealthy.contains(
          HealthSnapshot::Key(clusters[i].name, clusters[i].endpoints[e].key));
    }
  }
}

void Worker::PostHealth(std::shared_ptr<const HealthSnapshot> health) {
  absl::MutexLock lock(&mu_);
  if (!inbox_open_) return;
  health_inbox_ = std::move(health);
  uv_async_send(&async_);
}

void Worker::RecordEndpointOutcome(const CompiledCluster& cluster, TableRef::ClusterState& state,
                                   uint32_t endpoint, int status, bool connect_failure) {
  EndpointState* st = state.endpoints[endpoint];
  bool trip = false;
  if (connect_failure) {
    ++st->consecutive_connect_failures;
    trip = cluster.outlier.consecutive_connect_failures != 0 &&
           st->consecutive_connect_failures >= cluster.outlier.consecutive_connect_failures;
  } else if (status >= 500) {
    st->consecutive_connect_failures = 0;
    ++st->consecutive_5xx;
    trip = cluster.outlier.consecutive_5xx != 0 &&
           st->consecutive_5xx >= cluster.outlier.consecutive_5xx;
  } else {
    st->consecutive_5xx = 0;
    st->consecutive_connect_failures = 0;
  }
  if (!trip || !cluster.outlier.enabled) return;
  uint64_t now = now_ms();
  if (st->Ejected(now)) return;
  // Never eject more than max_ejection_percent of the cluster, but always allow one, so that a
  // single bad endpoint of a small cluster can still be taken out.
  size_t n = state.endpoints.size();
  size_t ejected = 0;
  for (EndpointState* other : state.endpoints) ejected += other->Ejected(now) ? 1 : 0;
  size_t max_ejected = std::max<size_t>(1, n * cluster.outlier.max_ejection_percent / 100);
  if (ejected >= max_ejected) return;
  ++st->times_ejected;
  st->ejected_until_ms = now + cluster.outlier.base_ejection_ms * st->times_ejected;
  st->consecutive_5xx = 0;
  st->consecutive_connect_failures = 0;
  WorkerStats::Add(stats_.outlier_ejections);
}

TableRef* Worker::AcquireTable() {
  if (current_ == nullptr) return nullptr;
  ++current_->refs;
  return current_;
}

void Worker::ReleaseTable(TableRef* ref) {
  if (--ref->refs == 0) delete ref;
}

void Worker::StartDrain(absl::Duration deadline) {
  draining_ = true;
  for (auto& l : listeners_) CloseListener(l.get());
  std::vector<DownstreamConn*> conns(downstreams_.begin(), downstreams_.end());
  for (DownstreamConn* c : conns) c->BeginDrain();
  uv_timer_start(&drain_timer_, OnDrainDeadline, DurationToMs(deadline), 0);
  MaybeFinishDrain();
}

void Worker::OnDrainDeadline(uv_timer_t* t) {
  auto* w = static_cast<Worker*>(t->data);
  std::vector<DownstreamConn*> conns(w->downstreams_.begin(), w->downstreams_.end());
  for (DownstreamConn* c : conns) c->Close();
  w->MaybeFinishDrain();
}

void Worker::MaybeFinishDrain() {
  if (!draining_ || shut_down_ || !downstreams_.empty()) return;
  shut_down_ = true;
  std::vector<UpstreamConn*> ups(upstreams_.begin(), upstreams_.end());
  for (UpstreamConn* u : ups) u->Close();
  std::vector<std::shared_ptr<TableUpdate>> late;
  {
    absl::MutexLock lock(&mu_);
    inbox_open_ = false;
    late.swap(inbox_);
  }
  for (auto& u : late) u->Arrive();
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_timer_), nullptr);
  timeouts_.Close();
}

void Worker::OnAcceptable(uv_poll_t* p, int status, int) {
  auto* l = static_cast<Listener*>(p->data);
  Worker* w = l->worker;
  if (w->draining_ || l->fd < 0) return;
  if (status < 0) {
    // POLLERR on a listening socket (libuv has stopped the handle): try again shortly.
    w->PauseAccepting(l, 0);
    return;
  }
  for (int i = 0; i < kMaxAcceptsPerEvent; ++i) {
    sockaddr_storage peer;
    socklen_t len;
    int fd = SysAccept(l->fd, &peer, &len);
    if (fd < 0) {
      int e = errno;
      if (e == EAGAIN || e == EWOULDBLOCK) return;
      if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        // The connection stays in the accept queue, so the listener stays readable: stop
        // polling it for a while instead of spinning, and let the client wait (or time out)
        // until descriptors are free again.
        w->PauseAccepting(l, e);
        return;
      }
      // ECONNABORTED, EPROTO, EPERM (a firewall) and the like: that one connection is gone.
      continue;
    }
    auto* c = new DownstreamConn(w);
    if (c->Open(fd) != 0) {
      ::close(fd);
      delete c;  // no handle was initialised
      continue;
    }
    w->downstreams_.insert(c);
    c->Start(l->tls.get(), reinterpret_cast<const sockaddr*>(&peer));
  }
}

void Worker::PauseAccepting(Listener* l, int error) {
  uint64_t now = now_ms();
  if (accept_error_logged_ms_ == 0 || now - accept_error_logged_ms_ >= kAcceptErrorLogIntervalMs) {
    accept_error_logged_ms_ = now == 0 ? 1 : now;
    FG_LOG_WARN("accept failed; pausing the listener",
                {{"worker", id_},
                 {"error", error != 0 ? std::strerror(error) : "socket error"},
                 {"pause_ms", kAcceptPauseMs}});
  }
  uv_poll_stop(&l->poll);
  uv_timer_start(
      &l->retry,
      [](uv_timer_t* t) {
        auto* l = static_cast<Listener*>(t->data);
        if (l->worker->draining_ || l->fd < 0) return;
        uv_poll_start(&l->poll, UV_READABLE, OnAcceptable);
      },
      kAcceptPauseMs, 0);
}

void Worker::Forget(DownstreamConn* c) {
  downstreams_.erase(c);
  MaybeFinishDrain();
}

void Worker::Forget(UpstreamConn* c) {
  if (c->idle()) RemoveIdle(c);
  upstreams_.erase(c);
}

UpstreamConn* Worker::AcquireUpstream(const CompiledCluster& cluster, const CompiledEndpoint& ep,
                                      IdleList* pool, ClusterCounters* counters, bool fresh,
                                      int* connect_error, const char** overflow) {
  *connect_error = 0;
  *overflow = nullptr;
  if (!fresh && !pool->empty()) {
    // LIFO: the most recently used connection is the least likely to have been closed by the
    // upstream's own idle timeout.
    UpstreamConn* c = pool->back();
    pool->pop_back();
    return c;
  }
  if (cluster.max_connections != 0 && counters->connections >= cluster.max_connections) {
    *overflow = "max_connections";
    return nullptr;
  }
  if (cluster.max_pending_requests != 0 && counters->pending >= cluster.max_pending_requests) {
    *overflow = "max_pending_requests";
    return nullptr;
  }
  auto* c = new UpstreamConn(this, ep, cluster, pool, counters);
  upstreams_.insert(c);
  WorkerStats::Add(stats_.upstream_connections_total);
  uint64_t timeout = cluster.connect_timeout_ms != 0 ? cluster.connect_timeout_ms
                                                     : DurationToMs(limits_.connect_timeout);
  *connect_error = c->Connect(timeout);
  return c;
}

void Worker::ReleaseUpstream(UpstreamConn* up, bool reusable) {
  up->ClearDownstream();
  if (reusable && !draining_ && !up->exhausted() && !up->closing()) {
    IdleList& list = *up->pool();
    if (list.size() < up->max_idle()) {
      list.push_back(up);
      up->EnterIdle();
      return;
    }
  }
  up->Close();
}

void Worker::RemoveIdle(UpstreamConn* up) {
  IdleList& v = *up->pool();
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == up) {
      v.erase(v.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
}

uint64_t Worker::NextRandom() {
  // splitmix64: fast, per worker, good enough for load balancing and request ids.
  uint64_t z = (rng_state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

namespace {

// Writes the 16 hex digits of `v` (lowest nibble first: the bits are random, order is
// irrelevant) to `out`, two digits per table lookup.
void HexDigits(uint64_t v, char* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  static constexpr auto kPairs = [] {
    std::array<char, 512> t{};
    for (int i = 0; i < 256; ++i) {
      t[2 * i] = kHex[i >> 4];
      t[2 * i + 1] = kHex[i & 0xf];
    }
    return t;
  }();
  for (int i = 0; i < 8; ++i) {
    std::memcpy(out + 2 * i, &kPairs[2 * (v & 0xff)], 2);
    v >>= 8;
  }
}

}  // namespace

void Worker::FillRandomHex(char* out, size_t bytes) {
  char digits[16];
  while (bytes >= 8) {
    HexDigits(NextRandom(), out);
    out += 16;
    bytes -= 8;
  }
  if (bytes > 0) {
    HexDigits(NextRandom(), digits);
    std::memcpy(out, digits, 2 * bytes);
  }
}

std::unique_ptr<RequestState> Worker::AcquireRequestState() {
  if (free_requests_.empty()) return std::make_unique<RequestState>();
  std::unique_ptr<RequestState> rq = std::move(free_requests_.back());
  free_requests_.pop_back();
  return rq;
}

void Worker::ReleaseRequestState(std::unique_ptr<RequestState> rq) {
  if (rq == nullptr) return;
  // Keep enough for the requests in flight at a time; a request that grew a buffer beyond the
  // usual size gives its memory back.
  if (free_requests_.size() >= kMaxPooledRequests || rq->head.capacity() > kMaxPooledRequestBytes ||
      rq->up_head.capacity() > kMaxPooledRequestBytes ||
      rq->replay.capacity() > kMaxPooledRequestBytes ||
      rq->pending_in.capacity() > kMaxPooledRequestBytes) {
    return;
  }
  rq->head.clear();
  rq->spans.clear();
  rq->header_views.clear();
  rq->up_head.clear();
  rq->upgrade_value.clear();
  rq->replay.clear();
  rq->last_error.clear();
  rq->pending_in.clear();
  free_requests_.push_back(std::move(rq));
}

WriteReq* Worker::NewWriteReq() {
  if (free_writes_.empty()) return new WriteReq;
  WriteReq* w = free_writes_.back().release();
  free_writes_.pop_back();
  return w;
}

void Worker::FreeWriteReq(WriteReq* w) {
  if (free_writes_.size() >= kMaxPooledWrites || w->data.capacity() > kMaxPooledWriteCapacity) {
    delete w;
    return;
  }
  w->next = nullptr;
  w->sent = 0;
  w->data.clear();
  free_writes_.emplace_back(w);
}

}  // namespace flexgate::dataplane::internal
