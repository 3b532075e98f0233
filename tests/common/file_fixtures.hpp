// SPDX-License-Identifier: Apache-2.0
// Shared by the reader and bad-input tests: fixture files under the test binary folder, and the
// message of the error a call throws.
#pragma once

#include <recpipe/core/errors.hpp>

#include <filesystem>
#include <fstream>
#include <string>

namespace recpipe::testing {

//! Writes `text` to RECPIPE_TEST_BINARY_DIR/folder/name and returns the path.
inline std::filesystem::path write_fixture_file(const std::string& folder, const std::string& name,
                                                const std::string& text) {
  const std::filesystem::path dir = std::filesystem::path(RECPIPE_TEST_BINARY_DIR) / folder;
  std::filesystem::create_directories(dir);
  const std::filesystem::path path = dir / name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

//! The what() of the `Error` fn throws, or "" when it throws nothing.
template <class Error = recpipe::error, class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace recpipe::testing
