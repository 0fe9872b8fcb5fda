#include "controlplane/db_workers.h"

namespace flexgate::cp {

DbWorkers::DbWorkers(int threads) {
  if (threads < 1) threads = 1;
  for (int i = 0; i < threads; ++i) {
    auto shard = std::make_unique<Shard>();
    shard->thread = std::thread(&DbWorkers::Run, shard.get());
    shards_.push_back(std::move(shard));
  }
}

DbWorkers::~DbWorkers() {
  for (auto& s : shards_) {
    absl::MutexLock lock(&s->mu);
    s->stop = true;
  }
  for (auto& s : shards_) s->thread.join();
}

void DbWorkers::Post(uint64_t key, std::function<void()> task) {
  Shard& s = *shards_[key % shards_.size()];
  absl::MutexLock lock(&s.mu);
  if (s.stop) return;
  s.queue.push_back(std::move(task));
}

void DbWorkers::Run(Shard* shard) {
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&shard->mu);
      shard->mu.Await(absl::Condition(
          +[](Shard* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) { return s->stop || !s->queue.empty(); },
          shard));
      if (shard->queue.empty()) return;  // stop requested and drained
      task = std::move(shard->queue.front());
      shard->queue.pop_front();
    }
    task();
  }
}

}  // namespace flexgate::cp
