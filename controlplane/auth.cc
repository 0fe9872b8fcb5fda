#include "controlplane/auth.h"

#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/canonical.h"
#include "controlplane/pg.h"

namespace flexgate::cp {

absl::StatusOr<Role> ParseRole(std::string_view name) {
  if (name == "admin") return Role::kAdmin;
  if (name == "editor") return Role::kEditor;
  if (name == "viewer") return Role::kViewer;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown role \"", std::string(name), "\" (admin, editor or viewer)"));
}

const char* RoleName(Role role) {
  switch (role) {
    case Role::kAdmin: return "admin";
    case Role::kEditor: return "editor";
    case Role::kViewer: return "viewer";
  }
  return "viewer";
}

std::optional<AgentCredential> CredentialOf(const Principal& who) {
  if (who.token_id > 0) {
    return AgentCredential{AgentCredential::Kind::kEnrollmentToken, who.tenant_id, who.token_id};
  }
  if (who.key_id > 0) {
    return AgentCredential{AgentCredential::Kind::kApiKey, who.tenant_id, who.key_id};
  }
  return std::nullopt;
}

const char* RevokedMessage(AgentCredential::Kind kind) {
  return kind == AgentCredential::Kind::kEnrollmentToken ? "enrollment token revoked"
                                                         : "API key revoked";
}

absl::StatusOr<std::string> ParseBearer(std::string_view header) {
  absl::string_view h = absl::StripAsciiWhitespace(absl::string_view(header.data(), header.size()));
  if (h.empty()) return absl::UnauthenticatedError("missing API key (authorization: Bearer <key>)");
  constexpr absl::string_view kScheme = "bearer";
  if (h.size() <= kScheme.size() || !absl::StartsWithIgnoreCase(h, kScheme) ||
      !absl::ascii_isspace(static_cast<unsigned char>(h[kScheme.size()]))) {
    return absl::UnauthenticatedError("authorization must be \"Bearer <key>\"");
  }
  absl::string_view key = absl::StripAsciiWhitespace(h.substr(kScheme.size()));
  if (key.empty()) return absl::UnauthenticatedError("empty API key");
  for (char c : key) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      return absl::UnauthenticatedError("malformed API key");
    }
  }
  return std::string(key);
}

absl::StatusOr<std::string> Authorize(const Principal& who, std::string_view requested,
                                      Access access) {
  if (!requested.empty() && requested != who.tenant_name) {
    // Same answer whether or not the tenant exists, so keys cannot probe for tenant names.
    return absl::PermissionDeniedError(
        absl::StrCat("this key may not access tenant \"", std::string(requested), "\""));
  }
  if (access == Access::kWrite && who.role == Role::kViewer) {
    return absl::PermissionDeniedError("a viewer key may not change anything");
  }
  if (access == Access::kAdmin && who.role != Role::kAdmin) {
    return absl::PermissionDeniedError("an admin key is required");
  }
  return who.tenant_name;
}

absl::StatusOr<Principal> Authenticator::Authenticate(const std::string& key) {
  const std::string hash = Sha256Hex(key);
  const absl::Time now = absl::Now();
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    generation = generation_;
    auto it = cache_.find(hash);
    if (it != cache_.end() && it->second.expires > now &&
        ConstantTimeEquals(it->second.key_hash, hash)) {
      return it->second.principal;
    }
  }
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto res = (*conn)->Exec(
      "SELECT k.key_id, k.tenant_id, t.name, k.role, k.key_hash FROM api_keys k "
      "JOIN tenants t ON t.tenant_id = k.tenant_id "
      "WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
      {PgParam::Text(hash)});
  if (!res.ok()) return res.status();
  if (res->rows() != 1 || !ConstantTimeEquals(res->GetString(0, 4), hash)) {
    return absl::UnauthenticatedError("unknown or revoked API key");
  }
  Principal p;
  p.key_id = res->GetInt64(0, 0);
  p.tenant_id = res->GetInt64(0, 1);
  p.tenant_name = res->GetString(0, 2);
  auto role = ParseRole(res->GetString(0, 3));
  if (!role.ok()) return absl::UnauthenticatedError("API key has an unknown role");
  p.role = *role;
  absl::MutexLock lock(&mu_);
  if (generation != generation_) return p;  // revoked meanwhile, perhaps: do not cache
  if (cache_.size() > 100000) cache_.clear();  // Bound memory against floods of distinct keys.
  cache_[hash] = Entry{p, hash, now + cache_ttl_};
  return p;
}

absl::StatusOr<Principal> Authenticator::AuthenticateAgent(const std::string& secret) {
  const std::string hash = Sha256Hex(secret);
  const absl::Time now = absl::Now();
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    generation = generation_;
    auto it = token_cache_.find(hash);
    if (it != token_cache_.end() && it->second.expires > now &&
        ConstantTimeEquals(it->second.key_hash, hash)) {
      return it->second.principal;
    }
  }
  std::optional<Principal> who;
  {
    auto conn = pool_->Acquire();
    if (!conn.ok()) return conn.status();
    auto res = (*conn)->Exec(
        "SELECT k.token_id, k.tenant_id, t.name, k.token_hash FROM enrollment_tokens k "
        "JOIN tenants t ON t.tenant_id = k.tenant_id "
        "WHERE k.token_hash = $1 AND k.revoked_at IS NULL",
        {PgParam::Text(hash)});
    if (!res.ok()) return res.status();
    if (res->rows() == 1 && ConstantTimeEquals(res->GetString(0, 3), hash)) {
      Principal p;
      p.token_id = res->GetInt64(0, 0);
      p.tenant_id = res->GetInt64(0, 1);
      p.tenant_name = res->GetString(0, 2);
      // Agents only read their tenant's config; the role is never consulted for them.
      p.role = Role::kViewer;
      who = p;
    }
  }
  if (!who.has_value()) {
    // Not a token: an operator admin key of tenant "default" still works, for compatibility.
    auto key = Authenticate(secret);
    if (!key.ok()) return key.status();
    if (key->tenant_name != "default" || key->role != Role::kAdmin) {
      return absl::PermissionDeniedError(
          "agents connect with an enrollment token (KeyService.CreateToken), not an API key");
    }
    who = *key;
  }
  absl::MutexLock lock(&mu_);
  if (generation != generation_) return *who;
  if (token_cache_.size() > 100000) token_cache_.clear();
  token_cache_[hash] = Entry{*who, hash, now + cache_ttl_};
  return *who;
}

void Authenticator::InvalidateAll() {
  absl::MutexLock lock(&mu_);
  ++generation_;
  cache_.clear();
  token_cache_.clear();
}

void Authenticator::Forget(const AgentCredential& c) {
  // A linear pass: revocations are rare and the caches are bounded, so no reverse index is kept.
  const bool token = c.kind == AgentCredential::Kind::kEnrollmentToken;
  auto matches = [&](const Entry& e) {
    return e.principal.tenant_id == c.tenant_id &&
           (token ? e.principal.token_id == c.id : e.principal.key_id == c.id);
  };
  absl::MutexLock lock(&mu_);
  ++generation_;
  absl::erase_if(cache_, [&](const auto& kv) { return matches(kv.second); });
  absl::erase_if(token_cache_, [&](const auto& kv) { return matches(kv.second); });
}

}  // namespace flexgate::cp
