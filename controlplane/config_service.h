// ConfigService: Validate (the dry-run, never writes: diagnostics, semantic diff against the
// live version, impact on routes and agents, secret warnings), Apply (optimistic concurrency on
// a base version), Get, ListVersions, Diff between versions and Rollback (an earlier version's
// content stored as a new version). A synchronous gRPC service: its handlers run on gRPC's
// thread pool, where blocking on the database is acceptable.
//
// Every call authenticates the "authorization: Bearer <key>" metadata and checks the key's role
// and tenant (auth.h) before it reads or writes anything.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace grpc {
class Service;
}

namespace flexgate::cp {

class AccessStore;
class Authenticator;
class ConfigStore;
class CpMetrics;
class FleetStore;

struct ConfigServiceDeps {
  ConfigStore* store = nullptr;
  Authenticator* auth = nullptr;
  CpMetrics* metrics = nullptr;
  AccessStore* access = nullptr;  // agents of a tenant, for Validate's impact report
  FleetStore* fleet = nullptr;    // per-version convergence for Get and ListVersions
};

std::unique_ptr<grpc::Service> CreateConfigService(ConfigServiceDeps deps);

// ListVersions page tokens: opaque to clients, "before this version" inside.
std::string EncodePageToken(uint64_t before_version);
// "" -> 0 (from the newest); garbage -> INVALID_ARGUMENT.
absl::StatusOr<uint64_t> DecodePageToken(const std::string& token);

}  // namespace flexgate::cp
