// RouteTable: a flexgate.v1.Config compiled for the request path.
//
// Immutable once built and shared across worker threads as std::shared_ptr<const RouteTable>.
// A request keeps the table it started with (it holds a reference) until it ends, so a swap
// never changes the routing of an in-flight request.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "flexgate/v1/config.pb.h"

namespace flexgate::dataplane {

class RouteTable;

// Compiles a config that has passed ValidateConfig. Returns INVALID_ARGUMENT for anything the
// compiler cannot represent (the validator should have caught it first).
absl::StatusOr<std::shared_ptr<const RouteTable>> CompileRouteTable(
    const flexgate::v1::Config& config, uint64_t version, std::string hash);

}  // namespace flexgate::dataplane
