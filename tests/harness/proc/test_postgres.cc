#include "tests/harness/proc/test_postgres.h"

#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/harness/proc/process.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::testing {
namespace {

constexpr char kPgBinDir[] = "/usr/lib/postgresql/15/bin";
constexpr char kSuperuser[] = "postgres";
constexpr int kPortAttempts = 6;

struct PgConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
struct PgResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using PgConn = std::unique_ptr<PGconn, PgConnDeleter>;
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

std::string PgBin(absl::string_view program) {
  // Overridable for machines with another PostgreSQL layout.
  const char* dir = std::getenv("FLEXGATE_PG_BIN_DIR");
  return absl::StrCat((dir != nullptr && *dir != '\0') ? dir : kPgBinDir, "/", program);
}

bool IsRoot() { return geteuid() == 0; }

// argv running `program args...` as the cluster's owner: the user `postgres` when we are root
// (the server refuses to run as root), the current user otherwise.
std::vector<std::string> AsOwner(std::vector<std::string> command) {
  if (!IsRoot()) return command;
  std::vector<std::string> argv = {"runuser", "-u", kSuperuser, "--"};
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

// Like AsOwner for a long-running child that must die with the test: setpriv changes the user
// in place (exec, no extra fork) and re-arms the parent-death signal the uid change clears.
std::vector<std::string> AsOwnerDirectChild(std::vector<std::string> command) {
  if (!IsRoot()) return command;
  std::vector<std::string> argv = {"setpriv",       "--reuid=postgres", "--regid=postgres",
                                   "--init-groups", "--pdeathsig=KILL", "--"};
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

// Server options shared by private and fixture clusters: loopback only, no durability (a test
// cluster is thrown away), enough connections for parallel suites.
std::vector<std::string> ServerOptions(uint16_t port, const std::string& socket_dir) {
  return {"-p", absl::StrCat(port),          "-k", socket_dir,
          "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
          "-c", "synchronous_commit=off",     "-c", "full_page_writes=off",
          "-c", "max_connections=300"};
}

std::string ConnInfo(uint16_t port, absl::string_view dbname) {
  return absl::StrCat("host=127.0.0.1 port=", port, " user=", kSuperuser, " dbname=", dbname,
                      " connect_timeout=5");
}

bool Pingable(uint16_t port) {
  std::string info = ConnInfo(port, "postgres");
  return PQping(info.c_str()) == PQPING_OK;
}

// A temp dir owned by the cluster's owner, enterable by it, holding data/ and the socket.
absl::StatusOr<std::string> MakeClusterRoot() {
  const char* t = std::getenv("TMPDIR");
  std::string templ =
      absl::StrCat((t != nullptr && *t != '\0') ? t : "/tmp", "/flexgate-pg-XXXXXX");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) return absl::InternalError("mkdtemp failed");
  std::string root = buf.data();
  if (IsRoot()) {
    passwd* pw = getpwnam(kSuperuser);
    if (pw == nullptr) return absl::FailedPreconditionError("no user 'postgres' on this machine");
    if (chown(root.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      return absl::InternalError(absl::StrCat("chown ", root, " failed"));
    }
  }
  return root;
}

absl::Status RunInitdb(const std::string& root) {
  ProcessOptions o;
  o.args = AsOwner({PgBin("initdb"), "-D", root + "/data", "-U", kSuperuser, "-A", "trust",
                    "--no-sync", "--locale=C", "-E", "UTF8"});
  o.working_dir = root;  // initdb needs a cwd the owner can enter
  o.env = {{"LC_ALL", "C"}};
  auto r = RunCommand(std::move(o), absl::Seconds(120));
  if (!r.ok()) return r.status();
  if (!r->status.success()) {
    return absl::InternalError(absl::StrCat("initdb failed: ", r->Describe()));
  }
  return absl::OkStatus();
}

bool LooksLikeBindFailure(absl::string_view log) {
  return absl::StrContains(log, "could not bind") ||
         absl::StrContains(log, "Address already in use") ||
         absl::StrContains(log, "could not create any TCP/IP sockets") ||
         (absl::StrContains(log, "lock file") && absl::StrContains(log, ".s.PGSQL"));
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << contents;
    if (!f) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("rename ", tmp, ": ", ec.message()));
  return absl::OkStatus();
}

std::string Trimmed(const absl::StatusOr<std::string>& s) {
  return s.ok() ? std::string(absl::StripAsciiWhitespace(*s)) : std::string();
}

}  // namespace

absl::StatusOr<std::unique_ptr<TestPostgres>> TestPostgres::Start() {
  auto pg = std::unique_ptr<TestPostgres>(new TestPostgres());
  pg->owned_ = true;
  auto root = MakeClusterRoot();
  if (!root.ok()) return root.status();
  pg->root_dir_ = *root;
  if (auto st = pg->InitCluster(); !st.ok()) return st;
  absl::Status last;
  for (int attempt = 0; attempt < kPortAttempts; ++attempt) {
    pg->port_ = FreePort();
    last = pg->StartServer();
    if (last.ok()) return pg;
    // Only a lost race for the port is worth another try.
    if (!absl::IsUnavailable(last)) return last;
  }
  return last;
}

absl::Status TestPostgres::InitCluster() { return RunInitdb(root_dir_); }

absl::Status TestPostgres::StartServer() {
  std::vector<std::string> cmd = {PgBin("postgres"), "-D", root_dir_ + "/data"};
  for (auto& o : ServerOptions(port_, root_dir_)) cmd.push_back(std::move(o));
  ProcessOptions o;
  o.args = AsOwnerDirectChild(std::move(cmd));
  o.working_dir = root_dir_;
  o.env = {{"LC_ALL", "C"}};
  // The server log is appended across restarts so a failure message shows the whole story.
  o.stdout_path = root_dir_ + "/server.log";
  auto p = Process::Start(std::move(o));
  if (!p.ok()) return p.status();
  postmaster_ = std::move(*p);
  bool exited = false;
  bool up = WaitFor(
      [&] {
        if (Pingable(port_)) return true;
        exited = !postmaster_->Running();
        return exited;
      },
      absl::Seconds(60), absl::Milliseconds(20));
  if (up && !exited) return absl::OkStatus();
  std::string log = postmaster_->LogTail();
  postmaster_->Terminate(absl::Seconds(5));
  postmaster_.reset();
  if (exited && LooksLikeBindFailure(log)) {
    return absl::UnavailableError(absl::StrCat("port ", port_, " taken: ", log));
  }
  return absl::InternalError(absl::StrCat("PostgreSQL did not start on port ", port_, ": ", log));
}

TestPostgres::~TestPostgres() {
  if (!owned_) return;
  Stop().IgnoreError();
  std::error_code ec;
  std::filesystem::remove_all(root_dir_, ec);
}

absl::StatusOr<std::unique_ptr<TestPostgres>> TestPostgres::Attach(
    const std::string& fixture_dir) {
  auto text = ReadFileToString(fixture_dir + "/port");
  int port = 0;
  if (!text.ok() || !absl::SimpleAtoi(Trimmed(text), &port) || port <= 0 || port > 65535) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no PostgreSQL fixture in ", fixture_dir,
        " (did the CTest fixture 'postgres' run? `flexgate-test-pg-fixture start DIR`)"));
  }
  auto pg = std::unique_ptr<TestPostgres>(new TestPostgres());
  pg->port_ = static_cast<uint16_t>(port);
  pg->root_dir_ = Trimmed(ReadFileToString(fixture_dir + "/cluster"));
  if (!pg->Ready()) {
    return absl::UnavailableError(
        absl::StrCat("PostgreSQL fixture on port ", port, " does not accept connections"));
  }
  return pg;
}

