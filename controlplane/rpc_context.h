// Per-call plumbing shared by the control plane's gRPC services: who is calling (API key from
// "authorization: Bearer <key>" metadata, checked for role and tenant) and the request id that
// ties the call to its audit rows and logs. Included only by gRPC service sources.
#pragma once

#include <grpcpp/server_context.h>

#include <string>

#include "absl/status/statusor.h"
#include "controlplane/auth.h"
#include "controlplane/store.h"

namespace flexgate::cp {

struct Caller {
  Principal who;
  std::string request_id;

  AuditContext audit() const { return AuditContext{who.key_id, request_id}; }
};

// Authenticates the call's key and authorizes `access` on `tenant` ("" = the key's own tenant).
// UNAUTHENTICATED without a valid key, PERMISSION_DENIED for another tenant or a role too weak.
absl::StatusOr<Caller> AuthorizeCall(grpc::ServerContextBase* ctx, Authenticator* auth,
                                     const std::string& tenant, Access access);

// The caller's "x-request-id" metadata (printable, at most 128 characters) or a generated one.
// Echoed to the caller as "x-request-id" initial metadata, so a client can quote it.
std::string RequestId(grpc::ServerContextBase* ctx);

// True for an admin key of tenant "default": the operator, who may create and list tenants.
bool IsOperator(const Principal& who);

}  // namespace flexgate::cp
