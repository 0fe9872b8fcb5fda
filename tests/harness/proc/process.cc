#include "tests/harness/proc/process.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "re2/re2.h"
#include "tests/harness/proc/test_util.h"

extern char** environ;

namespace flexgate::testing {
namespace {

std::string TempRoot() {
  const char* t = std::getenv("TMPDIR");
  return (t != nullptr && *t != '\0') ? std::string(t) : std::string("/tmp");
}

// Creates an empty log file with a unique name and returns its path.
absl::StatusOr<std::string> MakeLogFile(const std::string& base, absl::string_view suffix) {
  // "flexgate-cp-XXXXXX.log", "flexgate-test-sh-XXXXXX.log": easy to find in the temp dir.
  std::string templ = absl::StrCat(TempRoot(), "/",
                                   absl::StartsWith(base, "flexgate") ? "" : "flexgate-test-",
                                   base, "-XXXXXX", suffix);
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  int fd = mkstemps(buf.data(), static_cast<int>(suffix.size()));
  if (fd < 0) return absl::InternalError(absl::StrCat("mkstemps: ", strerror(errno)));
  close(fd);
  return std::string(buf.data());
}

// Looks `name` up in PATH the way a shell would; returns it unchanged when it has a slash.
std::string ResolveProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/bin:/bin", ':')) {
    if (dir.empty()) continue;
    std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return name;
}

bool KeepLogs() {
  const char* k = std::getenv("FLEXGATE_KEEP_LOGS");
  return k != nullptr && *k != '\0' && std::string(k) != "0";
}

// Complete lines of `text`; the unterminated tail is included only when `include_partial`.
std::vector<absl::string_view> Lines(absl::string_view text, bool include_partial) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  // StrSplit yields a last element after the final '\n' (empty) or the unterminated tail.
  if (!lines.empty() && (!include_partial || lines.back().empty())) lines.pop_back();
  return lines;
}

std::string Tail(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  return absl::StrCat("...", s.substr(s.size() - max_bytes));
}

}  // namespace

std::string ExitStatus::ToString() const {
  if (exited) return absl::StrCat("exit ", code);
  if (signal == 0) return "unknown (reaped elsewhere)";
  return absl::StrCat("signal ", signal, " (", strsignal(signal), ")");
}

ExitStatus ExitStatus::FromWaitStatus(int wait_status) {
  ExitStatus s;
  if (WIFEXITED(wait_status)) {
    s.exited = true;
    s.code = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    s.signal = WTERMSIG(wait_status);
  }
  return s;
}

