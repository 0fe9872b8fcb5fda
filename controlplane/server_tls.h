// Server-side TLS material for flexgate-cp's gRPC listener: the files named by --tls-cert-file,
// --tls-key-file and --tls-client-ca-file, read and checked at start-up so that a wrong path, a
// file without PEM, or a key that does not belong to the certificate stops the server with a
// message naming the flag, instead of failing every handshake later. No gRPC headers here: the
// server turns the result into grpc::SslServerCredentials.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace flexgate::cp {

struct ServerTlsFiles {
  std::string cert_file;       // PEM certificate chain, leaf first
  std::string key_file;        // PEM private key of the leaf
  std::string client_ca_file;  // PEM roots for client certificates; empty = no mTLS
};

struct ServerTlsMaterial {
  std::string cert_chain_pem;
  std::string private_key_pem;
  std::string client_ca_pem;  // empty = clients are not asked for a certificate
  std::string subject;        // the leaf's subject, for the start-up log line
};

// Reads and checks the files. INVALID_ARGUMENT when a key or certificate is given without the
// other, or a client CA without both; NOT_FOUND / PERMISSION_DENIED when a file cannot be read;
// INVALID_ARGUMENT when a file holds no usable PEM or the key does not match the certificate.
absl::StatusOr<ServerTlsMaterial> LoadServerTls(const ServerTlsFiles& files);

}  // namespace flexgate::cp
