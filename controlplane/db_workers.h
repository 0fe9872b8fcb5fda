// DbWorkers: a few threads that write agent-stream events (Hello, snapshot sent, Ack, Nack,
// Heartbeat, disconnect) to PostgreSQL, so gRPC's callback threads never block.
//
// Events posted with the same key (the agent id) run in order on the same thread. Each thread
// drains its whole queue at once and writes it in batches: one statement per event kind for up
// to kMaxBatch events (unnest of parameter arrays), instead of one statement per event. At
// 10,000 agents a config version causes 20,000 writes within a second; batched, the database
// sees a few dozen statements.
//
// Order is kept where it matters: a batch never holds two events of the same agent, so the
// statements of one batch touch disjoint rows and may run in any order; a second event of an
// agent first flushes the batch that holds the earlier one. The semantics of each write are those
// of the single-event ConfigStore methods (session guard on disconnect, first ACK only in
// agent_version_acks, sent_version only moves forward).
//
// Thread-safety: Post and Shutdown are thread-safe. Shutdown (and the destructor) stop the
// threads after draining what is queued, up to a deadline.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controlplane/store.h"

namespace flexgate::cp {

class CpMetrics;

// The first message of a stream. `authenticate` runs on the worker (it may read the database on
// an auth-cache miss) and returns the agents-row record, or nullopt when the stream was refused
// (it has then finished the stream itself). `done` gets the last NACKed version of the agent
// (0 = none) or the error of the upsert; it runs on the worker.
struct HelloEvent {
  std::function<std::optional<AgentHelloRecord>()> authenticate;
  std::function<void(absl::StatusOr<uint64_t> last_nack)> done;
};
using SentEvent = AgentSentRecord;
struct AckEvent {
  AgentAckRecord ack;
  absl::Time received;  // receipt on this replica; the database time is derived from it
};
struct NackEvent {
  int64_t tenant_id = 0;
  std::string agent_id;
  uint64_t version = 0;
  std::string error;
};
using HeartbeatEvent = AgentHeartbeatRecord;
using DisconnectEvent = AgentDisconnectRecord;
using AgentEvent =
    std::variant<HelloEvent, SentEvent, AckEvent, NackEvent, HeartbeatEvent, DisconnectEvent>;

class DbWorkers {
 public:
  static constexpr size_t kMaxBatch = 1000;

  // `store` and `metrics` must outlive this object.
  DbWorkers(ConfigStore* store, CpMetrics* metrics, int threads);
  // Shutdown(now + 5 s) unless already shut down.
  ~DbWorkers();
  DbWorkers(const DbWorkers&) = delete;
  DbWorkers& operator=(const DbWorkers&) = delete;

  // Thread-safe. Events posted after Shutdown has finished are dropped.
  void Post(uint64_t key, AgentEvent event);

  // Writes what is queued (events posted meanwhile too) until `deadline`, drops the rest with a
  // warning, and joins the threads. Idempotent.
  void Shutdown(absl::Time deadline);

 private:
  struct Shard {
    absl::Mutex mu;
    std::deque<AgentEvent> queue ABSL_GUARDED_BY(mu);
    bool stop ABSL_GUARDED_BY(mu) = false;
    absl::Time deadline ABSL_GUARDED_BY(mu) = absl::InfiniteFuture();
    std::thread thread;
  };
  void Run(Shard* shard);

  ConfigStore* const store_;
  CpMetrics* const metrics_;
  std::vector<std::unique_ptr<Shard>> shards_;
  bool joined_ = false;  // only the shutting-down thread touches it
};

}  // namespace flexgate::cp
