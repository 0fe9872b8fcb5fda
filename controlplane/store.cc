#include "controlplane/store.h"

#include <openssl/rand.h>

#include <algorithm>
#include <optional>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/canonical.h"
#include "common/log.h"

namespace flexgate::cp {
namespace {

// Serializes bootstrap work of replicas that start together on an empty database.
constexpr int64_t kBootstrapLockKey = 0x466c6578'426f6f74;  // "FlexBoot"

std::string CapabilitiesJson(const std::vector<std::string>& capabilities) {
  std::string out = "[";
  for (size_t i = 0; i < capabilities.size(); ++i) {
    if (i > 0) out += ',';
    AppendJsonString(out, capabilities[i]);
  }
  out += ']';
  return out;
}

std::string LabelsJson(const std::map<std::string, std::string>& labels) {
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ',';
    first = false;
    AppendJsonString(out, k);
    out += ':';
    AppendJsonString(out, v);
  }
  out += '}';
  return out;
}

constexpr char kVersionColumns[] =
    "v.tenant_id, v.version, v.hash, v.message, "
    "(extract(epoch FROM v.created_at) * 1000000)::bigint, "
    "COALESCE(NULLIF(k.name, ''), 'key-' || v.author_key_id::text, '')";

StoredVersion VersionFromRow(const PgResult& r, int row) {
  StoredVersion v;
  v.tenant_id = r.GetInt64(row, 0);
  v.version = static_cast<uint64_t>(r.GetInt64(row, 1));
  v.hash = r.GetString(row, 2);
  v.message = r.GetString(row, 3);
  v.created_at = absl::FromUnixMicros(r.GetInt64(row, 4));
  v.author = r.GetString(row, 5);
  return v;
}

// PostgreSQL array literals for the batched statements' unnest($n::T[]) parameters. Every
// element is double-quoted with '"' and '\\' escaped, so any text survives; nullopt is NULL.
class ArrayLiteral {
 public:
  ArrayLiteral& Add(const std::string& v) {
    Sep();
    out_ += '"';
    for (char c : v) {
      if (c == '"' || c == '\\') out_ += '\\';
      out_ += c;
    }
    out_ += '"';
    return *this;
  }
  ArrayLiteral& Add(int64_t v) { return Raw(absl::StrCat(v)); }
  ArrayLiteral& Add(uint64_t v) { return Raw(absl::StrCat(v)); }
  ArrayLiteral& Add(bool v) { return Raw(v ? "t" : "f"); }
  ArrayLiteral& Add(std::optional<double> v) { return Raw(v ? absl::StrCat(*v) : "NULL"); }
  PgParam Param() const { return PgParam::Text(out_ + "}"); }

 private:
  ArrayLiteral& Raw(const std::string& v) {
    Sep();
    out_ += v;
    return *this;
  }
  void Sep() {
    if (out_.size() > 1) out_ += ',';
  }
  std::string out_ = "{";
};

}  // namespace

std::string GenerateApiKey() {
  unsigned char buf[32];
  if (RAND_bytes(buf, sizeof(buf)) != 1) {
    // Without randomness no key is safe; this is an impossible state on a working system.
    FG_LOG_ERROR("RAND_bytes failed");
    std::abort();
  }
  std::string out;
  absl::WebSafeBase64Escape(absl::string_view(reinterpret_cast<const char*>(buf), sizeof(buf)),
                            &out);
  return "fgk_" + out;
}