absl::StatusOr<TestPostgres*> TestPostgres::Shared() {
  // Intentionally never destroyed before exit: the static unique_ptr's destructor stops a
  // private cluster when the test process ends normally; PR_SET_PDEATHSIG covers crashes.
  static absl::once_flag once;
  static std::unique_ptr<TestPostgres>* shared = nullptr;
  static absl::Status* error = nullptr;
  absl::call_once(once, [] {
    static std::unique_ptr<TestPostgres> instance;
    static absl::Status status;
    const char* dir = std::getenv("FLEXGATE_TEST_PG_DIR");
    absl::StatusOr<std::unique_ptr<TestPostgres>> pg =
        (dir != nullptr && *dir != '\0') ? Attach(dir) : Start();
    if (pg.ok()) {
      instance = std::move(*pg);
    } else {
      status = pg.status();
    }
    shared = &instance;
    error = &status;
  });
  if (!error->ok()) return *error;
  return shared->get();
}

std::string TestPostgres::Uri(absl::string_view dbname) const {
  return absl::StrCat("postgresql://", kSuperuser, "@127.0.0.1:", port_, "/", dbname);
}

absl::StatusOr<std::string> TestPostgres::CreateDatabase(absl::string_view prefix) {
  int n;
  {
    absl::MutexLock lock(&mu_);
    n = next_db_++;
  }
  // pid + counter are unique within this process; the clock part keeps a later process that
  // reuses the pid from colliding on the shared cluster.
  std::string name = absl::AsciiStrToLower(absl::StrCat(
      prefix, "_", getpid(), "_", n, "_", absl::ToUnixMicros(absl::Now()) % 1000000000));
  if (auto st = Exec(absl::StrCat("CREATE DATABASE \"", name, "\"")); !st.ok()) return st;
  return Uri(name);
}

