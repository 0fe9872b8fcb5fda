// TestPki: a throwaway public-key infrastructure for TLS tests, generated at test time with the
// OpenSSL API (EC P-256 keys, so it takes milliseconds): a CA and any number of leaf certificates
// for DNS names and IP addresses, written as PEM files into a temporary directory that is removed
// with the object.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace flexgate::testing {

class TestPki {
 public:
  struct Leaf {
    std::string cert_file;
    std::string key_file;
  };

  // A new directory and a self-signed CA named `ca_name` (ca_file()).
  static absl::StatusOr<std::unique_ptr<TestPki>> Create(std::string ca_name = "FlexGate Test CA");
  ~TestPki();  // removes the directory and everything in it
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  // Issues a leaf signed by this CA, valid for `names` ("api.example.com", "*.example.org",
  // "127.0.0.1"; the first is also the subject CN), written as STEM.crt and STEM.key.
  absl::StatusOr<Leaf> Issue(const std::string& stem, const std::vector<std::string>& names);

  const std::string& dir() const { return dir_; }
  std::string ca_file() const { return dir_ + "/ca.crt"; }
  // A file in the directory (for tests that write their own).
  std::string File(const std::string& name) const { return dir_ + "/" + name; }

  struct Impl;

 private:
  TestPki(std::string dir, std::unique_ptr<Impl> impl);
  std::string dir_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flexgate::testing
