// The one canonical hash of a FlexGate config.
//
// A snapshot's identity is the SHA-256 of its deterministic protobuf serialization, so the same
// content always has the same hash on the control plane, in flexctl and on every agent.
#pragma once

#include <string>
#include <string_view>

#include "flexgate/v1/config.pb.h"

namespace flexgate {

// Deterministic serialization (map entries sorted, fields in number order), with set-but-empty
// sub-messages outside oneofs cleared first: an explicit default is the same content as none.
// Costs one serialization plus a walk over the bytes; a copy of the message is made only when it
// holds such empty sub-messages. Thread-safe for concurrent calls on one const message.
std::string CanonicalBytes(const flexgate::v1::Config& config);

// Clears the set-but-empty sub-messages outside oneofs in place, so that a caller that owns its
// message can hash, diff and store one normalized message. Serializing the result
// deterministically gives CanonicalBytes(original).
void CanonicalizeInPlace(flexgate::v1::Config* config);

// Lower-case hex SHA-256 of CanonicalBytes(config).
std::string ConfigHash(const flexgate::v1::Config& config);

// Lower-case hex SHA-256 of arbitrary bytes.
std::string Sha256Hex(std::string_view data);

// Compares two byte strings in time that depends only on their lengths.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace flexgate
