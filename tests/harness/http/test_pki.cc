#include "tests/harness/http/test_pki.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace flexgate::testing {
namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* p) const { X509_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;

bool AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// Self-signed when `issuer` is null (a CA); otherwise a leaf for `san`.
X509Ptr IssueCert(EVP_PKEY* key, const std::string& cn, const std::string& san, X509* issuer,
                  EVP_PKEY* issuer_key) {
  static std::atomic<long> serial{1};
  X509Ptr cert(X509_new());
  if (cert == nullptr) return nullptr;
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  const bool is_ca = issuer == nullptr;
  X509* signer = is_ca ? cert.get() : issuer;
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  bool ok = AddExtension(cert.get(), signer, NID_subject_key_identifier, "hash");
  if (is_ca) {
    ok = ok && AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE") &&
         AddExtension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    ok = ok && AddExtension(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE") &&
         AddExtension(cert.get(), signer, NID_key_usage, "critical,digitalSignature") &&
         AddExtension(cert.get(), signer, NID_authority_key_identifier, "keyid:always") &&
         AddExtension(cert.get(), signer, NID_subject_alt_name, san);
  }
  if (!ok || X509_sign(cert.get(), is_ca ? key : issuer_key, EVP_sha256()) <= 0) return nullptr;
  return cert;
}

bool WriteCert(const std::string& path, X509* cert) {
  BIO* bio = BIO_new_file(path.c_str(), "w");
  if (bio == nullptr) return false;
  bool ok = PEM_write_bio_X509(bio, cert) == 1;
  BIO_free(bio);
  return ok;
}

bool WriteKey(const std::string& path, EVP_PKEY* key) {
  BIO* bio = BIO_new_file(path.c_str(), "w");
  if (bio == nullptr) return false;
  bool ok = PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1;
  BIO_free(bio);
  return ok;
}

bool IsIpLiteral(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

}  // namespace

struct TestPki::Impl {
  PkeyPtr ca_key;
  X509Ptr ca;
};

TestPki::TestPki(std::string dir, std::unique_ptr<Impl> impl)
    : dir_(std::move(dir)), impl_(std::move(impl)) {}

TestPki::~TestPki() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

absl::StatusOr<std::unique_ptr<TestPki>> TestPki::Create(std::string ca_name) {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "flexgate-pki-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) return absl::InternalError("mkdtemp failed");
  auto impl = std::make_unique<Impl>();
  std::unique_ptr<TestPki> pki(new TestPki(pattern, nullptr));
  impl->ca_key.reset(EVP_EC_gen("P-256"));
  if (impl->ca_key == nullptr) return absl::InternalError("EC key generation failed");
  impl->ca = IssueCert(impl->ca_key.get(), ca_name, "", nullptr, nullptr);
  if (impl->ca == nullptr) return absl::InternalError("CA certificate generation failed");
  if (!WriteCert(pki->ca_file(), impl->ca.get())) {
    return absl::InternalError("cannot write the CA file");
  }
  pki->impl_ = std::move(impl);
  return pki;
}

absl::StatusOr<TestPki::Leaf> TestPki::Issue(const std::string& stem,
                                             const std::vector<std::string>& names) {
  if (names.empty()) return absl::InvalidArgumentError("a certificate needs at least one name");
  std::string san;
  for (const std::string& n : names) {
    if (!san.empty()) san.push_back(',');
    absl::StrAppend(&san, IsIpLiteral(n) ? "IP:" : "DNS:", n);
  }
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (key == nullptr) return absl::InternalError("EC key generation failed");
  X509Ptr cert = IssueCert(key.get(), names.front(), san, impl_->ca.get(), impl_->ca_key.get());
  if (cert == nullptr) return absl::InternalError("certificate generation failed");
  Leaf leaf{File(stem + ".crt"), File(stem + ".key")};
  if (!WriteCert(leaf.cert_file, cert.get()) || !WriteKey(leaf.key_file, key.get())) {
    return absl::InternalError("cannot write the certificate files");
  }
  return leaf;
}

}  // namespace flexgate::testing