absl::Status TestPostgres::Exec(absl::string_view sql, absl::string_view dbname) const {
  std::string info = ConnInfo(port_, dbname);
  PgConn conn(PQconnectdb(info.c_str()));
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return absl::UnavailableError(
        absl::StrCat("connect to ", Uri(dbname), ": ", PQerrorMessage(conn.get())));
  }
  std::string query(sql);
  PgResult res(PQexec(conn.get(), query.c_str()));
  ExecStatusType st = PQresultStatus(res.get());
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    return absl::InternalError(
        absl::StrCat("`", query, "` failed: ", PQresultErrorMessage(res.get())));
  }
  return absl::OkStatus();
}

bool TestPostgres::Ready() const { return Pingable(port_); }

absl::Status TestPostgres::Stop() {
  if (!owned_) return absl::FailedPreconditionError("the shared fixture cluster cannot be stopped");
  if (postmaster_ == nullptr) return absl::OkStatus();
  // SIGINT is PostgreSQL's fast shutdown: clients are disconnected instead of waited for.
  postmaster_->Signal(SIGINT).IgnoreError();
  if (!postmaster_->Wait(absl::Seconds(30)).has_value()) postmaster_->Terminate(absl::Seconds(1));
  postmaster_.reset();
  return absl::OkStatus();
}

absl::Status TestPostgres::Restart() {
  if (!owned_) return absl::FailedPreconditionError("the shared fixture cluster cannot restart");
  if (auto st = Stop(); !st.ok()) return st;
  // Same port: clients reconnect to the address they know. PostgreSQL sets SO_REUSEADDR, so
  // only a stranger that grabbed the port in between could make this fail.
  return StartServer();
}

std::string TestPostgres::LogTail() const {
  if (root_dir_.empty()) return "";
  auto log = ReadFileToString(root_dir_ + "/server.log");
  if (!log.ok()) return "";
  return log->size() > 4000 ? log->substr(log->size() - 4000) : *log;
}

// --- CTest fixture ---------------------------------------------------------------------------

absl::Status StartFixtureCluster(const std::string& fixture_dir) {
  std::error_code ec;
  std::filesystem::create_directories(fixture_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", fixture_dir, ": ", ec.message()));
  if (std::filesystem::exists(fixture_dir + "/cluster")) {
    // Left behind by an interrupted run.
    StopFixtureCluster(fixture_dir).IgnoreError();
  }
  auto root = MakeClusterRoot();
  if (!root.ok()) return root.status();
  if (auto st = RunInitdb(*root); !st.ok()) return st;
  // Recorded before the server starts so that `stop` can clean up even a half-started cluster.
  if (auto st = WriteFileAtomically(fixture_dir + "/cluster", *root + "\n"); !st.ok()) return st;

  std::string last_error;
  for (int attempt = 0; attempt < kPortAttempts; ++attempt) {
    uint16_t port = FreePort();
    std::string opts;
    for (const auto& o : ServerOptions(port, *root)) absl::StrAppend(&opts, o, " ");
    ProcessOptions o;
    // pg_ctl forks the postmaster, which (unlike pg_ctl) outlives this program: that is the
    // point of a fixture. The server log goes to a file in the cluster dir.
    o.args = AsOwner({PgBin("pg_ctl"), "-D", *root + "/data", "-l", *root + "/server.log", "-w",
                      "-t", "60", "-o", opts, "start"});
    o.working_dir = *root;
    o.env = {{"LC_ALL", "C"}};
    auto r = RunCommand(std::move(o), absl::Seconds(90));
    if (!r.ok()) return r.status();
    if (r->status.success() && Pingable(port)) {
      return WriteFileAtomically(fixture_dir + "/port", absl::StrCat(port, "\n"));
    }
    std::string log = Trimmed(ReadFileToString(*root + "/server.log"));
    last_error = absl::StrCat(r->Describe(), "\n--- server.log ---\n", log);
    if (!LooksLikeBindFailure(log)) break;
  }
  return absl::InternalError(absl::StrCat("PostgreSQL fixture did not start: ", last_error));
}

absl::Status StopFixtureCluster(const std::string& fixture_dir) {
  std::string root = Trimmed(ReadFileToString(fixture_dir + "/cluster"));
  std::error_code ec;
  std::filesystem::remove(fixture_dir + "/port", ec);
  if (root.empty()) return absl::OkStatus();
  absl::Status result;
  if (std::filesystem::exists(root + "/data/postmaster.pid")) {
    ProcessOptions o;
    o.args = AsOwner({PgBin("pg_ctl"), "-D", root + "/data", "-m", "fast", "-w", "-t", "60",
                      "stop"});
    o.working_dir = root;
    auto r = RunCommand(std::move(o), absl::Seconds(90));
    if (!r.ok()) {
      result = r.status();
    } else if (!r->status.success()) {
      result = absl::InternalError(absl::StrCat("pg_ctl stop: ", r->Describe()));
    }
  }
  std::filesystem::remove_all(root, ec);
  std::filesystem::remove(fixture_dir + "/cluster", ec);
  return result;
}

}  // namespace flexgate::testing
