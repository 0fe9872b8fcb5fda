#include "controlplane/migrations.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace flexgate::cp {
namespace {

// Arbitrary but fixed: every flexgate-cp replica takes this advisory lock while it migrates.
constexpr int64_t kMigrationLockKey = 0x466c6578'4d696772;  // "FlexMigr"

}  // namespace

absl::StatusOr<std::vector<Migration>> OrderMigrations(
    const std::vector<EmbeddedMigration>& files) {
  std::vector<Migration> out;
  absl::flat_hash_set<int> seen;
  for (const EmbeddedMigration& f : files) {
    std::string file = f.file_name;
    size_t underscore = file.find('_');
    if (underscore == std::string::npos || underscore == 0 || !absl::EndsWith(file, ".sql")) {
      return absl::InvalidArgumentError(
          absl::StrCat("migration file name \"", file, "\" is not NNNN_name.sql"));
    }
    std::string digits = file.substr(0, underscore);
    int version = 0;
    if (!std::all_of(digits.begin(), digits.end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(digits, &version) || version <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("migration file name \"", file, "\" does not start with a positive number"));
    }
    std::string name = file.substr(underscore + 1, file.size() - underscore - 1 - 4);
    if (name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("migration \"", file, "\" has no name"));
    }
    if (!seen.insert(version).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate migration version ", version));
    }
    out.push_back(Migration{version, std::move(name), f.sql});
  }
  std::sort(out.begin(), out.end(),
            [](const Migration& a, const Migration& b) { return a.version < b.version; });
  return out;
}

absl::StatusOr<MigrationReport> ApplyMigrations(PgConn& conn,
                                                const std::vector<Migration>& migrations) {
  // A session-level lock: held across the per-migration transactions below and released on
  // every path (also when the connection dies, which ends the session).
  auto lock = conn.Exec("SELECT pg_advisory_lock($1)", {PgParam::Int(kMigrationLockKey)});
  if (!lock.ok()) return lock.status();
  struct Unlock {
    PgConn& conn;
    ~Unlock() {
      (void)conn.Exec("SELECT pg_advisory_unlock($1)", {PgParam::Int(kMigrationLockKey)});
    }
  } unlock{conn};

  absl::Status s = conn.ExecScript(
      "CREATE TABLE IF NOT EXISTS schema_migrations ("
      "  version integer PRIMARY KEY,"
      "  name text NOT NULL,"
      "  applied_at timestamptz NOT NULL DEFAULT now())");
  if (!s.ok()) return s;

  auto applied = conn.Exec("SELECT version FROM schema_migrations");
  if (!applied.ok()) return applied.status();
  absl::flat_hash_set<int64_t> done;
  MigrationReport report;
  for (int i = 0; i < applied->rows(); ++i) {
    int64_t v = applied->GetInt64(i, 0);
    done.insert(v);
    report.latest_version = std::max<int>(report.latest_version, static_cast<int>(v));
  }

  for (const Migration& m : migrations) {
    if (done.contains(m.version)) continue;
    s = InTransaction(conn, [&](PgConn& c) -> absl::Status {
      absl::Status run = c.ExecScript(m.sql);
      if (!run.ok()) {
        return absl::Status(run.code(), absl::StrCat("migration ", m.version, "_", m.name,
                                                     " failed: ", run.message()));
      }
      auto rec = c.Exec("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        {PgParam::Int(m.version), PgParam::Text(m.name)});
      return rec.status();
    });
    if (!s.ok()) return s;
    FG_LOG_INFO("migration applied", {{"version", m.version}, {"name", m.name}});
    ++report.applied;
    report.latest_version = std::max(report.latest_version, m.version);
  }
  return report;
}

}  // namespace flexgate::cp
