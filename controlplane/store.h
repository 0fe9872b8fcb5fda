// ConfigStore: the control plane's persistent state in PostgreSQL — tenants, API keys, immutable
// config versions, agents and the audit trail. Every method is blocking (it takes a connection
// from the pool), thread-safe, and returns UNAVAILABLE when the database cannot be reached.
// Callers on gRPC callback threads must not call it directly (see AgentService's DbWorkers).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controlplane/auth.h"
#include "controlplane/fleet_capabilities.h"
#include "controlplane/pg.h"

namespace flexgate::cp {

inline constexpr char kDefaultTenant[] = "default";
// The NOTIFY channel for new config versions; payload "<tenant_id>:<version>".
inline constexpr char kConfigChannel[] = "flexgate_config";

struct StoredVersion {
  int64_t tenant_id = 0;
  uint64_t version = 0;
  std::string hash;
  std::string body;  // canonical serialization; empty in listings
  std::string author;
  std::string message;
  absl::Time created_at;
};

struct LiveVersion {
  uint64_t version = 0;  // 0 = no config yet
  std::string hash;
};

// Who asked for a mutation, for its audit row.
struct AuditContext {
  int64_t actor_key_id = 0;  // 0 = the control plane itself
  std::string request_id;
};

// How an Apply is recorded in the audit trail.
struct ApplyAudit {
  AuditContext who;
  std::string action = "config.apply";
  // A description of the change computed by the caller against live version `summary_base`;
  // used only when that is still the live version when the row lock is held (otherwise the
  // summary names the versions and the hash only).
  uint64_t summary_base = 0;
  std::string summary;
};

struct ApplyOutcome {
  // The version that was live before (equal to `version` when unchanged).
  uint64_t previous_version = 0;
  uint64_t version = 0;
  std::string hash;
  bool unchanged = false;
};

struct AgentHelloRecord {
  int64_t tenant_id = 0;
  std::string agent_id;
  std::map<std::string, std::string> labels;
  std::string agent_version;
  uint64_t applied_version = 0;
  std::string applied_hash;
  // Unique per stream, so that a late "disconnected" of an old stream does not mark an agent
  // offline that has already reconnected (to this or another replica).
  std::string session_id;
  std::vector<std::string> capabilities;
  // The replica (--replica-id) the stream is connected to.
  std::string replica;
};

// An ACK as the stream saw it, for AgentAcked.
struct AgentAckRecord {
  int64_t tenant_id = 0;
  std::string agent_id;
  uint64_t version = 0;
  std::string hash;
  std::optional<double> apply_ms;
  // How long ago the replica received the ACK (time spent queued for a database worker), so the
  // recorded ACK time is the receipt time on the database clock.
  absl::Duration received_ago;
  std::string replica;
  // A late ACK (agent_stream_state.h): the agent applied `version` after a newer snapshot was
  // already sent to it. It is recorded like any first ACK, but moves the agent's applied
  // version only forward, since the newer snapshot may already be recorded as applied.
  bool late = false;
};

struct AgentSentRecord {
  int64_t tenant_id = 0;
  std::string agent_id;
  uint64_t version = 0;
};

struct AgentHeartbeatRecord {
  int64_t tenant_id = 0;
  std::string agent_id;
  uint64_t applied_version = 0;
  std::string applied_hash;
  bool healthy = true;
  // The stream it came on: a heartbeat of a stream the agent has since replaced is ignored.
  std::string session_id;
};

struct AgentDisconnectRecord {
  int64_t tenant_id = 0;
  std::string agent_id;
  std::string session_id;
};

class ConfigStore {
 public:
  explicit ConfigStore(PgPool* pool) : pool_(pool) {}

  // Start-up: makes sure tenant `default` exists and an admin key is usable. With
  // `bootstrap_key`, an admin key with that key's hash exists afterwards. Without one, and when
  // no admin key exists at all, a random key is created and returned (the caller prints it
  // once); otherwise returns nullopt. Safe against replicas starting together.
  absl::StatusOr<std::optional<std::string>> Bootstrap(
      const std::optional<std::string>& bootstrap_key);

