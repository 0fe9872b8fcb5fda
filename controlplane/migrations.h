// Schema migrations of the control plane: numbered SQL files (migrations/NNNN_name.sql) embedded
// into the binary at build time and applied on start, in order, each once, each in its own
// transaction, under a PostgreSQL advisory lock so that replicas starting together do not race.
// Applied versions are recorded in the schema_migrations table.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controlplane/pg.h"

namespace flexgate::cp {

// As generated from the migrations/ directory (see embed_migrations.cmake).
struct EmbeddedMigration {
  const char* file_name;  // "0001_init.sql"
  const char* sql;
};

// The migrations compiled into this binary, in no particular order.
std::vector<EmbeddedMigration> EmbeddedMigrations();

struct Migration {
  int version = 0;    // 1 for 0001_init.sql
  std::string name;   // "init"
  std::string sql;
};

// Parses the file names ("NNNN_name.sql", NNNN > 0), sorts by version, and refuses duplicate
// versions or malformed names (INVALID_ARGUMENT), so a bad migration set fails the build's tests
// rather than a production start.
absl::StatusOr<std::vector<Migration>> OrderMigrations(const std::vector<EmbeddedMigration>& files);

struct MigrationReport {
  int applied = 0;         // migrations run by this call
  int latest_version = 0;  // the schema version afterwards
};

// Applies every migration of `migrations` (ordered) not yet recorded in schema_migrations.
// Blocking; safe to call from several processes at once. A database that already carries a
// version newer than this binary knows is accepted (an older replica during a rolling upgrade).
absl::StatusOr<MigrationReport> ApplyMigrations(PgConn& conn,
                                                const std::vector<Migration>& migrations);

}  // namespace flexgate::cp
