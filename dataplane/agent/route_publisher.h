// RoutePublisher: the seam between the agent's control side and the request path. Production
// code compiles the config into a RouteTable and hands it to every ProxyServer worker
// (NewProxyRoutePublisher); tests of the control side may publish to a stand-in.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "flexgate/v1/config.pb.h"

namespace flexgate::dataplane {
class ProxyServer;
}

namespace flexgate::agent {

class RoutePublisher {
 public:
  virtual ~RoutePublisher() = default;

  // Compiles `config` (already validated) and publishes it. On OK, `done` runs exactly once, on
  // any thread, after every worker serves the new table; on error `done` never runs and the
  // workers keep their current table.
  virtual absl::Status Publish(const flexgate::v1::Config& config, uint64_t version,
                               std::string hash, std::function<void()> done) = 0;
};

// Publishes through CompileRouteTable and ProxyServer::UpdateRouteTable. `proxy` must outlive
// the publisher. While the last published config has host-name endpoints, a background thread
// re-resolves them every `refresh` (every `retry_unresolved` while one does not resolve) and
// republishes the same version when an address changed.
std::unique_ptr<RoutePublisher> NewProxyRoutePublisher(
    dataplane::ProxyServer* proxy, absl::Duration refresh = absl::Seconds(30),
    absl::Duration retry_unresolved = absl::Seconds(5));

}  // namespace flexgate::agent
