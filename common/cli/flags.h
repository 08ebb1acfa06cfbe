// ParseFlagsOrExit: the command-line front end of every regtopk binary. Parses absl flags that
// the *_main.cc files define, accepting --flag-name as well as --flag_name, and turns every
// error into one clear line on stderr and exit code 2 (absl's own parser exits 1 and prints
// its whole help on some errors). --help prints the program's flags with their defaults and
// exits 0. Call once, from main, before any other thread starts.
#ifndef REGTOPK_COMMON_CLI_FLAGS_H_
#define REGTOPK_COMMON_CLI_FLAGS_H_

#include "absl/strings/string_view.h"

namespace regtopk {

// `program` names the binary in messages; `usage` is printed above the flag list by --help.
// Positional arguments are an error.
void ParseFlagsOrExit(int argc, char** argv, absl::string_view program, absl::string_view usage);

// Whether ParseFlagsOrExit saw flag `name` (underscores or dashes) on the command line.
bool FlagWasSet(absl::string_view name);

// Prints "PROGRAM: MESSAGE" on stderr and exits 2. For flag values that parse but are invalid.
[[noreturn]] void FlagErrorExit(absl::string_view program, absl::string_view message);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_CLI_FLAGS_H_
