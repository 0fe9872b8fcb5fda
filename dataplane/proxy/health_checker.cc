// Active HTTP health checks: per-target interval timers, one probe connection at a time per
// target (through TLS for TLS clusters), verdicts with healthy/unhealthy thresholds, snapshots
// published on change.
#include "dataplane/proxy/health_checker.h"

#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/tls/tls.h"

namespace flexgate::dataplane::internal {

// One endpoint of one checked cluster. Freed in its timer's close callback.
struct HealthChecker::Target {
  HealthChecker* checker;
  std::string key;  // HealthSnapshot::Key
  sockaddr_storage addr;
  CompiledCluster::HealthCheck spec;
  std::string request;
  // TLS clusters: the data path's client context (CA, verification, client certificate) and
  // the name it sends as SNI and verifies, so that a probe succeeds exactly when a proxied
  // request's handshake would. Null for plain clusters.
  std::shared_ptr<const tls::TlsClientContext> tls;
  std::string tls_server_name;
  uv_timer_t timer;
  Probe* probe = nullptr;  // the probe in flight, if any
  bool healthy = true;     // fail open: an endpoint is healthy until checks say otherwise
  uint32_t successes = 0;
  uint32_t failures = 0;
};

// One probe: connect, (TLS handshake,) send the request, read the status line. Freed once both
// handles closed.
struct HealthChecker::Probe {
  Target* target;  // nullptr once the target is gone
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_connect_t connect;
  std::string request;  // a copy: the target may go away while the write is queued
  std::string response;
  std::unique_ptr<tls::TlsSession> tls;  // TLS clusters only
  char buf[4096];
  int open_handles = 2;
  bool done = false;
};

namespace {

using Probe = HealthChecker::Probe;

// A probe keeps at most 1 KiB of the response: the status line is all it looks at.
constexpr size_t kMaxProbeResponse = 1024;

void OnProbeHandleClosed(uv_handle_t* h) {
  auto* p = static_cast<Probe*>(h->data);
  if (--p->open_handles == 0) delete p;
}

// The status code of a complete status line, or 0 when `r` does not start with one yet.
int ParseStatusLine(const std::string& r, bool complete) {
  size_t eol = r.find("\r\n");
  if (eol == std::string::npos) return complete ? -1 : 0;
  // "HTTP/1.x NNN ..."
  if (eol < 12 || r.compare(0, 7, "HTTP/1.") != 0 || r[8] != ' ') return -1;
  int status = 0;
  if (!absl::SimpleAtoi(absl::string_view(r.data() + 9, 3), &status)) return -1;
  return status;
}

// One queued write and the bytes it owns.
struct ProbeWrite {
  uv_write_t req;
  Probe* probe;
  std::string data;
};

}  // namespace

// The probes' callbacks. A nested type of HealthChecker so that it may report results
// (OnResult) without making them public.
struct HealthChecker::ProbeIo {
  // Ends the probe once: reports to its target, then closes both handles.
  static void Finish(Probe* p, bool ok);
  // Queues `data` on the probe's socket; false when the write could not be queued.
  static bool Send(Probe* p, std::string data);
  // TLS probes: writes what the session produced (handshake, encrypted request, alerts).
  static bool FlushTls(Probe* p);
  static void OnConnected(uv_connect_t* req, int status);
  static void OnRead(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
};

// Ends the probe once: reports to its target (if it still has one), then closes both handles.
// Writes still queued are cancelled by the close and their callbacks run first, while the probe
// is alive; they see `done`.
void HealthChecker::ProbeIo::Finish(Probe* p, bool ok) {
  if (p->done) return;
  p->done = true;
  if (p->tls != nullptr && p->tls->handshake_done()) {
    // A polite close_notify, best effort: the socket is closed right after, whatever the kernel
    // takes now is all the peer gets.
    p->tls->Shutdown();
    std::string out;
    if (p->tls->TakeCiphertext(&out) > 0) {
      uv_buf_t b = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
      uv_try_write(reinterpret_cast<uv_stream_t*>(&p->tcp), &b, 1);
    }
  }
  Target* t = p->target;
  if (t != nullptr) {
    t->probe = nullptr;
    t->checker->OnResult(t, ok);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&p->tcp), OnProbeHandleClosed);
  uv_close(reinterpret_cast<uv_handle_t*>(&p->timer), OnProbeHandleClosed);
}

// Queues `data` on the probe's socket; a failed write fails the probe.
bool HealthChecker::ProbeIo::Send(Probe* p, std::string data) {
  auto* w = new ProbeWrite{{}, p, std::move(data)};
  w->req.data = w;
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&p->tcp), &b, 1,
                    [](uv_write_t* req, int status) {
                      auto* w = static_cast<ProbeWrite*>(req->data);
                      Probe* p = w->probe;
                      delete w;
                      if (status < 0) Finish(p, false);
                    });
  if (rc != 0) {
    delete w;
    return false;
  }
  return true;
}

