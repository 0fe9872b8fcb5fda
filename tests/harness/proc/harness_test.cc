// Tests of the process/PostgreSQL harness itself: if these are wrong, every integration test
// that relies on them is wrong too.
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/harness/proc/process.h"
#include "tests/harness/proc/test_postgres.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::testing {
namespace {

// True when `pid` no longer runs (gone, or a zombie waiting for its new parent to reap it).
bool Gone(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat) return true;
  std::string line;
  std::getline(stat, line);
  size_t paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] == 'Z';
}

std::string Query(const std::string& uri, const std::string& sql) {
  PGconn* c = PQconnectdb(uri.c_str());
  std::string out;
  if (PQstatus(c) == CONNECTION_OK) {
    PGresult* r = PQexec(c, sql.c_str());
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0) {
      out = PQgetvalue(r, 0, 0);
    } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      out = absl::StrCat("ERROR: ", PQresultErrorMessage(r));
    }
    PQclear(r);
  } else {
    out = absl::StrCat("CONNECT ERROR: ", PQerrorMessage(c));
  }
  PQfinish(c);
  return out;
}

TEST_CASE("RunCommand captures stdout, stderr and the exit code") {
  ProcessOptions o;
  o.args = {"sh", "-c", "echo out-line; echo err-line >&2; exit 3"};
  auto r = RunCommand(o, absl::Seconds(10));
  REQUIRE(r.ok());
  CHECK(r->status.exited);
  CHECK(r->status.code == 3);
  CHECK(r->out == "out-line\n");
  CHECK(r->err == "err-line\n");
}

TEST_CASE("Process passes extra environment and removes unset names") {
  setenv("FLEXGATE_HARNESS_DROPPED", "still-here", 1);
  ProcessOptions o;
  o.args = {"sh", "-c", "echo \"[$FLEXGATE_HARNESS_EXTRA][$FLEXGATE_HARNESS_DROPPED]\""};
  o.env = {{"FLEXGATE_HARNESS_EXTRA", "value with spaces"}};
  o.unset_env = {"FLEXGATE_HARNESS_DROPPED"};
  auto r = RunCommand(o, absl::Seconds(10));
  unsetenv("FLEXGATE_HARNESS_DROPPED");
  REQUIRE(r.ok());
  CHECK(r->out == "[value with spaces][]\n");
}

TEST_CASE("Process reports a program that cannot be executed at Start") {
  ProcessOptions o;
  o.args = {"/nonexistent/flexgate-no-such-program"};
  auto p = Process::Start(o);
  REQUIRE_FALSE(p.ok());
  CHECK(absl::StrContains(p.status().message(), "No such file"));
}

TEST_CASE("WaitForLogMatch returns the captured group of a JSON log line") {
  ProcessOptions o;
  o.args = {"sh", "-c",
            "echo '{\"msg\":\"starting\"}'; echo '{\"msg\":\"listening\",\"grpc_port\":4321}' >&2;"
            " exec sleep 300"};
  auto p = Process::Start(o);
  REQUIRE(p.ok());
  auto port = (*p)->WaitForLogMatch(R"re("grpc_port":(\d+))re", absl::Seconds(10));
  REQUIRE(port.ok());
  CHECK(*port == "4321");
  auto line = (*p)->WaitForLogLine("\"starting\"", absl::Seconds(1));
  REQUIRE(line.ok());
  CHECK(*line == "{\"msg\":\"starting\"}");
  CHECK((*p)->Running());
  ExitStatus st = (*p)->Terminate(absl::Seconds(5));
  CHECK_FALSE(st.exited);
  CHECK(st.signal == SIGTERM);
  CHECK_FALSE((*p)->Running());
}

TEST_CASE("WaitForLogLine fails fast, with the log, when the child exits first") {
  ProcessOptions o;
  o.args = {"sh", "-c", "echo fatal: bad flag; exit 2"};
  auto p = Process::Start(o);
  REQUIRE(p.ok());
  absl::Time start = absl::Now();
  auto line = (*p)->WaitForLogLine("listening", absl::Seconds(30));
  REQUIRE_FALSE(line.ok());
  CHECK(absl::IsFailedPrecondition(line.status()));
  CHECK(absl::StrContains(line.status().message(), "fatal: bad flag"));
  CHECK(absl::StrContains(line.status().message(), "exit 2"));
  CHECK(absl::Now() - start < absl::Seconds(10));
}

TEST_CASE("Terminate escalates to SIGKILL after the grace period") {
  ProcessOptions o;
  // The shell ignores SIGTERM and stays busy in a builtin loop (no child to leak).
  o.args = {"sh", "-c", "trap '' TERM; echo ready; while :; do :; done"};
  auto p = Process::Start(o);
  REQUIRE(p.ok());
  REQUIRE((*p)->WaitForLogLine("ready", absl::Seconds(10)).ok());
  ExitStatus st = (*p)->Terminate(absl::Milliseconds(200));
  CHECK_FALSE(st.exited);
  CHECK(st.signal == SIGKILL);
}

TEST_CASE("Signal reaches the child and reports a child that has ended") {
  ProcessOptions o;
  o.args = {"sh", "-c", "trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.05; done"};
  auto p = Process::Start(o);
  REQUIRE(p.ok());
  REQUIRE((*p)->WaitForLogLine("ready", absl::Seconds(10)).ok());
  REQUIRE((*p)->Signal(SIGUSR1).ok());
  auto st = (*p)->Wait(absl::Seconds(10));
  REQUIRE(st.has_value());
  CHECK(st->exited);
  CHECK(st->code == 7);
  CHECK(absl::StrContains((*p)->ReadLog(), "got-usr1"));
  CHECK(absl::IsFailedPrecondition((*p)->Signal(SIGTERM)));
}

