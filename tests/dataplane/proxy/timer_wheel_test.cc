// TimerWheel on a real libuv loop: nodes fire once, never before their due time, in due order;
// moves and cancels take effect; callbacks may reschedule and cancel other nodes; due times
// beyond one round of the wheel wait for their round; the wheel never keeps the loop alive.
#include "dataplane/proxy/timer_wheel.h"

#include <uv.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <functional>
#include <vector>

namespace flexgate::dataplane::internal {
namespace {

struct Item : TimerWheel::Node {
  int id = 0;
  uint64_t due = 0;
  uint64_t fired_at = 0;
  int fired = 0;
  std::function<void(Item&)> on_fire;
};

struct Fixture {
  uv_loop_t loop;
  TimerWheel wheel;
  // Keeps the loop running until the test says stop (the wheel's own timer is unref'd).
  uv_timer_t keepalive;
  std::vector<int> order;

  Fixture() {
    uv_loop_init(&loop);
    wheel.Init(
        &loop,
        [](TimerWheel::Node* n, void* ctx) {
          auto* f = static_cast<Fixture*>(ctx);
          auto* it = static_cast<Item*>(n);
          it->fired_at = uv_now(&f->loop);
          ++it->fired;
          f->order.push_back(it->id);
          if (it->on_fire) it->on_fire(*it);
        },
        this);
    uv_timer_init(&loop, &keepalive);
  }
  ~Fixture() {
    wheel.Close();
    uv_close(reinterpret_cast<uv_handle_t*>(&keepalive), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    REQUIRE(uv_loop_close(&loop) == 0);
  }
  void Schedule(Item& it, uint64_t in_ms) {
    it.due = uv_now(&loop) + in_ms;
    wheel.Schedule(&it, it.due);
  }
  // Runs the loop for `ms` of loop time.
  void RunFor(uint64_t ms) {
    uv_timer_start(
        &keepalive, [](uv_timer_t* t) { uv_stop(t->loop); }, ms, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
};

TEST_CASE("timer wheel: nodes fire once in due order and never early") {
  Fixture f;
  std::vector<Item> items(6);
  const uint64_t delays[] = {30, 5, 17, 1, 45, 9};
  for (int i = 0; i < 6; ++i) {
    items[i].id = i;
    f.Schedule(items[i], delays[i]);
  }
  REQUIRE(f.wheel.size() == 6);
  f.RunFor(80);
  REQUIRE(f.order == std::vector<int>{3, 1, 5, 2, 0, 4});
  for (const Item& it : items) {
    CHECK(it.fired == 1);
    CHECK(it.fired_at >= it.due);
    CHECK_FALSE(it.scheduled());
  }
  CHECK(f.wheel.size() == 0);
}

TEST_CASE("timer wheel: a moved node fires at its new time and a cancelled one never") {
  Fixture f;
  Item a, b, c;
  a.id = 1;
  b.id = 2;
  c.id = 3;
  f.Schedule(a, 10);
  f.Schedule(b, 10);
  f.Schedule(c, 10);
  f.Schedule(a, 40);  // later
  f.wheel.Cancel(&b);
  f.wheel.Cancel(&b);  // twice is harmless
  f.RunFor(25);
  CHECK(c.fired == 1);
  CHECK(a.fired == 0);
  CHECK(b.fired == 0);
  f.Schedule(c, 2);  // sooner than a, after a fired once
  f.RunFor(40);
  CHECK(c.fired == 2);
  CHECK(a.fired == 1);
  CHECK(a.fired_at >= a.due);
  CHECK(b.fired == 0);
  CHECK(f.wheel.size() == 0);
}

TEST_CASE("timer wheel: callbacks reschedule themselves and cancel nodes due in the same tick") {
  Fixture f;
  Item repeat, victim, other;
  repeat.id = 1;
  victim.id = 2;
  other.id = 3;
  repeat.on_fire = [&](Item& it) {
    if (it.fired < 3) f.Schedule(it, 6);
    f.wheel.Cancel(&victim);  // due in the same tick as `repeat` the first time
  };
  f.Schedule(repeat, 8);
  f.Schedule(victim, 8);
  f.Schedule(other, 30);
  f.RunFor(60);
  CHECK(repeat.fired == 3);
  CHECK(victim.fired == 0);
  CHECK(other.fired == 1);
  CHECK(f.wheel.size() == 0);
}

TEST_CASE("timer wheel: a due time beyond one round waits for its own round") {
  Fixture f;
  const uint64_t span = TimerWheel::kSlots * TimerWheel::kTickMs;
  Item far, near;
  far.id = 1;
  near.id = 2;
  // Same slot, one round apart: the near one must not take the far one with it.
  uint64_t now = uv_now(&f.loop);
  uint64_t near_due = now + 20;
  near.due = near_due;
  far.due = near_due + span;
  f.wheel.Schedule(&near, near.due);
  f.wheel.Schedule(&far, far.due);
  f.RunFor(60);
  CHECK(near.fired == 1);
  CHECK(far.fired == 0);
  CHECK(far.scheduled());
  f.wheel.Cancel(&far);
  CHECK(f.wheel.size() == 0);
}

TEST_CASE("timer wheel: a scheduled node does not keep the loop alive") {
  Fixture f;
  Item a;
  f.Schedule(a, 10'000);
  // With only the wheel's (unref'd) timer active, the loop has nothing to wait for.
  CHECK(uv_run(&f.loop, UV_RUN_DEFAULT) == 0);
  f.wheel.Cancel(&a);
}

}  // namespace
}  // namespace flexgate::dataplane::internal