absl::StatusOr<std::optional<std::string>> ConfigStore::Bootstrap(
    const std::optional<std::string>& bootstrap_key) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  std::optional<std::string> generated;
  absl::Status s = InTransaction(**conn, [&](PgConn& c) -> absl::Status {
    auto lock = c.Exec("SELECT pg_advisory_xact_lock($1)", {PgParam::Int(kBootstrapLockKey)});
    if (!lock.ok()) return lock.status();
    auto ins = c.Exec(
        "INSERT INTO tenants (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING tenant_id",
        {PgParam::Text(kDefaultTenant)});
    if (!ins.ok()) return ins.status();
    auto tenant = c.Exec("SELECT tenant_id FROM tenants WHERE name = $1",
                         {PgParam::Text(kDefaultTenant)});
    if (!tenant.ok()) return tenant.status();
    const int64_t tenant_id = tenant->GetInt64(0, 0);
    if (ins->rows() == 1) {
      auto audit = c.Exec(
          "INSERT INTO audit_log (tenant_id, action, target, summary) "
          "VALUES ($1, 'tenant.create', $2, 'created at first start')",
          {PgParam::Int(tenant_id), PgParam::Text(kDefaultTenant)});
      if (!audit.ok()) return audit.status();
    }

    std::string key_hash;
    std::string key_name;
    if (bootstrap_key.has_value()) {
      key_hash = Sha256Hex(*bootstrap_key);
      key_name = "bootstrap";
    } else {
      auto any = c.Exec("SELECT 1 FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL LIMIT 1");
      if (!any.ok()) return any.status();
      if (any->rows() > 0) return absl::OkStatus();
      generated = GenerateApiKey();
      key_hash = Sha256Hex(*generated);
      key_name = "generated-at-first-start";
    }
    auto key = c.Exec(
        "INSERT INTO api_keys (tenant_id, key_hash, role, name) VALUES ($1, $2, 'admin', $3) "
        "ON CONFLICT (key_hash) DO NOTHING RETURNING key_id",
        {PgParam::Int(tenant_id), PgParam::Text(key_hash), PgParam::Text(key_name)});
    if (!key.ok()) return key.status();
    if (key->rows() == 1) {
      auto audit = c.Exec(
          "INSERT INTO audit_log (tenant_id, action, target, summary) "
          "VALUES ($1, 'key.create', $2, 'bootstrap admin key')",
          {PgParam::Int(tenant_id), PgParam::Text(absl::StrCat("key-", key->GetInt64(0, 0)))});
      if (!audit.ok()) return audit.status();
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return generated;
}

absl::StatusOr<int64_t> ConfigStore::TenantId(const std::string& name) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->Exec("SELECT tenant_id FROM tenants WHERE name = $1", {PgParam::Text(name)});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return absl::NotFoundError(absl::StrCat("no tenant \"", name, "\""));
  return r->GetInt64(0, 0);
}

absl::StatusOr<LiveVersion> ConfigStore::GetLive(int64_t tenant_id) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->Exec("SELECT live_version, live_hash FROM tenants WHERE tenant_id = $1",
                         {PgParam::Int(tenant_id)});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return absl::NotFoundError("no such tenant");
  return LiveVersion{static_cast<uint64_t>(r->GetInt64(0, 0)), r->GetString(0, 1)};
}

absl::StatusOr<std::map<int64_t, LiveVersion>> ConfigStore::GetLiveMany(
    const std::vector<int64_t>& tenants) {
  std::map<int64_t, LiveVersion> out;
  if (tenants.empty()) return out;
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  // One round trip for all tenants: the id list travels as one array parameter.
  auto r = (*conn)->Exec(
      "SELECT tenant_id, live_version, live_hash FROM tenants "
      "WHERE tenant_id = ANY($1::bigint[]) AND live_version > 0",
      {PgParam::Text(absl::StrCat("{", absl::StrJoin(tenants, ","), "}"))});
  if (!r.ok()) return r.status();
  for (int i = 0; i < r->rows(); ++i) {
    out[r->GetInt64(i, 0)] =
        LiveVersion{static_cast<uint64_t>(r->GetInt64(i, 1)), r->GetString(i, 2)};
  }
  return out;
}

