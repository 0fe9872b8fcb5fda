// SnapshotApplier: the one path by which a config becomes what the agent serves, whatever its
// source (static file, last-known-good cache, control plane): verify the hash, validate with the
// agent's capabilities, compile and publish to every worker, wait until all of them serve it,
// then record it in AgentState.
//
// Thread-safety: Apply is called by one thread at a time (main during start-up, then the control
// thread). It blocks that thread until the workers have swapped, which is what lets the caller
// send an ACK that means "serving".
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/validator.h"
#include "dataplane/agent/agent_state.h"
#include "dataplane/agent/route_publisher.h"
#include "flexgate/v1/config.pb.h"

namespace flexgate::agent {

class SnapshotApplier {
 public:
  // `publisher` and `state` must outlive the applier.
  SnapshotApplier(RoutePublisher* publisher, AgentState* state, ValidationOptions validation,
                  absl::Duration swap_timeout = absl::Seconds(60));

  // Applies a snapshot. `hash` must equal ConfigHash(config) (FAILED_PRECONDITION otherwise);
  // a config the validator rejects gives INVALID_ARGUMENT with every diagnostic in the message;
  // a compile error is passed through. On any error the workers keep their current table and
  // AgentState is unchanged. On success returns the time from `received` to all workers serving.
  absl::StatusOr<absl::Duration> Apply(const flexgate::v1::Config& config, uint64_t version,
                                       const std::string& hash, SnapshotSource source,
                                       absl::Time received);

 private:
  RoutePublisher* publisher_;
  AgentState* state_;
  ValidationOptions validation_;
  absl::Duration swap_timeout_;
};

}  // namespace flexgate::agent
