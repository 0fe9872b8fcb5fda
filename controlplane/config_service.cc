#include "controlplane/config_service.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/canonical.h"
#include "common/capabilities.h"
#include "common/config_diff.h"
#include "common/log.h"
#include "common/validator.h"
#include "controlplane/access_store.h"
#include "controlplane/auth.h"
#include "controlplane/diff_proto.h"
#include "controlplane/fleet_capabilities.h"
#include "controlplane/fleet_store.h"
#include "controlplane/grpc_status.h"
#include "controlplane/metrics.h"
#include "controlplane/rpc_context.h"
#include "controlplane/store.h"
#include "flexgate/v1/config_service.grpc.pb.h"
#include "google/protobuf/util/time_util.h"

namespace flexgate::cp {
namespace {

namespace v1 = flexgate::v1;

constexpr uint32_t kDefaultPageSize = 50;
constexpr uint32_t kMaxPageSize = 1000;
constexpr char kPageTokenPrefix[] = "before:";

// "path: code: message" for every diagnostic (warnings too, for context), one per line, as the
// Apply error carries them.
std::string DiagnosticLines(const std::vector<v1::Diagnostic>& diags) {
  std::string out;
  for (const auto& d : diags) {
    if (!out.empty()) out += "\n";
    absl::StrAppend(&out, d.path(), ": ", d.code(), ": ", d.message());
  }
  return out;
}

constexpr int kAgentSampleSize = 20;

using ConfigPtr = std::shared_ptr<const v1::Config>;

// Parsed config versions, the newest asked-for version per tenant. Versions are immutable, so a
// cached entry is never stale; caching saves Validate and Apply from loading and parsing the
// live body (megabytes at 10,000 routes) on every call. Thread-safe.
class VersionCache {
 public:
  explicit VersionCache(ConfigStore* store) : store_(store) {}

  // Version 0 is the empty config (what a tenant has before its first version).
  absl::StatusOr<ConfigPtr> Get(int64_t tenant_id, uint64_t version) {
    if (version == 0) return empty_;
    {
      absl::MutexLock lock(&mu_);
      auto it = latest_.find(tenant_id);
      if (it != latest_.end() && it->second.first == version) return it->second.second;
    }
    auto stored = store_->GetVersion(tenant_id, version);
    if (!stored.ok()) return stored.status();
    auto config = std::make_shared<v1::Config>();
    if (!config->ParseFromString(stored->body)) {
      return absl::InternalError(absl::StrCat("stored version ", version, " does not parse"));
    }
    absl::MutexLock lock(&mu_);
    auto& slot = latest_[tenant_id];
    if (slot.first <= version) slot = {version, config};
    return ConfigPtr(std::move(config));
  }

 private:
  ConfigStore* const store_;
  const ConfigPtr empty_ = std::make_shared<const v1::Config>();
  absl::Mutex mu_;
  absl::flat_hash_map<int64_t, std::pair<uint64_t, ConfigPtr>> latest_ ABSL_GUARDED_BY(mu_);
};

class ConfigServiceImpl final : public v1::ConfigService::Service {
 public:
  explicit ConfigServiceImpl(ConfigServiceDeps deps) : deps_(deps), versions_(deps.store) {}

  grpc::Status Validate(grpc::ServerContext* ctx, const v1::ValidateRequest* req,
                        v1::ValidateResponse* resp) override {
    deps_.metrics->validate_calls.Increment();
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kRead);
    if (!call.ok()) return ToGrpcStatus(call.status());
    const Principal* who = &call->who;
    std::vector<v1::Diagnostic> diags = ValidateConfig(req->config());
    // What the tenant's agents would reject although the config itself is valid: Validate must
    // never say "valid" for a version an agent will NACK.
    auto fleet = FleetDiagnostics(who->tenant_id, req->config());
    if (!fleet.ok()) return ToGrpcStatus(fleet.status());
    for (auto& d : *fleet) diags.push_back(std::move(d));
    resp->set_valid(IsValid(diags));
    for (auto& d : diags) *resp->add_diagnostics() = std::move(d);
    resp->set_hash(ConfigHash(req->config()));
    auto live = deps_.store->GetLive(who->tenant_id);
    if (!live.ok()) return ToGrpcStatus(live.status());
    resp->set_live_version(live->version);
    resp->set_unchanged(live->version > 0 && live->hash == resp->hash());
    for (const auto& d : resp->diagnostics()) {
      if (d.code() == "plaintext_secret") *resp->add_secret_warnings() = d;
    }

