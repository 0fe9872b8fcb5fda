// flexctl's command table, argument parsing, help and dispatch. The commands themselves live in
// commands_config.cc and commands_access.cc.
#include "controlplane/cli/flexctl.h"

#include <algorithm>
#include <functional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "controlplane/cli/commands.h"
#include "flexgate/v1/fleet_service.pb.h"

namespace flexgate::cli {
namespace {

// --- The command table ------------------------------------------------------------------------

// An option: its canonical name, an optional short alias, the placeholder of its value (empty
// for a flag that takes none) and one line of help.
struct OptionSpec {
  const char* name;
  const char* alias;
  const char* value;
  const char* help;
};

// Options every command accepts (--tenant only where the request has a tenant).
const std::vector<OptionSpec>& GlobalOptions() {
  static const auto* options = new std::vector<OptionSpec>{
      {"--server", "", "HOST:PORT", "flexgate-cp gRPC address (default $FLEXGATE_SERVER)"},
      {"--token", "", "KEY", "API key (default $FLEXGATE_TOKEN), sent as \"authorization: Bearer KEY\""},
      {"--tenant", "", "NAME", "tenant to act on (default: the key's own)"},
      {"--output", "-o", "table|json", "output format (default table)"},
      {"--timeout", "", "DURATION", "per-request deadline such as 15s (default 15s)"},
      {"--tls", "", "", "connect with TLS, verifying the server (default: plaintext)"},
      {"--ca-file", "", "FILE", "PEM roots to verify the server with (implies --tls)"},
      {"--cert-file", "", "FILE", "PEM client certificate for mTLS (implies --tls; with --key-file)"},
      {"--key-file", "", "FILE", "PEM private key of --cert-file"},
      {"--help", "-h", "", "show help (flexctl COMMAND --help for one command)"},
  };
  return *options;
}

const std::vector<OptionSpec>& CommandOptions() {
  static const auto* options = new std::vector<OptionSpec>{
      {"--base-version", "", "N", "refuse (conflict) unless the live version is still N (0 = none yet)"},
      {"--message", "-m", "TEXT", "change description recorded with the version"},
      {"--version", "", "N", "a given version instead of the live one"},
      {"--limit", "", "N", "at most N rows (default: all)"},
      {"--page-size", "", "N", "rows per request while following pages (default 1000)"},
      {"--from", "", "N", "older side of the diff (default 0 = the empty config)"},
      {"--to", "", "N", "newer side of the diff (default 0 = the live version)"},
      {"--action", "", "ACTION", "only this action (config.apply, key.create, ...)"},
      {"--since", "", "TIME", "from this time on: RFC 3339 (2024-05-01T12:00:00Z) or an age such as 1h"},
      {"--until", "", "TIME", "before this time: RFC 3339 or an age such as 10m"},
      {"--key-id", "", "ID", "only changes made by this key"},
      {"--name", "", "NAME", "name of the new key or token"},
      {"--role", "", "admin|editor|viewer", "role of the new key"},
      {"--admin-key-name", "", "NAME", "name of the tenant's first admin key (default initial-admin)"},
      {"--all", "", "", "include revoked ones"},
      {"--selector", "", "K=V,...", "only agents carrying every one of these labels"},
      {"--state", "", "STATE", "only agents in this state (repeatable, or S1,S2): disconnected,\n"
                              "stale, drifted, in_sync, rejected, pending"},
  };
  return *options;
}

using CommandFn = std::function<int(const Invocation&, std::ostream&, std::ostream&)>;

struct CommandSpec {
  std::string name;      // "apply", "keys create"
  std::string args;      // "FILE", "[FILE]", "" (shown in help)
  size_t min_args;
  size_t max_args;
  std::vector<std::string> options;  // command options it accepts (canonical names)
  std::vector<std::string> required;  // options it cannot do without
  bool has_tenant;       // whether --tenant applies
  std::string summary;   // help text; the first line is the one-line summary
  CommandFn fn;
};

const std::vector<CommandSpec>& Commands() {
  static const auto* commands = new std::vector<CommandSpec>{
      {"validate", "FILE", 1, 1, {}, {}, true,
       "Check a config (YAML or JSON; \"-\" = stdin). Offline with the shared validator; with\n"
       "--server, the control plane's dry-run: diagnostics, the semantic diff against the live\n"
       "version, the impact (routes, agents) and secret warnings. With --output json, the whole\n"
       "ValidateResponse. Exit 1 when invalid.",
       CmdValidate},
      {"apply", "FILE", 1, 1, {"--base-version", "--message"}, {}, true,
       "Store FILE as the tenant's next config version.", CmdApply},
      {"get", "", 0, 0, {"--version"}, {}, true,
       "Print the live config (or --version N) as YAML, or as JSON with --output json.", CmdGet},
      {"versions", "", 0, 0, {"--limit", "--page-size"}, {}, true,
       "List config versions, newest first, with their convergence: agents that ACKed each\n"
       "version, connected agents serving it, agents that rejected it, commit-to-ACK p50/p99.",
       CmdVersions},
      {"diff", "[FILE]", 0, 1, {"--from", "--to"}, {}, true,
       "Semantic diff between two stored versions (--from 0 = the empty config, --to 0 = the\n"
       "live version), or `diff FILE`: what applying FILE would change against the live version\n"
       "(a dry-run; exit 1 when FILE is invalid).",
       CmdDiff},
      {"rollback", "VERSION", 1, 1, {"--base-version", "--message"}, {}, true,
       "Make the content of an earlier VERSION live again, stored as a new version.", CmdRollback},
      {"audit", "", 0, 0, {"--action", "--since", "--until", "--key-id", "--limit", "--page-size"}, {}, true,
       "The audit trail, newest first (every page).", CmdAudit},
      {"keys create", "", 0, 0, {"--name", "--role"}, {"--name", "--role"}, true,
       "Create an API key. The key is printed once, alone on stdout; it cannot be shown again.",
       CmdKeysCreate},
      {"keys list", "", 0, 0, {"--all"}, {}, true, "List API keys (never their secrets).",
       CmdKeysList},
      {"keys revoke", "ID", 1, 1, {}, {}, true, "Revoke an API key.", CmdKeysRevoke},
      {"tokens create", "", 0, 0, {"--name"}, {"--name"}, true,
       "Create an agent enrollment token (flexgate-agent --token). Printed once, alone on stdout.",
       CmdTokensCreate},
      {"tokens list", "", 0, 0, {"--all"}, {}, true, "List agent enrollment tokens.",
       CmdTokensList},
      {"tokens revoke", "ID", 1, 1, {}, {}, true, "Revoke an agent enrollment token.",
       CmdTokensRevoke},
      {"tenants create", "NAME", 1, 1, {"--admin-key-name"}, {}, false,
       "Create a tenant (operator key only). Its first admin key is printed once, alone on stdout.",
       CmdTenantsCreate},
      {"tenants list", "", 0, 0, {}, {}, false, "List tenants (operator key only).",
       CmdTenantsList},
      {"agents", "", 0, 0, {"--selector", "--state", "--page-size"}, {}, true,
       "List the tenant's agents and their state, then a summary line of state counts.",
       CmdAgents},
      {"agents get", "ID", 1, 1, {}, {}, true, "Show one agent in detail.", CmdAgentsGet},
  };
  return *commands;
}

// Commands that are groups of subcommands; "agents" is both a command and a group.
bool IsGroup(absl::string_view word) {
  return word == "keys" || word == "tokens" || word == "tenants" || word == "agents";
}

const CommandSpec* FindCommand(absl::string_view name) {
  for (const auto& c : Commands()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

// The option spec for a spelling ("-o" or "--output"), global or command; null when unknown.
const OptionSpec* FindOption(absl::string_view spelling) {
  for (const auto* list : {&GlobalOptions(), &CommandOptions()}) {
    for (const auto& o : *list) {
      if (spelling == o.name || (o.alias[0] != '\0' && spelling == o.alias)) return &o;
    }
  }
  return nullptr;
}

bool IsGlobal(absl::string_view name) {
  for (const auto& o : GlobalOptions()) {
    if (name == o.name) return true;
  }
  return false;
}

// --- Help ---------------------------------------------------------------------------------------

std::string OptionLine(const OptionSpec& o) {
  std::string left = absl::StrCat("  ", o.alias[0] != '\0' ? absl::StrCat(o.alias, ", ") : "",
                                  o.name, o.value[0] != '\0' ? absl::StrCat(" ", o.value) : "");
  constexpr size_t kColumn = 28;
  if (left.size() < kColumn) {
    left.resize(kColumn, ' ');
  } else {
    absl::StrAppend(&left, "\n", std::string(kColumn, ' '));
  }
  // Help text continues on following lines at the same column.
  return absl::StrCat(left, absl::StrReplaceAll(o.help, {{"\n", "\n" + std::string(kColumn, ' ')}}),
                      "\n");
}

// "keys create --name NAME --role ROLE", "apply FILE [--base-version N] [--message TEXT]".
std::string Synopsis(const CommandSpec& c) {
  std::string s = c.name;
  if (!c.args.empty()) absl::StrAppend(&s, " ", c.args);
  for (const auto& name : c.options) {
    const OptionSpec* o = FindOption(name);
    bool required = std::find(c.required.begin(), c.required.end(), name) != c.required.end();
    std::string text = o->value[0] != '\0' ? absl::StrCat(o->name, " ", o->value) : o->name;
    absl::StrAppend(&s, " ", required ? text : absl::StrCat("[", text, "]"));
  }
  return s;
}

std::string GlobalOptionsHelp() {
  std::string s = "Global options:\n";
  for (const auto& o : GlobalOptions()) s += OptionLine(o);
  return s;
}

constexpr char kExitHelp[] =
    "Exit status: 0 success or valid; 1 refused or invalid (permission denied, not found,\n"
    "conflict, invalid config); 2 could not run (bad usage, unreadable or malformed file, server\n"
    "unreachable).\n";

std::string HelpOf(const CommandSpec& c) {
  std::string s = absl::StrCat("usage: flexctl [global options] ", Synopsis(c), "\n\n", c.summary,
                               "\n");
  if (!c.options.empty()) {
    s += "\nOptions:\n";
    for (const auto& name : c.options) s += OptionLine(*FindOption(name));
  }
  absl::StrAppend(&s, "\n", GlobalOptionsHelp());
  if (!c.has_tenant) s += "(--tenant does not apply: tenants are the operator's.)\n";
  absl::StrAppend(&s, "\n", kExitHelp);
  return s;
}

// --- Option values ------------------------------------------------------------------------------

absl::Status ParseUint(absl::string_view option, const std::string& value, uint64_t* out) {
  if (!absl::SimpleAtoi(value, out) || absl::StartsWith(value, "-") ||
      absl::StartsWith(value, "+")) {
    return absl::InvalidArgumentError(
        absl::StrCat(option, " needs a non-negative integer, got \"", value, "\""));
  }
  return absl::OkStatus();
}

// RFC 3339, or an age ("90m" = 90 minutes ago).
absl::Status ParseTimeValue(absl::string_view option, const std::string& value,
                            std::optional<absl::Time>* out) {
  absl::Time t;
  std::string error;
  if (absl::ParseTime(absl::RFC3339_full, value, &t, &error)) {
    *out = t;
    return absl::OkStatus();
  }
  absl::Duration age;
  if (absl::ParseDuration(value, &age) && age >= absl::ZeroDuration()) {
    *out = absl::Now() - age;
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      option, " needs an RFC 3339 time such as 2024-05-01T12:00:00Z or an age such as 1h, got \"",
      value, "\""));
}

// "in-sync", "in_sync", "IN_SYNC" -> "IN_SYNC".
absl::Status ParseStates(const std::string& value, std::vector<std::string>* out) {
  for (absl::string_view part : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
    std::string name = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(part));
    std::replace(name.begin(), name.end(), '-', '_');
    v1::FleetAgent::State state;
    if (!v1::FleetAgent::State_Parse(name, &state) || state == v1::FleetAgent::STATE_UNSPECIFIED) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--state must be one of disconnected, stale, drifted, in_sync, rejected, pending; got \"",
          std::string(part), "\""));
    }
    out->push_back(name);
  }
  return absl::OkStatus();
}

