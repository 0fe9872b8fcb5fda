// AgentState: what the agent serves and how its control side is doing, shared between the thread
// that applies snapshots (main at start-up, then the control thread) and the admin thread that
// reports it. Never touched on the request path, so a mutex is fine here.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "flexgate/v1/config.pb.h"

namespace flexgate::agent {

enum class SnapshotSource { kFile, kCache, kControlPlane };

// "file", "cache", "control_plane": the words /health/ready, /config_dump and metrics use.
const char* SourceName(SnapshotSource source);

// One served snapshot. Immutable once published; shared as shared_ptr<const ServedSnapshot>.
struct ServedSnapshot {
  uint64_t version = 0;
  std::string hash;
  SnapshotSource source = SnapshotSource::kFile;
  absl::Time since;                   // when every worker started serving it
  absl::Duration apply_duration;      // receipt (or load) to every worker serving it
  std::shared_ptr<const flexgate::v1::Config> config;
};

class AgentState {
 public:
  // The snapshot every worker serves now (nullptr before the first).
  std::shared_ptr<const ServedSnapshot> served() const ABSL_LOCKS_EXCLUDED(mu_);
  void SetServed(std::shared_ptr<const ServedSnapshot> snapshot) ABSL_LOCKS_EXCLUDED(mu_);

  // Ready = a snapshot is served and the agent is not draining.
  bool ready() const { return served() != nullptr && !draining(); }

  bool draining() const { return draining_.load(std::memory_order_acquire); }
  void SetDraining() { draining_.store(true, std::memory_order_release); }

  // Control-plane connection (always false in static mode).
  bool control_plane_connected() const { return cp_connected_.load(std::memory_order_acquire); }
  void SetControlPlaneConnected(bool connected) {
    cp_connected_.store(connected, std::memory_order_release);
  }

  // Monotonic counters, exported by /metrics and /stats.
  std::atomic<uint64_t> snapshots_applied{0};
  std::atomic<uint64_t> snapshots_rejected{0};
  std::atomic<uint64_t> control_plane_connects{0};
  std::atomic<uint64_t> control_plane_disconnects{0};
  std::atomic<uint64_t> cache_writes{0};
  std::atomic<uint64_t> cache_errors{0};

  // The agent id in use (set once at start-up, or adopted from the control plane).
  std::string agent_id() const ABSL_LOCKS_EXCLUDED(mu_);
  void SetAgentId(std::string id) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::shared_ptr<const ServedSnapshot> served_ ABSL_GUARDED_BY(mu_);
  std::string agent_id_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> draining_{false};
  std::atomic<bool> cp_connected_{false};
};

}  // namespace flexgate::agent
