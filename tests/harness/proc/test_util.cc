#include "tests/harness/proc/test_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

// Set by CMake to the build's bin/ and tests/bin/ directories.
#ifndef FLEXGATE_BIN_DIR
#error "FLEXGATE_BIN_DIR must be defined by the build"
#endif
#ifndef FLEXGATE_TEST_BIN_DIR
#error "FLEXGATE_TEST_BIN_DIR must be defined by the build"
#endif

namespace flexgate::testing {

uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  uint16_t port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    socklen_t len = sizeof(addr);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port = ntohs(addr.sin_port);
    }
  }
  close(fd);
  return port;
}

bool WaitFor(const std::function<bool()>& predicate, absl::Duration timeout,
             absl::Duration poll) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (predicate()) return true;
    if (absl::Now() >= deadline) return predicate();
    absl::SleepFor(std::min(poll, std::max(absl::ZeroDuration(), deadline - absl::Now())));
  }
}

namespace {

std::vector<std::string> BinDirs() {
  std::vector<std::string> dirs;
  const char* env = std::getenv("FLEXGATE_BIN_DIR");
  if (env != nullptr && *env != '\0') dirs.emplace_back(env);
  dirs.emplace_back(FLEXGATE_BIN_DIR);
  dirs.emplace_back(FLEXGATE_TEST_BIN_DIR);
  return dirs;
}

}  // namespace

std::string BinaryPath(absl::string_view name) {
  std::vector<std::string> dirs = BinDirs();
  for (const auto& dir : dirs) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return absl::StrCat(FLEXGATE_BIN_DIR, "/", name);
}

bool BinaryExists(absl::string_view name) {
  return access(BinaryPath(name).c_str(), X_OK) == 0;
}

TempDir::TempDir(absl::string_view prefix) {
  const char* t = std::getenv("TMPDIR");
  std::string root = (t != nullptr && *t != '\0') ? std::string(t) : std::string("/tmp");
  std::string templ = absl::StrCat(root, "/", prefix, "-XXXXXX");
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    // A test cannot do anything useful without its temp dir; fail loudly.
    std::perror("mkdtemp");
    std::abort();
  }
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::File(absl::string_view name) const { return absl::StrCat(path_, "/", name); }

std::string TempDir::WriteFile(absl::string_view name, absl::string_view contents) const {
  std::string path = File(name);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  return path;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace flexgate::testing
