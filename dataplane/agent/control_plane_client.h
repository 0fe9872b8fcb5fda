// ControlPlaneClient: the agent's side of AgentService.Connect, on a thread of its own.
//
// One bidirectional stream at a time. It opens with Hello (agent id, token, labels, version,
// capabilities, the applied version and hash), then for each Snapshot: ignores one older than
// what is served (answering with a Nack so the control plane does not wait on it), applies it
// through SnapshotApplier (hash check, validation, compile, every worker swapped), writes it to
// the last-known-good cache, and only then sends Ack with the apply duration. Any failure sends a
// Nack and the agent keeps serving its current table. A Heartbeat goes out periodically.
// A lost stream is re-opened after an exponential backoff with full jitter, reset once a stream
// has stayed up for a while. gRPC stays inside the .cc file: this header is cheap to include.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "dataplane/agent/agent_options.h"
#include "dataplane/agent/agent_state.h"
#include "dataplane/agent/snapshot_applier.h"
#include "dataplane/agent/snapshot_cache.h"

namespace flexgate::agent {

struct ControlPlaneClientOptions {
  ControlPlaneOptions connection;
  std::map<std::string, std::string> labels;
  std::string agent_version;
  std::set<std::string> capabilities;
};

class ControlPlaneClient {
 public:
  // Reads the TLS files now, so a missing CA or key fails start-up rather than every connect.
  // `applier` and `state` must outlive the client; `cache` may be null (no last-known-good).
  static absl::StatusOr<std::unique_ptr<ControlPlaneClient>> Create(
      ControlPlaneClientOptions options, SnapshotApplier* applier, SnapshotCache* cache,
      AgentState* state);
  ~ControlPlaneClient();

  // Starts the control thread. Call once.
  void Start();
  // Cancels the stream, stops reconnecting and joins the thread. Idempotent; safe from any
  // thread other than the control thread.
  void Stop();

  class Impl;

 private:
  explicit ControlPlaneClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexgate::agent
