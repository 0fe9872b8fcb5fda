#include "controlplane/fleet_service.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "controlplane/auth.h"
#include "controlplane/fleet_store.h"
#include "controlplane/grpc_status.h"
#include "controlplane/rpc_context.h"
#include "flexgate/v1/fleet_service.grpc.pb.h"

namespace flexgate::cp {
namespace {

namespace v1 = flexgate::v1;

constexpr uint32_t kDefaultPageSize = 100;
constexpr uint32_t kMaxPageSize = 1000;
constexpr char kAgentPageTokenPrefix[] = "after:";

class FleetServiceImpl final : public v1::FleetService::Service {
 public:
  explicit FleetServiceImpl(FleetServiceDeps deps) : deps_(deps) {}

  grpc::Status ListAgents(grpc::ServerContext* ctx, const v1::ListAgentsRequest* req,
                          v1::ListAgentsResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kRead);
    if (!call.ok()) return ToGrpcStatus(call.status());
    FleetQuery q;
    q.tenant_id = call->who.tenant_id;
    q.tenant_name = call->who.tenant_name;
    auto labels = ParseLabelSelector(req->label_selector());
    if (!labels.ok()) return ToGrpcStatus(labels.status());
    q.labels = std::move(labels).value();
    for (int s : req->states()) {
      if (s == v1::FleetAgent::STATE_UNSPECIFIED || !v1::FleetAgent::State_IsValid(s)) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("unknown agent state ", s));
      }
      q.states.push_back(static_cast<v1::FleetAgent::State>(s));
    }
    auto after = DecodeAgentPageToken(req->page_token());
    if (!after.ok()) return ToGrpcStatus(after.status());
    q.after_agent_id = std::move(after).value();
    q.limit = static_cast<int>(req->page_size() == 0 ? kDefaultPageSize
                                                     : std::min(req->page_size(), kMaxPageSize));
    auto page = deps_.fleet->ListAgents(q);
    if (!page.ok()) return ToGrpcStatus(page.status());
    for (auto& a : page->agents) *resp->add_agents() = std::move(a);
    if (page->more && resp->agents_size() > 0) {
      resp->set_next_page_token(EncodeAgentPageToken(resp->agents().rbegin()->agent_id()));
    }
    resp->set_live_version(page->live_version);
    resp->mutable_state_counts()->insert(page->state_counts.begin(), page->state_counts.end());
    resp->set_total(page->total);
    return grpc::Status::OK;
  }

  grpc::Status GetAgent(grpc::ServerContext* ctx, const v1::GetAgentRequest* req,
                        v1::GetAgentResponse* resp) override {
    auto call = AuthorizeCall(ctx, deps_.auth, req->tenant(), Access::kRead);
    if (!call.ok()) return ToGrpcStatus(call.status());
    if (req->agent_id().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "agent_id is required");
    }
    auto agent = deps_.fleet->GetAgent(call->who.tenant_id, call->who.tenant_name, req->agent_id());
    if (!agent.ok()) return ToGrpcStatus(agent.status());
    *resp->mutable_agent() = std::move(agent).value();
    return grpc::Status::OK;
  }

 private:
  const FleetServiceDeps deps_;
};

}  // namespace

std::string EncodeAgentPageToken(const std::string& after_agent_id) {
  return absl::WebSafeBase64Escape(absl::StrCat(kAgentPageTokenPrefix, after_agent_id));
}

absl::StatusOr<std::string> DecodeAgentPageToken(const std::string& token) {
  if (token.empty()) return std::string();
  std::string raw;
  if (!absl::WebSafeBase64Unescape(token, &raw) || !absl::StartsWith(raw, kAgentPageTokenPrefix) ||
      raw.size() == sizeof(kAgentPageTokenPrefix) - 1) {
    return absl::InvalidArgumentError("invalid page_token");
  }
  return raw.substr(sizeof(kAgentPageTokenPrefix) - 1);
}

std::unique_ptr<grpc::Service> CreateFleetService(FleetServiceDeps deps) {
  return std::make_unique<FleetServiceImpl>(deps);
}

}  // namespace flexgate::cp
