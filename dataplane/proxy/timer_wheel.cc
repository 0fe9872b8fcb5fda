#include "dataplane/proxy/timer_wheel.h"

namespace flexgate::dataplane::internal {
namespace {

constexpr uint64_t kMask = TimerWheel::kSlots - 1;
constexpr uint32_t kWords = TimerWheel::kSlots / 64;
static_assert((TimerWheel::kSlots & kMask) == 0 && TimerWheel::kSlots % 64 == 0);

}  // namespace

TimerWheel::TimerWheel() {
  for (Node& h : heads_) h.prev = h.next = &h;
}

void TimerWheel::Init(uv_loop_t* loop, FireFn fire, void* ctx) {
  loop_ = loop;
  fire_ = fire;
  ctx_ = ctx;
  uv_timer_init(loop, &timer_);
  timer_.data = this;
  // The connections' own handles keep the loop alive; the wheel alone never does.
  uv_unref(reinterpret_cast<uv_handle_t*>(&timer_));
  cursor_ = uv_now(loop) / kTickMs;
  open_ = true;
}

void TimerWheel::Close() {
  if (!open_) return;
  open_ = false;
  armed_tick_ = 0;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

void TimerWheel::Link(Node* node) {
  uint32_t slot = static_cast<uint32_t>(node->tick & kMask);
  Node* head = &heads_[slot];
  node->next = head;
  node->prev = head->prev;
  head->prev->next = node;
  head->prev = node;
  occupied_[slot / 64] |= uint64_t{1} << (slot % 64);
  ++size_;
}

void TimerWheel::Unlink(Node* node) {
  node->prev->next = node->next;
  node->next->prev = node->prev;
  node->prev = node->next = nullptr;
  uint32_t slot = static_cast<uint32_t>(node->tick & kMask);
  // The node may sit in Advance()'s private list rather than its slot; the slot's own list is
  // what the bit describes either way.
  if (heads_[slot].next == &heads_[slot]) occupied_[slot / 64] &= ~(uint64_t{1} << (slot % 64));
  --size_;
}

void TimerWheel::Schedule(Node* node, uint64_t due_ms) {
  if (!open_) return;
  if (node->scheduled()) Unlink(node);
  uint64_t now = uv_now(loop_);
  // An empty wheel has nothing behind its cursor: move it up so that the next Advance does not
  // walk ticks that cannot hold anything.
  if (size_ == 0 && armed_tick_ == 0) cursor_ = now / kTickMs;
  uint64_t tick = (due_ms + kTickMs - 1) / kTickMs;
  if (tick < cursor_) tick = cursor_;
  node->tick = tick;
  Link(node);
  if (armed_tick_ == 0 || tick < armed_tick_) {
    armed_tick_ = tick;
    uint64_t at = tick * kTickMs;
    uv_timer_start(&timer_, OnTimer, at > now ? at - now : 0, 0);
  }
}

void TimerWheel::Cancel(Node* node) {
  if (!node->scheduled()) return;
  Unlink(node);
  if (size_ == 0 && armed_tick_ != 0) {
    armed_tick_ = 0;
    uv_timer_stop(&timer_);
  }
}

void TimerWheel::OnTimer(uv_timer_t* t) { static_cast<TimerWheel*>(t->data)->Advance(); }

void TimerWheel::Advance() {
  armed_tick_ = 0;
  const uint64_t now_tick = uv_now(loop_) / kTickMs;
  // After a stall longer than one round, one pass over every slot finds everything due.
  if (now_tick >= cursor_ + kSlots) cursor_ = now_tick - kSlots + 1;
  while (cursor_ <= now_tick && size_ > 0) {
    uint32_t slot = static_cast<uint32_t>(cursor_ & kMask);
    ++cursor_;  // nodes scheduled by callbacks from here on land in later ticks
    Node* head = &heads_[slot];
    if (head->next == head) continue;
    // Take the slot's list private, so that callbacks relinking nodes into this slot (a later
    // round) do not make the walk revisit them.
    Node local;
    local.next = head->next;
    local.prev = head->prev;
    local.next->prev = &local;
    local.prev->next = &local;
    head->next = head->prev = head;
    occupied_[slot / 64] &= ~(uint64_t{1} << (slot % 64));
    while (local.next != &local) {
      Node* n = local.next;
      Unlink(n);
      if (n->tick <= now_tick) {
        fire_(n, ctx_);
      } else {
        Link(n);  // a later round of the same slot
      }
    }
  }
  if (size_ == 0 || !open_) return;
  // The first occupied slot ahead is never later than the earliest node (a callback may have
  // armed the timer for a later one meanwhile).
  uint32_t from = static_cast<uint32_t>(cursor_ & kMask);
  uint32_t slot = NextOccupiedSlot(from);
  if (slot == kSlots) return;  // cannot happen while size_ > 0
  uint64_t tick = cursor_ + ((slot - from) & kMask);
  armed_tick_ = tick;
  uint64_t now = uv_now(loop_);
  uint64_t at = tick * kTickMs;
  uv_timer_start(&timer_, OnTimer, at > now ? at - now : 0, 0);
}

uint32_t TimerWheel::NextOccupiedSlot(uint32_t from) const {
  uint32_t word = from / 64;
  uint64_t bits = occupied_[word] & (~uint64_t{0} << (from % 64));
  for (uint32_t n = 0; n <= kWords; ++n) {
    if (bits != 0) return ((word * 64) + static_cast<uint32_t>(__builtin_ctzll(bits))) & kMask;
    word = (word + 1) % kWords;
    bits = occupied_[word];
  }
  return kSlots;
}

}  // namespace flexgate::dataplane::internal
