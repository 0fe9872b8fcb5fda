// Active HTTP health checks: per-target interval timers, one probe connection at a time per
// target, verdicts with healthy/unhealthy thresholds, snapshots published on change.
#include "dataplane/proxy/health_checker.h"

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace flexgate::dataplane::internal {

// One endpoint of one checked cluster. Freed in its timer's close callback.
struct HealthChecker::Target {
  HealthChecker* checker;
  std::string key;  // HealthSnapshot::Key
  sockaddr_storage addr;
  CompiledCluster::HealthCheck spec;
  std::string request;
  uv_timer_t timer;
  Probe* probe = nullptr;  // the probe in flight, if any
  bool healthy = true;     // fail open: an endpoint is healthy until checks say otherwise
  uint32_t successes = 0;
  uint32_t failures = 0;
};

// One probe: connect, send the request, read the status line. Freed once both handles closed.
struct HealthChecker::Probe {
  Target* target;  // nullptr once the target is gone
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_connect_t connect;
  uv_write_t write;
  std::string request;  // a copy: the target may go away while the write is queued
  std::string response;
  char buf[512];
  int open_handles = 2;
  bool done = false;
};

namespace {

using Probe = HealthChecker::Probe;

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

}  // namespace

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
        std::string host = cl.health_check.host.empty() ? ep.key : cl.health_check.host;
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
  p->write.data = p;

  // Ends the probe once: reports, then closes both handles.
  static auto finish = [](Probe* p, bool ok) {
    if (p->done) return;
    p->done = true;
    Target* t = p->target;
    if (t != nullptr) {
      t->probe = nullptr;
      t->checker->OnResult(t, ok);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&p->tcp), OnProbeHandleClosed);
    uv_close(reinterpret_cast<uv_handle_t*>(&p->timer), OnProbeHandleClosed);
  };
  uv_timer_start(&p->timer, [](uv_timer_t* tm) { finish(static_cast<Probe*>(tm->data), false); },
                 t->spec.timeout_ms, 0);
  int rc = uv_tcp_connect(&p->connect, &p->tcp, reinterpret_cast<const sockaddr*>(&t->addr),
                          [](uv_connect_t* req, int status) {
    auto* p = static_cast<Probe*>(req->data);
    if (p->done) return;
    if (status < 0 || p->target == nullptr) {
      finish(p, false);
      return;
    }
    uv_buf_t b = uv_buf_init(p->request.data(), static_cast<unsigned>(p->request.size()));
    if (uv_write(&p->write, reinterpret_cast<uv_stream_t*>(&p->tcp), &b, 1,
                 [](uv_write_t* w, int st) {
                   if (st < 0) finish(static_cast<Probe*>(w->data), false);
                 }) != 0) {
      finish(p, false);
      return;
    }
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&p->tcp),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* p = static_cast<Probe*>(h->data);
          *buf = uv_buf_init(p->buf, sizeof(p->buf));
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          auto* p = static_cast<Probe*>(s->data);
          if (p->done) return;
          if (n > 0 && p->response.size() < 1024) p->response.append(buf->base, n);
          int status = ParseStatusLine(p->response, n < 0 || p->response.size() >= 1024);
          if (status == 0) return;  // need more of the status line
          bool ok = status > 0 && p->target != nullptr && p->target->spec.StatusHealthy(status);
          finish(p, ok);
        });
  });
  if (rc != 0) finish(p, false);
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
