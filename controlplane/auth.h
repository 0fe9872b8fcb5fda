// Authentication and authorization of control-plane callers.
//
// Every RPC carries an API key as metadata ("authorization: Bearer <key>"; agents may put it in
// Hello.token instead). The key is hashed (SHA-256) and looked up by hash; the key itself is
// never stored or logged. The result is a Principal: the key's id, tenant and role.
//
// The pure parts (ParseBearer, Authorize) are separate from the database lookup so they can be
// tested without a database.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace flexgate::cp {

class PgPool;

enum class Role { kViewer = 0, kEditor = 1, kAdmin = 2 };

// "admin" | "editor" | "viewer"; anything else is INVALID_ARGUMENT.
absl::StatusOr<Role> ParseRole(std::string_view name);
const char* RoleName(Role role);

struct Principal {
  // The API key, or 0 for an agent that authenticated with an enrollment token.
  int64_t key_id = 0;
  int64_t tenant_id = 0;
  std::string tenant_name;
  Role role = Role::kViewer;
  // The enrollment token of an agent (0 for API keys). Last, so that aggregate initializers of
  // the fields above keep working.
  int64_t token_id = 0;
};

// The credential an agent stream was opened with: an enrollment token, or (for agents set up
// before tokens existed) an admin API key of tenant "default". Revoking it ends the stream
// (revocation_enforcer.h).
struct AgentCredential {
  enum class Kind : uint8_t { kEnrollmentToken, kApiKey };
  Kind kind = Kind::kEnrollmentToken;
  int64_t tenant_id = 0;
  int64_t id = 0;  // token_id or key_id

  bool operator==(const AgentCredential&) const = default;
  template <typename H>
  friend H AbslHashValue(H h, const AgentCredential& c) {
    return H::combine(std::move(h), c.kind, c.tenant_id, c.id);
  }
};

// The credential `who` authenticated with (nullopt for a principal with neither a token nor a
// key, which Authenticator never returns).
std::optional<AgentCredential> CredentialOf(const Principal& who);
// "enrollment token revoked" or "API key revoked": what a stream ended by a revocation is told.
const char* RevokedMessage(AgentCredential::Kind kind);

// What a call does to a tenant's data.
enum class Access { kRead, kWrite, kAdmin };

// Extracts the key from an "authorization" metadata value: "Bearer <key>" (scheme matched case-
// insensitively, surrounding spaces ignored). Missing or malformed -> UNAUTHENTICATED.
absl::StatusOr<std::string> ParseBearer(std::string_view header);

// Decides whether `who` may perform `access` on tenant `requested` ("" = the key's own tenant).
// Another tenant -> PERMISSION_DENIED; a viewer writing or a non-admin administering ->
// PERMISSION_DENIED. Returns the tenant the call acts on.
absl::StatusOr<std::string> Authorize(const Principal& who, std::string_view requested,
                                      Access access);

// Looks keys up in the database, caching results briefly so a burst of calls (or thousands of
// agents reconnecting) does not cost one query each. A revocation evicts its credential at once
// on every replica (Forget, called on the revoking replica and on a revocation notification
// elsewhere); `cache_ttl` bounds the rest. Thread-safe. Blocking (database).
class Authenticator {
 public:
  // `cache_ttl` bounds how long a revoked key keeps working on a replica that missed the
  // revocation notification.
  Authenticator(PgPool* pool, absl::Duration cache_ttl = absl::Seconds(5))
      : pool_(pool), cache_ttl_(cache_ttl) {}

  // An operator API key. Unknown or revoked key (enrollment tokens included: they are not
  // API keys) -> UNAUTHENTICATED; database down -> UNAVAILABLE.
  absl::StatusOr<Principal> Authenticate(const std::string& key);

  // The credential an agent opens AgentService.Connect with: an enrollment token of its tenant,
  // or (for agents set up before tokens existed) an admin API key of tenant "default". Any other
  // API key -> PERMISSION_DENIED; unknown or revoked -> UNAUTHENTICATED.
  absl::StatusOr<Principal> AuthenticateAgent(const std::string& secret);

  // Forgets every cached result.
  void InvalidateAll();
  // Forgets the cached results of one revoked credential (as an operator key and as an agent's
  // credential), so it is refused on this replica at once. A lookup that was already reading the
  // database when this ran does not cache what it read (see generation_).
  void Forget(const AgentCredential& credential);

 private:
  struct Entry {
    Principal principal;
    std::string key_hash;
    absl::Time expires;
  };
  PgPool* const pool_;
  const absl::Duration cache_ttl_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> cache_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Entry> token_cache_ ABSL_GUARDED_BY(mu_);
  // Bumped by every invalidation. A lookup caches its result only if no invalidation happened
  // while it read the database, so a revocation racing a lookup cannot leave the revoked
  // credential cached for a whole TTL.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace flexgate::cp
