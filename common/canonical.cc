#include "common/canonical.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <cstdint>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/reflection.h"

namespace flexgate {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// Clears every set-but-empty sub-message ("connect_timeout: 0s", "cors: {}"), which means the
// same as leaving the field out everywhere in the config model. Without this, writing a default
// explicitly would change the hash while the config diff (rightly) shows no change. Members of a
// oneof keep their presence: there it carries meaning (the kind of a match, the route action).
//
// This is the definition of the canonical form; NeedsNormalization below only decides, without
// copying, whether running it would change anything.
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

// Reads a base-128 varint; false on truncation or more than 10 bytes.
bool ReadVarint(const uint8_t*& p, const uint8_t* end, uint64_t* out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 70 && p < end; shift += 7) {
    const uint8_t b = *p++;
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      *out = v;
      return true;
    }
  }
  return false;
}

// Walks the wire form [p, end) of a message of type `type` and answers whether
// ClearEmptySubMessages would change it: true when some singular sub-message outside a oneof is
// present with length 0, at any depth. (If ClearEmptySubMessages clears a field, the deepest
// such field had no cleared children, so it was already empty on the wire.) Anything this walk
// does not expect (groups, malformed input) also answers true, which only costs the slow path.
//
// The config model has no map fields; a map would need its entries' value messages normalized
// the way reflection does it, so descriptors with maps also take the slow path.
bool NeedsNormalization(const Descriptor* type, const uint8_t* p, const uint8_t* end) {
  while (p < end) {
    uint64_t tag = 0;
    if (!ReadVarint(p, end, &tag)) return true;
    const uint32_t wire_type = tag & 7;
    const uint64_t number = tag >> 3;
    switch (wire_type) {
      case 0: {  // varint
        uint64_t ignored;
        if (!ReadVarint(p, end, &ignored)) return true;
        break;
      }
      case 1:  // fixed64
        if (end - p < 8) return true;
        p += 8;
        break;
      case 5:  // fixed32
        if (end - p < 4) return true;
        p += 4;
        break;
      case 2: {  // length-delimited: strings, bytes, packed scalars, sub-messages
        uint64_t len = 0;
        if (!ReadVarint(p, end, &len) || len > static_cast<uint64_t>(end - p)) return true;
        const FieldDescriptor* field =
            number <= static_cast<uint64_t>(FieldDescriptor::kMaxNumber)
                ? type->FindFieldByNumber(static_cast<int>(number))
                : nullptr;
        // Unknown fields are kept as they are by the normalization too.
        if (field != nullptr && field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
          if (field->is_map()) return true;
          if (len == 0 && !field->is_repeated() && field->containing_oneof() == nullptr) {
            return true;
          }
          if (NeedsNormalization(field->message_type(), p, p + len)) return true;
        }
        p += len;
        break;
      }
      default:  // groups (not in proto3) and invalid wire types
        return true;
    }
  }
  return false;
}

std::string SerializeDeterministic(const flexgate::v1::Config& config) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream raw(&out);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.SetSerializationDeterministic(true);
    config.SerializeToCodedStream(&coded);
  }
  return out;
}

}  // namespace

void CanonicalizeInPlace(flexgate::v1::Config* config) { ClearEmptySubMessages(config); }

std::string CanonicalBytes(const flexgate::v1::Config& config) {
  // Fast path: serialize as is and check the bytes. Configs seldom spell out empty
  // sub-messages, and a byte walk costs a fraction of copying the message and normalizing it
  // by reflection (the largest part of Validate at 10,000 routes before this).
  std::string out = SerializeDeterministic(config);
  const auto* begin = reinterpret_cast<const uint8_t*>(out.data());
  if (!NeedsNormalization(config.GetDescriptor(), begin, begin + out.size())) return out;
  flexgate::v1::Config normalized = config;
  ClearEmptySubMessages(&normalized);
  return SerializeDeterministic(normalized);
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