// TLS probes: writes whatever the session produced (handshake records, the encrypted request,
// alerts).
bool HealthChecker::ProbeIo::FlushTls(Probe* p) {
  if (!p->tls->HasCiphertext()) return true;
  std::string out;
  p->tls->TakeCiphertext(&out);
  return Send(p, std::move(out));
}

void HealthChecker::ProbeIo::OnRead(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* p = static_cast<Probe*>(s->data);
  if (p->done) return;
  bool ended = n < 0;
  if (p->tls == nullptr) {
    if (n > 0 && p->response.size() < kMaxProbeResponse) p->response.append(buf->base, n);
  } else {
    if (n > 0) p->tls->FeedCiphertext(absl::string_view(buf->base, static_cast<size_t>(n)));
    if (n < 0) p->tls->FeedEof();
    char plain[2048];
    size_t got = 0;
    tls::TlsSession::ReadResult r;
    while ((r = p->tls->ReadPlaintext(plain, sizeof plain, &got)) ==
           tls::TlsSession::ReadResult::kData) {
      if (p->response.size() < kMaxProbeResponse) p->response.append(plain, got);
    }
    // The handshake's next flight, or the request once the handshake finished.
    if (!FlushTls(p)) {
      Finish(p, false);
      return;
    }
    // A failed handshake (verification included) ends here with no status line: a failure.
    ended = r == tls::TlsSession::ReadResult::kClosed || r == tls::TlsSession::ReadResult::kError;
  }
  int status = ParseStatusLine(p->response, ended || p->response.size() >= kMaxProbeResponse);
  if (status == 0) return;  // need more of the status line
  bool ok = status > 0 && p->target != nullptr && p->target->spec.StatusHealthy(status);
  Finish(p, ok);
}

void HealthChecker::ProbeIo::OnConnected(uv_connect_t* req, int status) {
  auto* p = static_cast<Probe*>(req->data);
  if (p->done) return;
  if (status < 0 || p->target == nullptr) {
    Finish(p, false);
    return;
  }
  bool sent;
  if (p->tls == nullptr) {
    sent = Send(p, p->request);
  } else {
    // Queued inside the session until the handshake is done; this first call produces the
    // ClientHello.
    sent = p->tls->WritePlaintext(p->request).ok() && FlushTls(p);
  }
  if (!sent) {
    Finish(p, false);
    return;
  }
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&p->tcp),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        auto* p = static_cast<Probe*>(h->data);
        *buf = uv_buf_init(p->buf, sizeof(p->buf));
      },
      OnRead);
}

HealthChecker::HealthChecker(Publish publish) : publish_(std::move(publish)) {}

HealthChecker::~HealthChecker() { Stop(); }

absl::Status HealthChecker::Start() {
  int rc = uv_loop_init(&loop_);
  if (rc != 0) return absl::InternalError(absl::StrCat("uv_loop_init: ", uv_strerror(rc)));
  loop_.data = this;
  uv_async_init(&loop_, &async_, OnAsync);
  async_.data = this;
  started_ = true;
  thread_ = std::thread([this] {
    uv_run(&loop_, UV_RUN_DEFAULT);
    loop_close_result_ = uv_loop_close(&loop_);
  });
  return absl::OkStatus();
}

void HealthChecker::SetTable(std::shared_ptr<const RouteTable> table) {
  absl::MutexLock lock(&mu_);
  pending_table_ = std::move(table);
  has_pending_table_ = true;
  if (started_ && !stop_requested_) uv_async_send(&async_);
}

void HealthChecker::Stop() {
  if (!started_ || joined_) return;
  {
    absl::MutexLock lock(&mu_);
    stop_requested_ = true;
    uv_async_send(&async_);
  }
  thread_.join();
  joined_ = true;
}

void HealthChecker::OnAsync(uv_async_t* a) {
  auto* hc = static_cast<HealthChecker*>(a->data);
  std::shared_ptr<const RouteTable> table;
  bool has_table = false, stop = false;
  {
    absl::MutexLock lock(&hc->mu_);
    stop = hc->stop_requested_;
    has_table = hc->has_pending_table_;
    hc->has_pending_table_ = false;
    table = std::move(hc->pending_table_);
  }
  if (stop) {
    hc->Shutdown();
    return;
  }
  if (has_table) hc->ApplyTable(std::move(table));
}

