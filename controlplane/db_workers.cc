#include "controlplane/db_workers.h"

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "common/log.h"
#include "controlplane/metrics.h"

namespace flexgate::cp {
namespace {

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

// One drained queue being written: per-kind batches over distinct agents.
class Batch {
 public:
  Batch(ConfigStore* store, CpMetrics* metrics) : store_(store), metrics_(metrics) {}

  void Add(AgentEvent& event) {
    std::visit(Overloaded{
                   [&](HelloEvent& e) {
                     std::optional<AgentHelloRecord> rec = e.authenticate();
                     if (!rec) return;  // refused; the stream has finished itself
                     Reserve(rec->tenant_id, rec->agent_id);
                     hellos_.push_back({std::move(*rec), std::move(e.done)});
                   },
                   [&](SentEvent& e) {
                     Reserve(e.tenant_id, e.agent_id);
                     sent_.push_back(&e);
                   },
                   [&](AckEvent& e) {
                     Reserve(e.ack.tenant_id, e.ack.agent_id);
                     e.ack.received_ago = absl::Now() - e.received;
                     acks_.push_back(&e.ack);
                   },
                   [&](NackEvent& e) {
                     Reserve(e.tenant_id, e.agent_id);
                     nacks_.push_back(&e);
                   },
                   [&](HeartbeatEvent& e) {
                     Reserve(e.tenant_id, e.agent_id);
                     beats_.push_back(&e);
                   },
                   [&](DisconnectEvent& e) {
                     Reserve(e.tenant_id, e.agent_id);
                     gone_.push_back(&e);
                   },
               },
               event);
    if (agents_.size() >= DbWorkers::kMaxBatch) Flush();
  }

  // Writes everything held; the statements touch disjoint agents, so their order is free.
  void Flush() {
    if (agents_.empty()) return;
    if (!hellos_.empty()) {
      std::vector<const AgentHelloRecord*> recs;
      recs.reserve(hellos_.size());
      for (const auto& h : hellos_) recs.push_back(&h.first);
      auto nacks = store_->AgentsConnected(recs);
      for (size_t i = 0; i < hellos_.size(); ++i) {
        hellos_[i].second(nacks.ok() ? absl::StatusOr<uint64_t>((*nacks)[i])
                                     : absl::StatusOr<uint64_t>(nacks.status()));
      }
    }
    Warn(store_->AgentsSent(sent_), "snapshot sends", sent_.size());
    if (!acks_.empty()) {
      auto converged = store_->AgentsAcked(acks_);
      if (converged.ok()) {
        for (double s : *converged) metrics_->convergence_seconds.Observe(s);
      } else {
        Warn(converged.status(), "acks", acks_.size());
      }
    }
    for (const NackEvent* n : nacks_) {
      Warn(store_->AgentNacked(n->tenant_id, n->agent_id, n->version, n->error), "nack", 1);
    }
    Warn(store_->AgentsHeartbeat(beats_), "heartbeats", beats_.size());
    Warn(store_->AgentsDisconnected(gone_), "disconnects", gone_.size());
    metrics_->db_event_batches.Increment();
    hellos_.clear();
    sent_.clear();
    acks_.clear();
    nacks_.clear();
    beats_.clear();
    gone_.clear();
    agents_.clear();
  }

 private:
  // A second event of an agent must see the first one written: flush first.
  void Reserve(int64_t tenant_id, const std::string& agent_id) {
    if (!agents_.emplace(tenant_id, agent_id).second) {
      Flush();
      agents_.emplace(tenant_id, agent_id);
    }
  }

  static void Warn(const absl::Status& s, const char* what, size_t n) {
    if (s.ok()) return;
    FG_LOG_WARN("cannot record agent events",
                {{"events", what}, {"count", n}, {"error", std::string(s.message())}});
  }

  ConfigStore* const store_;
  CpMetrics* const metrics_;
  absl::flat_hash_set<std::pair<int64_t, std::string>> agents_;
  std::vector<std::pair<AgentHelloRecord, std::function<void(absl::StatusOr<uint64_t>)>>> hellos_;
  std::vector<const AgentSentRecord*> sent_;
  std::vector<const AgentAckRecord*> acks_;
  std::vector<const NackEvent*> nacks_;
  std::vector<const AgentHeartbeatRecord*> beats_;
  std::vector<const AgentDisconnectRecord*> gone_;
};

}  // namespace

DbWorkers::DbWorkers(ConfigStore* store, CpMetrics* metrics, int threads)
    : store_(store), metrics_(metrics) {
  if (threads < 1) threads = 1;
  for (int i = 0; i < threads; ++i) {
    auto shard = std::make_unique<Shard>();
    shard->thread = std::thread(&DbWorkers::Run, this, shard.get());
    shards_.push_back(std::move(shard));
  }
}

DbWorkers::~DbWorkers() { Shutdown(absl::Now() + absl::Seconds(5)); }

void DbWorkers::Shutdown(absl::Time deadline) {
  if (joined_) return;
  joined_ = true;
  for (auto& s : shards_) {
    absl::MutexLock lock(&s->mu);
    s->stop = true;
    s->deadline = deadline;
  }
  for (auto& s : shards_) s->thread.join();
}

void DbWorkers::Post(uint64_t key, AgentEvent event) {
  Shard& s = *shards_[key % shards_.size()];
  absl::MutexLock lock(&s.mu);
  if (s.stop && absl::Now() > s.deadline) return;
  s.queue.push_back(std::move(event));
}

void DbWorkers::Run(Shard* shard) {
  Batch batch(store_, metrics_);
  for (;;) {
    std::deque<AgentEvent> events;
    {
      absl::MutexLock lock(&shard->mu);
      shard->mu.Await(absl::Condition(
          +[](Shard* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) { return s->stop || !s->queue.empty(); },
          shard));
      if (shard->queue.empty()) return;  // stop requested and drained
      if (shard->stop && absl::Now() > shard->deadline) {
        // Shutdown must not hang on a slow or unreachable database: the rows of streams that
        // ended are repaired when those agents reconnect (their Hello rewrites the row).
        FG_LOG_WARN("shutdown grace over: agent events not written",
                    {{"dropped", shard->queue.size()}});
        shard->queue.clear();
        return;
      }
      events.swap(shard->queue);
    }
    // The events stay in `events` while the batch points into them.
    for (AgentEvent& e : events) batch.Add(e);
    batch.Flush();
  }
}

}  // namespace flexgate::cp
