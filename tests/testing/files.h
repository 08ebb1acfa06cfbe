// Small file helpers for tests that read what the real binaries wrote: a whole file, its lines,
// and a number out of a JSON line or a Prometheus text. For tests only.
#ifndef REGTOPK_TESTS_TESTING_FILES_H_
#define REGTOPK_TESTS_TESTING_FILES_H_

#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace regtopk {

inline std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::vector<std::string> Lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The number after "key": in a JSON line, or after "key " at a line start (Prometheus text).
inline double NumberField(const std::string& text, const std::string& key) {
  std::smatch m;
  if (std::regex_search(text, m, std::regex("\"" + key + "\":\\s*([-+0-9.eE]+)")) ||
      std::regex_search(text, m, std::regex("(?:^|\n)" + key + " ([-+0-9.eE]+)"))) {
    return std::stod(m[1].str());
  }
  return NAN;
}

}  // namespace regtopk

#endif  // REGTOPK_TESTS_TESTING_FILES_H_