absl::StatusOr<ApplyOutcome> ConfigStore::Apply(const Principal& who, int64_t tenant_id,
                                                const std::string& hash, const std::string& body,
                                                std::optional<uint64_t> base_version,
                                                const std::string& message,
                                                const ApplyAudit& audit_info) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  ApplyOutcome out;
  absl::Status s = InTransaction(**conn, [&](PgConn& c) -> absl::Status {
    // The row lock serializes applies of one tenant across all replicas, so "read live, insert
    // live+1" cannot interleave.
    auto live = c.Exec(
        "SELECT live_version, live_hash FROM tenants WHERE tenant_id = $1 FOR UPDATE",
        {PgParam::Int(tenant_id)});
    if (!live.ok()) return live.status();
    if (live->rows() == 0) return absl::NotFoundError("no such tenant");
    const uint64_t live_version = static_cast<uint64_t>(live->GetInt64(0, 0));
    const std::string live_hash = live->GetString(0, 1);
    if (base_version.has_value() && *base_version != live_version) {
      return absl::AbortedError(absl::StrCat("base version ", *base_version,
                                             " is stale: the live version is ", live_version));
    }
    if (live_version > 0 && live_hash == hash) {
      out = ApplyOutcome{live_version, live_version, live_hash, true};
      return absl::OkStatus();
    }
    const uint64_t next = live_version + 1;
    auto ins = c.Exec(
        "INSERT INTO config_versions (tenant_id, version, hash, body, author_key_id, message) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        {PgParam::Int(tenant_id), PgParam::Uint(next), PgParam::Text(hash), PgParam::Bytes(body),
         who.key_id > 0 ? PgParam::Int(who.key_id) : PgParam::Null(), PgParam::Text(message)});
    if (!ins.ok()) return ins.status();
    auto upd = c.Exec("UPDATE tenants SET live_version = $2, live_hash = $3 WHERE tenant_id = $1",
                      {PgParam::Int(tenant_id), PgParam::Uint(next), PgParam::Text(hash)});
    if (!upd.ok()) return upd.status();
    std::string summary =
        absl::StrCat("version ", live_version, " -> ", next, " hash ", hash.substr(0, 12));
    if (!audit_info.summary.empty() && audit_info.summary_base == live_version) {
      absl::StrAppend(&summary, ": ", audit_info.summary);
    }
    auto audit = c.Exec(
        "INSERT INTO audit_log (tenant_id, actor_key_id, action, target, summary, request_id) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        {PgParam::Int(tenant_id), who.key_id > 0 ? PgParam::Int(who.key_id) : PgParam::Null(),
         PgParam::Text(audit_info.action), PgParam::Text(absl::StrCat("version ", next)),
         PgParam::Text(summary), PgParam::Text(audit_info.who.request_id)});
    if (!audit.ok()) return audit.status();
    // Delivered to listeners only when (and if) the transaction commits.
    auto notify = c.Exec("SELECT pg_notify($1, $2)",
                         {PgParam::Text(kConfigChannel),
                          PgParam::Text(absl::StrCat(tenant_id, ":", next))});
    if (!notify.ok()) return notify.status();
    out = ApplyOutcome{live_version, next, hash, false};
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<StoredVersion> ConfigStore::GetVersion(int64_t tenant_id, uint64_t version) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  std::string sql = absl::StrCat(
      "SELECT ", kVersionColumns, ", v.body FROM config_versions v "
      "LEFT JOIN api_keys k ON k.tenant_id = v.tenant_id AND k.key_id = v.author_key_id "
      "WHERE v.tenant_id = $1 AND v.version = ",
      version == 0 ? "(SELECT live_version FROM tenants WHERE tenant_id = $1)" : "$2");
  std::vector<PgParam> params = {PgParam::Int(tenant_id)};
  if (version != 0) params.push_back(PgParam::Uint(version));
  auto r = (*conn)->Exec(sql, params);
  if (!r.ok()) return r.status();
  if (r->rows() == 0) {
    return absl::NotFoundError(version == 0 ? std::string("no config has been applied yet")
                                            : absl::StrCat("no version ", version));
  }
  StoredVersion v = VersionFromRow(*r, 0);
  v.body = r->GetBytes(0, 6);
  return v;
}

