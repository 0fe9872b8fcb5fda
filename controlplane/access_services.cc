#include "controlplane/access_services.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "controlplane/access_store.h"
#include "controlplane/auth.h"
#include "controlplane/config_service.h"
#include "controlplane/grpc_status.h"
#include "controlplane/revocation_enforcer.h"
#include "controlplane/rpc_context.h"
#include "flexgate/v1/audit_service.grpc.pb.h"
#include "flexgate/v1/tenant_service.grpc.pb.h"
#include "google/protobuf/util/time_util.h"

namespace flexgate::cp {
namespace {

namespace v1 = flexgate::v1;
using google::protobuf::util::TimeUtil;

constexpr uint32_t kDefaultAuditPage = 50;
constexpr uint32_t kMaxAuditPage = 1000;

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  return TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

void FillKey(const KeyRecord& k, v1::ApiKey* out) {
  out->set_key_id(static_cast<uint64_t>(k.key_id));
  out->set_tenant(k.tenant);
  out->set_name(k.name);
  out->set_role(RoleName(k.role));
  *out->mutable_created_at() = ToTimestamp(k.created_at);
  out->set_revoked(k.revoked_at.has_value());
  if (k.revoked_at) *out->mutable_revoked_at() = ToTimestamp(*k.revoked_at);
}

void FillToken(const TokenRecord& t, v1::EnrollmentToken* out) {
  out->set_token_id(static_cast<uint64_t>(t.token_id));
  out->set_tenant(t.tenant);
  out->set_name(t.name);
  *out->mutable_created_at() = ToTimestamp(t.created_at);
  out->set_revoked(t.revoked_at.has_value());
  if (t.revoked_at) *out->mutable_revoked_at() = ToTimestamp(*t.revoked_at);
}

void FillTenant(const TenantRecord& t, v1::Tenant* out) {
  out->set_name(t.name);
  *out->mutable_created_at() = ToTimestamp(t.created_at);
  out->set_live_version(t.live_version);
  out->set_live_hash(t.live_hash);
}

absl::StatusOr<Caller> Operator(grpc::ServerContext* ctx, Authenticator* auth) {
  auto call = AuthorizeCall(ctx, auth, "", Access::kAdmin);
  if (!call.ok()) return call.status();
  if (!IsOperator(call->who)) {
    return absl::PermissionDeniedError(
        "managing tenants needs an admin key of tenant \"default\" (the operator)");
  }
  return call;
}

class TenantServiceImpl final : public v1::TenantService::Service {
 public:
  explicit TenantServiceImpl(AccessServiceDeps deps) : deps_(deps) {}

  grpc::Status CreateTenant(grpc::ServerContext* ctx, const v1::CreateTenantRequest* req,
                            v1::CreateTenantResponse* resp) override {
    auto call = Operator(ctx, deps_.auth);
    if (!call.ok()) return ToGrpcStatus(call.status());
    const std::string key_name =
        req->admin_key_name().empty() ? std::string("initial-admin") : req->admin_key_name();
    auto out = deps_.access->CreateTenant(call->audit(), req->name(), key_name);
    if (!out.ok()) return ToGrpcStatus(out.status());
    FillTenant(out->first, resp->mutable_tenant());
    FillKey(out->second.record, resp->mutable_admin_key());
    resp->set_admin_key_secret(out->second.secret);
    FG_LOG_INFO("tenant created", {{"tenant", req->name()},
                                   {"key_id", call->who.key_id},
                                   {"request_id", call->request_id}});
    return grpc::Status::OK;
  }

  grpc::Status ListTenants(grpc::ServerContext* ctx, const v1::ListTenantsRequest*,
                           v1::ListTenantsResponse* resp) override {
    auto call = Operator(ctx, deps_.auth);
    if (!call.ok()) return ToGrpcStatus(call.status());
    auto list = deps_.access->ListTenants();
    if (!list.ok()) return ToGrpcStatus(list.status());
    for (const TenantRecord& t : *list) FillTenant(t, resp->add_tenants());
    return grpc::Status::OK;
  }

 private:
  const AccessServiceDeps deps_;
};

class KeyServiceImpl final : public v1::KeyService::Service {
 public:
  explicit KeyServiceImpl(AccessServiceDeps deps) : deps_(deps) {}

  grpc::Status CreateKey(grpc::ServerContext* ctx, const v1::CreateKeyRequest* req,
                         v1::CreateKeyResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kAdmin);
    if (!call.ok()) return ToGrpcStatus(call.status());
    auto role = ParseRole(req->role());
    if (!role.ok()) return ToGrpcStatus(role.status());
    auto out = deps_.access->CreateKey(call->audit(), call->who.tenant_id, req->name(), *role);
    if (!out.ok()) return ToGrpcStatus(out.status());
    FillKey(out->record, resp->mutable_key());
    resp->set_secret(out->secret);
    return grpc::Status::OK;
  }

  grpc::Status ListKeys(grpc::ServerContext* ctx, const v1::ListKeysRequest* req,
                        v1::ListKeysResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kAdmin);
    if (!call.ok()) return ToGrpcStatus(call.status());
    auto list = deps_.access->ListKeys(call->who.tenant_id, req->include_revoked());
    if (!list.ok()) return ToGrpcStatus(list.status());
    for (const KeyRecord& k : *list) FillKey(k, resp->add_keys());
    return grpc::Status::OK;
  }

