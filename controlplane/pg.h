// PostgreSQL access for the control plane: RAII wrappers over libpq's PGconn and PGresult, and a
// bounded connection pool.
//
// Every statement that carries data runs through PQexecParams with out-of-line parameters; SQL
// text is never assembled from input. Errors are absl::Status: a lost or unusable connection and
// most server errors become UNAVAILABLE (the caller may retry), a unique violation becomes
// ALREADY_EXISTS, a serialization failure or deadlock becomes ABORTED.
//
// Thread-safety: a PgConn is used by one thread at a time (the pool hands it out exclusively);
// PgPool is thread-safe.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace flexgate::cp {

// One query parameter, sent in text format (or binary for bytea). nullopt is SQL NULL.
struct PgParam {
  std::optional<std::string> value;
  bool binary = false;

  static PgParam Text(std::string s) { return {std::move(s), false}; }
  static PgParam Int(int64_t v) { return {std::to_string(v), false}; }
  static PgParam Uint(uint64_t v) { return {std::to_string(v), false}; }
  static PgParam Bool(bool v) { return {v ? "t" : "f", false}; }
  static PgParam Bytes(std::string b) { return {std::move(b), true}; }
  static PgParam Null() { return {std::nullopt, false}; }
};

// Owns a PGresult. Values are read in text format.
class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(PGresult* res) : res_(res) {}

  int rows() const { return res_ ? PQntuples(res_.get()) : 0; }
  bool IsNull(int row, int col) const { return PQgetisnull(res_.get(), row, col) != 0; }
  std::string GetString(int row, int col) const;
  int64_t GetInt64(int row, int col) const;
  bool GetBool(int row, int col) const;
  // Decodes a bytea column (text format, "\x..." hex) into raw bytes.
  std::string GetBytes(int row, int col) const;
  // Number of rows an INSERT/UPDATE/DELETE touched.
  int64_t affected_rows() const;

 private:
  struct Clear {
    void operator()(PGresult* r) const { PQclear(r); }
  };
  std::unique_ptr<PGresult, Clear> res_;
};

// Owns a PGconn.
class PgConn {
 public:
  // Opens a connection (blocking). `url` is a libpq connection string or postgresql:// URI.
  static absl::StatusOr<std::unique_ptr<PgConn>> Connect(const std::string& url);
  ~PgConn();
  PgConn(const PgConn&) = delete;
  PgConn& operator=(const PgConn&) = delete;

  // Runs one parameterized statement. Returns the result of a command or query that succeeded.
  absl::StatusOr<PgResult> Exec(std::string_view sql, const std::vector<PgParam>& params = {});
  // Runs a fixed multi-statement script with no parameters (migrations, BEGIN/COMMIT).
  absl::Status ExecScript(std::string_view sql);

  // True when the connection is usable; false after a network error or server restart.
  bool ok() const { return PQstatus(conn_) == CONNECTION_OK; }
  // Re-establishes a broken connection (blocking).
  absl::Status Reset();

  PGconn* raw() { return conn_; }

 private:
  explicit PgConn(PGconn* conn) : conn_(conn) {}
  absl::Status ResultStatus(PGresult* res, std::string_view what);
  bool RetryAfterLostConnection(bool was_idle, const PGresult* res);

  PGconn* conn_;
};

// A bounded pool. Connections are opened lazily up to `size`; Acquire waits for a free one.
class PgPool {
 public:
  struct Options {
    std::string url;
    int size = 8;
    // How long Acquire waits for a free connection before it gives up with UNAVAILABLE.
    absl::Duration acquire_timeout = absl::Seconds(5);
  };

  // Returns the connection to the pool when it goes out of scope.
  class Lease {
   public:
    Lease(PgPool* pool, std::unique_ptr<PgConn> conn) : pool_(pool), conn_(std::move(conn)) {}
    Lease(Lease&&) = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    PgConn* operator->() { return conn_.get(); }
    PgConn& operator*() { return *conn_; }

   private:
    PgPool* pool_;
    std::unique_ptr<PgConn> conn_;
  };

  explicit PgPool(Options options) : options_(std::move(options)) {}
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  // Hands out a connected connection, reconnecting a broken one first. UNAVAILABLE when the
  // database cannot be reached or the pool stays exhausted for acquire_timeout.
  absl::StatusOr<Lease> Acquire();

  const std::string& url() const { return options_.url; }

 private:
  void Release(std::unique_ptr<PgConn> conn);

  const Options options_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<PgConn>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // idle + leased
};

// Runs `fn(conn)` inside BEGIN/COMMIT; rolls back when fn returns an error.
template <typename Fn>
absl::Status InTransaction(PgConn& conn, Fn&& fn) {
  absl::Status s = conn.ExecScript("BEGIN");
  if (!s.ok()) return s;
  s = fn(conn);
  if (!s.ok()) {
    // Best effort: a broken connection rolls back on its own.
    (void)conn.ExecScript("ROLLBACK");
    return s;
  }
  return conn.ExecScript("COMMIT");
}

// A database URL with any password removed, safe to log.
std::string RedactDatabaseUrl(std::string_view url);

}  // namespace flexgate::cp
