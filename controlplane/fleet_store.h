// FleetStore: the PostgreSQL side of FleetService and of the per-version convergence numbers
// that ConfigService.Get and ListVersions report.
//
// An agent's state (in sync, pending, rejected, stale, drifted, disconnected) is computed in
// SQL from the agents row, the tenant's live version and the stored hash of the version the
// agent reports, so a label or state filter and paging run in the database and every replica
// gives the same answer. The rules are documented on flexgate.v1.FleetAgent.State.
//
// Every method is blocking (it takes a connection from the pool), thread-safe, and returns
// UNAVAILABLE when the database cannot be reached.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "controlplane/pg.h"
#include "flexgate/v1/fleet_service.pb.h"

namespace flexgate::cp {

// "k=v,k2=v2" -> {k: v, k2: v2}. Spaces around items, keys and values are ignored; "" is the
// empty selector. A missing '=', an empty key or a key given twice -> INVALID_ARGUMENT.
absl::StatusOr<std::map<std::string, std::string>> ParseLabelSelector(absl::string_view selector);

struct FleetQuery {
  int64_t tenant_id = 0;
  std::string tenant_name;  // copied into each FleetAgent
  std::map<std::string, std::string> labels;  // every one must match
  std::vector<flexgate::v1::FleetAgent::State> states;  // empty = any
  std::string after_agent_id;  // paging: agents with a greater id
  int limit = 100;
};

struct FleetPage {
  std::vector<flexgate::v1::FleetAgent> agents;
  bool more = false;  // agents after the last one returned match too
  uint64_t live_version = 0;
  // Agents matching the labels, per state name, regardless of the state filter.
  std::map<std::string, uint32_t> state_counts;
  // Agents matching the labels and the state filter.
  uint32_t total = 0;
};

// Convergence of one config version.
struct VersionFleetStats {
  uint32_t acked = 0;
  uint32_t serving = 0;  // connected agents serving exactly this version's content
  uint32_t rejected = 0;  // agents whose last NACK is for this version
  // Commit -> first ACK, seconds, over the agents that ACKed it.
  std::optional<double> p50, p99, max;
};

struct FleetStats {
  uint32_t connected = 0;  // agents of the tenant connected now
  std::map<uint64_t, VersionFleetStats> versions;  // only versions with something to say
};

class FleetStore {
 public:
  // An agent marked connected that has been silent for longer than `stale_after` is STALE.
  FleetStore(PgPool* pool, absl::Duration stale_after)
      : pool_(pool), stale_after_(stale_after) {}

  absl::StatusOr<FleetPage> ListAgents(const FleetQuery& query);
  // NOT_FOUND when the tenant has no such agent.
  absl::StatusOr<flexgate::v1::FleetAgent> GetAgent(int64_t tenant_id,
                                                    const std::string& tenant_name,
                                                    const std::string& agent_id);
  absl::StatusOr<FleetStats> VersionStats(int64_t tenant_id, const std::vector<uint64_t>& versions);

  absl::Duration stale_after() const { return stale_after_; }

 private:
  PgPool* const pool_;
  const absl::Duration stale_after_;
};

}  // namespace flexgate::cp
