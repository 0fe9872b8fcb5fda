// The config corpus (tests/configs/valid, tests/configs/invalid) as the tests read it: the
// files of a directory in order, their text, and their "# <key>: <value>" header comments
// ("# expect: <code> <path>", "# secret: ..."). Header-only; FLEXGATE_CONFIGS_DIR is set by the
// test's CMake target.
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace flexgate::testing::corpus {

// The .yaml, .yml and .json files of FLEXGATE_CONFIGS_DIR/subdir, sorted.
inline std::vector<std::filesystem::path> Files(const std::string& subdir) {
  std::vector<std::filesystem::path> files;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::filesystem::path(FLEXGATE_CONFIGS_DIR) / subdir)) {
    const auto ext = entry.path().extension();
    if (ext == ".yaml" || ext == ".yml" || ext == ".json") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

inline std::string Read(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Values of the header comments "# <key>: <value>", in order.
inline std::vector<std::string> HeaderValues(const std::string& text, const std::string& key) {
  std::vector<std::string> values;
  std::istringstream in(text);
  std::string line;
  const std::string marker = "# " + key + ": ";
  while (std::getline(in, line)) {
    if (line.rfind(marker, 0) == 0) values.push_back(line.substr(marker.size()));
  }
  return values;
}

}  // namespace flexgate::testing::corpus
