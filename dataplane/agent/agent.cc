#include "dataplane/agent/agent.h"

#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/admin_server.h"
#include "common/canonical.h"
#include "common/config_loader.h"
#include "common/log.h"
#include "common/tls/tls.h"
#include "common/validator.h"
#include "dataplane/agent/agent_admin.h"
#include "dataplane/agent/control_plane_client.h"
#include "dataplane/agent/route_publisher.h"
#include "dataplane/agent/snapshot_applier.h"
#include "dataplane/agent/snapshot_cache.h"
#include "dataplane/proxy/proxy_server.h"

#ifndef FLEXGATE_VERSION
#define FLEXGATE_VERSION "0.0.0-dev"
#endif

namespace flexgate::agent {
namespace {

// What this agent enforces: everything the build supports minus what a test disabled.
std::set<std::string> EnabledCapabilities(const AgentOptions& options) {
  std::set<std::string> caps = AgentCapabilities();
  for (const std::string& name : options.disabled_capabilities) caps.erase(name);
  return caps;
}

ValidationOptions AgentValidation(const AgentOptions& options) {
  ValidationOptions v;
  v.check_capabilities = true;
  v.capabilities = EnabledCapabilities(options);
  return v;
}

class AgentImpl final : public Agent {
 public:
  explicit AgentImpl(AgentOptions options) : options_(std::move(options)) {}
  ~AgentImpl() override { Shutdown(); }

  absl::Status Start() override {
    absl::Status s = StartInternal();
    if (!s.ok()) StopAll(absl::ZeroDuration());
    return s;
  }

  void Shutdown() override {
    if (shut_down_ || !started_) return;
    FG_LOG_INFO("draining", {{"timeout_ms", absl::ToInt64Milliseconds(options_.drain_timeout)}});
    StopAll(options_.drain_timeout);
    FG_LOG_INFO("stopped");
  }

  absl::Status ReloadConfigFile() override {
    if (!options_.static_mode()) return absl::FailedPreconditionError("not in static mode");
    return ApplyConfigFile();
  }

  absl::Status ReloadListenerCertificates() override {
    if (!proxy_ || tls_contexts_.empty()) return absl::OkStatus();
    absl::Status s = proxy_->ReloadListenerCertificates();
    if (s.ok()) {
      FG_LOG_INFO("listener certificates reloaded", {{"listeners", tls_contexts_.size()}});
    } else {
      FG_LOG_ERROR("listener certificate reload failed; the previous certificates keep serving",
                   {{"error", std::string(s.message())}});
    }
    // What every TLS listener serves now, whether it reloaded or not, so that the log always
    // says which certificates are live after a SIGHUP.
    LogListenerCertificates();
    return s;
  }

  size_t tls_listener_count() const override { return tls_contexts_.size(); }

  uint16_t proxy_port(size_t listener) const override {
    return proxy_ ? proxy_->listen_port(listener) : 0;
  }
  uint16_t admin_port() const override { return admin_ ? admin_->port() : 0; }
  const AgentState& state() const override { return state_; }

