#include "controlplane/distributor.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/log.h"
#include "controlplane/access_store.h"

namespace flexgate::cp {

Distributor::Distributor(std::string database_url, ConfigStore* store, CpMetrics* metrics,
                         ListenerObserver* observer)
    : database_url_(std::move(database_url)),
      store_(store),
      metrics_(metrics),
      observer_(observer) {}

Distributor::~Distributor() { Stop(); }

absl::Status Distributor::ConnectListener() {
  auto conn = PgConn::Connect(database_url_);
  if (!conn.ok()) return conn.status();
  absl::Status s = (*conn)->ExecScript(
      absl::StrCat("LISTEN ", kConfigChannel, "; LISTEN ", kRevocationChannel));
  if (!s.ok()) return s;
  listen_conn_ = std::move(conn).value();
  listening_.store(true, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status Distributor::Start() {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) return absl::InternalError("eventfd failed");
  absl::Status s = ConnectListener();
  if (!s.ok()) return s;
  thread_ = std::thread(&Distributor::ListenLoop, this);
  return absl::OkStatus();
}

void Distributor::Stop() {
  if (stopping_.exchange(true)) return;
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }
  if (thread_.joinable()) thread_.join();
  listen_conn_.reset();
  listening_.store(false);
  if (wake_fd_ >= 0) close(wake_fd_);
  wake_fd_ = -1;
}

void Distributor::ListenLoop() {
  absl::Duration backoff = absl::Milliseconds(100);
  while (!stopping_.load()) {
    if (listen_conn_ == nullptr || !listen_conn_->ok()) {
      listening_.store(false, std::memory_order_relaxed);
      listen_conn_.reset();
      absl::Status s = ConnectListener();
      if (!s.ok()) {
        FG_LOG_WARN("config listener cannot reconnect",
                    {{"error", std::string(s.message())},
                     {"retry_ms", absl::ToInt64Milliseconds(backoff)}});
        pollfd p{wake_fd_, POLLIN, 0};
        (void)poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(backoff)));
        backoff = std::min(backoff * 2, absl::Seconds(5));
        continue;
      }
      backoff = absl::Milliseconds(100);
      metrics_->listener_reconnects.Increment();
      FG_LOG_INFO("config listener reconnected");
      // Notifications sent while we were away are gone: catch up from the tables.
      {
        absl::MutexLock lock(&mu_);
        live_known_.clear();
      }
      ReloadAll();
      if (observer_ != nullptr) observer_->OnListenerReconnected();
    }
    pollfd fds[2] = {{PQsocket(listen_conn_->raw()), POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    int n = poll(fds, 2, 1000);
    if (n < 0) continue;  // EINTR
    if (fds[1].revents != 0) break;
    if (n == 0) continue;
    if (PQconsumeInput(listen_conn_->raw()) == 0) {
      FG_LOG_WARN("config listener lost its connection",
                  {{"error", std::string(PQerrorMessage(listen_conn_->raw()))}});
      listen_conn_.reset();
      continue;
    }
    while (PGnotify* note = PQnotifies(listen_conn_->raw())) {
      std::string payload = note->extra == nullptr ? "" : note->extra;
      const bool revocation =
          note->relname != nullptr && std::strcmp(note->relname, kRevocationChannel) == 0;
      PQfreemem(note);
      if (revocation) {
        if (observer_ != nullptr) observer_->OnRevocationNotice(payload);
        continue;
      }
      metrics_->notifications.Increment();
      std::pair<std::string, std::string> parts = absl::StrSplit(payload, absl::MaxSplits(':', 1));
      int64_t tenant = 0;
      uint64_t version = 0;
      if (!absl::SimpleAtoi(parts.first, &tenant) || !absl::SimpleAtoi(parts.second, &version)) {
        FG_LOG_WARN("malformed config notification", {{"payload", payload}});
        continue;
      }
      Publish(tenant, version);
    }
  }
  listening_.store(false);
}

absl::StatusOr<std::shared_ptr<const PreparedSnapshot>> Distributor::Load(int64_t tenant_id,
                                                                          uint64_t version) {
  {
    absl::MutexLock lock(&mu_);
    auto it = latest_.find(tenant_id);
    if (it != latest_.end() && it->second->version == version) return it->second;
  }
  auto stored = store_->GetVersion(tenant_id, version);
  if (!stored.ok()) return stored.status();
  auto prepared = PrepareSnapshot(tenant_id, stored->version, stored->hash, stored->body);
  absl::MutexLock lock(&mu_);
  auto& slot = latest_[tenant_id];
  if (slot == nullptr || slot->version < prepared->version) slot = prepared;
  return prepared;
}

void Distributor::Publish(int64_t tenant_id, uint64_t version) {
  std::vector<std::shared_ptr<SnapshotSink>> targets;
  {
    absl::MutexLock lock(&mu_);
    auto& known = live_known_[tenant_id];
    known = std::max(known, version);
    auto it = sinks_.find(tenant_id);
    if (it == sinks_.end() || it->second.empty()) {
      // Nobody here needs it; a later Latest() loads it on demand.
      return;
    }
    targets = it->second;
  }
  auto prepared = Load(tenant_id, version);
  if (!prepared.ok()) {
    FG_LOG_WARN("cannot load new config version",
                {{"tenant_id", tenant_id}, {"version", version},
                 {"error", std::string(prepared.status().message())}});
    return;
  }
  for (auto& sink : targets) sink->Offer(*prepared);
  FG_LOG_INFO("config version distributed",
              {{"tenant_id", tenant_id}, {"version", version}, {"streams", targets.size()}});
}

void Distributor::ReloadAll() {
  std::vector<int64_t> tenants;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [tenant, sinks] : sinks_) {
      if (!sinks.empty()) tenants.push_back(tenant);
    }
  }
  auto live = store_->GetLiveMany(tenants);
  if (!live.ok()) {
    FG_LOG_WARN("cannot reload live versions", {{"error", std::string(live.status().message())}});
    return;
  }
  for (const auto& [tenant, v] : *live) Publish(tenant, v.version);
}

