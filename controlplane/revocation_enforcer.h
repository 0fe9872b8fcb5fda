// RevocationEnforcer: ends the agent streams whose credential has been revoked, on every
// replica, and keeps a revoked credential from opening new ones.
//
// How a revocation reaches a stream:
//  - On the replica that handles KeyService.RevokeToken / RevokeKey: the RPC calls Revoked()
//    right after the revocation commits.
//  - On every replica (that one included): the revoke transaction sends a notification on
//    kRevocationChannel; the Distributor's LISTEN connection hands it to OnRevocationNotice().
//  - When a notification may have been missed (the LISTEN connection was lost and came back),
//    and every `check_interval` as a safety net, one query asks which of the open streams'
//    distinct credentials are no longer usable (AccessStore::Unusable) and revokes those. It
//    costs one statement per check, however many streams are open.
//
// Revoked() evicts the credential from the Authenticator's cache, remembers it as revoked (a
// revocation is permanent, so the set only grows, by one entry per revocation this replica has
// seen), and ends every registered stream opened with it. Add() refuses a credential already
// known to be revoked, which closes the race of a Hello that authenticated (from the cache or
// the database) just before the notification arrived: either Add sees the credential revoked, or
// Revoked sees the stream registered; both happen under one lock.
//
// Thread-safety: all public methods are thread-safe. mu_ is never held while calling into a
// stream or the Authenticator (streams take their own locks and call back into Remove).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controlplane/auth.h"
#include "controlplane/distributor.h"

namespace flexgate::cp {

class AccessStore;
class CpMetrics;

// An open agent stream, as the enforcer sees it.
class RevocableStream {
 public:
  virtual ~RevocableStream() = default;
  // The credential the stream was opened with has been revoked: end the stream with
  // UNAUTHENTICATED and RevokedMessage(kind). Must not block; may be called more than once.
  virtual void EndRevoked(AgentCredential::Kind kind) = 0;
};

class RevocationEnforcer final : public ListenerObserver {
 public:
  // `access`, `auth` and `metrics` must outlive this object. `check_interval` = how often the
  // open streams' credentials are re-checked against the database; zero = only when the LISTEN
  // connection comes back.
  RevocationEnforcer(AccessStore* access, Authenticator* auth, CpMetrics* metrics,
                     absl::Duration check_interval);
  ~RevocationEnforcer() override;  // Stop()
  RevocationEnforcer(const RevocationEnforcer&) = delete;
  RevocationEnforcer& operator=(const RevocationEnforcer&) = delete;

  // Starts the thread that runs the checks. Stop joins it; idempotent.
  void Start();
  void Stop();

  // Registers a stream opened with `credential`. Returns false, and registers nothing, when the
  // credential is already known to be revoked: the caller refuses the stream.
  bool Add(const AgentCredential& credential, std::shared_ptr<RevocableStream> stream);
  // Unregisters (a stream that ended). Unknown streams are ignored.
  void Remove(const AgentCredential& credential, const RevocableStream* stream);

  // `credential` has been revoked (committed): evicts it from the auth cache and ends its
  // streams. Idempotent.
  void Revoked(const AgentCredential& credential);
  // ListenerObserver: a payload from kRevocationChannel (malformed ones are logged and
  // ignored), and a reconnect of the LISTEN connection (notifications may have been lost, so a
  // check is requested).
  void OnRevocationNotice(absl::string_view payload) override;
  void OnListenerReconnected() override { RequestCheck(); }
  // Asks for a check soon, on the enforcer's thread. Does not block.
  void RequestCheck();
  // Runs one check now, blocking (the database). Returns how many credentials it revoked.
  absl::StatusOr<size_t> CheckNow();

  size_t stream_count() const;

 private:
  void Run();

  AccessStore* const access_;
  Authenticator* const auth_;
  CpMetrics* const metrics_;
  const absl::Duration check_interval_;

  mutable absl::Mutex mu_;
  // Open streams per credential, keyed by the stream's address for O(1) removal: one token may
  // be shared by thousands of agents.
  absl::flat_hash_map<AgentCredential,
                      absl::flat_hash_map<const RevocableStream*, std::shared_ptr<RevocableStream>>>
      open_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<AgentCredential> revoked_ ABSL_GUARDED_BY(mu_);
  bool check_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace flexgate::cp
