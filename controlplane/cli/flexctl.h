// flexctl: the operator's and CI's command line over the FlexGate control-plane API.
//
//   flexctl [--server HOST:PORT] [--token KEY] [--tenant NAME] [--output table|json] CMD ...
//
// Config:  validate, apply, get, versions, diff, rollback
// Access:  keys create|list|revoke, tokens create|list|revoke, tenants create|list, audit
// Fleet:   agents, agents get
// `flexctl --help` lists every command and option; `flexctl CMD --help` one command's.
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
  bool tls = false;     // --tls, or implied by --ca-file
  std::string ca_file;  // PEM roots for TLS; empty = the system's roots
  // Client certificate and key (PEM) for a control plane that requires mTLS; both or neither.
  std::string cert_file;
  std::string key_file;
  bool help = false;
  // With help: the command (or command group such as "keys") to explain; empty = everything.
  std::string help_topic;

  // The command as its full name ("apply", "keys create", "agents get") and its arguments.
  std::string command;
  std::vector<std::string> args;

  // Command options (each command accepts only its own; see Usage()).
  std::optional<uint64_t> base_version;  // apply, rollback
  std::string message;                   // apply, rollback
  uint64_t version = 0;                  // get; 0 = live
  uint32_t limit = 0;                    // versions, audit; 0 = all
  uint32_t page_size = 0;                // versions, audit, agents: rows per request; 0 = 1000
  uint64_t from_version = 0;             // diff; 0 = the empty config
  uint64_t to_version = 0;               // diff; 0 = the live version
  std::string action;                    // audit
  std::optional<absl::Time> since;       // audit
  std::optional<absl::Time> until;       // audit
  uint64_t key_id = 0;                   // audit; 0 = any
  std::string name;                      // keys create, tokens create
  std::string role;                      // keys create
  bool include_revoked = false;          // keys list --all, tokens list --all
  std::string selector;                  // agents: "k=v,k2=v2"
  std::vector<std::string> states;       // agents: FleetAgent.State names, upper case
};

// Parses argv (without the program name). Options may appear before or after the command.
// INVALID_ARGUMENT with a one-line reason for anything malformed.
absl::StatusOr<Invocation> ParseArgs(const std::vector<std::string>& args, const Environment& env);

// Runs a parsed invocation; results go to `out`, errors and diagnostics of refusals to `err`.
int Run(const Invocation& invocation, std::ostream& out, std::ostream& err);

// ParseArgs + Run, printing usage on a usage error. Returns the process exit status.
int RunFlexctl(const std::vector<std::string>& args, const Environment& env, std::ostream& out,
               std::ostream& err);

// The usage text printed by --help: every command and option.
std::string Usage();

// The help of one command ("keys create") or command group ("keys"); Usage() when unknown.
std::string CommandUsage(const std::string& topic);

}  // namespace flexgate::cli
