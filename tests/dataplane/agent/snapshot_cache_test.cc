// The last-known-good cache on a real RocksDB directory: round trip across reopen, fallback to
// the previous record when the latest is damaged, and damaged stores that are reported and
// skipped, never fatal.
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "common/canonical.h"
#include "common/config_loader.h"
#include "dataplane/agent/snapshot_cache.h"
#include "flexgate/v1/agent.pb.h"
#include "rocksdb/db.h"
#include "temp_dir.h"

namespace flexgate::agent {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

flexgate::v1::Config MakeConfig(int port) {
  auto config = ParseConfig(
      "clusters:\n"
      "  - name: web\n"
      "    endpoints:\n"
      "      - { address: 127.0.0.1, port: " + std::to_string(port) + " }\n"
      "routes:\n"
      "  - name: all\n"
      "    match: { path: { prefix: \"/\" } }\n"
      "    cluster: web\n");
  REQUIRE(config.ok());
  return *config;
}

std::unique_ptr<SnapshotCache> OpenCache(const std::string& dir,
                                         std::vector<std::string>* problems = nullptr) {
  std::vector<std::string> local;
  auto cache = SnapshotCache::Open(dir, problems != nullptr ? problems : &local);
  REQUIRE(cache.ok());
  return *std::move(cache);
}

void StoreVersion(SnapshotCache& cache, uint64_t version, int port) {
  auto config = MakeConfig(port);
  REQUIRE(cache.Store(version, ConfigHash(config), config).ok());
}

// Overwrites every file of the store whose name matches `pred` with same-sized garbage.
int Scribble(const std::string& store, const std::function<bool(const std::string&)>& pred) {
  int n = 0;
  for (const auto& entry : fs::directory_iterator(store)) {
    std::string name = entry.path().filename().string();
    if (!pred(name)) continue;
    auto size = fs::file_size(entry.path());
    std::ofstream out(entry.path(), std::ios::binary | std::ios::trunc);
    out << std::string(size, '\x5a');
    ++n;
  }
  return n;
}

TEST_CASE("an empty cache loads nothing and reports nothing") {
  TempDir dir;
  auto cache = OpenCache(dir.file("c"));
  CacheLoadResult r = cache->Load();
  CHECK_FALSE(r.snapshot.has_value());
  CHECK(r.problems.empty());
}

TEST_CASE("round trip: the latest stored snapshot survives a reopen") {
  TempDir dir;
  {
    auto cache = OpenCache(dir.path());
    StoreVersion(*cache, 1, 8081);
    StoreVersion(*cache, 2, 8082);
  }
  auto cache = OpenCache(dir.path());
  CacheLoadResult r = cache->Load();
  REQUIRE(r.snapshot.has_value());
  CHECK(r.problems.empty());
  CHECK(r.snapshot->version == 2);
  CHECK(r.snapshot->config.clusters(0).endpoints(0).port() == 8082);
  CHECK(r.snapshot->hash == ConfigHash(MakeConfig(8082)));
}

TEST_CASE("a latest record that fails its hash check falls back to the previous one") {
  TempDir dir;
  {
    auto cache = OpenCache(dir.path());
    StoreVersion(*cache, 4, 8084);
    StoreVersion(*cache, 5, 8085);
  }
  {
    // Damage the latest record behind the cache's back: right shape, wrong content.
    rocksdb::DB* raw = nullptr;
    REQUIRE(rocksdb::DB::Open(rocksdb::Options(), dir.file("snapshots"), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    std::string value;
    REQUIRE(db->Get(rocksdb::ReadOptions(), SnapshotCache::kLatestKey, &value).ok());
    flexgate::v1::Snapshot record;
    REQUIRE(record.ParseFromString(value));
    record.mutable_config()->mutable_clusters(0)->mutable_endpoints(0)->set_port(9999);
    REQUIRE(db->Put(rocksdb::WriteOptions(), SnapshotCache::kLatestKey,
                    record.SerializeAsString()).ok());
  }
  auto cache = OpenCache(dir.path());
  CacheLoadResult r = cache->Load();
  REQUIRE(r.snapshot.has_value());
  CHECK(r.snapshot->version == 4);
  REQUIRE(r.problems.size() == 1);
  CHECK_THAT(r.problems[0], Catch::Contains("hash check"));
}

TEST_CASE("garbage in the table files is reported and skipped") {
  TempDir dir;
  {
    auto cache = OpenCache(dir.path());
    StoreVersion(*cache, 1, 8081);
  }
  REQUIRE(Scribble(dir.file("snapshots"),
                   [](const std::string& n) { return n.size() > 4 && n.substr(n.size() - 4) == ".sst"; }) > 0);
  std::vector<std::string> problems;
  auto cache = OpenCache(dir.path(), &problems);
  CacheLoadResult r = cache->Load();
  CHECK_FALSE(r.snapshot.has_value());
  CHECK(problems.size() + r.problems.size() >= 1);
  // Whatever RocksDB made of it, the cache still takes new snapshots.
  StoreVersion(*cache, 2, 8082);
  CacheLoadResult again = cache->Load();
  REQUIRE(again.snapshot.has_value());
  CHECK(again.snapshot->version == 2);
}

TEST_CASE("a store RocksDB refuses to open is moved aside and replaced") {
  TempDir dir;
  {
    auto cache = OpenCache(dir.path());
    StoreVersion(*cache, 3, 8083);
  }
  REQUIRE(Scribble(dir.file("snapshots"), [](const std::string& n) {
            return n == "CURRENT" || n.rfind("MANIFEST", 0) == 0;
          }) >= 2);
  std::vector<std::string> problems;
  auto cache = OpenCache(dir.path(), &problems);
  REQUIRE(problems.size() == 1);
  CHECK_THAT(problems[0], Catch::Contains("moved aside"));
  CHECK(fs::exists(dir.file("snapshots.corrupt")));
  CacheLoadResult r = cache->Load();
  CHECK_FALSE(r.snapshot.has_value());
  StoreVersion(*cache, 4, 8084);
  CHECK(cache->Load().snapshot->version == 4);
}

TEST_CASE("an unusable cache directory is an error, not a crash") {
  TempDir dir;
  std::ofstream(dir.file("file")) << "not a directory";
  std::vector<std::string> problems;
  CHECK_FALSE(SnapshotCache::Open(dir.file("file") + "/sub", &problems).ok());
  CHECK_FALSE(LoadOrCreateAgentId(dir.file("file") + "/sub").ok());
}

TEST_CASE("the agent id is generated once and then stable") {
  TempDir dir;
  auto first = LoadOrCreateAgentId(dir.file("cache"));
  REQUIRE(first.ok());
  CHECK(first->rfind("agent-", 0) == 0);
  CHECK(first->size() == 6 + 32);
  auto second = LoadOrCreateAgentId(dir.file("cache"));
  REQUIRE(second.ok());
  CHECK(*second == *first);
  TempDir other;
  auto third = LoadOrCreateAgentId(other.path());
  REQUIRE(third.ok());
  CHECK(*third != *first);
  // An operator-written id is taken as is (whitespace trimmed).
  std::ofstream(other.file("agent_id"), std::ios::trunc) << "  edge-7 \n";
  CHECK(*LoadOrCreateAgentId(other.path()) == "edge-7");
}

}  // namespace
}  // namespace flexgate::agent
