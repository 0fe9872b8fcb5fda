// flexctl's commands, one function each: they talk to flexgate-cp (or, for offline validate,
// only to the shared validator), print to `out` (results) and `err` (errors, refusals, warnings)
// and return the exit status. ParseArgs (flexctl.cc) has already checked every argument.
#pragma once

#include <ostream>

#include "controlplane/cli/flexctl.h"

namespace flexgate::cli {

// commands_config.cc: ConfigService.
int CmdValidate(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdApply(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdGet(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdVersions(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdDiff(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdRollback(const Invocation& inv, std::ostream& out, std::ostream& err);

// commands_access.cc: TenantService, KeyService, AuditService, FleetService.
int CmdKeysCreate(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdKeysList(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdKeysRevoke(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdTokensCreate(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdTokensList(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdTokensRevoke(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdTenantsCreate(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdTenantsList(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdAudit(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdAgents(const Invocation& inv, std::ostream& out, std::ostream& err);
int CmdAgentsGet(const Invocation& inv, std::ostream& out, std::ostream& err);

}  // namespace flexgate::cli
