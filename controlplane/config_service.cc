#include "controlplane/config_service.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/canonical.h"
#include "common/log.h"
#include "common/validator.h"
#include "controlplane/auth.h"
#include "controlplane/grpc_status.h"
#include "controlplane/metrics.h"
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

class ConfigServiceImpl final : public v1::ConfigService::Service {
 public:
  explicit ConfigServiceImpl(ConfigServiceDeps deps) : deps_(deps) {}

  grpc::Status Validate(grpc::ServerContext* ctx, const v1::ValidateRequest* req,
                        v1::ValidateResponse* resp) override {
    deps_.metrics->validate_calls.Increment();
    auto who = Caller(ctx, req->tenant(), Access::kRead);
    if (!who.ok()) return ToGrpcStatus(who.status());
    std::vector<v1::Diagnostic> diags = ValidateConfig(req->config());
    resp->set_valid(IsValid(diags));
    for (auto& d : diags) *resp->add_diagnostics() = std::move(d);
    resp->set_hash(ConfigHash(req->config()));
    auto live = deps_.store->GetLive(who->tenant_id);
    if (!live.ok()) return ToGrpcStatus(live.status());
    resp->set_live_version(live->version);
    resp->set_unchanged(live->version > 0 && live->hash == resp->hash());
    return grpc::Status::OK;
  }

  grpc::Status Apply(grpc::ServerContext* ctx, const v1::ApplyRequest* req,
                     v1::ApplyResponse* resp) override {
    auto who = Caller(ctx, req->tenant(), Access::kWrite);
    if (!who.ok()) {
      deps_.metrics->applies_rejected.Increment();
      return ToGrpcStatus(who.status());
    }
    std::vector<v1::Diagnostic> diags = ValidateConfig(req->config());
    if (!IsValid(diags)) {
      deps_.metrics->applies_rejected.Increment();
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("config is invalid:\n", DiagnosticLines(diags)));
    }
    const std::string body = CanonicalBytes(req->config());
    const std::string hash = Sha256Hex(body);
    std::optional<uint64_t> base;
    if (req->has_base_version()) base = req->base_version();
    auto out = deps_.store->Apply(*who, who->tenant_id, hash, body, base, req->message());
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
    auto who = Caller(ctx, req->tenant(), Access::kRead);
    if (!who.ok()) return ToGrpcStatus(who.status());
    auto stored = deps_.store->GetVersion(who->tenant_id, req->version());
    if (!stored.ok()) return ToGrpcStatus(stored.status());
    v1::ConfigVersion* v = resp->mutable_version();
    Fill(*who, *stored, v);
    if (!v->mutable_config()->ParseFromString(stored->body)) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "stored config does not parse");
    }
    return grpc::Status::OK;
  }

  grpc::Status ListVersions(grpc::ServerContext* ctx, const v1::ListVersionsRequest* req,
                            v1::ListVersionsResponse* resp) override {
    auto who = Caller(ctx, req->tenant(), Access::kRead);
    if (!who.ok()) return ToGrpcStatus(who.status());
    auto before = DecodePageToken(req->page_token());
    if (!before.ok()) return ToGrpcStatus(before.status());
    uint32_t size = req->page_size() == 0 ? kDefaultPageSize
                                          : std::min(req->page_size(), kMaxPageSize);
    auto list = deps_.store->ListVersions(who->tenant_id, *before, static_cast<int>(size));
    if (!list.ok()) return ToGrpcStatus(list.status());
    for (const StoredVersion& s : *list) Fill(*who, s, resp->add_versions());
    if (list->size() == size && list->back().version > 1) {
      resp->set_next_page_token(EncodePageToken(list->back().version));
    }
    return grpc::Status::OK;
  }

 private:
  absl::StatusOr<Principal> Caller(grpc::ServerContext* ctx, const std::string& tenant,
                                   Access access) {
    std::string header;
    auto it = ctx->client_metadata().find("authorization");
    if (it != ctx->client_metadata().end()) header.assign(it->second.data(), it->second.size());
    auto key = ParseBearer(header);
    if (!key.ok()) return key.status();
    auto who = deps_.auth->Authenticate(*key);
    if (!who.ok()) return who.status();
    auto allowed = Authorize(*who, tenant, access);
    if (!allowed.ok()) return allowed.status();
    return who;
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
