#include "common/canonical.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <vector>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/reflection.h"

namespace flexgate {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// Clears every set-but-empty sub-message ("connect_timeout: 0s", "cors: {}"), which means the
// same as leaving the field out everywhere in the config model. Without this, writing a default
// explicitly would change the hash while the config diff (rightly) shows no change. Members of a
// oneof keep their presence: there it carries meaning (the kind of a match, the route action).
void ClearEmptySubMessages(Message* message) {
  const auto* reflection = message->GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(*message, &fields);
  for (const FieldDescriptor* field : fields) {
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (field->is_repeated()) {
      for (int i = 0; i < reflection->FieldSize(*message, field); ++i)
        ClearEmptySubMessages(reflection->MutableRepeatedMessage(message, field, i));
      continue;
    }
    Message* sub = reflection->MutableMessage(message, field);
    ClearEmptySubMessages(sub);
    if (field->containing_oneof() == nullptr && sub->ByteSizeLong() == 0)
      reflection->ClearField(message, field);
  }
}

}  // namespace

std::string CanonicalBytes(const flexgate::v1::Config& config) {
  flexgate::v1::Config normalized = config;
  ClearEmptySubMessages(&normalized);
  std::string out;
  {
    google::protobuf::io::StringOutputStream raw(&out);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.SetSerializationDeterministic(true);
    normalized.SerializeToCodedStream(&coded);
  }
  return out;
}

std::string ConfigHash(const flexgate::v1::Config& config) {
  return Sha256Hex(CanonicalBytes(config));
}

std::string Sha256Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(len * 2, '0');
  for (unsigned int i = 0; i < len; ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 0xf];
  }
  return out;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace flexgate
