#include "common/cli/flags.h"

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"

namespace regtopk {

void FlagErrorExit(absl::string_view program, absl::string_view message) {
  std::cerr << program << ": " << message << "\n";
  std::exit(2);
}

namespace {

std::set<std::string>& SetFlags() {
  static auto* set = new std::set<std::string>;
  return *set;
}

// Only flags defined in the project's own *_main.cc files are shown and accepted: absl and
// gRPC define flags of their own that a user of these binaries has no business setting.
bool IsOwnFlag(const absl::CommandLineFlag& flag) {
  return absl::EndsWith(flag.Filename(), "_main.cc");
}

void PrintHelp(absl::string_view usage) {
  std::cout << usage
            << "\n\nFlags (--name=value; --flag-name and --flag_name both work). Every flag can "
               "also come from the environment variable in brackets; a flag on the command line "
               "wins over the variable.\n";
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (IsOwnFlag(*flag)) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(), [](auto* a, auto* b) { return a->Name() < b->Name(); });
  for (const absl::CommandLineFlag* flag : flags) {
    std::cout << "  --" << absl::StrReplaceAll(flag->Name(), {{"_", "-"}}) << "  " << flag->Help()
              << " (default: " << (flag->DefaultValue().empty() ? "\"\"" : flag->DefaultValue())
              << ") [" << FlagEnvironmentVariable(flag->Name()) << "]\n";
  }
}

// Parses `value` into `flag` and records it as set; exits with a message naming `source`.
void SetFlagOrExit(absl::CommandLineFlag& flag, const std::string& value, absl::string_view program,
                   absl::string_view source) {
  SetFlags().insert(std::string(flag.Name()));
  std::string error;
  if (!flag.ParseFrom(value, &error)) {
    FlagErrorExit(program, absl::StrCat("bad value for ", source, ": ", error));
  }
}

}  // namespace

std::string FlagEnvironmentVariable(absl::string_view flag_name) {
  return absl::StrCat("REGTOPK_", absl::AsciiStrToUpper(absl::StrReplaceAll(flag_name, {{"-", "_"}})));
}

bool FlagWasSet(absl::string_view name) {
  return SetFlags().count(absl::StrReplaceAll(name, {{"-", "_"}})) > 0;
}

void ParseFlagsOrExit(int argc, char** argv, absl::string_view program, absl::string_view usage) {
  // The environment first, so that the command line overrides it. An empty variable counts as
  // set (to the empty value): a manifest that writes REGTOPK_TLS_CA="" means it.
  std::vector<std::string> from_environment;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!IsOwnFlag(*flag)) continue;
    const std::string variable = FlagEnvironmentVariable(name);
    const char* value = std::getenv(variable.c_str());
    if (value == nullptr) continue;
    SetFlagOrExit(*flag, value, program,
                  absl::StrCat(variable, " (--", absl::StrReplaceAll(name, {{"_", "-"}}), ")"));
    from_environment.push_back(variable);
  }
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h" || arg == "--helpfull") {
      PrintHelp(usage);
      std::exit(0);
    }
    if (!absl::StartsWith(arg, "--") || arg.size() == 2) {
      FlagErrorExit(program, absl::StrCat("unexpected argument '", arg,
                                          "' (flags look like --name=value; see --help)"));
    }
    arg.remove_prefix(2);
    const size_t eq = arg.find('=');
    std::string name = absl::StrReplaceAll(arg.substr(0, eq), {{"-", "_"}});
    const bool has_value = eq != absl::string_view::npos;
    std::string value = has_value ? std::string(arg.substr(eq + 1)) : "";
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no")) {
      // --noflag for a boolean.
      absl::CommandLineFlag* negated = absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>() && IsOwnFlag(*negated)) {
        flag = negated;
        value = "false";
      }
    } else if (flag != nullptr && !has_value) {
      if (!flag->IsOfType<bool>()) {
        FlagErrorExit(program, absl::StrCat("flag --", arg, " needs a value (--", arg, "=...)"));
      }
      value = "true";
    }
    if (flag == nullptr || !IsOwnFlag(*flag)) {
      FlagErrorExit(program, absl::StrCat("unknown flag --", arg.substr(0, eq), " (see --help)"));
    }
    SetFlagOrExit(*flag, value, program, absl::StrCat("--", arg.substr(0, eq)));
  }
  if (!from_environment.empty()) {
    std::sort(from_environment.begin(), from_environment.end());
    std::cerr << program << ": flags from the environment: "
              << absl::StrJoin(from_environment, ", ") << "\n";
  }
}

}  // namespace regtopk
