#include "tests/bench/fleet_proc_stats.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace flexgate::bench {
namespace {

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The number after "Name:" in /proc/PID/status (0 when the line is absent).
int64_t StatusField(const std::string& status, const std::string& name) {
  size_t pos = status.find("\n" + name + ":");
  if (pos == std::string::npos) return 0;
  pos += name.size() + 2;
  size_t end = status.find('\n', pos);
  std::string value(absl::StripAsciiWhitespace(status.substr(pos, end - pos)));
  // "123456 kB" -> 123456
  value = value.substr(0, value.find(' '));
  int64_t v = 0;
  return absl::SimpleAtoi(value, &v) ? v : 0;
}

struct StatFields {
  pid_t ppid = 0;
  absl::Duration cpu;
};

absl::Duration TicksToDuration(int64_t ticks) {
  static const long kTicksPerSecond = sysconf(_SC_CLK_TCK);
  return absl::Seconds(static_cast<double>(ticks) / static_cast<double>(kTicksPerSecond));
}

// Parses /proc/PID/stat. The command name (field 2) may contain spaces and parentheses: fields
// are counted from the last ')'. After it come field 3 (state), 4 (ppid) ... 14 (utime),
// 15 (stime).
absl::StatusOr<StatFields> ReadStat(pid_t pid) {
  absl::StatusOr<std::string> stat = ReadAll(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return stat.status();
  size_t close = stat->rfind(')');
  if (close == std::string::npos || close + 2 > stat->size()) {
    return absl::InternalError("malformed /proc/PID/stat");
  }
  std::vector<std::string> fields =
      absl::StrSplit(stat->substr(close + 2), ' ', absl::SkipEmpty());
  StatFields out;
  int64_t ppid = 0, utime = 0, stime = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[1], &ppid) ||
      !absl::SimpleAtoi(fields[11], &utime) || !absl::SimpleAtoi(fields[12], &stime)) {
    return absl::InternalError("malformed /proc/PID/stat");
  }
  out.ppid = static_cast<pid_t>(ppid);
  out.cpu = TicksToDuration(utime + stime);
  return out;
}

}  // namespace

absl::Duration DescendantsCpu(pid_t root, pid_t exclude) {
  std::map<pid_t, std::vector<pid_t>> children;
  std::map<pid_t, absl::Duration> cpu;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    int64_t pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    absl::StatusOr<StatFields> st = ReadStat(static_cast<pid_t>(pid));
    if (!st.ok()) continue;  // Exited meanwhile.
    children[st->ppid].push_back(static_cast<pid_t>(pid));
    cpu[static_cast<pid_t>(pid)] = st->cpu;
  }
  absl::Duration total;
  std::vector<pid_t> todo = children[root];
  while (!todo.empty()) {
    pid_t p = todo.back();
    todo.pop_back();
    if (p == exclude) continue;
    total += cpu[p];
    for (pid_t c : children[p]) todo.push_back(c);
  }
  return total;
}

absl::StatusOr<ProcSample> SampleProcess(pid_t pid) {
  const std::string dir = absl::StrCat("/proc/", pid);
  absl::StatusOr<std::string> status = ReadAll(dir + "/status");
  if (!status.ok()) return status.status();
  absl::StatusOr<StatFields> stat = ReadStat(pid);
  if (!stat.ok()) return stat.status();

  ProcSample s;
  s.rss_kb = StatusField(*status, "VmRSS");
  s.threads = StatusField(*status, "Threads");
  s.cpu = stat->cpu;
  return s;
}

bool WaitForQuiet(pid_t pid, absl::Duration window, absl::Duration timeout) {
  static const absl::Duration kTick = TicksToDuration(1);
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<ProcSample> prev = SampleProcess(pid);
  while (prev.ok() && absl::Now() < deadline) {
    std::this_thread::sleep_for(absl::ToChronoNanoseconds(window));
    absl::StatusOr<ProcSample> cur = SampleProcess(pid);
    if (!cur.ok()) return false;
    if (cur->cpu - prev->cpu <= kTick) return true;
    prev = cur;
  }
  return false;
}

}  // namespace flexgate::bench