absl::Status Apply(const std::string& name, const std::string& value, Invocation* inv) {
  if (name == "--server") {
    inv->server = value;
  } else if (name == "--token") {
    inv->token = value;
  } else if (name == "--tenant") {
    inv->tenant = value;
  } else if (name == "--output") {
    if (value == "table") {
      inv->output = OutputFormat::kTable;
    } else if (value == "json") {
      inv->output = OutputFormat::kJson;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--output must be table or json, got \"", value, "\""));
    }
  } else if (name == "--timeout") {
    if (!absl::ParseDuration(value, &inv->timeout) || inv->timeout <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--timeout needs a duration such as 15s, got \"", value, "\""));
    }
  } else if (name == "--tls") {
    inv->tls = true;
  } else if (name == "--ca-file") {
    if (value.empty()) return absl::InvalidArgumentError("--ca-file needs a file name");
    inv->ca_file = value;
    inv->tls = true;
  } else if (name == "--cert-file") {
    if (value.empty()) return absl::InvalidArgumentError("--cert-file needs a file name");
    inv->cert_file = value;
    inv->tls = true;
  } else if (name == "--key-file") {
    if (value.empty()) return absl::InvalidArgumentError("--key-file needs a file name");
    inv->key_file = value;
    inv->tls = true;
  } else if (name == "--base-version") {
    uint64_t v;
    if (auto st = ParseUint(name, value, &v); !st.ok()) return st;
    inv->base_version = v;
  } else if (name == "--message") {
    inv->message = value;
  } else if (name == "--version") {
    return ParseUint(name, value, &inv->version);
  } else if (name == "--limit") {
    uint64_t v;
    if (auto st = ParseUint(name, value, &v); !st.ok()) return st;
    if (v > UINT32_MAX) return absl::InvalidArgumentError("--limit is too large");
    inv->limit = static_cast<uint32_t>(v);
  } else if (name == "--page-size") {
    uint64_t v;
    if (auto st = ParseUint(name, value, &v); !st.ok()) return st;
    if (v == 0 || v > 1000) return absl::InvalidArgumentError("--page-size must be 1 to 1000");
    inv->page_size = static_cast<uint32_t>(v);
  } else if (name == "--from") {
    return ParseUint(name, value, &inv->from_version);
  } else if (name == "--to") {
    return ParseUint(name, value, &inv->to_version);
  } else if (name == "--action") {
    inv->action = value;
  } else if (name == "--since") {
    return ParseTimeValue(name, value, &inv->since);
  } else if (name == "--until") {
    return ParseTimeValue(name, value, &inv->until);
  } else if (name == "--key-id") {
    return ParseUint(name, value, &inv->key_id);
  } else if (name == "--name" || name == "--admin-key-name") {
    if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(name, " must not be empty"));
    inv->name = value;
  } else if (name == "--role") {
    if (value != "admin" && value != "editor" && value != "viewer") {
      return absl::InvalidArgumentError(
          absl::StrCat("--role must be admin, editor or viewer, got \"", value, "\""));
    }
    inv->role = value;
  } else if (name == "--all") {
    inv->include_revoked = true;
  } else if (name == "--selector") {
    inv->selector = value;
  } else if (name == "--state") {
    return ParseStates(value, &inv->states);
  }
  return absl::OkStatus();
}

