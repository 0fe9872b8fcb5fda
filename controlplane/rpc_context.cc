#include "controlplane/rpc_context.h"

#include <openssl/rand.h>

#include "absl/strings/escaping.h"

namespace flexgate::cp {

absl::StatusOr<Caller> AuthorizeCall(grpc::ServerContextBase* ctx, Authenticator* auth,
                                     const std::string& tenant, Access access) {
  std::string header;
  auto it = ctx->client_metadata().find("authorization");
  if (it != ctx->client_metadata().end()) header.assign(it->second.data(), it->second.size());
  auto key = ParseBearer(header);
  if (!key.ok()) return key.status();
  auto who = auth->Authenticate(*key);
  if (!who.ok()) return who.status();
  auto allowed = Authorize(*who, tenant, access);
  if (!allowed.ok()) return allowed.status();
  return Caller{*who, RequestId(ctx)};
}

std::string RequestId(grpc::ServerContextBase* ctx) {
  std::string id;
  auto it = ctx->client_metadata().find("x-request-id");
  if (it != ctx->client_metadata().end() && !it->second.empty() && it->second.size() <= 128) {
    id.assign(it->second.data(), it->second.size());
    for (char c : id) {
      if (c < 0x21 || c > 0x7e) {
        id.clear();
        break;
      }
    }
  }
  if (id.empty()) {
    unsigned char buf[12];
    if (RAND_bytes(buf, sizeof(buf)) != 1) std::abort();  // no randomness: impossible state
    id = absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(buf), sizeof(buf)));
  }
  ctx->AddInitialMetadata("x-request-id", id);
  return id;
}

bool IsOperator(const Principal& who) {
  return who.role == Role::kAdmin && who.tenant_name == kDefaultTenant;
}

}  // namespace flexgate::cp
