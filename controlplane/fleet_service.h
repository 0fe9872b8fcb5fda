// FleetService: ListAgents (label selector, state filter, paging, per-state counts) and
// GetAgent — every agent of a tenant with what it serves and how that compares with the live
// version (states defined on flexgate.v1.FleetAgent.State, computed in fleet_store.h). A
// synchronous gRPC service: handlers run on gRPC's thread pool, where blocking on the database
// is acceptable. Read-only: any key of the tenant (viewer and up); another tenant is
// PERMISSION_DENIED.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class Service;
}

namespace flexgate::cp {

class Authenticator;
class FleetStore;

struct FleetServiceDeps {
  FleetStore* fleet = nullptr;
  Authenticator* auth = nullptr;
};

std::unique_ptr<grpc::Service> CreateFleetService(FleetServiceDeps deps);

// ListAgents page tokens: opaque to clients, "after this agent id" inside.
std::string EncodeAgentPageToken(const std::string& after_agent_id);
// "" -> "" (from the first agent); garbage -> INVALID_ARGUMENT.
absl::StatusOr<std::string> DecodeAgentPageToken(const std::string& token);

}  // namespace flexgate::cp
