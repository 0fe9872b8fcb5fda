// CpMetrics: the control plane's Prometheus metrics, in one place beside one registry, served on
// the admin port at /metrics. prometheus-cpp counters and gauges are thread-safe.
#pragma once

#include <memory>
#include <string>

#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace flexgate::cp {

class CpMetrics {
  // First member: the references below are initialized from it.
  std::shared_ptr<prometheus::Registry> registry_;

 public:
  CpMetrics();

  // The text exposition format of every metric.
  std::string Serialize() const;

  prometheus::Gauge& connected_agents;
  prometheus::Counter& applies;            // versions stored
  prometheus::Counter& applies_unchanged;  // applies equal to the live version
  prometheus::Counter& applies_rejected;   // invalid, stale base, or refused
  prometheus::Counter& validate_calls;
  prometheus::Counter& snapshot_sends;
  prometheus::Counter& acks;
  prometheus::Counter& nacks;
  prometheus::Counter& stale_replies;      // Ack/Nack with an unknown or answered nonce
  // Ack/Nack answering an earlier send than the current one: recorded for that version.
  prometheus::Counter& late_replies;
  prometheus::Counter& notifications;      // flexgate_config notifications received
  prometheus::Counter& listener_reconnects;
  // Agent streams ended because the credential they were opened with was revoked.
  prometheus::Counter& revoked_streams;
  prometheus::Counter& revocation_notifications;  // flexgate_revocation notifications received
  // Re-checks of the open streams' credentials against the database (one query each).
  prometheus::Counter& revocation_checks;
  // Batched writes of agent-stream events (db_workers.h): one per drained batch.
  prometheus::Counter& db_event_batches;
  // Commit of a version -> an agent's first ACK of it, in seconds, for ACKs this replica
  // received. An agent that connects long after a commit and ACKs then counts with that delay.
  prometheus::Histogram& convergence_seconds;
};

}  // namespace flexgate::cp
