#include "controlplane/fleet_store.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/log.h"

namespace flexgate::cp {
namespace {

namespace v1 = flexgate::v1;
using google::protobuf::util::TimeUtil;

#define FG_MICROS(col) "(extract(epoch FROM " col ") * 1000000)::bigint"

// Every agent of tenant $1 matching labels $3 (NULL = any), with its state; $2 = the stale
// threshold in seconds. The CASE is the one definition of the states (see FleetAgent.State):
// its order is the precedence.
constexpr char kFleetCte[] =
    "WITH live AS (SELECT live_version, live_hash FROM tenants WHERE tenant_id = $1), "
    "fleet AS ("
    "  SELECT a.agent_id, a.labels::text AS labels, a.agent_version, "
    "    a.capabilities::text AS capabilities, a.connected, "
    "    " FG_MICROS("a.connected_at") " AS connected_at, "
    "    " FG_MICROS("a.last_seen") " AS last_seen, "
    "    a.healthy, a.replica, a.applied_version, a.applied_hash, "
    "    " FG_MICROS("a.applied_at") " AS applied_at, a.apply_duration_ms, "
    "    COALESCE(v.hash, '') AS expected_hash, a.sent_version, "
    "    COALESCE(a.last_nack_version, 0) AS last_nack_version, "
    "    COALESCE(a.last_nack_error, '') AS last_nack_error, "
    "    " FG_MICROS("a.last_nack_at") " AS last_nack_at, "
    "    l.live_version, "
    "    COALESCE(extract(epoch FROM now() - a.last_seen)::double precision, 0) AS silent, "
    "    CASE WHEN NOT a.connected THEN 1 "
    "         WHEN a.last_seen IS NULL "
    "           OR a.last_seen < now() - make_interval(secs => $2::double precision) THEN 2 "
    "         WHEN a.applied_version > 0 AND (v.hash IS NULL OR v.hash <> a.applied_hash) THEN 3 "
    "         WHEN a.applied_hash = l.live_hash THEN 4 "
    "         WHEN a.last_nack_version = l.live_version THEN 5 "
    "         ELSE 6 END AS state "
    "  FROM agents a CROSS JOIN live l "
    "  LEFT JOIN config_versions v "
    "    ON v.tenant_id = a.tenant_id AND v.version = a.applied_version "
    "  WHERE a.tenant_id = $1 AND ($3::jsonb IS NULL OR a.labels @> $3::jsonb)) ";

constexpr char kFleetColumns[] =
    "agent_id, labels, agent_version, capabilities, connected, connected_at, last_seen, "
    "healthy, replica, applied_version, applied_hash, applied_at, apply_duration_ms, "
    "expected_hash, sent_version, last_nack_version, last_nack_error, last_nack_at, "
    "live_version, silent, state";

std::string Short(const std::string& hash) { return hash.substr(0, 12); }

void SetTime(const PgResult& r, int row, int col, google::protobuf::Timestamp* out) {
  if (r.IsNull(row, col)) return;
  *out = TimeUtil::MicrosecondsToTimestamp(r.GetInt64(row, col));
}

double GetDouble(const PgResult& r, int row, int col) {
  double d = 0;
  (void)absl::SimpleAtod(r.GetString(row, col), &d);
  return d;
}

std::string StateReason(const v1::FleetAgent& a, double silent, absl::Duration stale_after) {
  switch (a.state()) {
    case v1::FleetAgent::DISCONNECTED:
      return "no open stream";
    case v1::FleetAgent::STALE:
      return absl::StrCat("connected but silent for ", static_cast<int64_t>(silent),
                          " s (stale after ", absl::ToInt64Seconds(stale_after), " s)");
    case v1::FleetAgent::DRIFTED:
      if (a.expected_hash().empty()) {
        return absl::StrCat("reports version ", a.applied_version(),
                            ", which the control plane does not have");
      }
      return absl::StrCat("reports version ", a.applied_version(), " with hash ",
                          Short(a.applied_hash()), ", the control plane stored ",
                          Short(a.expected_hash()));
    case v1::FleetAgent::IN_SYNC:
      if (a.live_version() == 0) return "no config applied yet";
      return absl::StrCat("serves the live version ", a.live_version());
    case v1::FleetAgent::REJECTED:
      return absl::StrCat("rejected the live version ", a.live_version(), ": ",
                          a.last_nack_error());
    case v1::FleetAgent::PENDING:
      if (a.sent_version() >= a.live_version()) {
        return absl::StrCat("live version ", a.live_version(), " sent, not yet acknowledged");
      }
      return absl::StrCat("behind the live version ", a.live_version(), ", not sent yet");
    default:
      return "";
  }
}

v1::FleetAgent AgentFromRow(const PgResult& r, int row, const std::string& tenant,
                            absl::Duration stale_after) {
  v1::FleetAgent a;
  a.set_agent_id(r.GetString(row, 0));
  google::protobuf::Struct labels;
  if (google::protobuf::util::JsonStringToMessage(r.GetString(row, 1), &labels).ok()) {
    for (const auto& [k, v] : labels.fields()) (*a.mutable_labels())[k] = v.string_value();
  }
  a.set_agent_version(r.GetString(row, 2));
  google::protobuf::ListValue caps;
  // A bare JSON array is not a message in the JSON mapping; wrap it as a Struct field.
  google::protobuf::Struct wrapper;
  if (google::protobuf::util::JsonStringToMessage(
          absl::StrCat("{\"c\":", r.GetString(row, 3), "}"), &wrapper)
          .ok()) {
    for (const auto& v : wrapper.fields().at("c").list_value().values()) {
      a.add_capabilities(v.string_value());
    }
  }
  a.set_tenant(tenant);
  a.set_connected(r.GetBool(row, 4));
  SetTime(r, row, 5, a.mutable_connected_at());
  SetTime(r, row, 6, a.mutable_last_seen());
  a.set_healthy(r.GetBool(row, 7));
  a.set_replica(r.GetString(row, 8));
  a.set_applied_version(static_cast<uint64_t>(r.GetInt64(row, 9)));
  a.set_applied_hash(r.GetString(row, 10));
  SetTime(r, row, 11, a.mutable_applied_at());
  if (!r.IsNull(row, 12)) {
    *a.mutable_last_apply_duration() = TimeUtil::NanosecondsToDuration(
        static_cast<int64_t>(GetDouble(r, row, 12) * 1e6));
  }
  a.set_expected_hash(r.GetString(row, 13));
  a.set_sent_version(static_cast<uint64_t>(r.GetInt64(row, 14)));
  a.set_last_nack_version(static_cast<uint64_t>(r.GetInt64(row, 15)));
  a.set_last_nack_error(r.GetString(row, 16));
  SetTime(r, row, 17, a.mutable_last_nack_at());
  a.set_live_version(static_cast<uint64_t>(r.GetInt64(row, 18)));
  a.set_state(static_cast<v1::FleetAgent::State>(r.GetInt64(row, 20)));
  a.set_state_reason(StateReason(a, GetDouble(r, row, 19), stale_after));
  return a;
}

PgParam LabelsParam(const std::map<std::string, std::string>& labels) {
  if (labels.empty()) return PgParam::Null();
  std::string json = "{";
  for (const auto& [k, v] : labels) {
    if (json.size() > 1) json += ',';
    AppendJsonString(json, k);
    json += ':';
    AppendJsonString(json, v);
  }
  json += '}';
  return PgParam::Text(std::move(json));
}

PgParam SecondsParam(absl::Duration d) { return PgParam::Text(absl::StrCat(absl::ToDoubleSeconds(d))); }

}  // namespace

absl::StatusOr<std::map<std::string, std::string>> ParseLabelSelector(absl::string_view selector) {
  std::map<std::string, std::string> out;
  if (absl::StripAsciiWhitespace(selector).empty()) return out;
  for (absl::string_view item : absl::StrSplit(selector, ',')) {
    item = absl::StripAsciiWhitespace(item);
    size_t eq = item.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("label selector item \"", std::string(item), "\" is not key=value"));
    }
    std::string key(absl::StripAsciiWhitespace(item.substr(0, eq)));
    std::string value(absl::StripAsciiWhitespace(item.substr(eq + 1)));
    if (key.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("label selector item \"", std::string(item), "\" has an empty key"));
    }
    if (!out.emplace(key, value).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("label selector names \"", key, "\" twice"));
    }
  }
  return out;
}

