// Encode-once framing of Snapshot messages for thousands of agent streams.
//
// A new version is serialized once per replica (version, hash and config: the bulk of the
// bytes). Each stream then only adds its own small fields (nonce, agent id): protobuf fields may
// appear in any order and repeated occurrences of a message merge, so
//
//   frame_header | shared prefix | per-stream suffix
//
// is a valid serialized ControlMessage{snapshot: {...all fields...}}. The header is the tag of
// ControlMessage.snapshot and the total length.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "flexgate/v1/config.pb.h"

namespace flexgate::cp {

// A version prepared for distribution; shared, immutable, across all streams of a tenant.
struct PreparedSnapshot {
  int64_t tenant_id = 0;
  uint64_t version = 0;
  std::string hash;
  // Serialized Snapshot{version, hash, config}, without nonce and agent id.
  std::string prefix;
};

// `config_bytes` is the canonical serialization of the Config (as stored).
std::shared_ptr<const PreparedSnapshot> PrepareSnapshot(int64_t tenant_id, uint64_t version,
                                                        std::string hash,
                                                        const std::string& config_bytes);

struct SnapshotFrame {
  std::string header;  // ControlMessage.snapshot tag + length
  std::string suffix;  // Snapshot{nonce, agent_id}
};

// The per-stream parts that surround `prepared.prefix` on the wire.
SnapshotFrame FrameSnapshot(const PreparedSnapshot& prepared, const std::string& nonce,
                            const std::string& agent_id);

}  // namespace flexgate::cp