void HealthChecker::ApplyTable(std::shared_ptr<const RouteTable> table) {
  if (shut_down_) return;
  absl::flat_hash_map<std::string, Target*> next;
  if (table) {
    for (const CompiledCluster& cl : table->clusters()) {
      if (!cl.health_check.enabled) continue;
      for (const CompiledEndpoint& ep : cl.endpoints) {
        std::string key = HealthSnapshot::Key(cl.name, ep.key);
        if (next.contains(key)) continue;
        Target* t;
        auto it = targets_.find(key);
        bool fresh = it == targets_.end();
        if (!fresh) {
          t = it->second;
          targets_.erase(it);
        } else {
          t = new Target;
          t->checker = this;
          t->key = key;
          uv_timer_init(&loop_, &t->timer);
          t->timer.data = t;
        }
        t->addr = ep.addr;
        t->spec = cl.health_check;
        t->tls = cl.tls;
        t->tls_server_name = cl.tls != nullptr ? ep.tls_server_name : std::string();
        // Host: the configured one; else, over TLS, the name the certificate is checked
        // against (the SNI), which is what a virtual-hosted upstream routes on; else the
        // endpoint's address.
        std::string host = !cl.health_check.host.empty() ? cl.health_check.host
                           : cl.tls != nullptr && !ep.tls_server_name.empty()
                               ? ep.tls_server_name
                               : ep.key;
        t->request = absl::StrCat("GET ", cl.health_check.path, " HTTP/1.1\r\nHost: ", host,
                                  "\r\nUser-Agent: flexgate-health-check\r\n"
                                  "Connection: close\r\n\r\n");
        // First probe at once for a new target, then every interval.
        uv_timer_start(&t->timer, [](uv_timer_t* tm) {
          auto* t = static_cast<Target*>(tm->data);
          t->checker->StartProbe(t);
        }, fresh ? 0 : t->spec.interval_ms, t->spec.interval_ms);
        next.emplace(key, t);
      }
    }
  }
  // Targets no longer configured: stop them; a probe in flight finishes without a target.
  bool changed = false;
  for (auto& [key, t] : targets_) {
    if (!t->healthy) changed = true;
    if (t->probe != nullptr) t->probe->target = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&t->timer),
             [](uv_handle_t* h) { delete static_cast<Target*>(h->data); });
  }
  targets_ = std::move(next);
  if (changed) PublishNow();
}

void HealthChecker::StartProbe(Target* t) {
  if (t->probe != nullptr || shut_down_) return;  // the previous probe is still running
  probes_.fetch_add(1, std::memory_order_relaxed);
  auto* p = new Probe;
  p->target = t;
  p->request = t->request;
  t->probe = p;
  uv_tcp_init(&loop_, &p->tcp);
  uv_timer_init(&loop_, &p->timer);
  p->tcp.data = p;
  p->timer.data = p;
  p->connect.data = p;

  // The timeout covers the connect, the TLS handshake and the status line.
  uv_timer_start(
      &p->timer, [](uv_timer_t* tm) { ProbeIo::Finish(static_cast<Probe*>(tm->data), false); },
      t->spec.timeout_ms, 0);
  if (t->tls != nullptr) {
    auto session = t->tls->NewSession(t->tls_server_name);
    if (!session.ok()) {
      ProbeIo::Finish(p, false);
      return;
    }
    p->tls = *std::move(session);
  }
  int rc = uv_tcp_connect(&p->connect, &p->tcp, reinterpret_cast<const sockaddr*>(&t->addr),
                          ProbeIo::OnConnected);
  if (rc != 0) ProbeIo::Finish(p, false);
}

void HealthChecker::OnResult(Target* t, bool ok) {
  bool changed = false;
  if (ok) {
    t->failures = 0;
    ++t->successes;
    if (!t->healthy && t->successes >= t->spec.healthy_threshold) {
      t->healthy = true;
      changed = true;
    }
  } else {
    failures_.fetch_add(1, std::memory_order_relaxed);
    t->successes = 0;
    ++t->failures;
    if (t->healthy && t->failures >= t->spec.unhealthy_threshold) {
      t->healthy = false;
      changed = true;
    }
  }
  if (changed) PublishNow();
}

void HealthChecker::PublishNow() {
  auto snap = std::make_shared<HealthSnapshot>();
  for (const auto& [key, t] : targets_) {
    if (!t->healthy) snap->unhealthy.insert(key);
  }
  if (publish_) publish_(std::move(snap));
}

void HealthChecker::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  for (auto& [key, t] : targets_) {
    if (t->probe != nullptr) t->probe->target = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&t->timer),
             [](uv_handle_t* h) { delete static_cast<Target*>(h->data); });
  }
  targets_.clear();
  // Probes in flight: close them now (their callbacks see `done` or run with UV_ECANCELED).
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (uv_is_closing(h) || h->type != UV_TCP) return;
        auto* p = static_cast<Probe*>(h->data);
        if (!p->done) {
          p->done = true;
          uv_close(reinterpret_cast<uv_handle_t*>(&p->tcp), OnProbeHandleClosed);
          uv_close(reinterpret_cast<uv_handle_t*>(&p->timer), OnProbeHandleClosed);
        }
      },
      nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
}

}  // namespace flexgate::dataplane::internal