  absl::StatusOr<int64_t> TenantId(const std::string& name);
  absl::StatusOr<LiveVersion> GetLive(int64_t tenant_id);
  // Live versions of the given tenants (tenants without config are left out).
  absl::StatusOr<std::map<int64_t, LiveVersion>> GetLiveMany(const std::vector<int64_t>& tenants);

  // Stores a new version unless `hash` equals the live hash (then unchanged=true). With
  // `base_version`, ABORTED unless the live version is still that one. Serialized per tenant by
  // a row lock; notifies kConfigChannel in the same transaction (delivered on commit).
  absl::StatusOr<ApplyOutcome> Apply(const Principal& who, int64_t tenant_id,
                                     const std::string& hash, const std::string& body,
                                     std::optional<uint64_t> base_version,
                                     const std::string& message, const ApplyAudit& audit = {});

  // version 0 = the live version. NOT_FOUND when there is no such version.
  absl::StatusOr<StoredVersion> GetVersion(int64_t tenant_id, uint64_t version);
  // Newest first, versions strictly below `before` (0 = from the newest), at most `limit`.
  absl::StatusOr<std::vector<StoredVersion>> ListVersions(int64_t tenant_id, uint64_t before,
                                                          int limit);

  // Agent stream events. AgentConnected upserts the agent as connected and returns the last
  // version it NACKed (0 = none), which must not be sent to it again.
  absl::StatusOr<uint64_t> AgentConnected(const AgentHelloRecord& hello);
  // Refreshes last_seen, health and the reported hash of the agent's current stream. The ACK
  // owns the applied version and its time: a heartbeat changes the version only when it reports
  // another one than recorded, and never applied_at (see AgentsHeartbeat).
  absl::Status AgentHeartbeat(const AgentHeartbeatRecord& beat);
  // Records the ACK on the agent and, for the agent's first ACK of that version, in
  // agent_version_acks. Returns the commit -> ACK time in seconds of a first ACK (nullopt for a
  // repeated one), for the convergence histogram.
  absl::StatusOr<std::optional<double>> AgentAcked(const AgentAckRecord& ack);
  // A snapshot of `version` was written to the agent's stream.
  absl::Status AgentSent(int64_t tenant_id, const std::string& agent_id, uint64_t version);
  absl::Status AgentNacked(int64_t tenant_id, const std::string& agent_id, uint64_t version,
                           const std::string& error);
  absl::Status AgentDisconnected(int64_t tenant_id, const std::string& agent_id,
                                 const std::string& session_id);

  // Batched agent stream events (DbWorkers): one statement each, with the semantics of the
  // single-event methods above. A batch must not name the same agent twice.
  // Returns the last NACKed version per record, in the order given.
  absl::StatusOr<std::vector<uint64_t>> AgentsConnected(
      const std::vector<const AgentHelloRecord*>& hellos);
  absl::Status AgentsSent(const std::vector<const AgentSentRecord*>& sent);
  // Returns the commit -> ACK seconds of every first ACK in the batch.
  absl::StatusOr<std::vector<double>> AgentsAcked(const std::vector<const AgentAckRecord*>& acks);
  absl::Status AgentsHeartbeat(const std::vector<const AgentHeartbeatRecord*>& beats);
  absl::Status AgentsDisconnected(const std::vector<const AgentDisconnectRecord*>& gone);

  // For each of `features`, how many of the tenant's known agents (connected or not: a
  // disconnected agent receives the live version when it returns) that announced capabilities
  // do not announce it. One query, grouped by distinct capability set, so it stays cheap with
  // thousands of agents running a few agent versions.
  absl::StatusOr<FleetFeatureSupport> FeatureSupport(int64_t tenant_id,
                                                     const std::vector<std::string>& features);

  // True when the database answers (for /health/ready).
  bool Ping();

 private:
  PgPool* const pool_;
};

// A new random API key ("fgk_" + 43 URL-safe characters, 256 bits).
std::string GenerateApiKey();

}  // namespace flexgate::cp
