#include "controlplane/snapshot_encoding.h"

#include "flexgate/v1/agent.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"

namespace flexgate::cp {
namespace {

using google::protobuf::internal::WireFormatLite;

void AppendBytesField(std::string* out, int field, const std::string& value) {
  google::protobuf::io::StringOutputStream raw(out);
  google::protobuf::io::CodedOutputStream coded(&raw);
  coded.WriteTag(WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
  coded.WriteVarint32(static_cast<uint32_t>(value.size()));
  coded.WriteRaw(value.data(), static_cast<int>(value.size()));
}

}  // namespace

std::shared_ptr<const PreparedSnapshot> PrepareSnapshot(int64_t tenant_id, uint64_t version,
                                                        std::string hash,
                                                        const std::string& config_bytes) {
  auto p = std::make_shared<PreparedSnapshot>();
  p->tenant_id = tenant_id;
  p->version = version;
  p->hash = std::move(hash);
  // Snapshot fields: version = 1, hash = 2, config = 4. The config bytes are embedded as they
  // are stored (already canonical), so the agent's hash of the parsed config matches.
  {
    google::protobuf::io::StringOutputStream raw(&p->prefix);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.WriteTag(WireFormatLite::MakeTag(flexgate::v1::Snapshot::kVersionFieldNumber,
                                           WireFormatLite::WIRETYPE_VARINT));
    coded.WriteVarint64(version);
  }
  AppendBytesField(&p->prefix, flexgate::v1::Snapshot::kHashFieldNumber, p->hash);
  AppendBytesField(&p->prefix, flexgate::v1::Snapshot::kConfigFieldNumber, config_bytes);
  return p;
}

SnapshotFrame FrameSnapshot(const PreparedSnapshot& prepared, const std::string& nonce,
                            const std::string& agent_id) {
  SnapshotFrame f;
  AppendBytesField(&f.suffix, flexgate::v1::Snapshot::kNonceFieldNumber, nonce);
  if (!agent_id.empty()) {
    AppendBytesField(&f.suffix, flexgate::v1::Snapshot::kAgentIdFieldNumber, agent_id);
  }
  {
    // The streams trim and flush into f.header when they go out of scope, before the return.
    google::protobuf::io::StringOutputStream raw(&f.header);
    google::protobuf::io::CodedOutputStream coded(&raw);
    coded.WriteTag(WireFormatLite::MakeTag(flexgate::v1::ControlMessage::kSnapshotFieldNumber,
                                           WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
    coded.WriteVarint32(static_cast<uint32_t>(prepared.prefix.size() + f.suffix.size()));
  }
  return f;
}

}  // namespace flexgate::cp
