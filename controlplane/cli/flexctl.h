// flexctl: the operator's and CI's command line over the FlexGate control-plane API.
//
//   flexctl [--server HOST:PORT] [--token KEY] [--tenant NAME] [--output table|json] CMD ...
//     validate FILE                     offline with the shared validator; with --server, the
//                                       ConfigService.Validate dry-run
//     apply FILE [--base-version N] [--message TEXT]
//     get [--version N]                 the config as YAML (table) or JSON
//     versions [--limit N]
//
// FILE is YAML or JSON (common/config_loader.h); "-" reads standard input. --server and --token
// default to $FLEXGATE_SERVER and $FLEXGATE_TOKEN. Exit status (DESIGN.md section 8): 0 success
// or valid, 1 refused or invalid (every diagnostic printed as "path: code: message"), 2 could not
// run (bad flags, unreadable or malformed file, server unreachable).
//
// The program is a thin main.cc over this library so that tests run the code that ships. This
// header stays free of gRPC includes.
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace flexgate::cli {

enum ExitCode : int {
  kExitOk = 0,
  kExitRefused = 1,    // invalid config, conflict, permission denied, not found
  kExitCannotRun = 2,  // usage error, unreadable/malformed file, server unreachable
};

enum class OutputFormat { kTable, kJson };

// Defaults taken from the environment (main reads FLEXGATE_SERVER and FLEXGATE_TOKEN).
struct Environment {
  std::string server;
  std::string token;
};

struct Invocation {
  // Global options.
  std::string server;
  std::string token;
  std::string tenant;
  OutputFormat output = OutputFormat::kTable;
  absl::Duration timeout = absl::Seconds(15);
  bool help = false;

  // The command and its arguments.
  std::string command;
  std::vector<std::string> args;
  std::optional<uint64_t> base_version;  // apply
  std::string message;                   // apply
  uint64_t version = 0;                  // get; 0 = live
  uint32_t limit = 0;                    // versions; 0 = all
};

// Parses argv (without the program name). Options may appear before or after the command.
// INVALID_ARGUMENT with a one-line reason for anything malformed.
absl::StatusOr<Invocation> ParseArgs(const std::vector<std::string>& args, const Environment& env);

// Runs a parsed invocation; results go to `out`, errors and diagnostics of refusals to `err`.
int Run(const Invocation& invocation, std::ostream& out, std::ostream& err);

// ParseArgs + Run, printing usage on a usage error. Returns the process exit status.
int RunFlexctl(const std::vector<std::string>& args, const Environment& env, std::ostream& out,
               std::ostream& err);

// The usage text printed by --help.
std::string Usage();

}  // namespace flexgate::cli
