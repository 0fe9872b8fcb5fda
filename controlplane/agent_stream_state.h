// AgentStreamState: the control plane's view of one agent stream, as a pure state machine (no
// I/O, no locks, no clock) so the distribution rules can be tested on their own:
//
//  - Only the newest pending version is sent: while a write is in flight, newer offers replace
//    the pending one, and superseded versions are skipped.
//  - Versions only move forward; an offer at or below the newest already offered is ignored
//    (duplicate notifications, reloads after a reconnect of the listener).
//  - Each snapshot sent carries a fresh nonce; an Ack or Nack whose nonce is not the last one
//    sent is stale and ignored.
//  - A NACKed version is never sent to this agent again.
//  - A version whose hash the agent already reports serving is not sent.
//
// `Payload` is what the caller wants back with each send decision (the pre-encoded snapshot in
// production). Not thread-safe: the owner serializes calls.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace flexgate::cp {

template <typename Payload>
class AgentStreamState {
 public:
  struct Send {
    uint64_t version = 0;
    std::string nonce;
    Payload payload;
  };

  enum class Reply { kStale, kAccepted };

  // What the agent says it serves (Hello, Heartbeat).
  void SetApplied(uint64_t version, std::string hash) {
    applied_version_ = version;
    applied_hash_ = std::move(hash);
  }
  // Seeds a version this agent rejected on an earlier stream (recorded in the database).
  void MarkRejected(uint64_t version) {
    if (version > 0) rejected_.insert(version);
  }

  // A version is available for this agent. Returns what to write now, if anything.
  std::optional<Send> Offer(uint64_t version, const std::string& hash, Payload payload) {
    if (version == 0 || version <= offered_max_ || rejected_.contains(version)) {
      return std::nullopt;
    }
    offered_max_ = version;
    if (!hash.empty() && hash == applied_hash_) {
      // Already serving this content (it reconnected with it, or it came from another replica).
      pending_.reset();
      return std::nullopt;
    }
    if (write_in_flight_) {
      pending_ = Pending{version, std::move(payload)};  // Supersedes any older pending version.
      return std::nullopt;
    }
    return StartSend(version, std::move(payload));
  }

  // The last write finished (successfully or not). Returns the next write, if any.
  std::optional<Send> WriteDone() {
    write_in_flight_ = false;
    if (!pending_) return std::nullopt;
    Pending p = std::move(*pending_);
    pending_.reset();
    return StartSend(p.version, std::move(p.payload));
  }

  // Ack: accepted only with the nonce of the last snapshot sent; the agent then serves that
  // snapshot's version.
  Reply OnAck(const std::string& nonce, const std::string& hash) {
    if (!IsCurrent(nonce)) return Reply::kStale;
    applied_version_ = sent_version_;
    applied_hash_ = hash;
    return Reply::kAccepted;
  }

  // Nack: accepted only with the current nonce; that version is never sent again.
  Reply OnNack(const std::string& nonce) {
    if (!IsCurrent(nonce)) return Reply::kStale;
    rejected_.insert(sent_version_);
    return Reply::kAccepted;
  }

  bool write_in_flight() const { return write_in_flight_; }
  uint64_t applied_version() const { return applied_version_; }
  const std::string& applied_hash() const { return applied_hash_; }
  // The version of the last snapshot sent (0 = none), the one a current nonce refers to.
  uint64_t sent_version() const { return sent_version_; }
  std::optional<uint64_t> pending_version() const {
    return pending_ ? std::optional<uint64_t>(pending_->version) : std::nullopt;
  }
  bool IsRejected(uint64_t version) const { return rejected_.contains(version); }

 private:
  struct Pending {
    uint64_t version;
    Payload payload;
  };

  Send StartSend(uint64_t version, Payload payload) {
    write_in_flight_ = true;
    sent_version_ = version;
    last_nonce_ = absl::StrCat(++nonce_counter_);
    return Send{version, last_nonce_, std::move(payload)};
  }
  bool IsCurrent(const std::string& nonce) const {
    return !last_nonce_.empty() && nonce == last_nonce_;
  }

  uint64_t applied_version_ = 0;
  std::string applied_hash_;
  uint64_t offered_max_ = 0;
  uint64_t sent_version_ = 0;
  uint64_t nonce_counter_ = 0;
  std::string last_nonce_;
  bool write_in_flight_ = false;
  std::optional<Pending> pending_;
  absl::flat_hash_set<uint64_t> rejected_;
};

}  // namespace flexgate::cp
