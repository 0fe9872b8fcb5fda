// flexgate-agent: flags -> Agent -> wait for a signal -> graceful drain. Everything else lives in
// the flexgate_agent library so tests exercise the code that ships.
//
// Signals: SIGTERM and SIGINT drain and exit 0. SIGHUP reloads what the agent reads from disk:
// --config in static mode (under a control plane the config comes from the stream instead), then,
// in every mode, the certificate and key files of the TLS listeners. They are blocked in every
// thread (the mask is set before any thread starts) and taken here with sigwait, so no handler
// runs at an arbitrary point of a worker, and the file reads happen on this thread, never on a
// worker loop.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "dataplane/agent/agent.h"
#include "dataplane/agent/agent_options.h"

int main(int argc, char** argv) {
  using flexgate::agent::Agent;

  flexgate::InitLogging("agent");
#if defined(FLEXGATE_SSE42) && (defined(__x86_64__) || defined(__i386__))
  // The HTTP parser was built with SSE4.2 instructions (CMake option FLEXGATE_SSE42): say so
  // plainly on a CPU without them instead of dying of an illegal instruction on the first request.
  if (!__builtin_cpu_supports("sse4.2")) {
    FG_LOG_ERROR("this CPU lacks SSE4.2, which this build of the agent needs; rebuild with "
                 "-DFLEXGATE_SSE42=OFF",
                 {});
    return 1;
  }
#endif
  // Debian's Abseil builds a lock graph on every Mutex acquisition (deadlock detection); the
  // agent's locks are few and ordered (control thread -> worker inboxes), so it is pure cost.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::vector<std::string> args(argv + 1, argv + argc);
  auto options = flexgate::agent::ParseAgentFlags(args, [](const char* name) {
    return std::getenv(name);
  });
  if (!options.ok()) {
    FG_LOG_ERROR("bad command line", {{"error", std::string(options.status().message())}});
    std::fprintf(stderr, "flexgate-agent: %s\nRun flexgate-agent --help for usage.\n",
                 std::string(options.status().message()).c_str());
    return 2;
  }
  if (options->show_help) {
    std::fputs(flexgate::agent::AgentUsage().c_str(), stdout);
    return 0;
  }
  if (options->show_version) {
    std::printf("flexgate-agent %s\n", flexgate::agent::AgentVersion());
    return 0;
  }
  flexgate::InitLogging("agent", options->log_level);

  // A peer closing a socket mid-write must be an error code, not process death.
  signal(SIGPIPE, SIG_IGN);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const bool static_mode = options->static_mode();
  auto agent = Agent::Create(*std::move(options));
  if (!agent.ok()) {
    FG_LOG_ERROR("cannot start", {{"error", std::string(agent.status().message())}});
    return 2;
  }
  if (absl::Status s = (*agent)->Start(); !s.ok()) {
    FG_LOG_ERROR("cannot start", {{"error", std::string(s.message())}});
    // Also in plain text: config diagnostics span lines and are meant to be read by a person.
    std::fprintf(stderr, "flexgate-agent: cannot start: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  FG_LOG_INFO("started", {{"version", flexgate::agent::AgentVersion()}});

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      if (static_mode) {
        absl::Status s = (*agent)->ReloadConfigFile();
        if (s.ok()) {
          FG_LOG_INFO("config reloaded");
        } else {
          FG_LOG_ERROR("config reload failed; still serving the previous config",
                       {{"error", std::string(s.message())}});
        }
      }
      if ((*agent)->tls_listener_count() > 0) {
        // Logs its own outcome, listener by listener; a failure changes nothing.
        (void)(*agent)->ReloadListenerCertificates();
      } else if (!static_mode) {
        FG_LOG_INFO("SIGHUP: nothing to reload (the config comes from the control plane and no "
                    "listener serves TLS)");
      }
      continue;
    }
    FG_LOG_INFO("signal received", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
    break;
  }
  (*agent)->Shutdown();
  return 0;
}