    // The diff against what an Apply would replace. Only reads: Validate never writes.
    auto base = versions_.Get(who->tenant_id, live->version);
    if (!base.ok()) return ToGrpcStatus(base.status());
    const ConfigDiff diff = DiffConfigs(**base, req->config());
    *resp->mutable_diff() = DiffToProto(diff);
    v1::Impact* impact = resp->mutable_impact();
    for (const std::string& r : diff.affected_routes) impact->add_affected_routes(r);
    if (!resp->unchanged() && deps_.access != nullptr) {
      // Every agent of the tenant would receive the new version.
      auto agents = deps_.access->Agents(who->tenant_id, kAgentSampleSize);
      if (!agents.ok()) return ToGrpcStatus(agents.status());
      impact->set_agents_affected(static_cast<uint32_t>(agents->total));
      impact->set_agents_connected(static_cast<uint32_t>(agents->connected));
      for (const AgentRecord& a : agents->sample) {
        v1::AgentRef* ref = impact->add_agents_sample();
        ref->set_agent_id(a.agent_id);
        ref->mutable_labels()->insert(a.labels.begin(), a.labels.end());
        ref->set_connected(a.connected);
        ref->set_applied_version(a.applied_version);
      }
      for (const auto& [label, n] : agents->by_label) {
        (*impact->mutable_agents_by_label())[label] = static_cast<uint32_t>(n);
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status Apply(grpc::ServerContext* ctx, const v1::ApplyRequest* req,
                     v1::ApplyResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kWrite);
    if (!call.ok()) {
      deps_.metrics->applies_rejected.Increment();
      return ToGrpcStatus(call.status());
    }
    const Principal* who = &call->who;
    std::vector<v1::Diagnostic> diags = ValidateConfig(req->config());
    if (!IsValid(diags)) {
      deps_.metrics->applies_rejected.Increment();
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("config is invalid:\n", DiagnosticLines(diags)));
    }
    auto fleet = FleetDiagnostics(who->tenant_id, req->config());
    if (!fleet.ok()) {
      deps_.metrics->applies_rejected.Increment();
      return ToGrpcStatus(fleet.status());
    }
    if (!fleet->empty()) {
      if (!req->allow_unsupported()) {
        deps_.metrics->applies_rejected.Increment();
        return grpc::Status(
            grpc::StatusCode::FAILED_PRECONDITION,
            absl::StrCat("agents of this tenant would reject this config (set allow_unsupported "
                         "to apply it anyway):\n",
                         DiagnosticLines(*fleet)));
      }
      // Stored on purpose: the caller still hears what the fleet will reject, as warnings.
      for (auto& d : *fleet) {
        d.set_severity(v1::Diagnostic::WARNING);
        diags.push_back(std::move(d));
      }
    }
    const std::string body = CanonicalBytes(req->config());
    const std::string hash = Sha256Hex(body);
    std::optional<uint64_t> base;
    if (req->has_base_version()) base = req->base_version();
    ApplyAudit audit{call->audit(), "config.apply", 0, ""};
    // The audit summary is taken against the live version seen now; the store uses it only if
    // that is still the live version under its row lock.
    if (auto live = deps_.store->GetLive(who->tenant_id); live.ok()) {
      if (auto old = versions_.Get(who->tenant_id, live->version); old.ok()) {
        audit.summary_base = live->version;
        audit.summary = DiffSummary(DiffConfigs(**old, req->config()));
      }
    }
    auto out = deps_.store->Apply(*who, who->tenant_id, hash, body, base, req->message(), audit);
    if (!out.ok()) {
      deps_.metrics->applies_rejected.Increment();
      if (!absl::IsAborted(out.status()) && !absl::IsUnavailable(out.status())) {
        FG_LOG_WARN("apply failed", {{"tenant", who->tenant_name},
                                     {"error", std::string(out.status().message())}});
      }
      return ToGrpcStatus(out.status());
    }
    resp->set_version(out->version);
    resp->set_hash(out->hash);
    resp->set_unchanged(out->unchanged);
    for (auto& d : diags) *resp->add_diagnostics() = std::move(d);  // warnings only by now
    if (out->unchanged) {
      deps_.metrics->applies_unchanged.Increment();
    } else {
      deps_.metrics->applies.Increment();
      FG_LOG_INFO("config applied", {{"tenant", who->tenant_name},
                                     {"version", out->version},
                                     {"hash", out->hash},
                                     {"key_id", who->key_id}});
    }
    return grpc::Status::OK;
  }

