// ConfigService: Validate (the dry-run, never writes), Apply (optimistic concurrency on a base
// version), Get and ListVersions. A synchronous gRPC service: its handlers run on gRPC's
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

class Authenticator;
class ConfigStore;
class CpMetrics;

struct ConfigServiceDeps {
  ConfigStore* store = nullptr;
  Authenticator* auth = nullptr;
  CpMetrics* metrics = nullptr;
};

std::unique_ptr<grpc::Service> CreateConfigService(ConfigServiceDeps deps);

// ListVersions page tokens: opaque to clients, "before this version" inside.
std::string EncodePageToken(uint64_t before_version);
// "" -> 0 (from the newest); garbage -> INVALID_ARGUMENT.
absl::StatusOr<uint64_t> DecodePageToken(const std::string& token);

}  // namespace flexgate::cp