absl::StatusOr<std::vector<StoredVersion>> ConfigStore::ListVersions(int64_t tenant_id,
                                                                     uint64_t before, int limit) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->Exec(
      absl::StrCat("SELECT ", kVersionColumns, " FROM config_versions v "
                   "LEFT JOIN api_keys k ON k.tenant_id = v.tenant_id AND k.key_id = v.author_key_id "
                   "WHERE v.tenant_id = $1 AND ($2::bigint = 0 OR v.version < $2::bigint) "
                   "ORDER BY v.version DESC LIMIT $3"),
      {PgParam::Int(tenant_id), PgParam::Uint(before), PgParam::Int(limit)});
  if (!r.ok()) return r.status();
  std::vector<StoredVersion> out;
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) out.push_back(VersionFromRow(*r, i));
  return out;
}

absl::StatusOr<uint64_t> ConfigStore::AgentConnected(const AgentHelloRecord& h) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)
      ->Exec(
          "INSERT INTO agents (tenant_id, agent_id, labels, agent_version, connected, "
          "  connected_at, last_seen, applied_version, applied_hash, session_id, capabilities, "
          "  replica, sent_version) "
          "VALUES ($1, $2, $3::jsonb, $4, true, now(), now(), $5, $6, $7, $8::jsonb, $9, 0) "
          "ON CONFLICT (tenant_id, agent_id) DO UPDATE SET labels = EXCLUDED.labels, "
          "  agent_version = EXCLUDED.agent_version, connected = true, connected_at = now(), "
          "  last_seen = now(), applied_version = EXCLUDED.applied_version, "
          "  applied_hash = EXCLUDED.applied_hash, session_id = EXCLUDED.session_id, "
          "  capabilities = EXCLUDED.capabilities, replica = EXCLUDED.replica, sent_version = 0 "
          "RETURNING COALESCE(last_nack_version, 0)",
          {PgParam::Int(h.tenant_id), PgParam::Text(h.agent_id), PgParam::Text(LabelsJson(h.labels)),
           PgParam::Text(h.agent_version), PgParam::Uint(h.applied_version),
           PgParam::Text(h.applied_hash), PgParam::Text(h.session_id),
           PgParam::Text(CapabilitiesJson(h.capabilities)), PgParam::Text(h.replica)});
  if (!r.ok()) return r.status();
  return static_cast<uint64_t>(r->GetInt64(0, 0));
}

absl::Status ConfigStore::AgentHeartbeat(const AgentHeartbeatRecord& beat) {
  return AgentsHeartbeat({&beat});
}

absl::StatusOr<std::optional<double>> ConfigStore::AgentAcked(const AgentAckRecord& a) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  // One statement, so the agent row and the ack event cannot disagree. Times are on the
  // database clock: receipt = now() minus the time the ACK waited on this replica, and the
  // commit time is the version's created_at, so replica clock skew never enters the number.
  auto r = (*conn)->Exec(
      "WITH upd AS ("
      "  UPDATE agents SET last_seen = now(), applied_version = $3, applied_hash = $4, "
      "    applied_at = now(), apply_duration_ms = $5 WHERE tenant_id = $1 AND agent_id = $2 "
      "    AND (NOT $8::boolean OR applied_version < $3)), "
      "t AS (SELECT now() - make_interval(secs => $6::double precision) AS acked_at) "
      "INSERT INTO agent_version_acks (tenant_id, version, agent_id, acked_at, "
      "  convergence_seconds, apply_duration_ms, replica) "
      "SELECT $1, $3, $2, t.acked_at, "
      "  GREATEST(0, extract(epoch FROM t.acked_at - v.created_at))::double precision, $5, $7 "
      "FROM config_versions v, t WHERE v.tenant_id = $1 AND v.version = $3 "
      "ON CONFLICT (tenant_id, version, agent_id) DO NOTHING "
      "RETURNING convergence_seconds",
      {PgParam::Int(a.tenant_id), PgParam::Text(a.agent_id), PgParam::Uint(a.version),
       PgParam::Text(a.hash),
       a.apply_ms ? PgParam::Text(absl::StrCat(*a.apply_ms)) : PgParam::Null(),
       PgParam::Text(absl::StrCat(std::max(0.0, absl::ToDoubleSeconds(a.received_ago)))),
       PgParam::Text(a.replica), PgParam::Bool(a.late)});
  if (!r.ok()) return r.status();
  if (r->rows() == 0) return std::optional<double>();
  double seconds = 0;
  if (!absl::SimpleAtod(r->GetString(0, 0), &seconds)) return std::optional<double>();
  return std::optional<double>(seconds);
}

