// Small helpers every process-level test needs: free ports, awaiting a condition instead of
// sleeping, locating the programs of this build, and temporary directories.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace flexgate::testing {

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read, closed). Another
// process may take it before the caller binds it, so callers that can must retry on EADDRINUSE
// or, better, let the server bind port 0 and report its port.
uint16_t FreePort();

// Polls `predicate` every `poll` until it returns true (-> true) or `timeout` passes (-> false).
// The predicate is always evaluated at least once, and once more after the deadline.
bool WaitFor(const std::function<bool()>& predicate, absl::Duration timeout,
             absl::Duration poll = absl::Milliseconds(20));

// The absolute path of a program of this build ("flexgate-agent", "flexgate-cp", "flexctl",
// "flexgate-test-upstream", ...). Looks in $FLEXGATE_BIN_DIR (when set), then in the build's
// bin/ and tests/bin/ directories. Returns the bin/ path even when the file is missing, so the
// error that follows names the expected location.
std::string BinaryPath(absl::string_view name);

// True when BinaryPath(name) exists and is executable.
bool BinaryExists(absl::string_view name);

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class TempDir {
 public:
  explicit TempDir(absl::string_view prefix = "flexgate-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string File(absl::string_view name) const;
  // Writes `contents` to File(name) and returns its path.
  std::string WriteFile(absl::string_view name, absl::string_view contents) const;

 private:
  std::string path_;
};

// Reads a whole file; NOT_FOUND when it cannot be opened.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace flexgate::testing
