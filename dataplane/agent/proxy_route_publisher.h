// The production RoutePublisher with every knob exposed: how often host-name endpoints are
// re-resolved and by what. The agent uses the defaults through NewProxyRoutePublisher
// (route_publisher.h); tests pass short intervals and a fake resolver to drive the refresh loop
// without waiting for real DNS.
#pragma once

#include <memory>

#include "absl/time/time.h"
#include "dataplane/agent/route_publisher.h"
#include "dataplane/proxy/route_table.h"

namespace flexgate::agent {

struct ProxyRoutePublisherOptions {
  // Re-resolution period while every host name of the last published config resolves.
  absl::Duration refresh = absl::Seconds(30);
  // Re-resolution period while one of them does not.
  absl::Duration retry_unresolved = absl::Seconds(5);
  // Resolves host names, both on Publish (the caller's thread) and on the refresh thread.
  // Empty: getaddrinfo (dataplane::ResolveWithGetaddrinfo). Must be thread-safe.
  dataplane::HostResolver resolver;
};

// As NewProxyRoutePublisher in route_publisher.h. `proxy` must outlive the publisher.
// Destroying the publisher stops its refresh thread promptly, also in the middle of a wait;
// a resolution already under way is awaited.
std::unique_ptr<RoutePublisher> NewProxyRoutePublisher(dataplane::ProxyServer* proxy,
                                                       ProxyRoutePublisherOptions options);

}  // namespace flexgate::agent
