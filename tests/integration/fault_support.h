// Support for the fault tests (fault_*_test.cc) and the corpus agreement test: a load generator
// that counts every failed request, a small gRPC client for the control plane's operator API,
// and readers for the agent's admin endpoints.
//
// The gRPC client hides grpcpp behind a pointer to an implementation, so this header stays cheap
// to include; it exposes only the generated message types.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "flexgate/v1/config.pb.h"
#include "flexgate/v1/config_service.pb.h"
#include "flexgate/v1/fleet_service.pb.h"
#include "tests/integration/stack.h"

namespace flexgate::testing {

// Sends GET requests through the agent until stopped, on two threads: one over a keep-alive
// connection (reconnecting only when the server closes it), one with a fresh connection per
// request. Every non-2xx answer and every connection or read error is a failure and is counted;
// the first few are kept with their details. Joins its threads on destruction, so a failed
// REQUIRE never leaks a thread.
class LoadGenerator {
 public:
  explicit LoadGenerator(uint16_t port);
  ~LoadGenerator();
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  void Stop();

  int64_t total() const { return total_.load(); }
  int64_t failures() const { return failures_.load(); }
  // 2xx answers whose body starts with "<name> " (the test upstreams answer "NAME GET /path").
  int64_t answered_by(char upstream) const;
  // "N requests (keep-alive K, fresh F; A: a, B: b), M failed: <first failures>".
  std::string Summary() const;

  // Waits until `n` more requests than now have completed (successful or not).
  bool AwaitMore(int64_t n, absl::Duration timeout) const;

 private:
  void Record(const absl::Status& error, int status, const std::string& body, const char* kind);
  void KeepAliveLoop();
  void FreshLoop();

  const uint16_t port_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> total_{0}, keepalive_{0}, fresh_{0}, failures_{0};
  std::atomic<int64_t> by_upstream_[26] = {};
  mutable std::mutex mu_;
  std::vector<std::string> first_failures_;
  std::vector<std::thread> threads_;
};

// The operator API of one flexgate-cp, called with one API key. Each call has a 30 s deadline
// (generous: a loaded CI machine can be slow, and a call ends when its answer arrives).
// Thread-compatible (one thread at a time is enough for the tests).
class CpClient {
 public:
  CpClient(const std::string& address, const std::string& api_key);
  ~CpClient();
  CpClient(const CpClient&) = delete;
  CpClient& operator=(const CpClient&) = delete;

  absl::StatusOr<flexgate::v1::ValidateResponse> Validate(const flexgate::v1::Config& config);
  // `allow_unsupported`: store a config some of the tenant's agents lack a capability for
  // (ApplyRequest.allow_unsupported), which Apply otherwise refuses with FAILED_PRECONDITION.
  absl::StatusOr<flexgate::v1::ApplyResponse> Apply(const flexgate::v1::Config& config,
                                                    const std::string& message,
                                                    bool allow_unsupported = false);
  // Every version of the key's tenant, newest first (all pages).
  absl::StatusOr<std::vector<flexgate::v1::ConfigVersion>> ListAllVersions();
  absl::StatusOr<flexgate::v1::ListAgentsResponse> ListAgents();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// A config for the test upstreams: clusters "a", "b", ... (one per port), a direct-response
// route "version" on exact path /version answering `marker` (so every call can make a distinct
// version), then route "all" on prefix "/" to cluster `route_to`. `extra_routes_yaml` (list items
// indented by two spaces) is inserted before "all".
std::string MarkedConfigYaml(const std::vector<uint16_t>& upstream_ports,
                             absl::string_view route_to, absl::string_view marker,
                             absl::string_view extra_routes_yaml = "");
// The same, parsed; fails the calling test on a parse error (the YAML is ours).
absl::StatusOr<flexgate::v1::Config> MarkedConfig(const std::vector<uint16_t>& upstream_ports,
                                                  absl::string_view route_to,
                                                  absl::string_view marker,
                                                  absl::string_view extra_routes_yaml = "");

// The agent's /health/ready, parsed.
struct AgentReadiness {
  int status = 0;             // HTTP status (0 when the admin port did not answer)
  uint64_t version = 0;       // served version
  std::string source;         // "file", "cache", "control_plane"
  bool control_plane_connected = false;
  std::string body;
};
AgentReadiness GetReadiness(uint16_t admin_port);

// How long the fault tests wait for the agent to converge on a version.
inline constexpr absl::Duration kConverge = absl::Seconds(15);

// The stack of the fault tests that stop or restart the control plane: two upstreams and one
// agent with two workers and a 500 ms cap on its reconnect backoff (the default of 30 s is for
// fleets, not tests).
StackOptions RestartableStackOptions();

// Waits up to kConverge until the agent serves `version` and has written its last-known-good
// cache at least once (the agent writes the cache before it ACKs).
bool AwaitServedAndCached(uint16_t admin_port, uint64_t version);

// One counter of the agent's /stats ("agent.snapshots_rejected", "responses_5xx", ...).
absl::StatusOr<uint64_t> GetAgentStat(uint16_t admin_port, absl::string_view name);

// The agent with this id in `fleet`, or nullptr.
const flexgate::v1::FleetAgent* FindAgent(const flexgate::v1::ListAgentsResponse& fleet,
                                          absl::string_view agent_id);

}  // namespace flexgate::testing