absl::StatusOr<std::unique_ptr<Process>> Process::Start(ProcessOptions options) {
  if (options.args.empty()) return absl::InvalidArgumentError("Process: no program given");
  const std::string program = ResolveProgram(options.args[0]);
  const std::string base = std::filesystem::path(options.args[0]).filename().string();

  bool auto_log = false;
  if (options.stdout_path.empty()) {
    auto path = MakeLogFile(base, ".log");
    if (!path.ok()) return path.status();
    options.stdout_path = *path;
    auto_log = true;
  }
  std::string stderr_path = options.stderr_path.empty() ? options.stdout_path : options.stderr_path;

  // Everything the child needs is prepared before fork: between fork and exec only
  // async-signal-safe calls are allowed, because other threads of the test (gRPC, workers) may
  // hold locks such as malloc's.
  std::vector<char*> argv;
  for (auto& a : options.args) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    absl::string_view kv(*e);
    size_t eq = kv.find('=');
    if (eq == absl::string_view::npos) continue;
    env[std::string(kv.substr(0, eq))] = std::string(kv.substr(eq + 1));
  }
  for (const auto& name : options.unset_env) env.erase(name);
  for (const auto& [k, v] : options.env) env[k] = v;
  std::vector<std::string> env_strings;
  env_strings.reserve(env.size());
  for (const auto& [k, v] : env) env_strings.push_back(absl::StrCat(k, "=", v));
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  int out_fd = open(options.stdout_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out_fd < 0) {
    return absl::InternalError(absl::StrCat("open ", options.stdout_path, ": ", strerror(errno)));
  }
  int err_fd = out_fd;
  if (stderr_path != options.stdout_path) {
    err_fd = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (err_fd < 0) {
      close(out_fd);
      return absl::InternalError(absl::StrCat("open ", stderr_path, ": ", strerror(errno)));
    }
  }
  int in_pipe[2] = {-1, -1};
  int in_fd = -1;
  if (!options.stdin_data.empty()) {
    if (pipe2(in_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
    in_fd = in_pipe[0];
  } else {
    in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  // Reports a failed exec (errno) to the parent; closed by a successful exec (O_CLOEXEC).
  int exec_pipe[2];
  if (pipe2(exec_pipe, O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");

  const pid_t parent = getpid();
  const char* workdir = options.working_dir.empty() ? nullptr : options.working_dir.c_str();
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    // Child. The parent-death signal makes a crashed test take its children with it; the
    // getppid check closes the race where the parent died before prctl ran.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    // Signal masks and ignored dispositions survive exec; a test runner (or gRPC) may have
    // blocked or ignored signals the child must see, such as SIGTERM or SIGPIPE.
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    }
    int e = 0;
    if (workdir != nullptr && chdir(workdir) != 0) {
      e = errno;
      (void)!write(exec_pipe[1], &e, sizeof(e));
      _exit(127);
    }
    dup2(in_fd, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    // Close every other inherited descriptor (listening sockets of the test, other children's
    // pipes) except the exec-error pipe, which exec closes itself.
    const unsigned keep = static_cast<unsigned>(exec_pipe[1]);
    if (keep > 3) syscall(SYS_close_range, 3u, keep - 1, 0u);
    syscall(SYS_close_range, keep + 1, ~0u, 0u);
    execve(program.c_str(), argv.data(), envp.data());
    e = errno;
    (void)!write(exec_pipe[1], &e, sizeof(e));
    _exit(127);
  }

  // Parent.
  close(exec_pipe[1]);
  close(in_fd);
  close(out_fd);
  if (err_fd != out_fd) close(err_fd);
  if (in_pipe[1] >= 0) {
    // Small inputs only (flexctl reading a config from stdin): fits in the pipe buffer or is
    // consumed by the child as it arrives.
    const std::string& data = options.stdin_data;
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = write(in_pipe[1], data.data() + off, data.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    close(in_pipe[1]);
  }
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(exec_pipe[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  close(exec_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof(child_errno))) {
    int st;
    waitpid(pid, &st, 0);
    if (auto_log) unlink(options.stdout_path.c_str());
    return absl::FailedPreconditionError(
        absl::StrCat("cannot execute ", program, ": ", strerror(child_errno)));
  }

  auto p = std::unique_ptr<Process>(new Process(pid, base, options.stdout_path, stderr_path));
  p->delete_logs_ = auto_log && !KeepLogs();
  return p;
}

Process::~Process() {
  if (!status_.has_value()) Terminate();
  if (delete_logs_) {
    unlink(stdout_path_.c_str());
    if (stderr_path_ != stdout_path_) unlink(stderr_path_.c_str());
  }
}

bool Process::Reap() {
  if (status_.has_value()) return true;
  int st = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &st, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    status_ = ExitStatus::FromWaitStatus(st);
    return true;
  }
  if (r < 0) {
    // ECHILD: reaped by someone else; the status is lost but the child is gone.
    status_ = ExitStatus{};
    return true;
  }
  return false;
}

bool Process::Running() { return !Reap(); }

std::optional<ExitStatus> Process::exit_status() {
  Reap();
  return status_;
}

absl::Status Process::Signal(int sig) {
  if (Reap()) {
    return absl::FailedPreconditionError(
        absl::StrCat(name_, " (pid ", pid_, ") has already ended: ", status_->ToString()));
  }
  if (kill(pid_, sig) != 0) {
    return absl::InternalError(absl::StrCat("kill ", pid_, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

std::optional<ExitStatus> Process::Wait(absl::Duration timeout) {
  WaitFor([this] { return Reap(); }, timeout, absl::Milliseconds(5));
  return status_;
}

ExitStatus Process::Terminate(absl::Duration grace) {
  if (Reap()) return *status_;
  kill(pid_, SIGTERM);
  if (Wait(grace).has_value()) return *status_;
  kill(pid_, SIGKILL);
  int st = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &st, 0);
  } while (r < 0 && errno == EINTR);
  status_ = r == pid_ ? ExitStatus::FromWaitStatus(st) : ExitStatus{};
  return *status_;
}

std::string Process::ReadLog() const {
  auto s = ReadFileToString(stdout_path_);
  return s.ok() ? *s : std::string();
}

std::string Process::ReadStderr() const {
  auto s = ReadFileToString(stderr_path_);
  return s.ok() ? *s : std::string();
}

absl::StatusOr<uint16_t> Process::WaitForLogPort(const std::string& msg,
                                                 absl::Duration timeout) {
  absl::StatusOr<std::string> port =
      WaitForLogMatch("\"msg\":\"" + msg + "\".*\"port\":(\\d+)", timeout);
  if (!port.ok()) return port.status();
  uint32_t n = 0;
  if (!absl::SimpleAtoi(*port, &n) || n == 0 || n > 65535) {
    return absl::InternalError(absl::StrCat("bad port in log line: ", *port));
  }
  return static_cast<uint16_t>(n);
}

std::string Process::LogTail(size_t max_bytes) const {
  std::string log = ReadLog();
  if (stderr_path_ != stdout_path_) absl::StrAppend(&log, ReadStderr());
  return Tail(log, max_bytes);
}

namespace {

// Shared loop of WaitForLogLine / WaitForLogMatch: `match` returns true and sets its result
// when a line matches.
absl::StatusOr<std::string> AwaitLine(
    Process& p, const std::string& what, absl::Duration timeout,
    const std::function<bool(absl::string_view, std::string*)>& match) {
  std::string result;
  auto scan = [&](bool include_partial) {
    std::string text = p.ReadLog();
    if (p.stderr_path() != p.stdout_path()) absl::StrAppend(&text, "\n", p.ReadStderr());
    for (absl::string_view line : Lines(text, include_partial)) {
      if (match(line, &result)) return true;
    }
    return false;
  };
  bool exited = false;
  bool found = WaitFor(
      [&] {
        if (scan(false)) return true;
        if (!p.Running()) {
          exited = true;
          return true;
        }
        return false;
      },
      timeout);
  if (found && !exited) return result;
  if (exited && scan(true)) return result;
  std::string why = exited ? absl::StrCat("exited (", p.exit_status()->ToString(), ")")
                           : absl::StrCat("did not log it within ", absl::FormatDuration(timeout));
  std::string msg = absl::StrCat(p.name(), " (pid ", p.pid(), ") ", why, " while waiting for ",
                                 what, "; log tail:\n", p.LogTail());
  return exited ? absl::FailedPreconditionError(msg) : absl::DeadlineExceededError(msg);
}

}  // namespace

absl::StatusOr<std::string> Process::WaitForLogLine(absl::string_view substring,
                                                    absl::Duration timeout) {
  std::string needle(substring);
  return AwaitLine(*this, absl::StrCat("\"", needle, "\""), timeout,
                   [&](absl::string_view line, std::string* out) {
                     if (!absl::StrContains(line, needle)) return false;
                     *out = std::string(line);
                     return true;
                   });
}

absl::StatusOr<std::string> Process::WaitForLogMatch(const std::string& pattern,
                                                     absl::Duration timeout) {
  RE2 re(pattern);
  if (!re.ok()) return absl::InvalidArgumentError(absl::StrCat("bad pattern: ", re.error()));
  // Without a capturing group the whole match is the result: wrap the pattern in one.
  auto captured = std::make_unique<RE2>(
      re.NumberOfCapturingGroups() == 0 ? absl::StrCat("(", pattern, ")") : pattern);
  return AwaitLine(*this, absl::StrCat("/", pattern, "/"), timeout,
                   [&](absl::string_view line, std::string* out) {
                     re2::StringPiece input(line.data(), line.size());
                     re2::StringPiece group;
                     if (!RE2::PartialMatch(input, *captured, &group)) return false;
                     *out = std::string(group.data(), group.size());
                     return true;
                   });
}

std::string CommandResult::Describe() const {
  return absl::StrCat(status.ToString(), "\n--- stdout ---\n", Tail(out, 4000),
                      "\n--- stderr ---\n", Tail(err, 4000));
}

absl::StatusOr<CommandResult> RunCommand(ProcessOptions options, absl::Duration timeout) {
  TempDir dir("flexgate-cmd");
  options.stdout_path = dir.File("stdout");
  options.stderr_path = dir.File("stderr");
  auto p = Process::Start(std::move(options));
  if (!p.ok()) return p.status();
  CommandResult r;
  std::optional<ExitStatus> st = (*p)->Wait(timeout);
  if (!st.has_value()) {
    (*p)->Terminate(absl::Seconds(1));
    return absl::DeadlineExceededError(
        absl::StrCat((*p)->name(), " did not finish within ", absl::FormatDuration(timeout),
                     "; output:\n", (*p)->LogTail()));
  }
  r.status = *st;
  r.out = (*p)->ReadLog();
  r.err = (*p)->ReadStderr();
  return r;
}

}  // namespace flexgate::testing