absl::StatusOr<FleetPage> FleetStore::ListAgents(const FleetQuery& q) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  FleetPage page;
  PgParam states = PgParam::Null();
  if (!q.states.empty()) {
    states = PgParam::Text(absl::StrCat("{", absl::StrJoin(q.states, ",", [](std::string* out, auto s) {
                                          absl::StrAppend(out, static_cast<int>(s));
                                        }),
                                        "}"));
  }
  // One page plus one row, to know whether another page follows.
  auto rows = (*conn)->Exec(
      absl::StrCat(kFleetCte, "SELECT ", kFleetColumns, " FROM fleet "
                   "WHERE ($4::int[] IS NULL OR state = ANY($4::int[])) AND agent_id > $5 "
                   "ORDER BY agent_id LIMIT $6"),
      {PgParam::Int(q.tenant_id), SecondsParam(stale_after_), LabelsParam(q.labels), states,
       PgParam::Text(q.after_agent_id), PgParam::Int(q.limit + 1)});
  if (!rows.ok()) return rows.status();
  for (int i = 0; i < rows->rows() && i < q.limit; ++i) {
    page.agents.push_back(AgentFromRow(*rows, i, q.tenant_name, stale_after_));
  }
  page.more = rows->rows() > q.limit;

  auto counts = (*conn)->Exec(
      absl::StrCat(kFleetCte, "SELECT state, count(*) FROM fleet GROUP BY state"),
      {PgParam::Int(q.tenant_id), SecondsParam(stale_after_), LabelsParam(q.labels)});
  if (!counts.ok()) return counts.status();
  for (int i = 0; i < counts->rows(); ++i) {
    auto state = static_cast<v1::FleetAgent::State>(counts->GetInt64(i, 0));
    auto n = static_cast<uint32_t>(counts->GetInt64(i, 1));
    page.state_counts[v1::FleetAgent::State_Name(state)] = n;
    bool wanted = q.states.empty();
    for (auto s : q.states) wanted |= s == state;
    if (wanted) page.total += n;
  }
  auto live = (*conn)->Exec("SELECT live_version FROM tenants WHERE tenant_id = $1",
                            {PgParam::Int(q.tenant_id)});
  if (!live.ok()) return live.status();
  if (live->rows() > 0) page.live_version = static_cast<uint64_t>(live->GetInt64(0, 0));
  return page;
}