absl::Status ConfigStore::AgentSent(int64_t tenant_id, const std::string& agent_id,
                                    uint64_t version) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  return (*conn)
      ->Exec("UPDATE agents SET sent_version = $3, sent_at = now() "
             "WHERE tenant_id = $1 AND agent_id = $2 AND sent_version < $3",
             {PgParam::Int(tenant_id), PgParam::Text(agent_id), PgParam::Uint(version)})
      .status();
}

absl::Status ConfigStore::AgentNacked(int64_t tenant_id, const std::string& agent_id,
                                      uint64_t version, const std::string& error) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  return (*conn)
      ->Exec(
          "UPDATE agents SET last_seen = now(), last_nack_version = $3, last_nack_error = $4, "
          "  last_nack_at = now() WHERE tenant_id = $1 AND agent_id = $2",
          {PgParam::Int(tenant_id), PgParam::Text(agent_id), PgParam::Uint(version),
           PgParam::Text(error)})
      .status();
}

absl::Status ConfigStore::AgentDisconnected(int64_t tenant_id, const std::string& agent_id,
                                             const std::string& session_id) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  return (*conn)
      ->Exec("UPDATE agents SET connected = false, last_seen = now() "
             "WHERE tenant_id = $1 AND agent_id = $2 AND session_id = $3",
             {PgParam::Int(tenant_id), PgParam::Text(agent_id), PgParam::Text(session_id)})
      .status();
}

absl::StatusOr<std::vector<uint64_t>> ConfigStore::AgentsConnected(
    const std::vector<const AgentHelloRecord*>& hellos) {
  std::vector<uint64_t> out(hellos.size(), 0);
  if (hellos.empty()) return out;
  ArrayLiteral tenant, agent, labels, version, applied, hash, session, caps, replica;
  for (const AgentHelloRecord* h : hellos) {
    tenant.Add(h->tenant_id);
    agent.Add(h->agent_id);
    labels.Add(LabelsJson(h->labels));
    version.Add(h->agent_version);
    applied.Add(h->applied_version);
    hash.Add(h->applied_hash);
    session.Add(h->session_id);
    caps.Add(CapabilitiesJson(h->capabilities));
    replica.Add(h->replica);
  }
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto r = (*conn)->Exec(
      "INSERT INTO agents (tenant_id, agent_id, labels, agent_version, connected, "
      "  connected_at, last_seen, applied_version, applied_hash, session_id, capabilities, "
      "  replica, sent_version) "
      "SELECT t, a, l::jsonb, av, true, now(), now(), v, h, s, c::jsonb, r, 0 "
      "FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], "
      "  $7::text[], $8::text[], $9::text[]) AS u(t, a, l, av, v, h, s, c, r) "
      "ON CONFLICT (tenant_id, agent_id) DO UPDATE SET labels = EXCLUDED.labels, "
      "  agent_version = EXCLUDED.agent_version, connected = true, connected_at = now(), "
      "  last_seen = now(), applied_version = EXCLUDED.applied_version, "
      "  applied_hash = EXCLUDED.applied_hash, session_id = EXCLUDED.session_id, "
      "  capabilities = EXCLUDED.capabilities, replica = EXCLUDED.replica, sent_version = 0 "
      "RETURNING tenant_id, agent_id, COALESCE(last_nack_version, 0)",
      {tenant.Param(), agent.Param(), labels.Param(), version.Param(), applied.Param(),
       hash.Param(), session.Param(), caps.Param(), replica.Param()});
  if (!r.ok()) return r.status();
  // RETURNING order is not the input order: match rows back by key.
  std::map<std::pair<int64_t, std::string>, uint64_t> nacks;
  for (int i = 0; i < r->rows(); ++i) {
    nacks[{r->GetInt64(i, 0), r->GetString(i, 1)}] = static_cast<uint64_t>(r->GetInt64(i, 2));
  }
  for (size_t i = 0; i < hellos.size(); ++i) {
    auto it = nacks.find({hellos[i]->tenant_id, hellos[i]->agent_id});
    if (it != nacks.end()) out[i] = it->second;
  }
  return out;
}

