// The connection from flexctl to flexgate-cp: one channel (insecure, or TLS with --tls /
// --ca-file), a stub per service, per-call metadata and deadline, and the one mapping from a
// failed RPC to flexctl's exit status. Included only by the command implementations, which pay
// for gRPC's headers anyway.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <ostream>

#include "controlplane/cli/flexctl.h"
#include "flexgate/v1/audit_service.grpc.pb.h"
#include "flexgate/v1/config_service.grpc.pb.h"
#include "flexgate/v1/fleet_service.grpc.pb.h"
#include "flexgate/v1/tenant_service.grpc.pb.h"

namespace flexgate::cli {

class Client {
 public:
  // Opens the channel described by the invocation's --server, --tls and --ca-file. Prints why
  // and returns null when it cannot (no --server, unreadable CA file): the caller exits 2.
  static std::unique_ptr<Client> Connect(const Invocation& inv, std::ostream& err);

  // A fresh context per call: the API key as "authorization: Bearer KEY" and the deadline.
  std::unique_ptr<grpc::ClientContext> Context() const;

  v1::ConfigService::Stub& config() { return *config_; }
  v1::TenantService::Stub& tenants() { return *tenants_; }
  v1::KeyService::Stub& keys() { return *keys_; }
  v1::AuditService::Stub& audit() { return *audit_; }
  v1::FleetService::Stub& fleet() { return *fleet_; }

 private:
  Client(const Invocation& inv, const std::shared_ptr<grpc::Channel>& channel);

  const Invocation& inv_;
  std::unique_ptr<v1::ConfigService::Stub> config_;
  std::unique_ptr<v1::TenantService::Stub> tenants_;
  std::unique_ptr<v1::KeyService::Stub> keys_;
  std::unique_ptr<v1::AuditService::Stub> audit_;
  std::unique_ptr<v1::FleetService::Stub> fleet_;
};

// Prints a failed RPC and returns the exit status it maps to: refusals (the server understood
// and said no) are 1, failures to get an answer at all are 2.
int ReportRpcError(const grpc::Status& s, const Invocation& inv, std::ostream& err);

}  // namespace flexgate::cli
