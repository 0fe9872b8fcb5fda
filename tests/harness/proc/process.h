// Process: a child program started by a test (flexgate-cp, flexgate-agent, an upstream, flexctl,
// PostgreSQL), with its stdout and stderr captured in log files the test can read and await.
//
// Every child gets PR_SET_PDEATHSIG(SIGKILL), so a test that crashes or is killed leaks no
// process. Note that the kernel ties that signal to the *thread* that forked: start children from
// the test's main thread (or a thread that outlives them).
//
// Thread-safety: a Process is used by one thread at a time. Only the Process reaps its child.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace flexgate::testing {

// How a child ended.
struct ExitStatus {
  bool exited = false;  // true: exit(code); false: killed by `signal`
  int code = -1;
  int signal = 0;

  bool success() const { return exited && code == 0; }
  // "exit 0", "exit 2", "signal 9 (Killed)".
  std::string ToString() const;
  static ExitStatus FromWaitStatus(int wait_status);
};

struct ProcessOptions {
  // argv; args[0] is the program (an absolute path, or a name looked up in PATH).
  std::vector<std::string> args;
  // Added to (or replacing entries of) the test's own environment.
  std::vector<std::pair<std::string, std::string>> env;
  // Names removed from the inherited environment (e.g. FLEXGATE_TOKEN for a flexctl test).
  std::vector<std::string> unset_env;
  // Where stdout goes; empty = a fresh file in the temp dir. stderr goes to `stderr_path`, or
  // to the same file when that is empty.
  std::string stdout_path;
  std::string stderr_path;
  // Working directory of the child; empty = the test's.
  std::string working_dir;
  // Data written to the child's stdin (then closed); by default stdin is /dev/null.
  std::string stdin_data;
};

class Process {
 public:
  // Starts the child. Fails if the program cannot be executed (the exec error is reported here,
  // not as a mysterious exit status later).
  static absl::StatusOr<std::unique_ptr<Process>> Start(ProcessOptions options);

  // Terminates the child (SIGTERM, then SIGKILL after 5 s) unless it has already ended.
  ~Process();

  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  const std::string& stdout_path() const { return stdout_path_; }
  const std::string& stderr_path() const { return stderr_path_; }

  // True while the child has not exited. Reaps it when it has.
  bool Running();

  // The exit status once the child has ended (std::nullopt while it runs).
  std::optional<ExitStatus> exit_status();

  // Sends `sig` to the child. FAILED_PRECONDITION when the child has already been reaped.
  absl::Status Signal(int sig);

  // Waits up to `timeout` for the child to end on its own.
  std::optional<ExitStatus> Wait(absl::Duration timeout);

  // SIGTERM, wait up to `grace`, then SIGKILL. Returns how the child ended (immediately when it
  // already had). A server that drains gracefully reports exit 0 here.
  ExitStatus Terminate(absl::Duration grace = absl::Seconds(5));

  // Everything the child wrote to stdout (and stderr when they share a file) so far.
  std::string ReadLog() const;
  // Everything written to stderr so far (same as ReadLog when not separated).
  std::string ReadStderr() const;

  // Waits until a line of the log contains `substring`; returns that line. DEADLINE_EXCEEDED
  // (with the log's tail in the message) on timeout, FAILED_PRECONDITION if the child exits
  // first. Scans both stdout and stderr files.
  absl::StatusOr<std::string> WaitForLogLine(absl::string_view substring, absl::Duration timeout);

  // Like WaitForLogLine with an RE2 pattern searched in each line; returns the first capturing
  // group (or the whole match when the pattern has none). Example: R"("grpc_port":(\d+))".
  absl::StatusOr<std::string> WaitForLogMatch(const std::string& pattern, absl::Duration timeout);

  // The port of a FlexGate JSON log line {"msg":"<msg>",...,"port":N} (e.g. "listening",
  // "admin listening"), waiting for it like WaitForLogMatch.
  absl::StatusOr<uint16_t> WaitForLogPort(const std::string& msg, absl::Duration timeout);

  // The last `max_bytes` of the log, for failure messages.
  std::string LogTail(size_t max_bytes = 4000) const;

 private:
  Process(pid_t pid, std::string name, std::string stdout_path, std::string stderr_path)
      : pid_(pid),
        name_(std::move(name)),
        stdout_path_(std::move(stdout_path)),
        stderr_path_(std::move(stderr_path)) {}

  // Non-blocking reap; true when the child has ended.
  bool Reap();

  pid_t pid_;
  std::string name_;
  std::string stdout_path_;
  std::string stderr_path_;
  std::optional<ExitStatus> status_;
  // Log files the Process created itself are removed with it (unless FLEXGATE_KEEP_LOGS is set).
  bool delete_logs_ = false;
};

// The output of a program run to completion.
struct CommandResult {
  ExitStatus status;
  std::string out;
  std::string err;
  // "exit 1; stdout: ...; stderr: ..." for assertion messages.
  std::string Describe() const;
};

// Runs a program to completion with stdout and stderr captured separately. The child is killed
// (and DEADLINE_EXCEEDED returned) if it runs longer than `timeout`.
absl::StatusOr<CommandResult> RunCommand(ProcessOptions options,
                                         absl::Duration timeout = absl::Seconds(60));

}  // namespace flexgate::testing