std::string ArgCountError(const CommandSpec& c, size_t got, const std::string& first) {
  if (c.max_args == 0) return absl::StrCat(c.name, " takes no arguments, got \"", first, "\"");
  std::string what = c.args;
  what.erase(std::remove(what.begin(), what.end(), '['), what.end());
  what.erase(std::remove(what.begin(), what.end(), ']'), what.end());
  if (c.min_args == c.max_args) return absl::StrCat(c.name, " needs exactly one ", what, " argument");
  return absl::StrCat(c.name, " takes at most one ", what, " argument, got ", got);
}

}  // namespace

std::string Usage() {
  std::string s = "usage: flexctl [global options] COMMAND [command options]\n\nCommands:\n";
  for (const auto& c : Commands()) {
    std::string first_line(c.summary.substr(0, c.summary.find('\n')));
    absl::StrAppend(&s, "  ", Synopsis(c), "\n      ", first_line, "\n");
  }
  absl::StrAppend(&s, "\nCommand options:\n");
  for (const auto& o : CommandOptions()) s += OptionLine(o);
  absl::StrAppend(&s, "\n", GlobalOptionsHelp(), "\n", kExitHelp,
                  "\nRun 'flexctl COMMAND --help' for one command.\n");
  return s;
}

std::string CommandUsage(const std::string& topic) {
  if (topic.empty()) return Usage();
  if (const CommandSpec* c = FindCommand(topic)) {
    if (topic != "agents") return HelpOf(*c);
  }
  // A group: the help of each of its commands.
  std::string s;
  for (const auto& c : Commands()) {
    if (c.name == topic || absl::StartsWith(c.name, absl::StrCat(topic, " "))) {
      if (!s.empty()) s += "\n";
      s += absl::StrCat("usage: flexctl [global options] ", Synopsis(c), "\n\n", c.summary, "\n");
      if (!c.options.empty()) {
        s += "\nOptions:\n";
        for (const auto& name : c.options) s += OptionLine(*FindOption(name));
      }
    }
  }
  if (s.empty()) return Usage();
  absl::StrAppend(&s, "\n", GlobalOptionsHelp(), "\n", kExitHelp);
  return s;
}