absl::Status ConfigStore::AgentsSent(const std::vector<const AgentSentRecord*>& sent) {
  if (sent.empty()) return absl::OkStatus();
  ArrayLiteral tenant, agent, version;
  for (const AgentSentRecord* s : sent) {
    tenant.Add(s->tenant_id);
    agent.Add(s->agent_id);
    version.Add(s->version);
  }
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  return (*conn)
      ->Exec("UPDATE agents a SET sent_version = u.v, sent_at = now() "
             "FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS u(t, id, v) "
             "WHERE a.tenant_id = u.t AND a.agent_id = u.id AND a.sent_version < u.v",
             {tenant.Param(), agent.Param(), version.Param()})
      .status();
}

absl::StatusOr<std::vector<double>> ConfigStore::AgentsAcked(
    const std::vector<const AgentAckRecord*>& acks) {
  std::vector<double> out;
  if (acks.empty()) return out;
  ArrayLiteral tenant, agent, version, hash, ms, ago, replica, late;
  for (const AgentAckRecord* a : acks) {
    tenant.Add(a->tenant_id);
    agent.Add(a->agent_id);
    version.Add(a->version);
    hash.Add(a->hash);
    ms.Add(a->apply_ms);
    ago.Add(std::optional<double>(std::max(0.0, absl::ToDoubleSeconds(a->received_ago))));
    replica.Add(a->replica);
    late.Add(a->late);
  }
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  // As AgentAcked, for many agents in one statement: the agents rows and the first-ACK rows
  // cannot disagree, and the ACK time is receipt on the database clock.
  auto r = (*conn)->Exec(
      "WITH u AS ("
      "  SELECT t, id, v, h, ms, now() - make_interval(secs => ago) AS acked_at, r, late "
      "  FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], "
      "    $5::double precision[], $6::double precision[], $7::text[], $8::boolean[]) "
      "    AS x(t, id, v, h, ms, ago, r, late)), "
      "upd AS ("
      "  UPDATE agents a SET last_seen = now(), applied_version = u.v, applied_hash = u.h, "
      "    applied_at = now(), apply_duration_ms = u.ms "
      "  FROM u WHERE a.tenant_id = u.t AND a.agent_id = u.id "
      "    AND (NOT u.late OR a.applied_version < u.v)) "
      "INSERT INTO agent_version_acks (tenant_id, version, agent_id, acked_at, "
      "  convergence_seconds, apply_duration_ms, replica) "
      "SELECT u.t, u.v, u.id, u.acked_at, "
      "  GREATEST(0, extract(epoch FROM u.acked_at - cv.created_at))::double precision, "
      "  u.ms, u.r "
      "FROM u JOIN config_versions cv ON cv.tenant_id = u.t AND cv.version = u.v "
      "ON CONFLICT (tenant_id, version, agent_id) DO NOTHING "
      "RETURNING convergence_seconds",
      {tenant.Param(), agent.Param(), version.Param(), hash.Param(), ms.Param(), ago.Param(),
       replica.Param(), late.Param()});
  if (!r.ok()) return r.status();
  out.reserve(r->rows());
  for (int i = 0; i < r->rows(); ++i) {
    double seconds = 0;
    if (absl::SimpleAtod(r->GetString(i, 0), &seconds)) out.push_back(seconds);
  }
  return out;
}

