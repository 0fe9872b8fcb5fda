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
#include <string>

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
// agents reconnecting) does not cost one query each. Thread-safe. Blocking (database).
class Authenticator {
 public:
  // `cache_ttl` bounds how long a revoked key keeps working on this replica.
  Authenticator(PgPool* pool, absl::Duration cache_ttl = absl::Seconds(5))
      : pool_(pool), cache_ttl_(cache_ttl) {}

  // An operator API key. Unknown or revoked key (enrollment tokens included: they are not
  // API keys) -> UNAUTHENTICATED; database down -> UNAVAILABLE.
  absl::StatusOr<Principal> Authenticate(const std::string& key);

  // The credential an agent opens AgentService.Connect with: an enrollment token of its tenant,
  // or (for agents set up before tokens existed) an admin API key of tenant "default". Any other
  // API key -> PERMISSION_DENIED; unknown or revoked -> UNAUTHENTICATED.
  absl::StatusOr<Principal> AuthenticateAgent(const std::string& secret);

  // Forgets every cached result, so a revocation takes effect on this replica at once. Other
  // replicas notice within `cache_ttl`.
  void InvalidateAll();

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
};

}  // namespace flexgate::cp