 private:
  absl::Status StartInternal() {
    started_ = true;
    // 0. Static mode: a config file that does not load or validate stops start-up before any
    //    port is bound, so a broken deploy never half-serves.
    std::optional<flexgate::v1::Config> static_config;
    if (options_.static_mode()) {
      auto config = LoadCheckedConfigFile();
      if (!config.ok()) return config.status();
      static_config = *std::move(config);
    }
    // 1. Identity: flag or bootstrap, else persisted in the cache dir, else assigned by the CP.
    std::string agent_id = options_.agent_id;
    if (agent_id.empty() && !options_.cache_dir.empty()) {
      auto id = LoadOrCreateAgentId(options_.cache_dir);
      if (id.ok()) {
        agent_id = *id;
      } else {
        FG_LOG_WARN("could not persist an agent id; the control plane will assign one",
                    {{"error", id.status().ToString()}});
      }
    }
    state_.SetAgentId(agent_id);

    // 2. Workers. They answer 503 until the first table arrives.
    dataplane::ProxyServerOptions proxy_options;
    proxy_options.listen_addresses = options_.listen_addresses;
    // Listener certificates are read here, once, before any worker runs.
    for (size_t i = 0; i < options_.listener_tls.size(); ++i) {
      if (options_.listener_tls[i].empty()) {
        proxy_options.listen_tls.push_back(nullptr);
        continue;
      }
      tls::TlsServerOptions topts;
      topts.certificates = options_.listener_tls[i];
      if (i < options_.listener_client_ca.size()) {
        topts.client_ca_file = options_.listener_client_ca[i];
      }
      auto ctx = tls::TlsServerContext::Create(std::move(topts));
      if (!ctx.ok()) {
        return absl::Status(ctx.status().code(),
                            absl::StrCat("listener ", options_.listen_addresses[i], ": TLS: ",
                                         ctx.status().message()));
      }
      tls_contexts_.push_back(TlsListener{i, *ctx});
      proxy_options.listen_tls.push_back(*std::move(ctx));
    }
    proxy_options.workers = options_.workers;
    proxy_options.limits = options_.limits;
    auto proxy = dataplane::ProxyServer::Create(proxy_options);
    if (!proxy.ok()) return proxy.status();
    proxy_ = *std::move(proxy);
    if (absl::Status s = proxy_->Start(); !s.ok()) return s;
    publisher_ = NewProxyRoutePublisher(proxy_.get());
    applier_ =
        std::make_unique<SnapshotApplier>(publisher_.get(), &state_, AgentValidation(options_));

    // 3. Admin: up before the first snapshot so /health/live answers and /health/ready says 503.
    auto admin = AdminServer::Create(options_.admin_address);
    if (!admin.ok()) return admin.status();
    admin_ = *std::move(admin);
    dataplane::ProxyServer* proxy_ptr = proxy_.get();
    RegisterAgentAdminHandlers(admin_.get(), &state_,
                               [proxy_ptr] { return proxy_ptr->CollectStats(); });
    if (absl::Status s = admin_->Start(); !s.ok()) return s;

    for (size_t i = 0; i < options_.listen_addresses.size(); ++i) {
      FG_LOG_INFO("listening", {{"address", options_.listen_addresses[i]},
                                {"port", static_cast<unsigned>(proxy_->listen_port(i))},
                                {"workers", options_.workers}});
    }
    FG_LOG_INFO("admin listening", {{"address", options_.admin_address},
                                    {"port", static_cast<unsigned>(admin_->port())}});
    LogListenerCertificates();

    // 4. The first snapshot.
    if (static_config) return ApplyConfig(*static_config, absl::Now());
    LoadFromCache();

    // 5. The control plane.
    ControlPlaneClientOptions cp;
    cp.connection = options_.control_plane;
    cp.labels = options_.labels;
    cp.agent_version = AgentVersion();
    cp.capabilities = EnabledCapabilities(options_);
    auto client = ControlPlaneClient::Create(std::move(cp), applier_.get(), cache_.get(), &state_);
    if (!client.ok()) return client.status();
    client_ = *std::move(client);
    client_->Start();
    return absl::OkStatus();
  }

  // One line per TLS listener: the certificates it presents to new connections (subject,
  // expiry, file) and how many times they were loaded (generation 1 = at start).
  void LogListenerCertificates() const {
    for (const TlsListener& l : tls_contexts_) {
      FG_LOG_INFO("listener certificates",
                  {{"address", options_.listen_addresses[l.index]},
                   {"port", static_cast<unsigned>(proxy_->listen_port(l.index))},
                   {"generation", l.context->generation()},
                   {"certificates", absl::StrJoin(l.context->DescribeCertificates(), "; ")}});
    }
  }