  grpc::Status RevokeKey(grpc::ServerContext* ctx, const v1::RevokeKeyRequest* req,
                         v1::RevokeKeyResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kAdmin);
    if (!call.ok()) return ToGrpcStatus(call.status());
    auto out = deps_.access->RevokeKey(call->audit(), call->who.tenant_id,
                                       static_cast<int64_t>(req->key_id()));
    if (!out.ok()) return ToGrpcStatus(out.status());
    // At once on this replica: the key leaves the auth cache and agent streams opened with it
    // end. Other replicas do the same on the notification the revocation sent.
    deps_.revocations->Revoked(
        {AgentCredential::Kind::kApiKey, call->who.tenant_id, static_cast<int64_t>(req->key_id())});
    FillKey(*out, resp->mutable_key());
    return grpc::Status::OK;
  }

  grpc::Status CreateToken(grpc::ServerContext* ctx, const v1::CreateTokenRequest* req,
                           v1::CreateTokenResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kAdmin);
    if (!call.ok()) return ToGrpcStatus(call.status());
    auto out = deps_.access->CreateToken(call->audit(), call->who.tenant_id, req->name());
    if (!out.ok()) return ToGrpcStatus(out.status());
    FillToken(out->record, resp->mutable_token());
    resp->set_secret(out->secret);
    return grpc::Status::OK;
  }

  grpc::Status ListTokens(grpc::ServerContext* ctx, const v1::ListTokensRequest* req,
                          v1::ListTokensResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kAdmin);
    if (!call.ok()) return ToGrpcStatus(call.status());
    auto list = deps_.access->ListTokens(call->who.tenant_id, req->include_revoked());
    if (!list.ok()) return ToGrpcStatus(list.status());
    for (const TokenRecord& t : *list) FillToken(t, resp->add_tokens());
    return grpc::Status::OK;
  }

  grpc::Status RevokeToken(grpc::ServerContext* ctx, const v1::RevokeTokenRequest* req,
                           v1::RevokeTokenResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kAdmin);
    if (!call.ok()) return ToGrpcStatus(call.status());
    auto out = deps_.access->RevokeToken(call->audit(), call->who.tenant_id,
                                         static_cast<int64_t>(req->token_id()));
    if (!out.ok()) return ToGrpcStatus(out.status());
    // At once on this replica: the token leaves the auth cache and every stream opened with it
    // ends. Other replicas do the same on the notification the revocation sent.
    deps_.revocations->Revoked({AgentCredential::Kind::kEnrollmentToken, call->who.tenant_id,
                                static_cast<int64_t>(req->token_id())});
    FillToken(*out, resp->mutable_token());
    return grpc::Status::OK;
  }

 private:
  const AccessServiceDeps deps_;
};

class AuditServiceImpl final : public v1::AuditService::Service {
 public:
  explicit AuditServiceImpl(AccessServiceDeps deps) : deps_(deps) {}

  grpc::Status List(grpc::ServerContext* ctx, const v1::ListAuditRequest* req,
                    v1::ListAuditResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kRead);
    if (!call.ok()) return ToGrpcStatus(call.status());
    auto before = DecodePageToken(req->page_token());
    if (!before.ok()) return ToGrpcStatus(before.status());
    AuditQuery q;
    q.tenant_id = call->who.tenant_id;
    q.action = req->action();
    if (req->has_since()) q.since = absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(req->since()));
    if (req->has_until()) q.until = absl::FromUnixMicros(TimeUtil::TimestampToMicroseconds(req->until()));
    q.key_id = static_cast<int64_t>(req->key_id());
    q.before_id = static_cast<int64_t>(*before);
    const uint32_t size =
        req->page_size() == 0 ? kDefaultAuditPage : std::min(req->page_size(), kMaxAuditPage);
    q.limit = static_cast<int>(size);
    auto rows = deps_.access->ListAudit(q);
    if (!rows.ok()) return ToGrpcStatus(rows.status());
    for (const AuditRecord& a : *rows) {
      v1::AuditEntry* e = resp->add_entries();
      e->set_audit_id(static_cast<uint64_t>(a.audit_id));
      e->set_tenant(a.tenant);
      *e->mutable_at() = ToTimestamp(a.at);
      e->set_key_id(static_cast<uint64_t>(a.key_id));
      e->set_key_name(a.key_name);
      e->set_action(a.action);
      e->set_target(a.target);
      e->set_summary(a.summary);
      e->set_request_id(a.request_id);
    }
    if (rows->size() == size && rows->back().audit_id > 1) {
      resp->set_next_page_token(EncodePageToken(static_cast<uint64_t>(rows->back().audit_id)));
    }
    return grpc::Status::OK;
  }

 private:
  const AccessServiceDeps deps_;
};

}  // namespace

std::vector<std::unique_ptr<grpc::Service>> CreateAccessServices(AccessServiceDeps deps) {
  std::vector<std::unique_ptr<grpc::Service>> out;
  out.push_back(std::make_unique<TenantServiceImpl>(deps));
  out.push_back(std::make_unique<KeyServiceImpl>(deps));
  out.push_back(std::make_unique<AuditServiceImpl>(deps));
  return out;
}

}  // namespace flexgate::cp
