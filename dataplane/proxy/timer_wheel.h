// TimerWheel: one worker's timeouts for its client connections, on a single uv_timer_t.
//
// A client connection always has exactly one deadline (header, request, idle or linger), and
// most deadlines are moved many times and rarely reached. A uv_timer_t per connection costs
// 152 bytes and a heap update per move; here a connection embeds a 24-byte Node, a move is an
// O(1) relink, and the worker's one uv timer is armed for the earliest occupied slot only.
//
// Resolution is kTickMs: a node fires in the first tick at or after its due time, never before
// it (and later only by the loop's own latency). Due times further away than the wheel's span
// (kSlots * kTickMs) are fine: such a node sits in its slot through earlier rounds and fires in
// the right one.
//
// Loop thread only. Callbacks may schedule, reschedule and cancel any node, the one firing
// included.
#pragma once

#include <uv.h>

#include <array>
#include <cstdint>

namespace flexgate::dataplane::internal {

class TimerWheel {
 public:
  static constexpr uint64_t kTickMs = 4;
  static constexpr uint32_t kSlots = 1024;  // a power of two

  // Embedded in whatever has a deadline; the callback recovers the owner from it.
  struct Node {
    Node* prev = nullptr;  // null: not scheduled
    Node* next = nullptr;
    uint64_t tick = 0;  // the tick it fires in
    bool scheduled() const { return prev != nullptr; }
  };
  using FireFn = void (*)(Node* node, void* ctx);

  TimerWheel();
  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;

  // Opens the timer handle on `loop`. `fire` runs for each node whose time came (it is
  // unscheduled first).
  void Init(uv_loop_t* loop, FireFn fire, void* ctx);
  // Closes the timer handle (the wheel must outlive the loop run that closes it). Scheduled
  // nodes stay linked and never fire.
  void Close();

  // (Re)schedules `node` to fire at `due_ms` (uv_now() milliseconds).
  void Schedule(Node* node, uint64_t due_ms);
  // Unschedules `node`; a no-op when it is not scheduled.
  void Cancel(Node* node);

  size_t size() const { return size_; }

 private:
  static void OnTimer(uv_timer_t* t);
  void Advance();
  void Link(Node* node);
  void Unlink(Node* node);
  void Arm();
  uint32_t NextOccupiedSlot(uint32_t from) const;  // kSlots when none

  uv_timer_t timer_;
  uv_loop_t* loop_ = nullptr;
  FireFn fire_ = nullptr;
  void* ctx_ = nullptr;
  bool open_ = false;
  uint64_t cursor_ = 0;      // every tick before this one has been processed
  uint64_t armed_tick_ = 0;  // the tick the uv timer is armed for; 0 = not armed
  size_t size_ = 0;
  std::array<Node, kSlots> heads_;  // sentinels of circular lists
  std::array<uint64_t, kSlots / 64> occupied_{};
};

}  // namespace flexgate::dataplane::internal
