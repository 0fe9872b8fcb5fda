// Distributor: learns of new config versions and hands them to the connected agent streams.
//
// A dedicated PostgreSQL connection LISTENs on the flexgate_config channel on its own thread
// (poll on PQsocket, PQconsumeInput, PQnotifies). Every replica receives every notification, so
// an apply on one replica reaches agents connected to any other. For each notification the
// version is loaded and encoded once (PrepareSnapshot) and offered to every stream of that
// tenant; each stream decides on its own what to send (AgentStreamState).
//
// When the LISTEN connection is lost, it reconnects with backoff and then reloads the live
// version of every tenant with connected streams, so notifications missed meanwhile are not lost.
//
// The same connection LISTENs on kRevocationChannel (access_store.h) and hands those payloads,
// and each reconnect, to a ListenerObserver (the RevocationEnforcer), so revocations need no
// second connection per replica.
//
// Thread-safety: all public methods are thread-safe. Lock order: Distributor::mu_ is never held
// while calling into a sink (sinks take their own locks and may call back into Unregister).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "controlplane/metrics.h"
#include "controlplane/snapshot_encoding.h"
#include "controlplane/store.h"

namespace flexgate::cp {

// A connected agent stream, as the distributor sees it.
class SnapshotSink {
 public:
  virtual ~SnapshotSink() = default;
  // A version for this sink's tenant. Must not block.
  virtual void Offer(std::shared_ptr<const PreparedSnapshot> snapshot) = 0;
  // Ends the stream (server shutdown). Must not block.
  virtual void Close() = 0;
};

// What the LISTEN connection reports besides config versions. Called on the listener thread:
// must not block for long (no database calls).
class ListenerObserver {
 public:
  virtual ~ListenerObserver() = default;
  // A notification on kRevocationChannel.
  virtual void OnRevocationNotice(absl::string_view payload) = 0;
  // The LISTEN connection was re-established: notifications sent while it was down are lost.
  virtual void OnListenerReconnected() = 0;
};

class Distributor {
 public:
  // `observer` (may be null) must outlive the listener thread (Stop).
  Distributor(std::string database_url, ConfigStore* store, CpMetrics* metrics,
              ListenerObserver* observer = nullptr);
  ~Distributor();  // Stops the listener.
  Distributor(const Distributor&) = delete;
  Distributor& operator=(const Distributor&) = delete;

  // Connects the LISTEN connection (blocking) and starts its thread.
  absl::Status Start();
  // Stops and joins the listener thread. Idempotent.
  void Stop();

  void Register(int64_t tenant_id, std::shared_ptr<SnapshotSink> sink);
  void Unregister(int64_t tenant_id, const SnapshotSink* sink);

  // The tenant's live version, prepared (nullptr when the tenant has no config yet). While the
  // LISTEN connection is up, the live version number comes from memory (every notification
  // updates it), so an agent's Hello costs no database read once the tenant's version is
  // prepared; otherwise, or for a tenant not seen yet, it is read from the database. Blocking
  // in those cases.
  absl::StatusOr<std::shared_ptr<const PreparedSnapshot>> Latest(int64_t tenant_id);

  // Closes every registered stream (graceful shutdown).
  void CloseAll();

  // True while the LISTEN connection is up.
  bool listening() const { return listening_.load(std::memory_order_relaxed); }
  size_t sink_count() const;

 private:
  void ListenLoop();
  absl::Status ConnectListener();
  // Loads, prepares and caches a version; then offers it to the tenant's sinks.
  void Publish(int64_t tenant_id, uint64_t version);
  absl::StatusOr<std::shared_ptr<const PreparedSnapshot>> Load(int64_t tenant_id,
                                                               uint64_t version);
  void ReloadAll();
  void NoteLive(int64_t tenant_id, uint64_t version);

  const std::string database_url_;
  ConfigStore* const store_;
  CpMetrics* const metrics_;
  ListenerObserver* const observer_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<int64_t, std::vector<std::shared_ptr<SnapshotSink>>> sinks_
      ABSL_GUARDED_BY(mu_);
  // Newest live version number per tenant, as learned from notifications and database reads
  // since the LISTEN connection was (re)established. Cleared on reconnect: notifications sent
  // while it was down are lost.
  absl::flat_hash_map<int64_t, uint64_t> live_known_ ABSL_GUARDED_BY(mu_);
  // Newest prepared version per tenant.
  absl::flat_hash_map<int64_t, std::shared_ptr<const PreparedSnapshot>> latest_
      ABSL_GUARDED_BY(mu_);

  std::unique_ptr<PgConn> listen_conn_;  // Only the listener thread touches it after Start.
  std::thread thread_;
  int wake_fd_ = -1;  // eventfd: wakes the listener's poll for Stop
  std::atomic<bool> stopping_{false};
  std::atomic<bool> listening_{false};
};

}  // namespace flexgate::cp
