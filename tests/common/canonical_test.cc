// The canonical hash must never change for a config that already has one: hashes are stored in
// databases and agent caches. CanonicalBytes takes a fast path (serialize, then walk the bytes)
// and falls back to normalizing a copy only when needed; these tests compare it byte for byte
// with the original definition (kept here as the reference) on every corpus file and on many
// generated configs full of set-but-empty sub-messages at every depth.
#include <catch2/catch.hpp>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "common/canonical.h"
#include "common/config_loader.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/reflection.h"

namespace {

namespace fs = std::filesystem;
using flexgate::v1::Config;
using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// The canonical form as first defined: copy, clear empty non-oneof sub-messages by reflection,
// serialize deterministically. Frozen here on purpose; do not "simplify" it.
void ReferenceClear(Message* message) {
  const Reflection* reflection = message->GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(*message, &fields);
  for (const FieldDescriptor* field : fields) {
    if (field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (field->is_repeated()) {
      for (int i = 0; i < reflection->FieldSize(*message, field); ++i)
        ReferenceClear(reflection->MutableRepeatedMessage(message, field, i));
      continue;
    }
    Message* sub = reflection->MutableMessage(message, field);
    ReferenceClear(sub);
    if (field->containing_oneof() == nullptr && sub->ByteSizeLong() == 0)
      reflection->ClearField(message, field);
  }
}

std::string Deterministic(const Config& config) {
  std::string out;
  google::protobuf::io::StringOutputStream raw(&out);
  google::protobuf::io::CodedOutputStream coded(&raw);
  coded.SetSerializationDeterministic(true);
  config.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

std::string ReferenceBytes(const Config& config) {
  Config copy = config;
  ReferenceClear(&copy);
  return Deterministic(copy);
}

void CheckAgreement(const Config& config) {
  const std::string reference = ReferenceBytes(config);
  REQUIRE(flexgate::CanonicalBytes(config) == reference);
  CHECK(flexgate::ConfigHash(config) == flexgate::Sha256Hex(reference));
  Config in_place = config;
  flexgate::CanonicalizeInPlace(&in_place);
  CHECK(Deterministic(in_place) == reference);
  // Canonical bytes are a fixed point.
  CHECK(flexgate::CanonicalBytes(in_place) == reference);
}

// Fills `message` at random through reflection. Message fields are often set but left empty,
// and nested messages are often made empty only after normalization (a parent whose only
// content is an empty child), which is exactly what the canonical form erases.
void Fill(Message* message, std::mt19937& rng, int depth) {
  const Descriptor* type = message->GetDescriptor();
  const Reflection* reflection = message->GetReflection();
  auto chance = [&](int percent) { return static_cast<int>(rng() % 100) < percent; };
  for (int i = 0; i < type->field_count(); ++i) {
    const FieldDescriptor* field = type->field(i);
    if (!chance(depth == 0 ? 90 : 35)) continue;
    const int count = field->is_repeated() ? static_cast<int>(rng() % 3) + 1 : 1;
    for (int n = 0; n < count; ++n) {
      switch (field->cpp_type()) {
        case FieldDescriptor::CPPTYPE_MESSAGE: {
          Message* sub = field->is_repeated() ? reflection->AddMessage(message, field)
                                              : reflection->MutableMessage(message, field);
          if (depth < 6 && chance(60)) Fill(sub, rng, depth + 1);
          break;
        }
        case FieldDescriptor::CPPTYPE_STRING: {
          std::string v = chance(20) ? "" : "s" + std::to_string(rng() % 1000);
          if (field->is_repeated()) reflection->AddString(message, field, v);
          else reflection->SetString(message, field, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_ENUM: {
          const auto* e = field->enum_type();
          const auto* v = e->value(static_cast<int>(rng() % e->value_count()));
          if (field->is_repeated()) reflection->AddEnum(message, field, v);
          else reflection->SetEnum(message, field, v);
          break;
        }
        case FieldDescriptor::CPPTYPE_BOOL:
          if (field->is_repeated()) reflection->AddBool(message, field, chance(50));
          else reflection->SetBool(message, field, chance(50));
          break;
        case FieldDescriptor::CPPTYPE_INT32:
          if (field->is_repeated()) reflection->AddInt32(message, field, static_cast<int32_t>(rng() % 5) - 1);
          else reflection->SetInt32(message, field, static_cast<int32_t>(rng() % 5) - 1);
          break;
        case FieldDescriptor::CPPTYPE_INT64:
          if (field->is_repeated()) reflection->AddInt64(message, field, static_cast<int64_t>(rng() % 5) - 1);
          else reflection->SetInt64(message, field, static_cast<int64_t>(rng() % 5) - 1);
          break;
        case FieldDescriptor::CPPTYPE_UINT32:
          if (field->is_repeated()) reflection->AddUInt32(message, field, rng() % 70000);
          else reflection->SetUInt32(message, field, rng() % 70000);
          break;
        case FieldDescriptor::CPPTYPE_UINT64:
          if (field->is_repeated()) reflection->AddUInt64(message, field, rng() % 70000);
          else reflection->SetUInt64(message, field, rng() % 70000);
          break;
        case FieldDescriptor::CPPTYPE_DOUBLE:
          if (field->is_repeated()) reflection->AddDouble(message, field, (rng() % 4) * 0.5);
          else reflection->SetDouble(message, field, (rng() % 4) * 0.5);
          break;
        case FieldDescriptor::CPPTYPE_FLOAT:
          if (field->is_repeated()) reflection->AddFloat(message, field, (rng() % 4) * 0.5f);
          else reflection->SetFloat(message, field, (rng() % 4) * 0.5f);
          break;
      }
    }
  }
}

std::vector<fs::path> CorpusFiles() {
  std::vector<fs::path> files;
  for (const char* subdir : {"valid", "invalid"}) {
    for (const auto& entry :
         fs::recursive_directory_iterator(fs::path(FLEXGATE_CONFIGS_DIR) / subdir)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
  }
  return files;
}

}  // namespace

TEST_CASE("canonical bytes equal the reference on every corpus file") {
  int loaded = 0;
  for (const fs::path& file : CorpusFiles()) {
    auto config = flexgate::LoadConfigFile(file.string());
    if (!config.ok()) continue;  // invalid on purpose at the syntax level: nothing to hash
    INFO(file.string());
    CheckAgreement(*config);
    ++loaded;
  }
  // The corpus is dozens of files; an empty or unreadable corpus must not pass silently.
  CHECK(loaded >= 20);
}

TEST_CASE("canonical bytes equal the reference on generated configs with empty sub-messages") {
  std::mt19937 rng(20240611);
  int normalized = 0;
  for (int i = 0; i < 400; ++i) {
    Config config;
    Fill(&config, rng, 0);
    INFO("generated config #" << i);
    CheckAgreement(config);
    if (ReferenceBytes(config) != Deterministic(config)) ++normalized;
  }
  // Both paths of CanonicalBytes must have been taken many times.
  CHECK(normalized > 100);
  CHECK(normalized < 400);
}

TEST_CASE("an explicit empty sub-message does not change the hash but an empty oneof member does") {
  Config base;
  auto* cluster = base.add_clusters();
  cluster->set_name("web");
  Config explicit_empty = base;
  // A set-but-empty singular message outside any oneof, two levels down.
  const Descriptor* type = cluster->GetDescriptor();
  const FieldDescriptor* sub = nullptr;
  for (int i = 0; i < type->field_count() && sub == nullptr; ++i) {
    const FieldDescriptor* f = type->field(i);
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !f->is_repeated() &&
        f->containing_oneof() == nullptr) {
      sub = f;
    }
  }
  REQUIRE(sub != nullptr);
  explicit_empty.mutable_clusters(0)->GetReflection()->MutableMessage(
      explicit_empty.mutable_clusters(0), sub);
  REQUIRE(Deterministic(explicit_empty) != Deterministic(base));
  CHECK(flexgate::ConfigHash(explicit_empty) == flexgate::ConfigHash(base));
  CHECK(flexgate::ConfigHash(Config()) == flexgate::Sha256Hex(""));

  // In a oneof, presence is meaning: an empty redirect is still "this route redirects".
  Config with_route = base;
  with_route.add_routes()->set_name("r");
  Config empty_redirect = with_route;
  empty_redirect.mutable_routes(0)->mutable_redirect();
  CHECK(flexgate::ConfigHash(empty_redirect) != flexgate::ConfigHash(with_route));
  CheckAgreement(empty_redirect);
}