absl::StatusOr<Invocation> ParseArgs(const std::vector<std::string>& args, const Environment& env) {
  Invocation inv;
  inv.server = env.server;
  inv.token = env.token;

  // Options are collected first and checked against the command once it is known, so they may
  // appear on either side of it.
  std::vector<std::pair<std::string, std::string>> options;
  std::vector<std::string> positionals;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      positionals.insert(positionals.end(), args.begin() + static_cast<long>(i) + 1, args.end());
      break;
    }
    if (a.size() > 1 && a[0] == '-') {
      std::string spelling = a, value;
      bool has_value = false;
      size_t eq = a.find('=');
      if (eq != std::string::npos && absl::StartsWith(a, "--")) {
        spelling = a.substr(0, eq);
        value = a.substr(eq + 1);
        has_value = true;
      }
      const OptionSpec* o = FindOption(spelling);
      if (o == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown option ", spelling));
      const bool takes_value = o->value[0] != '\0';
      if (!takes_value && has_value) {
        return absl::InvalidArgumentError(absl::StrCat(o->name, " takes no value"));
      }
      if (takes_value && !has_value) {
        if (i + 1 >= args.size()) return absl::InvalidArgumentError(absl::StrCat(a, " needs a value"));
        value = args[++i];
      }
      if (std::string(o->name) == "--help") {
        inv.help = true;
        continue;
      }
      options.emplace_back(o->name, value);
      continue;
    }
    positionals.push_back(a);
  }

  // The command: one word, or a group and its subcommand ("keys create"). "agents" alone lists.
  std::string command;
  size_t used = 0;
  if (!positionals.empty()) {
    command = positionals[0];
    used = 1;
    if (command == "help") {
      inv.help = true;
      positionals.erase(positionals.begin());
      command = positionals.empty() ? "" : positionals[0];
    }
    if (IsGroup(command) && positionals.size() > used) {
      std::string sub = positionals[used];
      if (command == "agents" && sub == "list") {
        ++used;
      } else if (FindCommand(absl::StrCat(command, " ", sub)) != nullptr) {
        command = absl::StrCat(command, " ", sub);
        ++used;
      }
    }
  }
  if (inv.help) {
    inv.help_topic = command;
    return inv;
  }
  if (command.empty()) return absl::InvalidArgumentError("no command given");
  const CommandSpec* spec = FindCommand(command);
  if (spec == nullptr) {
    if (IsGroup(command)) {
      std::vector<std::string> subs;
      for (const auto& c : Commands()) {
        if (absl::StartsWith(c.name, absl::StrCat(command, " "))) subs.push_back(c.name.substr(command.size() + 1));
      }
      return absl::InvalidArgumentError(absl::StrCat(
          command, " needs a subcommand: ", absl::StrJoin(subs, ", "),
          positionals.size() > 1 ? absl::StrCat(" (got \"", positionals[1], "\")") : ""));
    }
    return absl::InvalidArgumentError(absl::StrCat("unknown command \"", command, "\""));
  }
  inv.command = spec->name;
  inv.args.assign(positionals.begin() + static_cast<long>(used), positionals.end());
  if (inv.args.size() < spec->min_args || inv.args.size() > spec->max_args) {
    return absl::InvalidArgumentError(
        ArgCountError(*spec, inv.args.size(), inv.args.empty() ? "" : inv.args[0]));
  }

  std::set<std::string> seen;
  for (const auto& [name, value] : options) {
    bool allowed = IsGlobal(name) ? (name != "--tenant" || spec->has_tenant)
                                  : std::find(spec->options.begin(), spec->options.end(), name) !=
                                        spec->options.end();
    if (!allowed) {
      return absl::InvalidArgumentError(absl::StrCat(name, " is not an option of ", spec->name));
    }
    seen.insert(name);
    if (auto st = Apply(name, value, &inv); !st.ok()) return st;
  }
  for (const auto& name : spec->required) {
    if (seen.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(spec->name, " needs ", name));
    }
  }

  // Arguments that must be ids.
  if (inv.command == "rollback" || inv.command == "keys revoke" || inv.command == "tokens revoke") {
    uint64_t id;
    if (!absl::SimpleAtoi(inv.args[0], &id) || id == 0 || !absl::ascii_isdigit(inv.args[0][0])) {
      return absl::InvalidArgumentError(absl::StrCat(
          inv.command, " needs a positive number as ", spec->args, ", got \"", inv.args[0], "\""));
    }
  }
  if (inv.command == "diff" && !inv.args.empty() && (seen.count("--from") || seen.count("--to"))) {
    return absl::InvalidArgumentError(
        "diff FILE compares FILE with the live version; --from and --to are for stored versions");
  }
  if (inv.since && inv.until && *inv.until <= *inv.since) {
    return absl::InvalidArgumentError("--until must be later than --since");
  }
  return inv;
}

int Run(const Invocation& inv, std::ostream& out, std::ostream& err) {
  if (inv.help) {
    out << CommandUsage(inv.help_topic);
    return kExitOk;
  }
  const CommandSpec* spec = FindCommand(inv.command);
  if (spec == nullptr) {
    err << "flexctl: unknown command \"" << inv.command << "\"\n";
    return kExitCannotRun;
  }
  return spec->fn(inv, out, err);
}

int RunFlexctl(const std::vector<std::string>& args, const Environment& env, std::ostream& out,
               std::ostream& err) {
  auto inv = ParseArgs(args, env);
  if (!inv.ok()) {
    err << "flexctl: " << inv.status().message() << "\n"
        << "Run 'flexctl --help' for usage.\n";
    return kExitCannotRun;
  }
  return Run(*inv, out, err);
}

}  // namespace flexgate::cli
