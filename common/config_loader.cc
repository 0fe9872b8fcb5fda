#include "common/config_loader.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "yaml-cpp/yaml.h"

namespace flexgate {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

bool IsWellKnownStringType(const Descriptor* d) {
  const std::string& n = d->full_name();
  return n == "google.protobuf.Duration" || n == "google.protobuf.Timestamp" ||
         n == "google.protobuf.FieldMask";
}

absl::Status YamlToJson(const YAML::Node& node, const Descriptor* desc, const std::string& path,
                        std::string& out);

// Emits a scalar for a field of the given type. Plain YAML scalars are unquoted for numbers and
// booleans so the JSON parser sees the type it expects; strings and enums are always quoted.
absl::Status ScalarToJson(const YAML::Node& node, const FieldDescriptor* field,
                          const std::string& path, std::string& out) {
  if (!node.IsScalar()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": expected a scalar value"));
  }
  const std::string& s = node.Scalar();
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_BOOL: {
      std::string lower = absl::AsciiStrToLower(s);
      if (lower == "true" || lower == "false") {
        out += lower;
        return absl::OkStatus();
      }
      return absl::InvalidArgumentError(absl::StrCat(path, ": expected true or false, got \"", s, "\""));
    }
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64:
    case FieldDescriptor::CPPTYPE_FLOAT:
    case FieldDescriptor::CPPTYPE_DOUBLE:
      // Quoted numbers are accepted by the proto3 JSON mapping and keep 64-bit values exact.
      AppendJsonString(out, s);
      return absl::OkStatus();
    case FieldDescriptor::CPPTYPE_ENUM: {
      // The JSON mapping takes an enum by name or by number; a plain (unquoted) YAML integer is
      // a number, so it must reach the parser unquoted ("9" in quotes would be looked up as a name).
      int value = 0;
      if (node.Tag() == "?" && absl::SimpleAtoi(s, &value)) {
        absl::StrAppend(&out, value);
        return absl::OkStatus();
      }
      AppendJsonString(out, s);
      return absl::OkStatus();
    }
    default:
      AppendJsonString(out, s);
      return absl::OkStatus();
  }
}

// Generic conversion for values with no descriptor (unknown fields, Struct): the JSON parser will
// report unknown fields by name, so only the shape matters here.
void GenericYamlToJson(const YAML::Node& node, std::string& out) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      out.push_back('{');
      bool first = true;
      for (const auto& kv : node) {
        if (!first) out.push_back(',');
        first = false;
        AppendJsonString(out, kv.first.Scalar());
        out.push_back(':');
        GenericYamlToJson(kv.second, out);
      }
      out.push_back('}');
      break;
    }
    case YAML::NodeType::Sequence: {
      out.push_back('[');
      bool first = true;
      for (const auto& v : node) {
        if (!first) out.push_back(',');
        first = false;
        GenericYamlToJson(v, out);
      }
      out.push_back(']');
      break;
    }
    case YAML::NodeType::Scalar:
      AppendJsonString(out, node.Scalar());
      break;
    default:
      out += "null";
  }
}

absl::Status FieldValueToJson(const YAML::Node& node, const FieldDescriptor* field,
                              const std::string& path, std::string& out) {
  if (node.IsNull()) {
    out += "null";
    return absl::OkStatus();
  }
  if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    const Descriptor* sub = field->message_type();
    if (IsWellKnownStringType(sub)) {
      if (!node.IsScalar()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": expected a string such as \"5s\""));
      }
      AppendJsonString(out, node.Scalar());
      return absl::OkStatus();
    }
    return YamlToJson(node, sub, path, out);
  }
  return ScalarToJson(node, field, path, out);
}