void Distributor::Register(int64_t tenant_id, std::shared_ptr<SnapshotSink> sink) {
  absl::MutexLock lock(&mu_);
  sinks_[tenant_id].push_back(std::move(sink));
}

void Distributor::Unregister(int64_t tenant_id, const SnapshotSink* sink) {
  absl::MutexLock lock(&mu_);
  auto it = sinks_.find(tenant_id);
  if (it == sinks_.end()) return;
  auto& v = it->second;
  // Swap-remove: order of sinks does not matter, and this keeps removal O(n) with no shifting.
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i].get() == sink) {
      v[i] = std::move(v.back());
      v.pop_back();
      break;
    }
  }
  if (v.empty()) sinks_.erase(it);
}

void Distributor::NoteLive(int64_t tenant_id, uint64_t version) {
  absl::MutexLock lock(&mu_);
  auto& known = live_known_[tenant_id];
  known = std::max(known, version);
}

absl::StatusOr<std::shared_ptr<const PreparedSnapshot>> Distributor::Latest(int64_t tenant_id) {
  std::optional<uint64_t> version;
  if (listening()) {
    absl::MutexLock lock(&mu_);
    if (auto it = live_known_.find(tenant_id); it != live_known_.end()) {
      version = it->second;
      auto cached = latest_.find(tenant_id);
      if (cached != latest_.end() && cached->second->version == *version) return cached->second;
    }
  }
  if (!version) {
    auto live = store_->GetLive(tenant_id);
    if (!live.ok()) return live.status();
    version = live->version;
    // Only while listening: a number read now is kept current by the notifications after it.
    if (listening()) NoteLive(tenant_id, *version);
  }
  if (*version == 0) return std::shared_ptr<const PreparedSnapshot>();
  return Load(tenant_id, *version);
}

void Distributor::CloseAll() {
  std::vector<std::shared_ptr<SnapshotSink>> all;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [tenant, sinks] : sinks_) all.insert(all.end(), sinks.begin(), sinks.end());
  }
  for (auto& s : all) s->Close();
}

size_t Distributor::sink_count() const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [tenant, sinks] : sinks_) n += sinks.size();
  return n;
}

}  // namespace flexgate::cp
