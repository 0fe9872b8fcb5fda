#include "controlplane/revocation_enforcer.h"

#include <string>
#include <utility>

#include "common/log.h"
#include "controlplane/access_store.h"
#include "controlplane/metrics.h"

namespace flexgate::cp {
namespace {

const char* KindName(AgentCredential::Kind kind) {
  return kind == AgentCredential::Kind::kEnrollmentToken ? "enrollment_token" : "api_key";
}

}  // namespace

RevocationEnforcer::RevocationEnforcer(AccessStore* access, Authenticator* auth,
                                       CpMetrics* metrics, absl::Duration check_interval)
    : access_(access), auth_(auth), metrics_(metrics), check_interval_(check_interval) {}

RevocationEnforcer::~RevocationEnforcer() { Stop(); }

void RevocationEnforcer::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread(&RevocationEnforcer::Run, this);
}

void RevocationEnforcer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool RevocationEnforcer::Add(const AgentCredential& credential,
                             std::shared_ptr<RevocableStream> stream) {
  absl::MutexLock lock(&mu_);
  if (revoked_.contains(credential)) return false;
  const RevocableStream* key = stream.get();
  open_[credential].emplace(key, std::move(stream));
  return true;
}

void RevocationEnforcer::Remove(const AgentCredential& credential,
                                const RevocableStream* stream) {
  // Released after the lock: it may be the stream's last reference.
  std::shared_ptr<RevocableStream> released;
  {
    absl::MutexLock lock(&mu_);
    auto it = open_.find(credential);
    if (it == open_.end()) return;
    auto s = it->second.find(stream);
    if (s == it->second.end()) return;
    released = std::move(s->second);
    it->second.erase(s);
    if (it->second.empty()) open_.erase(it);
  }
}

void RevocationEnforcer::Revoked(const AgentCredential& credential) {
  // The cache first: from here on a new stream with this credential cannot authenticate from it.
  auth_->Forget(credential);
  absl::flat_hash_map<const RevocableStream*, std::shared_ptr<RevocableStream>> streams;
  bool first;
  {
    absl::MutexLock lock(&mu_);
    first = revoked_.insert(credential).second;
    if (auto it = open_.find(credential); it != open_.end()) {
      streams = std::move(it->second);
      open_.erase(it);
    }
  }
  for (auto& [ptr, stream] : streams) stream->EndRevoked(credential.kind);
  metrics_->revoked_streams.Increment(static_cast<double>(streams.size()));
  if (first || !streams.empty()) {
    FG_LOG_INFO("agent credential revoked", {{"tenant_id", credential.tenant_id},
                                             {"kind", KindName(credential.kind)},
                                             {"id", credential.id},
                                             {"streams_ended", streams.size()}});
  }
}

void RevocationEnforcer::OnRevocationNotice(absl::string_view payload) {
  metrics_->revocation_notifications.Increment();
  std::optional<AgentCredential> credential = ParseRevocationPayload(payload);
  if (!credential) {
    FG_LOG_WARN("malformed revocation notification", {{"payload", std::string(payload)}});
    return;
  }
  Revoked(*credential);
}

void RevocationEnforcer::RequestCheck() {
  absl::MutexLock lock(&mu_);
  check_requested_ = true;
}

absl::StatusOr<size_t> RevocationEnforcer::CheckNow() {
  std::vector<AgentCredential> open;
  {
    absl::MutexLock lock(&mu_);
    open.reserve(open_.size());
    for (const auto& [credential, streams] : open_) open.push_back(credential);
  }
  if (open.empty()) return 0;
  metrics_->revocation_checks.Increment();
  auto unusable = access_->Unusable(open);
  if (!unusable.ok()) return unusable.status();
  for (const AgentCredential& c : *unusable) Revoked(c);
  return unusable->size();
}

void RevocationEnforcer::Run() {
  absl::Time next_check = check_interval_ > absl::ZeroDuration()
                              ? absl::Now() + check_interval_
                              : absl::InfiniteFuture();
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || check_requested_;
      };
      mu_.AwaitWithDeadline(absl::Condition(&wake), next_check);
      if (stopping_) return;
      check_requested_ = false;
    }
    absl::StatusOr<size_t> revoked = CheckNow();
    if (!revoked.ok()) {
      // The next check (or the listener's reconnect, which requests one) tries again.
      FG_LOG_WARN("cannot re-check agent credentials",
                  {{"error", std::string(revoked.status().message())}});
    } else if (*revoked > 0) {
      // Normally every revocation arrives as a notification first; this one did not.
      FG_LOG_WARN("re-check found revoked credentials with open streams",
                  {{"credentials", *revoked}});
    }
    if (check_interval_ > absl::ZeroDuration()) next_check = absl::Now() + check_interval_;
  }
}

size_t RevocationEnforcer::stream_count() const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [credential, streams] : open_) n += streams.size();
  return n;
}

}  // namespace flexgate::cp
