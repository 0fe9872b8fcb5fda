// DbWorkers: a few threads that run blocking work (database calls) for agent streams, so gRPC's
// callback threads never block. Tasks posted with the same key run in order on the same thread,
// which keeps one stream's events (connect, acks, disconnect) ordered.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace flexgate::cp {

class DbWorkers {
 public:
  explicit DbWorkers(int threads);
  // Runs every task already posted, then joins.
  ~DbWorkers();
  DbWorkers(const DbWorkers&) = delete;
  DbWorkers& operator=(const DbWorkers&) = delete;

  // Thread-safe. After the destructor has started, tasks are dropped.
  void Post(uint64_t key, std::function<void()> task);

 private:
  struct Shard {
    absl::Mutex mu;
    std::deque<std::function<void()>> queue ABSL_GUARDED_BY(mu);
    bool stop ABSL_GUARDED_BY(mu) = false;
    std::thread thread;
  };
  static void Run(Shard* shard);

  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace flexgate::cp
