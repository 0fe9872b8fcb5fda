#include "controlplane/server_tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace flexgate::cp {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) {
    const int err = errno;
    std::string msg = absl::StrCat(flag, " ", path, ": ", std::strerror(err));
    if (err == EACCES) return absl::PermissionDeniedError(msg);
    return absl::NotFoundError(msg);
  }
  std::ostringstream data;
  data << in.rdbuf();
  if (data.str().find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, " holds no PEM data"));
  }
  return data.str();
}

BioPtr MemBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate of a PEM chain, or null.
X509Ptr FirstCertificate(const std::string& pem) {
  BioPtr bio = MemBio(pem);
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

std::string OpenSslError() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  return buf;
}

}  // namespace

absl::StatusOr<ServerTlsMaterial> LoadServerTls(const ServerTlsFiles& files) {
  if (files.cert_file.empty() != files.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert-file and --tls-key-file must be given together");
  }
  if (files.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca-file needs --tls-cert-file and --tls-key-file (mTLS runs over TLS)");
  }
  ServerTlsMaterial out;
  auto cert = ReadPemFile(files.cert_file, "--tls-cert-file");
  if (!cert.ok()) return cert.status();
  auto key = ReadPemFile(files.key_file, "--tls-key-file");
  if (!key.ok()) return key.status();

  X509Ptr leaf = FirstCertificate(*cert);
  if (leaf == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-cert-file ", files.cert_file,
                                                   " holds no certificate: ", OpenSslError()));
  }
  BioPtr key_bio = MemBio(*key);
  PkeyPtr pkey(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (pkey == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls-key-file ", files.key_file,
                     " holds no unencrypted private key: ", OpenSslError()));
  }
  if (X509_check_private_key(leaf.get(), pkey.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("--tls-key-file ", files.key_file,
                                                   " is not the key of the certificate in ",
                                                   files.cert_file));
  }
  char subject[256] = {};
  X509_NAME_oneline(X509_get_subject_name(leaf.get()), subject, sizeof(subject) - 1);
  out.subject = subject;

  if (!files.client_ca_file.empty()) {
    auto ca = ReadPemFile(files.client_ca_file, "--tls-client-ca-file");
    if (!ca.ok()) return ca.status();
    if (FirstCertificate(*ca) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("--tls-client-ca-file ",
                                                     files.client_ca_file,
                                                     " holds no certificate: ", OpenSslError()));
    }
    out.client_ca_pem = *std::move(ca);
  }
  out.cert_chain_pem = *std::move(cert);
  out.private_key_pem = *std::move(key);
  return out;
}

}  // namespace flexgate::cp
