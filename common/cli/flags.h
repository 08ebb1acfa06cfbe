// ParseFlagsOrExit: the command-line front end of every regtopk binary. Parses absl flags that
// the *_main.cc files define, accepting --flag-name as well as --flag_name, and turns every
// error into one clear line on stderr and exit code 2 (absl's own parser exits 1 and prints
// its whole help on some errors). --help prints the program's flags with their defaults and
// exits 0. Call once, from main, before any other thread starts.
#ifndef REGTOPK_COMMON_CLI_FLAGS_H_
#define REGTOPK_COMMON_CLI_FLAGS_H_

#include <string>

#include "absl/strings/string_view.h"

namespace regtopk {

// `program` names the binary in messages; `usage` is printed above the flag list by --help.
// Positional arguments are an error. Every flag --name-x can also be set by the environment
// variable REGTOPK_NAME_X (FlagEnvironmentVariable); the command line wins. The variables that
// were used are listed in one line on stderr, so a container's log shows its configuration.
void ParseFlagsOrExit(int argc, char** argv, absl::string_view program, absl::string_view usage);

// "REGTOPK_" + the flag's name in upper case with underscores: worker_id -> REGTOPK_WORKER_ID.
std::string FlagEnvironmentVariable(absl::string_view flag_name);

// Whether ParseFlagsOrExit saw flag `name` (underscores or dashes) on the command line or in
// the environment.
bool FlagWasSet(absl::string_view name);

// Prints "PROGRAM: MESSAGE" on stderr and exits 2. For flag values that parse but are invalid.
[[noreturn]] void FlagErrorExit(absl::string_view program, absl::string_view message);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_CLI_FLAGS_H_