absl::Status YamlToJson(const YAML::Node& node, const Descriptor* desc, const std::string& path,
                        std::string& out) {
  if (!node.IsMap()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.empty() ? "config" : path, ": expected a mapping (", desc->name(), ")"));
  }
  out.push_back('{');
  bool first = true;
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": mapping keys must be strings"));
    }
    const std::string& key = kv.first.Scalar();
    std::string child_path = path.empty() ? key : absl::StrCat(path, ".", key);
    if (!first) out.push_back(',');
    first = false;
    AppendJsonString(out, key);
    out.push_back(':');
    const FieldDescriptor* field = desc->FindFieldByName(key);
    for (int f = 0; field == nullptr && f < desc->field_count(); ++f) {
      // The JSON mapping also accepts lowerCamelCase names ("lbPolicy").
      if (desc->field(f)->json_name() == key) field = desc->field(f);
    }
    if (field == nullptr) {
      // Let the JSON parser name the unknown field.
      GenericYamlToJson(kv.second, out);
      continue;
    }
    const YAML::Node& value = kv.second;
    if (field->is_map()) {
      if (!value.IsMap() && !value.IsNull()) {
        return absl::InvalidArgumentError(absl::StrCat(child_path, ": expected a mapping"));
      }
      const FieldDescriptor* value_field = field->message_type()->FindFieldByName("value");
      out.push_back('{');
      bool first_entry = true;
      if (value.IsMap()) {
        for (const auto& entry : value) {
          if (!first_entry) out.push_back(',');
          first_entry = false;
          AppendJsonString(out, entry.first.Scalar());
          out.push_back(':');
          FG_RETURN_IF_ERROR(FieldValueToJson(
              entry.second, value_field, absl::StrCat(child_path, ".", entry.first.Scalar()), out));
        }
      }
      out.push_back('}');
    } else if (field->is_repeated()) {
      if (value.IsNull()) {
        out += "[]";
        continue;
      }
      if (!value.IsSequence()) {
        return absl::InvalidArgumentError(absl::StrCat(child_path, ": expected a list"));
      }
      out.push_back('[');
      for (size_t i = 0; i < value.size(); ++i) {
        if (i > 0) out.push_back(',');
        FG_RETURN_IF_ERROR(
            FieldValueToJson(value[i], field, absl::StrCat(child_path, "[", i, "]"), out));
      }
      out.push_back(']');
    } else {
      FG_RETURN_IF_ERROR(FieldValueToJson(value, field, child_path, out));
    }
  }
  out.push_back('}');
  return absl::OkStatus();
}

absl::Status ParseJson(std::string_view json, google::protobuf::Message* message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), message, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(std::string(status.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseMessageText(std::string_view text, ConfigFormat format,
                              google::protobuf::Message* message) {
  message->Clear();
  if (format == ConfigFormat::kAuto) {
    absl::string_view trimmed = absl::StripLeadingAsciiWhitespace(absl::string_view(text.data(), text.size()));
    format = (!trimmed.empty() && trimmed.front() == '{') ? ConfigFormat::kJson : ConfigFormat::kYaml;
  }
  if (format == ConfigFormat::kJson) return ParseJson(text, message);

  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed YAML: ", e.what()));
  }
  if (root.IsNull()) return absl::OkStatus();  // An empty document is an empty message.
  std::string json;
  json.reserve(text.size() * 2);
  FG_RETURN_IF_ERROR(YamlToJson(root, message->GetDescriptor(), "", json));
  return ParseJson(json, message);
}

absl::Status LoadMessageFile(const std::string& path, google::protobuf::Message* message) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open file"));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  ConfigFormat format = ConfigFormat::kAuto;
  if (absl::EndsWith(path, ".json")) format = ConfigFormat::kJson;
  if (absl::EndsWith(path, ".yaml") || absl::EndsWith(path, ".yml")) format = ConfigFormat::kYaml;
  absl::Status status = ParseMessageText(ss.str(), format, message);
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<flexgate::v1::Config> ParseConfig(std::string_view text, ConfigFormat format) {
  flexgate::v1::Config config;
  FG_RETURN_IF_ERROR(ParseMessageText(text, format, &config));
  return config;
}

absl::StatusOr<flexgate::v1::Config> LoadConfigFile(const std::string& path) {
  flexgate::v1::Config config;
  FG_RETURN_IF_ERROR(LoadMessageFile(path, &config));
  return config;
}

std::string MessageToJson(const google::protobuf::Message& message, bool pretty) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.add_whitespace = pretty;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

namespace {

// Nodes parsed from JSON remember their flow style ({...}, [...]); operators read and diff
// block style, so every collection is switched to it before emitting.
void UseBlockStyle(YAML::Node node) {
  if (node.IsMap()) {
    node.SetStyle(YAML::EmitterStyle::Block);
    for (auto entry : node) UseBlockStyle(entry.second);
  } else if (node.IsSequence()) {
    node.SetStyle(YAML::EmitterStyle::Block);
    for (auto item : node) UseBlockStyle(item);
  }
}

}  // namespace

std::string MessageToYaml(const google::protobuf::Message& message) {
  YAML::Node node = YAML::Load(MessageToJson(message, false));
  UseBlockStyle(node);
  YAML::Emitter emitter;
  emitter << node;
  return std::string(emitter.c_str()) + "\n";
}

}  // namespace flexgate