absl::Status ConfigStore::AgentsHeartbeat(const std::vector<const AgentHeartbeatRecord*>& beats) {
  if (beats.empty()) return absl::OkStatus();
  ArrayLiteral tenant, agent, version, hash, healthy, session;
  for (const AgentHeartbeatRecord* b : beats) {
    tenant.Add(b->tenant_id);
    agent.Add(b->agent_id);
    version.Add(b->applied_version);
    hash.Add(b->applied_hash);
    healthy.Add(b->healthy);
    session.Add(b->session_id);
  }
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  // The ACK owns what was applied and when (applied_version, applied_at, apply_duration_ms). A
  // heartbeat refreshes last_seen, health and the hash the agent reports (another hash for the
  // same version is drift); it writes applied_version only when it reports a version other than
  // the one recorded (the assignment is a no-op otherwise), so FleetService shows what the agent
  // says it serves. The session guard keeps a late heartbeat of an agent's old stream (still
  // queued on one replica after the agent reconnected to another) from overwriting what the new
  // stream recorded.
  return (*conn)
      ->Exec("UPDATE agents a SET last_seen = now(), healthy = u.ok, applied_hash = u.h, "
             "  applied_version = u.v "
             "FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::boolean[], "
             "  $6::text[]) AS u(t, id, v, h, ok, s) "
             "WHERE a.tenant_id = u.t AND a.agent_id = u.id AND a.session_id = u.s",
             {tenant.Param(), agent.Param(), version.Param(), hash.Param(), healthy.Param(),
              session.Param()})
      .status();
}

absl::Status ConfigStore::AgentsDisconnected(
    const std::vector<const AgentDisconnectRecord*>& gone) {
  if (gone.empty()) return absl::OkStatus();
  ArrayLiteral tenant, agent, session;
  for (const AgentDisconnectRecord* g : gone) {
    tenant.Add(g->tenant_id);
    agent.Add(g->agent_id);
    session.Add(g->session_id);
  }
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  // The session guard: a late disconnect of an old stream leaves a reconnected agent alone.
  return (*conn)
      ->Exec("UPDATE agents a SET connected = false, last_seen = now() "
             "FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(t, id, s) "
             "WHERE a.tenant_id = u.t AND a.agent_id = u.id AND a.session_id = u.s",
             {tenant.Param(), agent.Param(), session.Param()})
      .status();
}

absl::StatusOr<FleetFeatureSupport> ConfigStore::FeatureSupport(
    int64_t tenant_id, const std::vector<std::string>& features) {
  FleetFeatureSupport out;
  if (features.empty()) return out;
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  std::string array = "{";
  for (size_t i = 0; i < features.size(); ++i) {
    if (i > 0) array += ',';
    AppendJsonString(array, features[i]);  // a JSON string is a valid array-literal element
  }
  array += '}';
  // Distinct capability sets first: a fleet runs a handful of agent builds, so the per-feature
  // work is over sets, not agents.
  auto r = (*conn)->Exec(
      "WITH sets AS ("
      "  SELECT capabilities, count(*) AS n FROM agents "
      "  WHERE tenant_id = $1 AND jsonb_array_length(capabilities) > 0 GROUP BY capabilities) "
      "SELECT f, COALESCE(sum(n) FILTER (WHERE NOT capabilities ? f), 0)::bigint, "
      "  sum(n)::bigint "
      "FROM unnest($2::text[]) AS f CROSS JOIN sets GROUP BY f",
      {PgParam::Int(tenant_id), PgParam::Text(std::move(array))});
  if (!r.ok()) return r.status();
  for (int i = 0; i < r->rows(); ++i) {
    out.agents = static_cast<uint32_t>(r->GetInt64(i, 2));
    const auto lacking = static_cast<uint32_t>(r->GetInt64(i, 1));
    if (lacking > 0) out.lacking[r->GetString(i, 0)] = lacking;
  }
  return out;
}

bool ConfigStore::Ping() {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return false;
  return (*conn)->Exec("SELECT 1").ok();
}

}  // namespace flexgate::cp
