// AgentService.Connect: one bidirectional stream per agent, on gRPC's callback API so that
// thousands of streams need no thread each.
//
// Stream life: the first message must be Hello. Authentication, the agents-table upsert and
// loading the live version are blocking, so they run on DbWorkers, never on a gRPC callback
// thread; so do all database writes caused by later messages (Ack, Nack, Heartbeat) and by the
// stream's end. Snapshots are written as pre-encoded bytes (see snapshot_encoding.h).
//
// Each authenticated stream is registered with the RevocationEnforcer under the credential it
// was opened with; revoking that credential ends the stream with UNAUTHENTICATED ("enrollment
// token revoked" / "API key revoked"), on whichever replica it is connected to.
#pragma once

#include <memory>
#include <string>

namespace grpc {
class Service;
}

namespace flexgate::cp {

class Authenticator;
class ConfigStore;
class CpMetrics;
class DbWorkers;
class Distributor;
class RevocationEnforcer;

struct AgentServiceDeps {
  ConfigStore* store = nullptr;
  Authenticator* auth = nullptr;
  Distributor* distributor = nullptr;
  DbWorkers* workers = nullptr;
  CpMetrics* metrics = nullptr;
  RevocationEnforcer* revocations = nullptr;
  // This replica's id, recorded with each agent and each ACK (FleetService shows it).
  std::string replica;
};

// The deps must outlive the returned service and the server it is registered with.
std::unique_ptr<grpc::Service> CreateAgentService(AgentServiceDeps deps);

}  // namespace flexgate::cp
