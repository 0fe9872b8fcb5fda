// AccessStore: tenants, API keys, agent enrollment tokens, the audit trail and the agent
// listing that Validate's impact report reads — the PostgreSQL side of TenantService,
// KeyService, AuditService and of agent authentication.
//
// Every mutation writes its audit_log row in the same transaction as the change, so a change
// without its audit row (or the reverse) cannot be committed. Keys and tokens are generated here
// and returned in plain text exactly once; only their SHA-256 is stored.
//
// Revoking a token or key also notifies kRevocationChannel inside the same transaction, so every
// replica learns of it when (and only if) it commits (revocation_enforcer.h).
//
// Every method is blocking (it takes a connection from the pool), thread-safe, and returns
// UNAVAILABLE when the database cannot be reached.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "controlplane/auth.h"
#include "controlplane/pg.h"
#include "controlplane/store.h"

namespace flexgate::cp {

// The NOTIFY channel for revoked agent credentials; payload from RevocationPayload.
inline constexpr char kRevocationChannel[] = "flexgate_revocation";

// "token:<tenant_id>:<token_id>" or "key:<tenant_id>:<key_id>".
std::string RevocationPayload(const AgentCredential& credential);
// The inverse; nullopt for anything malformed.
std::optional<AgentCredential> ParseRevocationPayload(absl::string_view payload);

struct TenantRecord {
  int64_t tenant_id = 0;
  std::string name;
  absl::Time created_at;
  uint64_t live_version = 0;
  std::string live_hash;
};

struct KeyRecord {
  int64_t key_id = 0;
  std::string tenant;
  std::string name;
  Role role = Role::kViewer;
  absl::Time created_at;
  std::optional<absl::Time> revoked_at;
};

struct TokenRecord {
  int64_t token_id = 0;
  std::string tenant;
  std::string name;
  absl::Time created_at;
  std::optional<absl::Time> revoked_at;
};

// A credential as created: its record and the secret, which is never available again.
template <typename Record>
struct Created {
  Record record;
  std::string secret;
};

struct AuditRecord {
  int64_t audit_id = 0;
  std::string tenant;
  absl::Time at;
  int64_t key_id = 0;
  std::string key_name;
  std::string action;
  std::string target;
  std::string summary;
  std::string request_id;
};

struct AuditQuery {
  int64_t tenant_id = 0;
  std::string action;  // "" = any
  std::optional<absl::Time> since;
  std::optional<absl::Time> until;
  int64_t key_id = 0;     // 0 = any
  int64_t before_id = 0;  // paging: rows with audit_id < before_id (0 = from the newest)
  int limit = 50;
};

struct AgentRecord {
  std::string agent_id;
  std::map<std::string, std::string> labels;
  bool connected = false;
  uint64_t applied_version = 0;
};

// The agents of one tenant, summarized for Validate's impact report.
struct AgentOverview {
  uint64_t total = 0;
  uint64_t connected = 0;
  std::vector<AgentRecord> sample;  // connected first, then by id
  std::map<std::string, uint64_t> by_label;  // "key=value" -> count
};

class AccessStore {
 public:
  explicit AccessStore(PgPool* pool) : pool_(pool) {}

  // New tenant plus its first admin key. INVALID_ARGUMENT for a bad name, ALREADY_EXISTS when
  // the name is taken. Audited in the new tenant and in tenant "default" (the operator's).
  absl::StatusOr<std::pair<TenantRecord, Created<KeyRecord>>> CreateTenant(
      const AuditContext& audit, const std::string& name, const std::string& key_name);
  absl::StatusOr<std::vector<TenantRecord>> ListTenants();

  absl::StatusOr<Created<KeyRecord>> CreateKey(const AuditContext& audit, int64_t tenant_id,
                                               const std::string& name, Role role);
  absl::StatusOr<std::vector<KeyRecord>> ListKeys(int64_t tenant_id, bool include_revoked);
  // NOT_FOUND for a key of another tenant or none. Revoking a revoked key changes nothing (and
  // is not audited again). FAILED_PRECONDITION when it is the last admin key of tenant
  // "default": the installation would have no operator left.
  absl::StatusOr<KeyRecord> RevokeKey(const AuditContext& audit, int64_t tenant_id,
                                      int64_t key_id);

  absl::StatusOr<Created<TokenRecord>> CreateToken(const AuditContext& audit, int64_t tenant_id,
                                                   const std::string& name);
  absl::StatusOr<std::vector<TokenRecord>> ListTokens(int64_t tenant_id, bool include_revoked);
  // NOT_FOUND for a token of another tenant or none. Revoking a revoked token changes nothing
  // (and is neither audited nor notified again).
  absl::StatusOr<TokenRecord> RevokeToken(const AuditContext& audit, int64_t tenant_id,
                                          int64_t token_id);

  // Of `credentials`, the ones that no longer authenticate: revoked, or their row is gone. One
  // statement however many are given (the open streams' distinct credentials, for the periodic
  // re-check that catches revocation notifications a replica missed).
  absl::StatusOr<std::vector<AgentCredential>> Unusable(
      const std::vector<AgentCredential>& credentials);

  absl::StatusOr<std::vector<AuditRecord>> ListAudit(const AuditQuery& query);

  absl::StatusOr<AgentOverview> Agents(int64_t tenant_id, int sample_size);

 private:
  PgPool* const pool_;
};

// A new random enrollment token ("fget_" + 43 URL-safe characters, 256 bits). The prefix tells
// an operator at a glance that it is not an API key.
std::string GenerateEnrollmentToken();

}  // namespace flexgate::cp
