// The production RoutePublisher: the only file of the agent library that reaches into the
// request path's compiler and workers.
#include "dataplane/agent/route_publisher.h"
#include "dataplane/proxy/proxy_server.h"
#include "dataplane/proxy/route_table.h"

namespace flexgate::agent {
namespace {

class ProxyRoutePublisher final : public RoutePublisher {
 public:
  explicit ProxyRoutePublisher(dataplane::ProxyServer* proxy) : proxy_(proxy) {}

  absl::Status Publish(const flexgate::v1::Config& config, uint64_t version, std::string hash,
                       std::function<void()> done) override {
    auto table = dataplane::CompileRouteTable(config, version, std::move(hash));
    if (!table.ok()) return table.status();
    proxy_->UpdateRouteTable(*std::move(table), std::move(done));
    return absl::OkStatus();
  }

 private:
  dataplane::ProxyServer* proxy_;
};

}  // namespace

std::unique_ptr<RoutePublisher> NewProxyRoutePublisher(dataplane::ProxyServer* proxy) {
  return std::make_unique<ProxyRoutePublisher>(proxy);
}

}  // namespace flexgate::agent
