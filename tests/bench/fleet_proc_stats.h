// Resource samples of a process from /proc, for the fleet simulator: the control plane's resident
// memory and CPU time before and after the fleet connects and while versions roll out.
//
// Linux only. Reading /proc/PID is cheap (a few microseconds) and needs no privilege for our own
// children, so the simulator samples as often as it needs to without disturbing the measurement.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace flexgate::bench {

struct ProcSample {
  int64_t rss_kb = 0;    // VmRSS
  int64_t threads = 0;   // Threads
  // utime + stime, converted from clock ticks (so the resolution is one tick, usually 10 ms).
  absl::Duration cpu = absl::ZeroDuration();
};

// Samples /proc/PID/status and /proc/PID/stat. NOT_FOUND when the process is gone.
absl::StatusOr<ProcSample> SampleProcess(pid_t pid);

// CPU time of the live descendants of `root` (not `root` itself), skipping the subtree of
// `exclude`: with --spawn, the PostgreSQL server processes (the simulator's other children besides
// the control plane). Processes that already exited are not counted.
absl::Duration DescendantsCpu(pid_t root, pid_t exclude);

// Waits until `pid` has used at most one clock tick of CPU over a `window` (the control plane has
// finished the work a phase left behind, such as recording ACKs in the database), or until
// `timeout`. Returns false on timeout or when the process cannot be read.
bool WaitForQuiet(pid_t pid, absl::Duration window, absl::Duration timeout);

}  // namespace flexgate::bench
