// AgentStreamState: the control plane's view of one agent stream, as a pure state machine (no
// I/O, no locks, no clock) so the distribution rules can be tested on their own:
//
//  - Only the newest pending version is sent: while a write is in flight, newer offers replace
//    the pending one, and superseded versions are skipped.
//  - Versions only move forward; an offer at or below the newest already offered is ignored
//    (duplicate notifications, reloads after a reconnect of the listener).
//  - Each snapshot sent carries a fresh nonce; only an Ack or Nack with the last nonce sent
//    confirms that send and moves the stream's state (what the agent serves).
//  - A reply to one of the last kRecentSends earlier snapshots is late, not stale: the agent
//    did apply (or reject) that version, but only after a newer one was already on its way. A
//    late reply is reported with the version and hash it answers, once per nonce, so the caller
//    records it (ACK time, convergence, NACK memory); it never changes what the stream believes
//    the agent serves, because the newer snapshot may already be applied behind it.
//  - A NACKed version is never sent to this agent again.
//  - A version whose hash the agent already reports serving is not sent.
//
// `Payload` is what the caller wants back with each send decision (the pre-encoded snapshot in
// production). Not thread-safe: the owner serializes calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
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

  // How many earlier sends a late reply may still answer. Agents answer in order and at most a
  // write or two behind, so a handful is plenty; the bound keeps a stream's memory fixed.
  static constexpr size_t kRecentSends = 8;

  enum class Reply {
    kStale,     // unknown, too old or already answered nonce: ignore
    kAccepted,  // the current nonce: the agent serves (or rejected) the last snapshot sent
    kLate,      // an earlier send's nonce: record it for that version, change nothing else
  };
  struct ReplyOutcome {
    Reply reply = Reply::kStale;
    uint64_t version = 0;  // the version the reply answers (0 when stale)
    std::string hash;      // the hash sent with that version
  };

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
  std::optional<Send> Offer(uint64_t version, std::string hash, Payload payload) {
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
      // Supersedes any older pending version.
      pending_ = Pending{version, std::move(hash), std::move(payload)};
      return std::nullopt;
    }
    return StartSend(version, std::move(hash), std::move(payload));
  }

  // The last write finished (successfully or not). Returns the next write, if any.
  std::optional<Send> WriteDone() {
    write_in_flight_ = false;
    if (!pending_) return std::nullopt;
    Pending p = std::move(*pending_);
    pending_.reset();
    return StartSend(p.version, std::move(p.hash), std::move(p.payload));
  }

  // Ack. With the current nonce the agent now serves that snapshot (`hash` is what it reports
  // serving; empty = the hash sent). With an earlier send's nonce it is late (see the header).
  ReplyOutcome OnAck(const std::string& nonce, const std::string& hash) {
    ReplyOutcome out = Answer(nonce);
    if (out.reply == Reply::kAccepted) {
      applied_version_ = out.version;
      applied_hash_ = hash.empty() ? out.hash : hash;
    }
    return out;
  }

  // Nack, current or late: that version is never sent to this agent again. Neither changes
  // what the agent serves (it stays on its previous snapshot) nor the pending send.
  ReplyOutcome OnNack(const std::string& nonce) {
    ReplyOutcome out = Answer(nonce);
    if (out.reply != Reply::kStale) rejected_.insert(out.version);
    return out;
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
    std::string hash;
    Payload payload;
  };
  // A send whose nonce has not been answered yet.
  struct Unanswered {
    std::string nonce;
    uint64_t version;
    std::string hash;
  };

  Send StartSend(uint64_t version, std::string hash, Payload payload) {
    write_in_flight_ = true;
    sent_version_ = version;
    sent_hash_ = hash;
    last_nonce_ = absl::StrCat(++nonce_counter_);
    unanswered_.push_back(Unanswered{last_nonce_, version, std::move(hash)});
    if (unanswered_.size() > kRecentSends) unanswered_.pop_front();
    return Send{version, last_nonce_, std::move(payload)};
  }

  // Classifies a reply's nonce. The current nonce stays answerable (a repeated reply to it is
  // accepted again, as before: recording is idempotent) until the next send; an earlier nonce
  // answers once.
  ReplyOutcome Answer(const std::string& nonce) {
    ReplyOutcome out;
    if (nonce.empty()) return out;
    const bool current = nonce == last_nonce_;
    for (auto it = unanswered_.begin(); it != unanswered_.end(); ++it) {
      if (it->nonce != nonce) continue;
      if (!current) {
        out.reply = Reply::kLate;
        out.version = it->version;
        out.hash = std::move(it->hash);
      }
      unanswered_.erase(it);
      if (!current) return out;
      break;
    }
    if (current) {
      out.reply = Reply::kAccepted;
      out.version = sent_version_;
      out.hash = sent_hash_;
    }
    return out;
  }

  uint64_t applied_version_ = 0;
  std::string applied_hash_;
  uint64_t offered_max_ = 0;
  uint64_t sent_version_ = 0;
  std::string sent_hash_;
  uint64_t nonce_counter_ = 0;
  std::string last_nonce_;
  std::deque<Unanswered> unanswered_;  // oldest first, at most kRecentSends
  bool write_in_flight_ = false;
  std::optional<Pending> pending_;
  absl::flat_hash_set<uint64_t> rejected_;
};

}  // namespace flexgate::cp
