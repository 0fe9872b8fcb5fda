// flexgate-test-upstream: the test upstream as a program, for integration tests and the demo.
//
//   flexgate-test-upstream --listen 127.0.0.1:PORT --name NAME
//
// Serves until SIGTERM or SIGINT (see tests/harness/http/test_upstream.h for what it answers).
// Prints "listening on 127.0.0.1:PORT" once ready, so a parent can wait for that line when it
// passed port 0.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "tests/harness/http/test_upstream.h"

namespace {

void Usage() {
  std::fprintf(stderr, "usage: flexgate-test-upstream --listen HOST:PORT [--name NAME]\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:0";
  std::string name = "upstream";
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      std::string prefix = std::string(flag) + "=";
      if (arg.rfind(prefix, 0) == 0) return argv[i] + prefix.size();
      if (arg == flag && i + 1 < argc) return argv[++i];
      return nullptr;
    };
    if (const char* v = value("--listen")) {
      listen = v;
    } else if (const char* v2 = value("--name")) {
      name = v2;
    } else if (arg == "--help" || arg == "-h") {
      Usage();
      return 0;
    } else {
      Usage();
      return 2;
    }
  }

  // Block the signals before any thread starts so that only sigwait() below receives them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto server = flexgate::testing::TestUpstream::Start(name, listen);
  if (!server.ok()) {
    std::fprintf(stderr, "flexgate-test-upstream: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  std::string host = listen.substr(0, listen.rfind(':'));
  std::printf("listening on %s:%u\n", host.c_str(), static_cast<unsigned>((*server)->port()));
  std::fflush(stdout);

  int sig = 0;
  sigwait(&set, &sig);
  (*server)->Stop();
  return 0;
}
