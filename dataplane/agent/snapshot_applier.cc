#include "dataplane/agent/snapshot_applier.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/canonical.h"
#include "common/log.h"

namespace flexgate::agent {

SnapshotApplier::SnapshotApplier(RoutePublisher* publisher, AgentState* state,
                                 ValidationOptions validation, absl::Duration swap_timeout)
    : publisher_(publisher),
      state_(state),
      validation_(std::move(validation)),
      swap_timeout_(swap_timeout) {}

absl::StatusOr<absl::Duration> SnapshotApplier::Apply(const flexgate::v1::Config& config,
                                                      uint64_t version, const std::string& hash,
                                                      SnapshotSource source, absl::Time received) {
  std::string actual = ConfigHash(config);
  if (actual != hash) {
    return absl::FailedPreconditionError(absl::StrCat(
        "hash_mismatch: snapshot says ", hash, " but its config hashes to ", actual));
  }
  std::vector<flexgate::v1::Diagnostic> diagnostics = ValidateConfig(config, validation_);
  if (!IsValid(diagnostics)) {
    return absl::InvalidArgumentError(
        absl::StrCat("config rejected by the agent's validator:\n", FormatDiagnostics(diagnostics)));
  }

  // The notification outlives this frame if the wait times out, so it is shared with `done`.
  auto swapped = std::make_shared<absl::Notification>();
  if (absl::Status s = publisher_->Publish(config, version, hash, [swapped] { swapped->Notify(); });
      !s.ok()) {
    return s;
  }
  if (!swapped->WaitForNotificationWithTimeout(swap_timeout_)) {
    // Should never happen with live workers; the table may still land later, so say so.
    FG_LOG_ERROR("workers did not confirm the route table swap in time",
                 {{"version", version}, {"timeout_ms", absl::ToInt64Milliseconds(swap_timeout_)}});
    return absl::DeadlineExceededError(absl::StrCat(
        "workers did not confirm serving version ", version, " within ",
        absl::FormatDuration(swap_timeout_)));
  }

  absl::Time now = absl::Now();
  auto served = std::make_shared<ServedSnapshot>();
  served->version = version;
  served->hash = hash;
  served->source = source;
  served->since = now;
  served->apply_duration = now - received;
  served->config = std::make_shared<const flexgate::v1::Config>(config);
  state_->SetServed(std::move(served));
  state_->snapshots_applied.fetch_add(1, std::memory_order_relaxed);
  FG_LOG_INFO("snapshot applied", {{"version", version},
                                   {"hash", hash.substr(0, 12)},
                                   {"source", SourceName(source)},
                                   {"apply_ms", absl::ToDoubleMilliseconds(now - received)}});
  return now - received;
}

}  // namespace flexgate::agent
