// SPDX-License-Identifier: Apache-2.0
// Shared by the libFuzzer harnesses (tests/fuzz/fuzz_*.cpp): input helpers, a per-process temp
// file for the readers that take a path, and the rule that only recpipe::error may escape a
// parser (anything else, or a crash, is a finding).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

namespace recpipe_fuzz {

// Removes the process's temp files and folders at exit.
struct temp_registry {
  std::vector<std::filesystem::path> paths;
  ~temp_registry() {
    for (const auto& p : paths) {
      std::error_code ignored;
      std::filesystem::remove_all(p, ignored);
    }
  }
};

// A path in the temp directory owned by this process (replays run in parallel under ctest, and
// libFuzzer's -fork/-jobs workers are separate processes); removed at exit.
inline std::filesystem::path temp_path(const char* tag) {
  static temp_registry registry;
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::temp_directory_path(ec);
  if (ec) dir = "/tmp";
  std::filesystem::path path = dir / ("recpipe-fuzz-" + std::to_string(::getpid()) + "-" + tag);
  if (std::find(registry.paths.begin(), registry.paths.end(), path) == registry.paths.end()) registry.paths.push_back(path);
  return path;
}

inline void write_file(const std::filesystem::path& path, const std::uint8_t* data, std::size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz harness: cannot write %s\n", path.c_str());
    std::abort();
  }
}

// An invariant the harness checks beyond "does not crash": a violation aborts, which libFuzzer
// and the replay driver report as a finding.
inline void expect(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz harness: invariant violated: %s\n", what);
    std::abort();
  }
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace recpipe_fuzz
