#include "controlplane/pg.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace flexgate::cp {
namespace {

// Maps a failed result to a status. SQLSTATE classes: 23505 unique violation, 40001/40P01
// serialization failure and deadlock (retryable conflicts), everything else UNAVAILABLE as the
// design asks: a database problem is never a crash and never looks like a client error.
absl::Status StatusFromSqlState(const char* sqlstate, std::string message) {
  std::string_view state = sqlstate == nullptr ? "" : sqlstate;
  if (state == "23505") return absl::AlreadyExistsError(std::move(message));
  if (state == "40001" || state == "40P01") return absl::AbortedError(std::move(message));
  return absl::UnavailableError(std::move(message));
}

std::string TrimmedError(const char* msg) {
  std::string s = msg == nullptr ? "" : msg;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

std::string PgResult::GetString(int row, int col) const {
  return std::string(PQgetvalue(res_.get(), row, col),
                     static_cast<size_t>(PQgetlength(res_.get(), row, col)));
}

int64_t PgResult::GetInt64(int row, int col) const {
  int64_t v = 0;
  if (IsNull(row, col)) return 0;
  (void)absl::SimpleAtoi(absl::string_view(PQgetvalue(res_.get(), row, col)), &v);
  return v;
}

bool PgResult::GetBool(int row, int col) const {
  return !IsNull(row, col) && PQgetvalue(res_.get(), row, col)[0] == 't';
}

std::string PgResult::GetBytes(int row, int col) const {
  size_t len = 0;
  unsigned char* raw = PQunescapeBytea(
      reinterpret_cast<const unsigned char*>(PQgetvalue(res_.get(), row, col)), &len);
  if (raw == nullptr) return {};
  std::string out(reinterpret_cast<const char*>(raw), len);
  PQfreemem(raw);
  return out;
}

int64_t PgResult::affected_rows() const {
  int64_t v = 0;
  (void)absl::SimpleAtoi(absl::string_view(PQcmdTuples(res_.get())), &v);
  return v;
}

absl::StatusOr<std::unique_ptr<PgConn>> PgConn::Connect(const std::string& url) {
  PGconn* conn = PQconnectdb(url.c_str());
  if (conn == nullptr) return absl::UnavailableError("postgres: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string err = TrimmedError(PQerrorMessage(conn));
    PQfinish(conn);
    return absl::UnavailableError(absl::StrCat("postgres: cannot connect: ", err));
  }
  // Server notices ("relation already exists, skipping") would otherwise go to stderr as plain
  // text between the JSON log lines.
  PQsetNoticeProcessor(
      conn,
      [](void*, const char* message) {
        FG_LOG_DEBUG("postgres notice", {{"notice", TrimmedError(message)}});
      },
      nullptr);
  return std::unique_ptr<PgConn>(new PgConn(conn));
}

PgConn::~PgConn() { PQfinish(conn_); }

absl::Status PgConn::Reset() {
  PQreset(conn_);
  if (PQstatus(conn_) != CONNECTION_OK) {
    return absl::UnavailableError(
        absl::StrCat("postgres: cannot reconnect: ", TrimmedError(PQerrorMessage(conn_))));
  }
  return absl::OkStatus();
}

absl::Status PgConn::ResultStatus(PGresult* res, std::string_view what) {
  if (res == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("postgres: ", std::string(what), ": ", TrimmedError(PQerrorMessage(conn_))));
  }
  ExecStatusType st = PQresultStatus(res);
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return absl::OkStatus();
  return StatusFromSqlState(PQresultErrorField(res, PG_DIAG_SQLSTATE),
                            absl::StrCat("postgres: ", TrimmedError(PQresultErrorMessage(res))));
}

absl::StatusOr<PgResult> PgConn::Exec(std::string_view sql, const std::vector<PgParam>& params) {
  std::vector<const char*> values(params.size());
  std::vector<int> lengths(params.size());
  std::vector<int> formats(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    values[i] = params[i].value ? params[i].value->data() : nullptr;
    lengths[i] = params[i].value ? static_cast<int>(params[i].value->size()) : 0;
    formats[i] = params[i].binary ? 1 : 0;
  }
  const std::string text(sql);
  auto run = [&] {
    return PQexecParams(conn_, text.c_str(), static_cast<int>(params.size()), nullptr,
                        values.data(), lengths.data(), formats.data(), /*resultFormat=*/0);
  };
  const bool retryable = PQtransactionStatus(conn_) == PQTRANS_IDLE;
  PGresult* res = run();
  if (res == nullptr || PQresultStatus(res) == PGRES_FATAL_ERROR) {
    if (RetryAfterLostConnection(retryable, res)) {
      PQclear(res);
      res = run();
    }
  }
  PgResult owned(res);
  absl::Status s = ResultStatus(res, "query failed");
  if (!s.ok()) return s;
  return owned;
}

absl::Status PgConn::ExecScript(std::string_view sql) {
  const std::string text(sql);
  const bool retryable = PQtransactionStatus(conn_) == PQTRANS_IDLE;
  PGresult* res = PQexec(conn_, text.c_str());
  if (res == nullptr || PQresultStatus(res) == PGRES_FATAL_ERROR) {
    if (RetryAfterLostConnection(retryable, res)) {
      PQclear(res);
      res = PQexec(conn_, text.c_str());
    }
  }
  PgResult owned(res);
  // PQexec returns the last statement's result; an earlier failure stops the script there and
  // is the result returned.
  return ResultStatus(res, "script failed");
}

bool PgConn::RetryAfterLostConnection(bool was_idle, const PGresult* res) {
  // An idle pooled connection learns that the server restarted only when it is next used. A
  // statement sent outside a transaction on a connection that turned out to be dead is retried
  // once on a fresh connection. Inside a transaction it is not: the transaction is gone, and the
  // caller must start over.
  //
  // The connection may not look dead yet: a server that shut down queued a FATAL
  // "terminating connection" (SQLSTATE 57P01..57P03) which libpq returns as the statement's
  // result before it reads the end of the stream. Connection-exception (08xxx) and
  // operator-intervention shutdown states count as a lost connection too.
  if (!was_idle) return false;
  bool lost = PQstatus(conn_) == CONNECTION_BAD;
  if (!lost && res != nullptr) {
    const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    lost = state != nullptr &&
           (std::strncmp(state, "08", 2) == 0 || std::strncmp(state, "57P0", 4) == 0);
  }
  if (!lost) return false;
  PQreset(conn_);
  return PQstatus(conn_) == CONNECTION_OK;
}

PgPool::Lease::~Lease() {
  if (conn_ != nullptr) pool_->Release(std::move(conn_));
}

absl::StatusOr<PgPool::Lease> PgPool::Acquire() {
  std::unique_ptr<PgConn> conn;
  {
    absl::MutexLock lock(&mu_);
    auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !idle_.empty() || open_ < options_.size;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&available), options_.acquire_timeout)) {
      return absl::UnavailableError("postgres: connection pool exhausted");
    }
    if (!idle_.empty()) {
      conn = std::move(idle_.back());
      idle_.pop_back();
    }
    ++open_;  // Reserve the slot before connecting outside the lock.
  }
  if (conn == nullptr) {
    auto fresh = PgConn::Connect(options_.url);
    if (!fresh.ok()) {
      absl::MutexLock lock(&mu_);
      --open_;
      return fresh.status();
    }
    conn = std::move(fresh).value();
  } else if (!conn->ok()) {
    // The server restarted or the network dropped since this connection was last used.
    absl::Status s = conn->Reset();
    if (!s.ok()) {
      absl::MutexLock lock(&mu_);
      --open_;
      return s;
    }
  }
  return Lease(this, std::move(conn));
}

