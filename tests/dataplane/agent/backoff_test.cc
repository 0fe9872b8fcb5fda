// Reconnect backoff: exponential ceilings, full jitter inside [0, ceiling], reset.
#include <catch2/catch.hpp>

#include "dataplane/agent/backoff.h"

namespace flexgate::agent {
namespace {

TEST_CASE("ceilings double from the base and stop at the cap") {
  Backoff b(absl::Milliseconds(250), absl::Seconds(30), [] { return 0.999999; });
  std::vector<absl::Duration> ceilings;
  for (int i = 0; i < 12; ++i) {
    ceilings.push_back(b.Ceiling());
    absl::Duration d = b.Next();
    CHECK(d <= ceilings.back());
    CHECK(d > ceilings.back() * 0.99);  // u close to 1 draws close to the ceiling
  }
  CHECK(ceilings[0] == absl::Milliseconds(250));
  CHECK(ceilings[1] == absl::Milliseconds(500));
  CHECK(ceilings[2] == absl::Seconds(1));
  CHECK(ceilings[6] == absl::Seconds(16));
  CHECK(ceilings[7] == absl::Seconds(30));
  CHECK(ceilings[11] == absl::Seconds(30));
  CHECK(b.attempts() == 12);
}

TEST_CASE("full jitter: a draw of zero waits not at all") {
  Backoff b(absl::Milliseconds(250), absl::Seconds(30), [] { return 0.0; });
  for (int i = 0; i < 10; ++i) CHECK(b.Next() == absl::ZeroDuration());
}

TEST_CASE("reset starts over from the base") {
  Backoff b(absl::Milliseconds(100), absl::Seconds(10), [] { return 0.5; });
  for (int i = 0; i < 8; ++i) b.Next();
  CHECK(b.Ceiling() == absl::Seconds(10));
  b.Reset();
  CHECK(b.attempts() == 0);
  CHECK(b.Ceiling() == absl::Milliseconds(100));
  CHECK(b.Next() == absl::Milliseconds(50));
}

TEST_CASE("real randomness stays in bounds and spreads over the whole window") {
  // Many agents that lost the same control plane must not come back together: at the cap the
  // draws cover [0, cap] rather than clustering near it.
  Backoff b(absl::Milliseconds(250), absl::Seconds(30));
  for (int i = 0; i < 10; ++i) b.Next();  // reach the cap
  absl::Duration lo = absl::InfiniteDuration(), hi = absl::ZeroDuration();
  int low_quarter = 0;
  for (int i = 0; i < 2000; ++i) {
    absl::Duration d = b.Next();
    REQUIRE(d >= absl::ZeroDuration());
    REQUIRE(d <= absl::Seconds(30));
    lo = std::min(lo, d);
    hi = std::max(hi, d);
    if (d < absl::Milliseconds(7500)) ++low_quarter;
  }
  CHECK(lo < absl::Seconds(1));
  CHECK(hi > absl::Seconds(29));
  // Expect about 500 in the lowest quarter; the bounds are many standard deviations wide.
  CHECK(low_quarter > 350);
  CHECK(low_quarter < 650);
}

TEST_CASE("a cap below the base is raised to the base") {
  Backoff b(absl::Seconds(1), absl::Milliseconds(10), [] { return 0.5; });
  CHECK(b.Ceiling() == absl::Seconds(1));
}

}  // namespace
}  // namespace flexgate::agent
