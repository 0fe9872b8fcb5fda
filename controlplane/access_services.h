// TenantService (operator scope: an admin key of tenant "default"), KeyService (API keys and
// agent enrollment tokens; admin of the tenant) and AuditService (any key of the tenant).
// Synchronous gRPC services: handlers run on gRPC's thread pool, where blocking on the database
// is acceptable. Every call authenticates its key and checks role and tenant before it reads or
// writes anything; every mutation is audited in the same transaction (access_store.h).
#pragma once

#include <memory>
#include <vector>

namespace grpc {
class Service;
}

namespace flexgate::cp {

class AccessStore;
class Authenticator;
class RevocationEnforcer;

struct AccessServiceDeps {
  AccessStore* access = nullptr;
  Authenticator* auth = nullptr;
  // Ends this replica's agent streams of a revoked token or key as soon as the revocation has
  // committed (other replicas learn of it through the notification the revocation sends).
  RevocationEnforcer* revocations = nullptr;
};

// The three services; the deps must outlive them and the server they are registered with.
std::vector<std::unique_ptr<grpc::Service>> CreateAccessServices(AccessServiceDeps deps);

}  // namespace flexgate::cp