TEST_CASE("Children die with a test process that crashes") {
  TempDir dir("flexgate-harness");
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t test = fork();
  REQUIRE(test >= 0);
  if (test == 0) {
    // The "test" starts a child and dies without running any destructor.
    close(fds[0]);
    ProcessOptions o;
    o.args = {"sleep", "300"};
    o.stdout_path = dir.File("sleep.log");
    auto p = Process::Start(o);
    pid_t child = p.ok() ? (*p)->pid() : -1;
    (void)!write(fds[1], &child, sizeof(child));
    _exit(0);
  }
  close(fds[1]);
  pid_t child = -1;
  REQUIRE(read(fds[0], &child, sizeof(child)) == static_cast<ssize_t>(sizeof(child)));
  close(fds[0]);
  int st;
  waitpid(test, &st, 0);
  REQUIRE(child > 0);
  CHECK(WaitFor([&] { return Gone(child); }, absl::Seconds(10)));
}

TEST_CASE("FreePort returns a bindable loopback port, and WaitFor awaits or times out") {
  uint16_t port = FreePort();
  REQUIRE(port != 0);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  CHECK(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  close(fd);

  int calls = 0;
  CHECK(WaitFor([&] { return ++calls >= 3; }, absl::Seconds(5), absl::Milliseconds(1)));
  CHECK(calls == 3);
  absl::Time start = absl::Now();
  CHECK_FALSE(WaitFor([] { return false; }, absl::Milliseconds(100)));
  CHECK(absl::Now() - start >= absl::Milliseconds(100));
}

TEST_CASE("TempDir is removed with its contents") {
  std::string path;
  {
    TempDir dir("flexgate-harness");
    path = dir.path();
    std::string f = dir.WriteFile("a.txt", "hello");
    auto text = ReadFileToString(f);
    REQUIRE(text.ok());
    CHECK(*text == "hello");
  }
  CHECK_FALSE(std::filesystem::exists(path));
}

TEST_CASE("Shared PostgreSQL gives each suite its own database") {
  auto pg = TestPostgres::Shared();
  REQUIRE(pg.ok());
  auto a = (*pg)->CreateDatabase("harness");
  auto b = (*pg)->CreateDatabase("harness");
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(*a != *b);
  CHECK(absl::StartsWith(*a, absl::StrCat("postgresql://postgres@127.0.0.1:", (*pg)->port(), "/")));

  CHECK(Query(*a, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)").empty());
  CHECK(Query(*a, "SELECT v FROM t") == "42");
  // Databases are isolated: the table does not exist in the other one.
  CHECK(absl::StartsWith(Query(*b, "SELECT v FROM t"), "ERROR:"));
  CHECK(Query(*b, "SELECT current_database()") == b->substr(b->rfind('/') + 1));
}

TEST_CASE("A private PostgreSQL stops and restarts on the same port with its data") {
  auto pg = TestPostgres::Start();
  REQUIRE(pg.ok());
  auto uri = (*pg)->CreateDatabase("restart");
  REQUIRE(uri.ok());
  REQUIRE(Query(*uri, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('yes')").empty());
  const uint16_t port = (*pg)->port();

  REQUIRE((*pg)->Stop().ok());
  CHECK_FALSE((*pg)->Ready());
  CHECK(absl::StartsWith(Query(*uri, "SELECT 1"), "CONNECT ERROR"));

  REQUIRE((*pg)->Restart().ok());
  CHECK((*pg)->port() == port);
  CHECK((*pg)->Ready());
  CHECK(Query(*uri, "SELECT v FROM kept") == "yes");
}

TEST_CASE("A private PostgreSQL dies with a crashing test") {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t test = fork();
  REQUIRE(test >= 0);
  if (test == 0) {
    close(fds[0]);
    auto pg = TestPostgres::Start();
    uint16_t port = pg.ok() ? (*pg)->port() : 0;
    char root[512] = {0};
    if (pg.ok()) snprintf(root, sizeof(root), "%s", (*pg)->root_dir().c_str());
    (void)!write(fds[1], &port, sizeof(port));
    (void)!write(fds[1], root, sizeof(root));
    _exit(0);  // no destructor: the postmaster must go because of PR_SET_PDEATHSIG alone
  }
  close(fds[1]);
  uint16_t port = 0;
  char root[512] = {0};
  REQUIRE(read(fds[0], &port, sizeof(port)) == static_cast<ssize_t>(sizeof(port)));
  REQUIRE(read(fds[0], root, sizeof(root)) == static_cast<ssize_t>(sizeof(root)));
  close(fds[0]);
  int st;
  waitpid(test, &st, 0);
  REQUIRE(port != 0);
  std::string info = absl::StrCat("host=127.0.0.1 port=", port, " user=postgres connect_timeout=1");
  bool down = WaitFor([&] { return PQping(info.c_str()) == PQPING_NO_RESPONSE; }, absl::Seconds(20));
  // Clean up the data the "crashed" test left behind, whatever the outcome.
  std::error_code ec;
  if (root[0] != '\0') {
    std::filesystem::remove_all(root, ec);
  }
  CHECK(down);
}

}  // namespace
}  // namespace flexgate::testing
