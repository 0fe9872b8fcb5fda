#include "controlplane/cli/client.h"

#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace flexgate::cli {
namespace {

// The host part of HOST:PORT, "[v6]:PORT" or a gRPC target such as "dns:///host:port".
std::string HostOf(std::string target) {
  if (size_t scheme = target.find(":///"); scheme != std::string::npos) {
    target = target.substr(scheme + 4);
  }
  if (!target.empty() && target[0] == '[') {
    size_t close = target.find(']');
    return close == std::string::npos ? target : target.substr(1, close - 1);
  }
  size_t colon = target.rfind(':');
  return colon == std::string::npos ? target : target.substr(0, colon);
}

bool IsLoopback(const std::string& server) {
  if (absl::StartsWith(server, "unix:")) return true;
  std::string host = HostOf(server);
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

// The contents of a PEM file given by `flag`, or nullopt after telling `err` why not.
std::optional<std::string> ReadPem(const std::string& path, const char* flag, std::ostream& err) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) {
    err << "flexctl: cannot read " << flag << " " << path << "\n";
    return std::nullopt;
  }
  std::ostringstream pem;
  pem << in.rdbuf();
  if (pem.str().find("-----BEGIN ") == std::string::npos) {
    err << "flexctl: " << flag << " " << path << " holds no PEM data\n";
    return std::nullopt;
  }
  return pem.str();
}

}  // namespace

std::unique_ptr<Client> Client::Connect(const Invocation& inv, std::ostream& err) {
  if (inv.server.empty()) {
    err << "flexctl: " << inv.command << " needs a control plane: pass --server HOST:PORT or set "
        << "FLEXGATE_SERVER\n";
    return nullptr;
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (inv.tls || !inv.ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!inv.ca_file.empty()) {
      std::ifstream in(inv.ca_file, std::ios::binary);
      if (!in.is_open()) {
        err << "flexctl: cannot read --ca-file " << inv.ca_file << "\n";
        return nullptr;
      }
      std::ostringstream pem;
      pem << in.rdbuf();
      if (pem.str().find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
        err << "flexctl: --ca-file " << inv.ca_file << " holds no PEM certificate\n";
        return nullptr;
      }
      ssl.pem_root_certs = pem.str();
    }
    if (inv.cert_file.empty() != inv.key_file.empty()) {
      err << "flexctl: --cert-file and --key-file must be given together\n";
      return nullptr;
    }
    if (!inv.cert_file.empty()) {
      auto cert = ReadPem(inv.cert_file, "--cert-file", err);
      auto key = ReadPem(inv.key_file, "--key-file", err);
      if (!cert || !key) return nullptr;
      ssl.pem_cert_chain = *std::move(cert);
      ssl.pem_private_key = *std::move(key);
    }
    credentials = grpc::SslCredentials(ssl);
  } else {
    // The key travels in metadata; in plaintext it is readable by anyone on the path. Loopback
    // (the local and test case) is the one place where that is fine.
    if (!IsLoopback(inv.server)) {
      err << "flexctl: warning: talking to " << inv.server
          << " without TLS; the API key is sent in plaintext (use --tls)\n";
    }
    credentials = grpc::InsecureChannelCredentials();
  }
  return std::unique_ptr<Client>(new Client(inv, grpc::CreateChannel(inv.server, credentials)));
}

Client::Client(const Invocation& inv, const std::shared_ptr<grpc::Channel>& channel)
    : inv_(inv),
      config_(v1::ConfigService::NewStub(channel)),
      tenants_(v1::TenantService::NewStub(channel)),
      keys_(v1::KeyService::NewStub(channel)),
      audit_(v1::AuditService::NewStub(channel)),
      fleet_(v1::FleetService::NewStub(channel)) {}

std::unique_ptr<grpc::ClientContext> Client::Context() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!inv_.token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", inv_.token));
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + inv_.timeout));
  return ctx;
}

int ReportRpcError(const grpc::Status& s, const Invocation& inv, std::ostream& err) {
  const std::string& msg = s.error_message();
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      err << "flexctl: cannot reach flexgate-cp at " << inv.server << ": " << msg << "\n";
      return kExitCannotRun;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      err << "flexctl: no answer from flexgate-cp at " << inv.server << " within "
          << absl::FormatDuration(inv.timeout) << "\n";
      return kExitCannotRun;
    case grpc::StatusCode::ABORTED:
      err << "conflict: " << msg << "\n";
      return kExitRefused;
    case grpc::StatusCode::UNAUTHENTICATED:
      err << "unauthenticated: " << msg << " (set --token or FLEXGATE_TOKEN)\n";
      return kExitRefused;
    case grpc::StatusCode::PERMISSION_DENIED:
      err << "permission denied: " << msg << "\n";
      return kExitRefused;
    case grpc::StatusCode::NOT_FOUND:
      err << "not found: " << msg << "\n";
      return kExitRefused;
    case grpc::StatusCode::ALREADY_EXISTS:
      err << "already exists: " << msg << "\n";
      return kExitRefused;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      err << "refused: " << msg << "\n";
      return kExitRefused;
    case grpc::StatusCode::UNIMPLEMENTED:
      err << "flexctl: flexgate-cp at " << inv.server << " does not implement this call: " << msg
          << "\n";
      return kExitCannotRun;
    default:
      err << "flexctl: server error (code " << static_cast<int>(s.error_code()) << "): " << msg
          << "\n";
      return kExitCannotRun;
  }
}

}  // namespace flexgate::cli
