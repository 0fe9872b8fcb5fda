// TestPostgres: a throwaway PostgreSQL 15 cluster for tests, on 127.0.0.1 and a free port, with
// a fresh database per suite.
//
// One cluster is shared by a whole CTest run through the CTest fixture "postgres":
//   - tests/harness/proc/pg_fixture.cmake registers `flexgate-test-pg-fixture start DIR` as
//     FIXTURES_SETUP and `... stop DIR` as FIXTURES_CLEANUP, and defines
//     flexgate_add_pg_test(), which registers a Catch2 test with FIXTURES_REQUIRED postgres and
//     ENVIRONMENT FLEXGATE_TEST_PG_DIR=DIR.
//   - TestPostgres::Shared() attaches to that cluster when FLEXGATE_TEST_PG_DIR is set, and
//     otherwise (a test binary run by hand) starts a private cluster that is stopped at exit.
// Tests that stop or restart the server (database-outage tests) use TestPostgres::Start(), a
// private cluster of their own.
//
// Running as root (PostgreSQL refuses to), the cluster belongs to the user `postgres`; otherwise
// it runs as the current user. A private cluster's postmaster is a direct child of the test with
// PR_SET_PDEATHSIG, so a crashing test leaks no server; the shared cluster is started with pg_ctl
// so that it outlives the fixture program.
//
// Thread-safety: CreateDatabase and Exec may be called from any thread; Stop/Restart from one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace flexgate::testing {

class Process;

class TestPostgres {
 public:
  // Starts a private cluster in a fresh temp dir (initdb + postmaster, about 1-3 s). Stopped and
  // deleted on destruction.
  static absl::StatusOr<std::unique_ptr<TestPostgres>> Start();

  // The cluster shared by this test process: the CTest fixture's when FLEXGATE_TEST_PG_DIR is
  // set, otherwise a private one started on first use and stopped at exit. Never null on success.
  static absl::StatusOr<TestPostgres*> Shared();

  // Attaches to a cluster started by `flexgate-test-pg-fixture start DIR` (reads DIR/port).
  // The returned object does not own the server: Stop and Restart are refused.
  static absl::StatusOr<std::unique_ptr<TestPostgres>> Attach(const std::string& fixture_dir);

  ~TestPostgres();
  TestPostgres(const TestPostgres&) = delete;
  TestPostgres& operator=(const TestPostgres&) = delete;

  uint16_t port() const { return port_; }
  // The temp dir holding data/, the socket and server.log (empty for an attached cluster whose
  // fixture did not record it).
  const std::string& root_dir() const { return root_dir_; }
  std::string host() const { return "127.0.0.1"; }

  // postgresql://postgres@127.0.0.1:PORT/DBNAME
  std::string Uri(absl::string_view dbname) const;

  // Creates a fresh, uniquely named database (prefix + pid + counter) and returns its URI.
  absl::StatusOr<std::string> CreateDatabase(absl::string_view prefix = "flexgate_test");

  // Runs SQL (one or more statements, no results) against `dbname`.
  absl::Status Exec(absl::string_view sql, absl::string_view dbname = "postgres") const;

  // True when the server accepts connections (PQping).
  bool Ready() const;

  // Fast shutdown (clients are disconnected). Data is kept; Restart() brings it back on the same
  // port. FAILED_PRECONDITION for an attached cluster.
  absl::Status Stop();
  absl::Status Restart();

  // Server log of a private cluster, for failure messages.
  std::string LogTail() const;

 private:
  TestPostgres() = default;

  // initdb into root_dir_/data.
  absl::Status InitCluster();
  // Starts the postmaster as a child on port_ and waits until it accepts connections.
  absl::Status StartServer();

  std::string root_dir_;  // temp dir holding data/ and the Unix socket
  uint16_t port_ = 0;
  bool owned_ = false;    // false: attached to the fixture's cluster
  std::unique_ptr<Process> postmaster_;
  mutable absl::Mutex mu_;
  int next_db_ ABSL_GUARDED_BY(mu_) = 0;
};

// Used by flexgate-test-pg-fixture (and testable on its own): starts a cluster with pg_ctl that
// outlives the calling process and records it in `fixture_dir` (files "port" and "cluster").
// A cluster left behind by an interrupted run in the same fixture_dir is stopped first.
absl::Status StartFixtureCluster(const std::string& fixture_dir);
// Stops and deletes the cluster recorded in `fixture_dir`.
absl::Status StopFixtureCluster(const std::string& fixture_dir);

}  // namespace flexgate::testing