void PgPool::Release(std::unique_ptr<PgConn> conn) {
  std::unique_ptr<PgConn> drop;  // Closed outside the lock.
  absl::MutexLock lock(&mu_);
  // A broken connection goes back and is reset on its next Acquire. One still inside a
  // transaction (an interrupted caller) is not reused: its state is unknown.
  if (PQtransactionStatus(conn->raw()) == PQTRANS_IDLE || !conn->ok()) {
    idle_.push_back(std::move(conn));
  } else {
    --open_;
    drop = std::move(conn);
  }
}

std::string RedactDatabaseUrl(std::string_view url) {
  // postgresql://user:password@host/db -> postgresql://user@host/db
  std::string s(url);
  size_t scheme = s.find("://");
  if (scheme != std::string::npos) {
    size_t at = s.find('@', scheme + 3);
    size_t colon = s.find(':', scheme + 3);
    if (at != std::string::npos && colon != std::string::npos && colon < at) {
      s.erase(colon, at - colon);
    }
  }
  // key=value form: drop a password=... pair.
  size_t pw = s.find("password=");
  if (pw != std::string::npos) {
    size_t end = s.find(' ', pw);
    s.erase(pw, end == std::string::npos ? std::string::npos : end - pw);
  }
  // Query-string form: ?password=... handled above as well since find() is positional.
  return s;
}

}  // namespace flexgate::cp