  absl::StatusOr<flexgate::v1::Config> LoadCheckedConfigFile() const {
    auto config = LoadConfigFile(options_.config_file);
    if (!config.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--config ", options_.config_file, ": ", config.status().message()));
    }
    std::vector<flexgate::v1::Diagnostic> diagnostics =
        ValidateConfig(*config, AgentValidation(options_));
    if (!IsValid(diagnostics)) {
      return absl::InvalidArgumentError(absl::StrCat("--config ", options_.config_file,
                                                     " is invalid:\n",
                                                     FormatDiagnostics(diagnostics)));
    }
    return config;
  }

  absl::Status ApplyConfigFile() {
    absl::Time started = absl::Now();
    auto config = LoadCheckedConfigFile();
    if (!config.ok()) return config.status();
    return ApplyConfig(*config, started);
  }

  absl::Status ApplyConfig(const flexgate::v1::Config& config, absl::Time started) {
    // The file has no version of its own; 0 marks "not from a control plane".
    auto applied = applier_->Apply(config, 0, ConfigHash(config), SnapshotSource::kFile, started);
    if (!applied.ok()) {
      return absl::Status(applied.status().code(),
                          absl::StrCat("--config ", options_.config_file, ": ",
                                       applied.status().message()));
    }
    return absl::OkStatus();
  }

  // Serves the last-known-good snapshot at once, before any control plane answers. Every problem
  // is logged and counted, none is fatal: the control plane can still supply a config.
  void LoadFromCache() {
    if (options_.cache_dir.empty()) {
      FG_LOG_WARN("no --cache-dir: the agent cannot serve its last config while the control "
                  "plane is unreachable after a restart");
      return;
    }
    std::vector<std::string> problems;
    auto cache = SnapshotCache::Open(options_.cache_dir, &problems);
    auto report = [this](const std::string& problem) {
      state_.cache_errors.fetch_add(1, std::memory_order_relaxed);
      FG_LOG_ERROR("last-known-good cache problem, skipped", {{"error", problem}});
    };
    for (const auto& p : problems) report(p);
    if (!cache.ok()) {
      report(cache.status().ToString());
      return;
    }
    cache_ = *std::move(cache);
    absl::Time started = absl::Now();
    CacheLoadResult loaded = cache_->Load();
    for (const auto& p : loaded.problems) report(p);
    if (!loaded.snapshot) {
      FG_LOG_INFO("no cached snapshot; waiting for the control plane");
      return;
    }
    const CachedSnapshot& s = *loaded.snapshot;
    auto applied = applier_->Apply(s.config, s.version, s.hash, SnapshotSource::kCache, started);
    if (!applied.ok()) report(absl::StrCat("cached version ", s.version, ": ", applied.status().message()));
  }

  void StopAll(absl::Duration drain) {
    if (shut_down_) return;
    shut_down_ = true;
    state_.SetDraining();
    if (client_) client_->Stop();
    if (proxy_) proxy_->Drain(drain);
    if (admin_) admin_->Stop();
  }

  const AgentOptions options_;
  AgentState state_;
  std::unique_ptr<dataplane::ProxyServer> proxy_;
  std::unique_ptr<RoutePublisher> publisher_;
  std::unique_ptr<SnapshotApplier> applier_;
  std::unique_ptr<SnapshotCache> cache_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<ControlPlaneClient> client_;
  // The TLS listeners' contexts (for the logs; the workers share them and the ProxyServer
  // reloads them).
  struct TlsListener {
    size_t index;  // into options_.listen_addresses
    std::shared_ptr<const tls::TlsServerContext> context;
  };
  std::vector<TlsListener> tls_contexts_;
  bool started_ = false;
  bool shut_down_ = false;
};

}  // namespace

const char* AgentVersion() { return FLEXGATE_VERSION; }

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(AgentOptions options) {
  if (options.listen_addresses.empty()) return absl::InvalidArgumentError("no listen address");
  if (options.workers <= 0) return absl::InvalidArgumentError("workers must be positive");
  return std::unique_ptr<Agent>(new AgentImpl(std::move(options)));
}

}  // namespace flexgate::agent
