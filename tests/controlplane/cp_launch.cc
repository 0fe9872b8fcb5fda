// LaunchCp (cp_test_support.h): the part of the control-plane test support that programs other
// than Catch2 tests link, so it must not use Catch2.
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "tests/controlplane/cp_test_support.h"
#include "tests/harness/proc/test_util.h"

namespace flexgate::testing {
namespace {

absl::StatusOr<uint16_t> AwaitPort(Process& proc, const std::string& field,
                                   absl::Duration timeout) {
  auto text = proc.WaitForLogMatch(absl::StrCat("\"", field, "\":(\\d+)"), timeout);
  if (!text.ok()) return text.status();
  int port = 0;
  if (!absl::SimpleAtoi(*text, &port) || port <= 0 || port > 65535) {
    return absl::InternalError(absl::StrCat("flexgate-cp logged ", field, " ", *text));
  }
  return static_cast<uint16_t>(port);
}

}  // namespace

ProcessOptions CpProcessOptions(const CpLaunchOptions& options) {
  ProcessOptions o;
  o.args = {BinaryPath("flexgate-cp"), "--listen", options.listen, "--admin", "127.0.0.1:0",
            "--database-url", options.database_url};
  if (options.shutdown_grace_seconds.has_value()) {
    o.args.push_back("--shutdown-grace");
    o.args.push_back(absl::StrCat(*options.shutdown_grace_seconds));
  }
  o.args.insert(o.args.end(), options.extra_args.begin(), options.extra_args.end());
  // Only the URL given counts, and only the key given: the developer's shell must not leak in.
  o.unset_env = {"FLEXGATE_DATABASE_URL"};
  if (options.bootstrap_key.empty()) {
    o.unset_env.push_back("FLEXGATE_BOOTSTRAP_ADMIN_KEY");
  } else {
    o.env = {{"FLEXGATE_BOOTSTRAP_ADMIN_KEY", options.bootstrap_key}};
  }
  o.stdout_path = options.log_path;
  return o;
}

absl::StatusOr<std::unique_ptr<Process>> LaunchCp(const CpLaunchOptions& options,
                                                  CpPorts* ports) {
  auto proc = Process::Start(CpProcessOptions(options));
  if (!proc.ok()) return proc.status();
  CpPorts found;
  for (auto [field, port] : {std::pair{"grpc_port", &found.grpc},
                             std::pair{"admin_port", &found.admin}}) {
    auto p = AwaitPort(**proc, field, options.start_timeout);
    if (!p.ok()) {
      (*proc)->Terminate(absl::Seconds(5));
      return absl::Status(p.status().code(),
                          absl::StrCat("flexgate-cp did not start: ", p.status().message()));
    }
    *port = *p;
  }
  if (ports != nullptr) *ports = found;
  return proc;
}

}  // namespace flexgate::testing
