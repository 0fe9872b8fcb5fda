// SnapshotCache: the agent's last-known-good store. Every snapshot the agent applies is written
// here (RocksDB under <cache-dir>/snapshots) before it is ACKed, so an agent that restarts while
// the control plane is down serves its last config at once.
//
// Robustness rules: a store that cannot be opened is moved aside and replaced by an empty one; a
// record that cannot be read or whose config does not hash to its recorded hash is skipped in
// favour of the previous record. Both are reported to the caller, never fatal.
//
// Thread-safety: not thread-safe; the agent uses it from one thread at a time (main during
// start-up, then the control thread). It does disk I/O: never call it from a worker loop.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "flexgate/v1/config.pb.h"

namespace rocksdb {
class DB;
}

namespace flexgate::agent {

struct CachedSnapshot {
  uint64_t version = 0;
  std::string hash;
  flexgate::v1::Config config;
};

struct CacheLoadResult {
  // The newest record that reads back intact, if any.
  std::optional<CachedSnapshot> snapshot;
  // One line per record or store that was skipped, for logs and metrics.
  std::vector<std::string> problems;
};

class SnapshotCache {
 public:
  // Opens or creates the store under `dir` (created if missing). When RocksDB refuses the
  // existing store (corruption, unreadable files) it is renamed to snapshots.corrupt, a fresh
  // store is created, and the reason is appended to `problems`. Errors only when no store at all
  // can be created (such as `dir` not writable).
  static absl::StatusOr<std::unique_ptr<SnapshotCache>> Open(const std::string& dir,
                                                             std::vector<std::string>* problems);
  ~SnapshotCache();

  SnapshotCache(const SnapshotCache&) = delete;
  SnapshotCache& operator=(const SnapshotCache&) = delete;

  // Reads the newest intact snapshot, falling back to the one before it.
  CacheLoadResult Load() const;

  // Durably records an applied snapshot (synced and flushed before returning) and keeps the
  // previous record as a fallback. `hash` must be ConfigHash(config).
  absl::Status Store(uint64_t version, const std::string& hash, const flexgate::v1::Config& config);

  // Key names of the two records, for tests that damage them on purpose.
  static constexpr const char* kLatestKey = "snapshot/latest";
  static constexpr const char* kPreviousKey = "snapshot/previous";

 private:
  explicit SnapshotCache(std::unique_ptr<rocksdb::DB> db);
  std::unique_ptr<rocksdb::DB> db_;
};

// The agent's stable id, kept in <dir>/agent_id: read when present, otherwise generated
// ("agent-" + 32 random hex digits) and written atomically (temp file + rename). Creates `dir`.
absl::StatusOr<std::string> LoadOrCreateAgentId(const std::string& dir);

}  // namespace flexgate::agent
