#include "dataplane/agent/snapshot_cache.h"

#include <openssl/rand.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/canonical.h"
#include "flexgate/v1/agent.pb.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace flexgate::agent {
namespace {

namespace fs = std::filesystem;

rocksdb::Options StoreOptions() {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  // The store holds two small records: keep its footprint (files, threads, logs) minimal.
  options.max_open_files = 16;
  options.keep_log_file_num = 2;
  options.info_log_level = rocksdb::WARN_LEVEL;
  options.max_background_jobs = 1;
  return options;
}

absl::Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  if (s.IsNotFound()) return absl::NotFoundError(absl::StrCat(what, ": ", s.ToString()));
  if (s.IsCorruption()) return absl::DataLossError(absl::StrCat(what, ": ", s.ToString()));
  return absl::UnavailableError(absl::StrCat(what, ": ", s.ToString()));
}

absl::StatusOr<std::unique_ptr<rocksdb::DB>> OpenDb(const std::string& path) {
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(StoreOptions(), path, &raw);
  if (!s.ok()) return FromRocks(s, absl::StrCat("open ", path));
  return std::unique_ptr<rocksdb::DB>(raw);
}

}  // namespace

SnapshotCache::SnapshotCache(std::unique_ptr<rocksdb::DB> db) : db_(std::move(db)) {}
SnapshotCache::~SnapshotCache() = default;

absl::StatusOr<std::unique_ptr<SnapshotCache>> SnapshotCache::Open(
    const std::string& dir, std::vector<std::string>* problems) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cache dir ", dir, ": ", ec.message()));
  const std::string path = (fs::path(dir) / "snapshots").string();

  auto db = OpenDb(path);
  if (!db.ok()) {
    // Keep the damaged store for inspection (one generation only, so disk use stays bounded)
    // and start an empty one: a cache must never keep the agent from taking config.
    const std::string aside = path + ".corrupt";
    problems->push_back(absl::StrCat(db.status().message(), "; moved aside to ", aside));
    fs::remove_all(aside, ec);
    fs::rename(path, aside, ec);
    if (ec) fs::remove_all(path, ec);
    db = OpenDb(path);
    if (!db.ok()) return db.status();
  }
  return std::unique_ptr<SnapshotCache>(new SnapshotCache(*std::move(db)));
}

CacheLoadResult SnapshotCache::Load() const {
  CacheLoadResult result;
  for (const char* key : {kLatestKey, kPreviousKey}) {
    std::string value;
    rocksdb::ReadOptions read_options;
    read_options.verify_checksums = true;
    rocksdb::Status s = db_->Get(read_options, key, &value);
    if (s.IsNotFound()) continue;
    if (!s.ok()) {
      result.problems.push_back(absl::StrCat("read ", key, ": ", s.ToString()));
      continue;
    }
    flexgate::v1::Snapshot record;
    if (!record.ParseFromString(value)) {
      result.problems.push_back(absl::StrCat(key, ": record does not parse"));
      continue;
    }
    std::string actual = ConfigHash(record.config());
    if (actual != record.hash()) {
      result.problems.push_back(absl::StrCat(key, ": version ", record.version(),
                                             " fails its hash check (recorded ", record.hash(),
                                             ", computed ", actual, ")"));
      continue;
    }
    result.snapshot = CachedSnapshot{record.version(), record.hash(),
                                     std::move(*record.mutable_config())};
    break;
  }
  return result;
}

absl::Status SnapshotCache::Store(uint64_t version, const std::string& hash,
                                  const flexgate::v1::Config& config) {
  flexgate::v1::Snapshot record;
  record.set_version(version);
  record.set_hash(hash);
  *record.mutable_config() = config;
  std::string value;
  if (!record.SerializeToString(&value)) return absl::InternalError("serialize snapshot record");

  rocksdb::WriteBatch batch;
  std::string latest;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), kLatestKey, &latest);
  if (s.ok()) {
    batch.Put(kPreviousKey, latest);
  } else if (!s.IsNotFound()) {
    // An unreadable latest record is no fallback worth keeping; overwrite it.
    batch.Delete(kPreviousKey);
  }
  batch.Put(kLatestKey, value);
  rocksdb::WriteOptions write_options;
  write_options.sync = true;
  if (absl::Status st = FromRocks(db_->Write(write_options, &batch), "write snapshot"); !st.ok()) {
    return st;
  }
  // Flushing moves the record from the log into a checksummed table file, so a later torn log
  // write cannot silently lose it.
  return FromRocks(db_->Flush(rocksdb::FlushOptions()), "flush snapshot");
}

absl::StatusOr<std::string> LoadOrCreateAgentId(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cache dir ", dir, ": ", ec.message()));
  const fs::path path = fs::path(dir) / "agent_id";
  {
    std::ifstream in(path);
    std::string id;
    if (in && std::getline(in, id)) {
      id = std::string(absl::StripAsciiWhitespace(id));
      if (!id.empty()) return id;
    }
  }
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return absl::InternalError("no randomness for agent id");
  std::string id = absl::StrCat(
      "agent-", absl::BytesToHexString(
                    absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes))));
  const fs::path tmp = fs::path(dir) / "agent_id.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << id << "\n";
    out.flush();
    if (!out) return absl::UnavailableError(absl::StrCat("write ", tmp.string()));
  }
  fs::rename(tmp, path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("rename to ", path.string(), ": ", ec.message()));
  return id;
}

}  // namespace flexgate::agent