absl::StatusOr<v1::FleetAgent> FleetStore::GetAgent(int64_t tenant_id,
                                                    const std::string& tenant_name,
                                                    const std::string& agent_id) {
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  auto rows = (*conn)->Exec(
      absl::StrCat(kFleetCte, "SELECT ", kFleetColumns, " FROM fleet WHERE agent_id = $4"),
      {PgParam::Int(tenant_id), SecondsParam(stale_after_), PgParam::Null(),
       PgParam::Text(agent_id)});
  if (!rows.ok()) return rows.status();
  if (rows->rows() == 0) return absl::NotFoundError(absl::StrCat("no agent \"", agent_id, "\""));
  return AgentFromRow(*rows, 0, tenant_name, stale_after_);
}

absl::StatusOr<FleetStats> FleetStore::VersionStats(int64_t tenant_id,
                                                    const std::vector<uint64_t>& versions) {
  FleetStats out;
  auto conn = pool_->Acquire();
  if (!conn.ok()) return conn.status();
  const PgParam ids = PgParam::Text(absl::StrCat("{", absl::StrJoin(versions, ","), "}"));
  auto acks = (*conn)->Exec(
      "SELECT version, count(*), "
      "  percentile_cont(0.5) WITHIN GROUP (ORDER BY convergence_seconds), "
      "  percentile_cont(0.99) WITHIN GROUP (ORDER BY convergence_seconds), "
      "  max(convergence_seconds) "
      "FROM agent_version_acks WHERE tenant_id = $1 AND version = ANY($2::bigint[]) "
      "GROUP BY version",
      {PgParam::Int(tenant_id), ids});
  if (!acks.ok()) return acks.status();
  for (int i = 0; i < acks->rows(); ++i) {
    VersionFleetStats& s = out.versions[static_cast<uint64_t>(acks->GetInt64(i, 0))];
    s.acked = static_cast<uint32_t>(acks->GetInt64(i, 1));
    s.p50 = GetDouble(*acks, i, 2);
    s.p99 = GetDouble(*acks, i, 3);
    s.max = GetDouble(*acks, i, 4);
  }
  // Connected agents, and per version those serving its exact content (a drifted agent that
  // reports the version with another hash does not count).
  auto serving = (*conn)->Exec(
      "SELECT CASE WHEN v.hash = a.applied_hash THEN a.applied_version ELSE 0 END, count(*) "
      "FROM agents a LEFT JOIN config_versions v "
      "  ON v.tenant_id = a.tenant_id AND v.version = a.applied_version "
      "WHERE a.tenant_id = $1 AND a.connected GROUP BY 1",
      {PgParam::Int(tenant_id)});
  if (!serving.ok()) return serving.status();
  for (int i = 0; i < serving->rows(); ++i) {
    const auto n = static_cast<uint32_t>(serving->GetInt64(i, 1));
    out.connected += n;
    const auto version = static_cast<uint64_t>(serving->GetInt64(i, 0));
    if (version > 0) out.versions[version].serving = n;
  }
  auto rejected = (*conn)->Exec(
      "SELECT last_nack_version, count(*) FROM agents "
      "WHERE tenant_id = $1 AND last_nack_version = ANY($2::bigint[]) GROUP BY 1",
      {PgParam::Int(tenant_id), ids});
  if (!rejected.ok()) return rejected.status();
  for (int i = 0; i < rejected->rows(); ++i) {
    out.versions[static_cast<uint64_t>(rejected->GetInt64(i, 0))].rejected =
        static_cast<uint32_t>(rejected->GetInt64(i, 1));
  }
  return out;
}

}  // namespace flexgate::cp
