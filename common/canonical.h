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
std::string CanonicalBytes(const flexgate::v1::Config& config);

// Lower-case hex SHA-256 of CanonicalBytes(config).
std::string ConfigHash(const flexgate::v1::Config& config);

// Lower-case hex SHA-256 of arbitrary bytes.
std::string Sha256Hex(std::string_view data);

// Compares two byte strings in time that depends only on their lengths.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace flexgate
