// flexctl: thin entry point over the flexgate_cli library (see flexctl.h for the commands).
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "controlplane/cli/flexctl.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  flexgate::cli::Environment env;
  if (const char* s = std::getenv("FLEXGATE_SERVER")) env.server = s;
  if (const char* t = std::getenv("FLEXGATE_TOKEN")) env.token = t;
  return flexgate::cli::RunFlexctl(args, env, std::cout, std::cerr);
}