  grpc::Status Get(grpc::ServerContext* ctx, const v1::GetRequest* req,
                   v1::GetResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kRead);
    if (!call.ok()) return ToGrpcStatus(call.status());
    const Principal* who = &call->who;
    auto stored = deps_.store->GetVersion(who->tenant_id, req->version());
    if (!stored.ok()) return ToGrpcStatus(stored.status());
    v1::ConfigVersion* v = resp->mutable_version();
    Fill(*who, *stored, v);
    if (!v->mutable_config()->ParseFromString(stored->body)) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "stored config does not parse");
    }
    absl::Status stats = AddFleetStats(who->tenant_id, {v});
    if (!stats.ok()) return ToGrpcStatus(stats);
    return grpc::Status::OK;
  }

  grpc::Status ListVersions(grpc::ServerContext* ctx, const v1::ListVersionsRequest* req,
                            v1::ListVersionsResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kRead);
    if (!call.ok()) return ToGrpcStatus(call.status());
    const Principal* who = &call->who;
    auto before = DecodePageToken(req->page_token());
    if (!before.ok()) return ToGrpcStatus(before.status());
    uint32_t size = req->page_size() == 0 ? kDefaultPageSize
                                          : std::min(req->page_size(), kMaxPageSize);
    auto list = deps_.store->ListVersions(who->tenant_id, *before, static_cast<int>(size));
    if (!list.ok()) return ToGrpcStatus(list.status());
    for (const StoredVersion& s : *list) Fill(*who, s, resp->add_versions());
    std::vector<v1::ConfigVersion*> filled;
    for (v1::ConfigVersion& v : *resp->mutable_versions()) filled.push_back(&v);
    absl::Status stats = AddFleetStats(who->tenant_id, filled);
    if (!stats.ok()) return ToGrpcStatus(stats);
    if (list->size() == size && list->back().version > 1) {
      resp->set_next_page_token(EncodePageToken(list->back().version));
    }
    return grpc::Status::OK;
  }

  grpc::Status Diff(grpc::ServerContext* ctx, const v1::DiffRequest* req,
                    v1::DiffResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kRead);
    if (!call.ok()) return ToGrpcStatus(call.status());
    const int64_t tenant_id = call->who.tenant_id;
    uint64_t to = req->to_version();
    if (to == 0) {
      auto live = deps_.store->GetLive(tenant_id);
      if (!live.ok()) return ToGrpcStatus(live.status());
      if (live->version == 0) {
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "no config has been applied yet");
      }
      to = live->version;
    }
    auto from_cfg = LoadVersion(tenant_id, req->from_version());
    if (!from_cfg.ok()) return ToGrpcStatus(from_cfg.status());
    auto to_cfg = LoadVersion(tenant_id, to);
    if (!to_cfg.ok()) return ToGrpcStatus(to_cfg.status());
    resp->set_from_version(req->from_version());
    resp->set_to_version(to);
    *resp->mutable_diff() = DiffToProto(DiffConfigs(**from_cfg, **to_cfg));
    return grpc::Status::OK;
  }

  grpc::Status Rollback(grpc::ServerContext* ctx, const v1::RollbackRequest* req,
                        v1::RollbackResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kWrite);
    if (!call.ok()) {
      deps_.metrics->applies_rejected.Increment();
      return ToGrpcStatus(call.status());
    }
    const Principal& who = call->who;
    if (req->to_version() == 0) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "to_version is required");
    }
    auto target = LoadVersion(who.tenant_id, req->to_version());
    if (!target.ok()) return ToGrpcStatus(target.status());
    auto live = deps_.store->GetLive(who.tenant_id);
    if (!live.ok()) return ToGrpcStatus(live.status());
    auto current = versions_.Get(who.tenant_id, live->version);
    if (!current.ok()) return ToGrpcStatus(current.status());
    const ConfigDiff diff = DiffConfigs(**current, **target);

    // The stored body is re-serialized rather than copied, so its hash is computed by the one
    // canonical encoder exactly as for Apply.
    const std::string body = CanonicalBytes(**target);
    const std::string hash = Sha256Hex(body);
    std::optional<uint64_t> base;
    if (req->has_base_version()) base = req->base_version();
    const std::string message = req->message().empty()
                                    ? absl::StrCat("rollback to version ", req->to_version())
                                    : req->message();
    ApplyAudit audit{call->audit(), "config.rollback", live->version,
                     absl::StrCat("rollback to version ", req->to_version(), ": ",
                                  DiffSummary(diff))};
    auto out = deps_.store->Apply(who, who.tenant_id, hash, body, base, message, audit);
    if (!out.ok()) {
      deps_.metrics->applies_rejected.Increment();
      return ToGrpcStatus(out.status());
    }
    resp->set_version(out->version);
    resp->set_hash(out->hash);
    resp->set_unchanged(out->unchanged);
    if (out->previous_version == live->version) {
      *resp->mutable_diff() = DiffToProto(diff);
    } else {
      // Another apply won the race in between: describe what this rollback really replaced.
      auto replaced = versions_.Get(who.tenant_id, out->previous_version);
      if (replaced.ok()) *resp->mutable_diff() = DiffToProto(DiffConfigs(**replaced, **target));
    }
    if (out->unchanged) {
      deps_.metrics->applies_unchanged.Increment();
    } else {
      deps_.metrics->applies.Increment();
      FG_LOG_INFO("config rolled back", {{"tenant", who.tenant_name},
                                         {"version", out->version},
                                         {"to_version", req->to_version()},
                                         {"key_id", who.key_id},
                                         {"request_id", call->request_id}});
    }
    return grpc::Status::OK;
  }

 private:
  // A stored version parsed (0 = the empty config); cached only when it is the newest asked for.
  absl::StatusOr<ConfigPtr> LoadVersion(int64_t tenant_id, uint64_t version) {
    return versions_.Get(tenant_id, version);
  }

  // unsupported_feature diagnostics for the features `config` uses that some of the tenant's
  // agents do not announce (fleet_capabilities.h). Empty when the tenant has no agent that
  // announced capabilities.
  absl::StatusOr<std::vector<v1::Diagnostic>> FleetDiagnostics(int64_t tenant_id,
                                                               const v1::Config& config) {
    const std::map<std::string, std::string> used = FeaturesUsed(config);
    std::vector<std::string> names;
    names.reserve(used.size());
    for (const auto& [feature, path] : used) names.push_back(feature);
    auto support = deps_.store->FeatureSupport(tenant_id, names);
    if (!support.ok()) return support.status();
    return UnsupportedFeatureDiagnostics(used, *support);
  }

  // The convergence numbers of each version: acked / connected / serving / rejected agents and
  // commit -> ACK quantiles (fleet_store.h).
  absl::Status AddFleetStats(int64_t tenant_id, const std::vector<v1::ConfigVersion*>& versions) {
    if (deps_.fleet == nullptr || versions.empty()) return absl::OkStatus();
    std::vector<uint64_t> ids;
    for (const v1::ConfigVersion* v : versions) ids.push_back(v->version());
    auto stats = deps_.fleet->VersionStats(tenant_id, ids);
    if (!stats.ok()) return stats.status();
    auto duration = [](double seconds) {
      return google::protobuf::util::TimeUtil::NanosecondsToDuration(
          static_cast<int64_t>(seconds * 1e9));
    };
    for (v1::ConfigVersion* v : versions) {
      v->set_connected_agents(stats->connected);
      auto it = stats->versions.find(v->version());
      if (it == stats->versions.end()) continue;
      const VersionFleetStats& s = it->second;
      v->set_acked_agents(s.acked);
      v->set_serving_agents(s.serving);
      v->set_rejected_agents(s.rejected);
      if (s.p50) *v->mutable_convergence_p50() = duration(*s.p50);
      if (s.p99) *v->mutable_convergence_p99() = duration(*s.p99);
      if (s.max) *v->mutable_convergence_max() = duration(*s.max);
    }
    return absl::OkStatus();
  }

  static void Fill(const Principal& who, const StoredVersion& s, v1::ConfigVersion* v) {
    v->set_tenant(who.tenant_name);
    v->set_version(s.version);
    v->set_hash(s.hash);
    v->set_author(s.author);
    v->set_message(s.message);
    *v->mutable_created_at() =
        google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(s.created_at));
  }

  const ConfigServiceDeps deps_;
  VersionCache versions_;
};

}  // namespace

std::string EncodePageToken(uint64_t before_version) {
  return absl::WebSafeBase64Escape(absl::StrCat(kPageTokenPrefix, before_version));
}

absl::StatusOr<uint64_t> DecodePageToken(const std::string& token) {
  if (token.empty()) return 0;
  std::string raw;
  uint64_t v = 0;
  if (!absl::WebSafeBase64Unescape(token, &raw) || !absl::StartsWith(raw, kPageTokenPrefix) ||
      !absl::SimpleAtoi(absl::string_view(raw).substr(sizeof(kPageTokenPrefix) - 1), &v) ||
      v == 0) {
    return absl::InvalidArgumentError("invalid page_token");
  }
  return v;
}

std::unique_ptr<grpc::Service> CreateConfigService(ConfigServiceDeps deps) {
  return std::make_unique<ConfigServiceImpl>(deps);
}

}  // namespace flexgate::cp
