#include "dataplane/agent/backoff.h"

#include <algorithm>
#include <memory>

#include "absl/random/random.h"

namespace flexgate::agent {

Backoff::Backoff(absl::Duration base, absl::Duration cap, std::function<double()> uniform01)
    : base_(base), cap_(std::max(cap, base)), uniform01_(std::move(uniform01)) {
  if (!uniform01_) {
    auto gen = std::make_shared<absl::BitGen>();
    uniform01_ = [gen] { return absl::Uniform<double>(*gen, 0.0, 1.0); };
  }
}

absl::Duration Backoff::Ceiling() const {
  // Doubling stops once past the cap, so the shift never overflows.
  absl::Duration ceiling = base_;
  for (int i = 0; i < attempt_ && ceiling < cap_; ++i) ceiling *= 2;
  return std::min(ceiling, cap_);
}

absl::Duration Backoff::Next() {
  absl::Duration ceiling = Ceiling();
  ++attempt_;
  double u = std::clamp(uniform01_(), 0.0, 1.0);
  return ceiling * u;
}

}  // namespace flexgate::agent
