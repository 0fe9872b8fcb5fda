// Backoff: reconnect delays for the control-plane stream. Exponential with FULL jitter: attempt n
// waits a uniformly random time in [0, min(cap, base * 2^n)], so thousands of agents that lost
// the same control plane at the same moment spread their reconnects over the whole window
// instead of arriving together.
//
// Not thread-safe; owned by the control thread.
#pragma once

#include <functional>

#include "absl/time/time.h"

namespace flexgate::agent {

class Backoff {
 public:
  // `uniform01` returns a value in [0, 1); injected so tests can pin the jitter. The default
  // draws from absl::BitGen.
  Backoff(absl::Duration base, absl::Duration cap, std::function<double()> uniform01 = nullptr);

  // The delay before the next attempt; each call counts one attempt.
  absl::Duration Next();

  // The upper bound the next call to Next() draws from.
  absl::Duration Ceiling() const;

  // After a stable connection: the next delay starts from `base` again.
  void Reset() { attempt_ = 0; }

  int attempts() const { return attempt_; }

 private:
  absl::Duration base_;
  absl::Duration cap_;
  std::function<double()> uniform01_;
  int attempt_ = 0;
};

}  // namespace flexgate::agent
