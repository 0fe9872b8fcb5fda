#include "dataplane/agent/agent_state.h"

namespace flexgate::agent {

const char* SourceName(SnapshotSource source) {
  switch (source) {
    case SnapshotSource::kFile: return "file";
    case SnapshotSource::kCache: return "cache";
    case SnapshotSource::kControlPlane: return "control_plane";
  }
  return "unknown";
}

std::shared_ptr<const ServedSnapshot> AgentState::served() const {
  absl::MutexLock lock(&mu_);
  return served_;
}

void AgentState::SetServed(std::shared_ptr<const ServedSnapshot> snapshot) {
  absl::MutexLock lock(&mu_);
  served_ = std::move(snapshot);
}

std::string AgentState::agent_id() const {
  absl::MutexLock lock(&mu_);
  return agent_id_;
}

void AgentState::SetAgentId(std::string id) {
  absl::MutexLock lock(&mu_);
  agent_id_ = std::move(id);
}

}  // namespace flexgate::agent
