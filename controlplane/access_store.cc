#include "controlplane/access_store.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/canonical.h"
#include "common/validator.h"
#include "controlplane/store.h"

namespace flexgate::cp {
namespace {

// Microseconds since the epoch of a timestamptz column, so rows decode without date parsing.
#define FG_MICROS(col) "(extract(epoch FROM " col ") * 1000000)::bigint"

constexpr char kKeyColumns[] =
    "k.key_id, t.name, k.name, k.role, " FG_MICROS("k.created_at") ", " FG_MICROS("k.revoked_at");
constexpr char kTokenColumns[] =
    "k.token_id, t.name, k.name, " FG_MICROS("k.created_at") ", " FG_MICROS("k.revoked_at");

std::optional<absl::Time> OptionalTime(const PgResult& r, int row, int col) {
  if (r.IsNull(row, col)) return std::nullopt;
  return absl::FromUnixMicros(r.GetInt64(row, col));
}

KeyRecord KeyFromRow(const PgResult& r, int row) {
  KeyRecord k;
  k.key_id = r.GetInt64(row, 0);
  k.tenant = r.GetString(row, 1);
  k.name = r.GetString(row, 2);
  k.role = ParseRole(r.GetString(row, 3)).value_or(Role::kViewer);
  k.created_at = absl::FromUnixMicros(r.GetInt64(row, 4));
  k.revoked_at = OptionalTime(r, row, 5);
  return k;
}

TokenRecord TokenFromRow(const PgResult& r, int row) {
  TokenRecord t;
  t.token_id = r.GetInt64(row, 0);
  t.tenant = r.GetString(row, 1);
  t.name = r.GetString(row, 2);
  t.created_at = absl::FromUnixMicros(r.GetInt64(row, 3));
  t.revoked_at = OptionalTime(r, row, 4);
  return t;
}

PgParam Actor(const AuditContext& a) {
  return a.actor_key_id > 0 ? PgParam::Int(a.actor_key_id) : PgParam::Null();
}

absl::Status AppendAudit(PgConn& c, const AuditContext& a, int64_t tenant_id,
                         const std::string& action, const std::string& target,
                         const std::string& summary) {
  return c.Exec("INSERT INTO audit_log (tenant_id, actor_key_id, action, target, summary, "
                "request_id) VALUES ($1, $2, $3, $4, $5, $6)",
                {PgParam::Int(tenant_id), Actor(a), PgParam::Text(action), PgParam::Text(target),
                 PgParam::Text(summary), PgParam::Text(a.request_id)})
      .status();
}

// Inserts a key inside an open transaction and audits it.
absl::StatusOr<Created<KeyRecord>> InsertKey(PgConn& c, const AuditContext& audit,
                                             int64_t tenant_id, const std::string& name,
                                             Role role) {
  Created<KeyRecord> out;
  out.secret = GenerateApiKey();
  auto r = c.Exec(
      absl::StrCat("WITH k AS (INSERT INTO api_keys (tenant_id, key_hash, role, name) "
                   "VALUES ($1, $2, $3, $4) RETURNING *) SELECT ", kKeyColumns,
                   " FROM k JOIN tenants t ON t.tenant_id = k.tenant_id"),
      {PgParam::Int(tenant_id), PgParam::Text(Sha256Hex(out.secret)),
       PgParam::Text(RoleName(role)), PgParam::Text(name)});
  if (!r.ok()) return r.status();
  if (r->rows() != 1) return absl::NotFoundError("no such tenant");
  out.record = KeyFromRow(*r, 0);
  absl::Status s = AppendAudit(c, audit, tenant_id, "key.create",
                               absl::StrCat("key-", out.record.key_id),
                               absl::StrCat("role ", RoleName(role), " name \"", name, "\""));
  if (!s.ok()) return s;
  return out;
}

// Tells every replica (this one included) about a revocation; delivered on commit only.
absl::Status NotifyRevoked(PgConn& c, const AgentCredential& credential) {
  return c.Exec("SELECT pg_notify($1, $2)",
                {PgParam::Text(kRevocationChannel), PgParam::Text(RevocationPayload(credential))})
      .status();
}

absl::Status CheckCredentialName(const std::string& name) {
  if (name.size() > 200) return absl::InvalidArgumentError("name is longer than 200 characters");
  for (char ch : name) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
      return absl::InvalidArgumentError("name contains control characters");
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string RevocationPayload(const AgentCredential& c) {
  return absl::StrCat(c.kind == AgentCredential::Kind::kEnrollmentToken ? "token" : "key", ":",
                      c.tenant_id, ":", c.id);
}

std::optional<AgentCredential> ParseRevocationPayload(absl::string_view payload) {
  std::vector<absl::string_view> parts = absl::StrSplit(payload, ':');
  if (parts.size() != 3) return std::nullopt;
  AgentCredential c;
  if (parts[0] == "token") {
    c.kind = AgentCredential::Kind::kEnrollmentToken;
  } else if (parts[0] == "key") {
    c.kind = AgentCredential::Kind::kApiKey;
  } else {
    return std::nullopt;
  }
  if (!absl::SimpleAtoi(parts[1], &c.tenant_id) || !absl::SimpleAtoi(parts[2], &c.id) ||
      c.tenant_id <= 0 || c.id <= 0) {
    return std::nullopt;
  }
  return c;
}

std::string GenerateEnrollmentToken() {
  // Same randomness and alphabet as API keys; only the prefix differs.
  return absl::StrCat("fget_", GenerateApiKey().substr(4));
}

absl::StatusOr<std::pair<TenantRecord, Created<KeyRecord>>> AccessStore::CreateTenant(
    const AuditContext& audit, const std::string& name, const std::string& key_name) {
  if (name.empty() || name.size() > 63 || !IsValidResourceName(name)) {
    return absl::InvalidArgumentError(
        "a tenant name is 1-63 characters of letters, digits, '.', '_' or '-'");
  }
  if (absl::Status s = CheckCredentialName(key_name); !s.ok()) return s;
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  std::pair<TenantRecord, Created<KeyRecord>> out;
  absl::Status s = InTransaction(**conn, [&](PgConn& c) -> absl::Status {
    auto ins = c.Exec(absl::StrCat("INSERT INTO tenants (name) VALUES ($1) ON CONFLICT (name) "
                                   "DO NOTHING RETURNING tenant_id, ",
                                   FG_MICROS("created_at")),
                      {PgParam::Text(name)});
    if (!ins.ok()) return ins.status();
    if (ins->rows() == 0) {
      return absl::AlreadyExistsError(absl::StrCat("tenant \"", name, "\" already exists"));
    }
    TenantRecord& t = out.first;
    t.tenant_id = ins->GetInt64(0, 0);
    t.name = name;
    t.created_at = absl::FromUnixMicros(ins->GetInt64(0, 1));
    const std::string target = absl::StrCat("tenant ", name);
    absl::Status a = AppendAudit(c, audit, t.tenant_id, "tenant.create", target, "");
    if (!a.ok()) return a;
    // The operator's own trail shows the tenants it created.
    a = c.Exec("INSERT INTO audit_log (tenant_id, actor_key_id, action, target, request_id) "
               "SELECT tenant_id, $2, 'tenant.create', $3, $4 FROM tenants WHERE name = $1",
               {PgParam::Text(kDefaultTenant), Actor(audit), PgParam::Text(target),
                PgParam::Text(audit.request_id)})
            .status();
    if (!a.ok()) return a;
    auto key = InsertKey(c, audit, t.tenant_id, key_name, Role::kAdmin);
    if (!key.ok()) return key.status();
    out.second = std::move(key).value();
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<TenantRecord>> AccessStore::ListTenants() {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->Exec(absl::StrCat("SELECT tenant_id, name, ", FG_MICROS("created_at"),
                                      ", live_version, live_hash FROM tenants ORDER BY name"));
  if (!r.ok()) return r.status();
  std::vector<TenantRecord> out;
  for (int i = 0; i < r->rows(); ++i) {
    out.push_back(TenantRecord{r->GetInt64(i, 0), r->GetString(i, 1),
                               absl::FromUnixMicros(r->GetInt64(i, 2)),
                               static_cast<uint64_t>(r->GetInt64(i, 3)), r->GetString(i, 4)});
  }
  return out;
}

absl::StatusOr<Created<KeyRecord>> AccessStore::CreateKey(const AuditContext& audit,
                                                          int64_t tenant_id,
                                                          const std::string& name, Role role) {
  if (absl::Status s = CheckCredentialName(name); !s.ok()) return s;
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  Created<KeyRecord> out;
  absl::Status s = InTransaction(**conn, [&](PgConn& c) -> absl::Status {
    auto key = InsertKey(c, audit, tenant_id, name, role);
    if (!key.ok()) return key.status();
    out = std::move(key).value();
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<KeyRecord>> AccessStore::ListKeys(int64_t tenant_id,
                                                             bool include_revoked) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->Exec(
      absl::StrCat("SELECT ", kKeyColumns, " FROM api_keys k JOIN tenants t "
                   "ON t.tenant_id = k.tenant_id WHERE k.tenant_id = $1 "
                   "AND ($2::boolean OR k.revoked_at IS NULL) ORDER BY k.key_id"),
      {PgParam::Int(tenant_id), PgParam::Bool(include_revoked)});
  if (!r.ok()) return r.status();
  std::vector<KeyRecord> out;
  for (int i = 0; i < r->rows(); ++i) out.push_back(KeyFromRow(*r, i));
  return out;
}

absl::StatusOr<KeyRecord> AccessStore::RevokeKey(const AuditContext& audit, int64_t tenant_id,
                                                 int64_t key_id) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  KeyRecord out;
  absl::Status s = InTransaction(**conn, [&](PgConn& c) -> absl::Status {
    // Locks the key row, so two revocations of the last operator admins cannot both pass the
    // check below.
    auto cur = c.Exec(absl::StrCat("SELECT ", kKeyColumns, " FROM api_keys k JOIN tenants t "
                                   "ON t.tenant_id = k.tenant_id WHERE k.tenant_id = $1 "
                                   "AND k.key_id = $2 FOR UPDATE OF k"),
                      {PgParam::Int(tenant_id), PgParam::Int(key_id)});
    if (!cur.ok()) return cur.status();
    if (cur->rows() == 0) return absl::NotFoundError(absl::StrCat("no key ", key_id));
    out = KeyFromRow(*cur, 0);
    if (out.revoked_at.has_value()) return absl::OkStatus();
    if (out.tenant == kDefaultTenant && out.role == Role::kAdmin) {
      auto others = c.Exec(
          "SELECT count(*) FROM (SELECT 1 FROM api_keys WHERE tenant_id = $1 AND key_id <> $2 "
          "AND role = 'admin' AND revoked_at IS NULL FOR UPDATE) o",
          {PgParam::Int(tenant_id), PgParam::Int(key_id)});
      if (!others.ok()) return others.status();
      if (others->GetInt64(0, 0) == 0) {
        return absl::FailedPreconditionError(
            "this is the last admin key of tenant \"default\" (the operator); create another "
            "first");
      }
    }
    auto upd = c.Exec(absl::StrCat("UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 "
                                   "AND key_id = $2 RETURNING ", FG_MICROS("revoked_at")),
                      {PgParam::Int(tenant_id), PgParam::Int(key_id)});
    if (!upd.ok()) return upd.status();
    out.revoked_at = absl::FromUnixMicros(upd->GetInt64(0, 0));
    absl::Status a =
        AppendAudit(c, audit, tenant_id, "key.revoke", absl::StrCat("key-", key_id),
                    absl::StrCat("role ", RoleName(out.role), " name \"", out.name, "\""));
    if (!a.ok()) return a;
    // Agent streams opened with an admin key of tenant "default" end with it.
    return NotifyRevoked(c, {AgentCredential::Kind::kApiKey, tenant_id, key_id});
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<Created<TokenRecord>> AccessStore::CreateToken(const AuditContext& audit,
                                                              int64_t tenant_id,
                                                              const std::string& name) {
  if (absl::Status s = CheckCredentialName(name); !s.ok()) return s;
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  Created<TokenRecord> out;
  out.secret = GenerateEnrollmentToken();
  absl::Status s = InTransaction(**conn, [&](PgConn& c) -> absl::Status {
    auto r = c.Exec(
        absl::StrCat("WITH k AS (INSERT INTO enrollment_tokens (tenant_id, token_hash, name, "
                     "created_by) VALUES ($1, $2, $3, $4) RETURNING *) SELECT ",
                     kTokenColumns, " FROM k JOIN tenants t ON t.tenant_id = k.tenant_id"),
        {PgParam::Int(tenant_id), PgParam::Text(Sha256Hex(out.secret)), PgParam::Text(name),
         Actor(audit)});
    if (!r.ok()) return r.status();
    if (r->rows() != 1) return absl::NotFoundError("no such tenant");
    out.record = TokenFromRow(*r, 0);
    return AppendAudit(c, audit, tenant_id, "token.create",
                       absl::StrCat("token-", out.record.token_id),
                       absl::StrCat("name \"", name, "\""));
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<TokenRecord>> AccessStore::ListTokens(int64_t tenant_id,
                                                                 bool include_revoked) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->Exec(
      absl::StrCat("SELECT ", kTokenColumns, " FROM enrollment_tokens k JOIN tenants t "
                   "ON t.tenant_id = k.tenant_id WHERE k.tenant_id = $1 "
                   "AND ($2::boolean OR k.revoked_at IS NULL) ORDER BY k.token_id"),
      {PgParam::Int(tenant_id), PgParam::Bool(include_revoked)});
  if (!r.ok()) return r.status();
  std::vector<TokenRecord> out;
  for (int i = 0; i < r->rows(); ++i) out.push_back(TokenFromRow(*r, i));
  return out;
}

absl::StatusOr<TokenRecord> AccessStore::RevokeToken(const AuditContext& audit,
                                                     int64_t tenant_id, int64_t token_id) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  TokenRecord out;
  absl::Status s = InTransaction(**conn, [&](PgConn& c) -> absl::Status {
    auto cur = c.Exec(absl::StrCat("SELECT ", kTokenColumns, " FROM enrollment_tokens k "
                                   "JOIN tenants t ON t.tenant_id = k.tenant_id "
                                   "WHERE k.tenant_id = $1 AND k.token_id = $2 FOR UPDATE OF k"),
                      {PgParam::Int(tenant_id), PgParam::Int(token_id)});
    if (!cur.ok()) return cur.status();
    if (cur->rows() == 0) return absl::NotFoundError(absl::StrCat("no token ", token_id));
    out = TokenFromRow(*cur, 0);
    if (out.revoked_at.has_value()) return absl::OkStatus();
    auto upd = c.Exec(absl::StrCat("UPDATE enrollment_tokens SET revoked_at = now() "
                                   "WHERE tenant_id = $1 AND token_id = $2 RETURNING ",
                                   FG_MICROS("revoked_at")),
                      {PgParam::Int(tenant_id), PgParam::Int(token_id)});
    if (!upd.ok()) return upd.status();
    out.revoked_at = absl::FromUnixMicros(upd->GetInt64(0, 0));
    absl::Status a = AppendAudit(c, audit, tenant_id, "token.revoke",
                                 absl::StrCat("token-", token_id),
                                 absl::StrCat("name \"", out.name, "\""));
    if (!a.ok()) return a;
    return NotifyRevoked(c, {AgentCredential::Kind::kEnrollmentToken, tenant_id, token_id});
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<AgentCredential>> AccessStore::Unusable(
    const std::vector<AgentCredential>& credentials) {
  std::vector<AgentCredential> out;
  if (credentials.empty()) return out;
  std::vector<int64_t> token_tenants, tokens, key_tenants, keys;
  for (const AgentCredential& c : credentials) {
    const bool token = c.kind == AgentCredential::Kind::kEnrollmentToken;
    (token ? token_tenants : key_tenants).push_back(c.tenant_id);
    (token ? tokens : keys).push_back(c.id);
  }
  auto array = [](const std::vector<int64_t>& v) {
    return PgParam::Text(absl::StrCat("{", absl::StrJoin(v, ","), "}"));
  };
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  // Each lookup is by primary key (tenant_id, id). "Not usable" rather than "revoked", so a row
  // removed by hand ends its streams too.
  auto r = (*conn)->Exec(
      "SELECT 0, u.t, u.id FROM unnest($1::bigint[], $2::bigint[]) AS u(t, id) "
      "WHERE NOT EXISTS (SELECT 1 FROM enrollment_tokens k WHERE k.tenant_id = u.t "
      "  AND k.token_id = u.id AND k.revoked_at IS NULL) "
      "UNION ALL "
      "SELECT 1, u.t, u.id FROM unnest($3::bigint[], $4::bigint[]) AS u(t, id) "
      "WHERE NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.tenant_id = u.t "
      "  AND k.key_id = u.id AND k.revoked_at IS NULL)",
      {array(token_tenants), array(tokens), array(key_tenants), array(keys)});
  if (!r.ok()) return r.status();
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    out.push_back(AgentCredential{r->GetInt64(i, 0) == 0 ? AgentCredential::Kind::kEnrollmentToken
                                                        : AgentCredential::Kind::kApiKey,
                                  r->GetInt64(i, 1), r->GetInt64(i, 2)});
  }
  return out;
}

absl::StatusOr<std::vector<AuditRecord>> AccessStore::ListAudit(const AuditQuery& q) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  // Unset filters travel as NULL and switch their condition off, so the statement text is
  // constant (one plan) and no SQL is assembled from input.
  auto micros = [](const std::optional<absl::Time>& t) {
    return t ? PgParam::Int(absl::ToUnixMicros(*t)) : PgParam::Null();
  };
  auto r = (*conn)->Exec(
      absl::StrCat(
          "SELECT a.audit_id, t.name, ", FG_MICROS("a.at"), ", COALESCE(a.actor_key_id, 0), "
          "COALESCE(k.name, ''), a.action, a.target, a.summary, a.request_id "
          "FROM audit_log a JOIN tenants t ON t.tenant_id = a.tenant_id "
          "LEFT JOIN api_keys k ON k.key_id = a.actor_key_id "
          "WHERE a.tenant_id = $1 "
          "AND ($2::text IS NULL OR a.action = $2::text) "
          "AND ($3::bigint IS NULL OR a.at >= to_timestamp($3::bigint / 1000000.0)) "
          "AND ($4::bigint IS NULL OR a.at < to_timestamp($4::bigint / 1000000.0)) "
          "AND ($5::bigint IS NULL OR a.actor_key_id = $5::bigint) "
          "AND ($6::bigint IS NULL OR a.audit_id < $6::bigint) "
          "ORDER BY a.audit_id DESC LIMIT $7"),
      {PgParam::Int(q.tenant_id), q.action.empty() ? PgParam::Null() : PgParam::Text(q.action),
       micros(q.since), micros(q.until),
       q.key_id > 0 ? PgParam::Int(q.key_id) : PgParam::Null(),
       q.before_id > 0 ? PgParam::Int(q.before_id) : PgParam::Null(), PgParam::Int(q.limit)});
  if (!r.ok()) return r.status();
  std::vector<AuditRecord> out;
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    AuditRecord a;
    a.audit_id = r->GetInt64(i, 0);
    a.tenant = r->GetString(i, 1);
    a.at = absl::FromUnixMicros(r->GetInt64(i, 2));
    a.key_id = r->GetInt64(i, 3);
    a.key_name = r->GetString(i, 4);
    a.action = r->GetString(i, 5);
    a.target = r->GetString(i, 6);
    a.summary = r->GetString(i, 7);
    a.request_id = r->GetString(i, 8);
    out.push_back(std::move(a));
  }
  return out;
}

absl::StatusOr<AgentOverview> AccessStore::Agents(int64_t tenant_id, int sample_size) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  AgentOverview out;
  auto counts = (*conn)->Exec(
      "SELECT count(*), count(*) FILTER (WHERE connected) FROM agents WHERE tenant_id = $1",
      {PgParam::Int(tenant_id)});
  if (!counts.ok()) return counts.status();
  out.total = static_cast<uint64_t>(counts->GetInt64(0, 0));
  out.connected = static_cast<uint64_t>(counts->GetInt64(0, 1));
  if (out.total == 0) return out;
  // Labels travel as "k=v" lines: keys and values are plain strings the agent chose, and a
  // newline-free encoding keeps decoding trivial.
  auto sample = (*conn)->Exec(
      "SELECT a.agent_id, a.connected, a.applied_version, "
      "  COALESCE((SELECT string_agg(key || '=' || replace(value, E'\\n', ' '), E'\\n' "
      "            ORDER BY key) FROM jsonb_each_text(a.labels)), '') "
      "FROM agents a WHERE a.tenant_id = $1 ORDER BY a.connected DESC, a.agent_id LIMIT $2",
      {PgParam::Int(tenant_id), PgParam::Int(sample_size)});
  if (!sample.ok()) return sample.status();
  for (int i = 0; i < sample->rows(); ++i) {
    AgentRecord a;
    a.agent_id = sample->GetString(i, 0);
    a.connected = sample->GetBool(i, 1);
    a.applied_version = static_cast<uint64_t>(sample->GetInt64(i, 2));
    for (absl::string_view line :
         absl::StrSplit(sample->GetString(i, 3), '\n', absl::SkipEmpty())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
      a.labels[kv.first] = kv.second;
    }
    out.sample.push_back(std::move(a));
  }
  auto labels = (*conn)->Exec(
      "SELECT l.key || '=' || l.value, count(*) FROM agents a, jsonb_each_text(a.labels) l "
      "WHERE a.tenant_id = $1 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 100",
      {PgParam::Int(tenant_id)});
  if (!labels.ok()) return labels.status();
  for (int i = 0; i < labels->rows(); ++i) {
    out.by_label[labels->GetString(i, 0)] = static_cast<uint64_t>(labels->GetInt64(i, 1));
  }
  return out;
}

}  // namespace flexgate::cp
