// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend, HNSW index: file I/O helpers (temporary files, whole-file read/write) and hnswlib error translation.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <new>
#include <random>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

// A file name next to (or inside) `directory` that no other call or process will pick.
inline std::filesystem::path unique_temp_path(const std::filesystem::path& directory, const std::string& stem) {
  static std::atomic<std::uint64_t> counter{0};
  std::random_device device;
  const auto now = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return directory / concat(stem, ".", std::hex, now ^ (static_cast<std::uint64_t>(device()) << 32), ".",
                            counter.fetch_add(1), ".tmp");
}

// Removes a temporary file when it goes out of scope (errors ignored: it is cleanup).
struct temp_file_guard {
  std::filesystem::path path;
  explicit temp_file_guard(std::filesystem::path p) : path(std::move(p)) {}
  temp_file_guard(const temp_file_guard&) = delete;
  temp_file_guard& operator=(const temp_file_guard&) = delete;
  ~temp_file_guard() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
};

inline std::vector<unsigned char> read_index_file(const std::filesystem::path& path, const char* component) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status))
    fail<io_error>(component, ": cannot open '", path.string(), "': no such file");
  if (!std::filesystem::is_regular_file(status))
    fail<io_error>(component, ": cannot open '", path.string(), "': not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail<io_error>(component, ": cannot open '", path.string(), "' for reading");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  if (size < 0) fail<io_error>(component, ": cannot determine the size of '", path.string(), "'");
  std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
    fail<io_error>(component, ": failed to read ", size, " bytes from '", path.string(), "'");
  return bytes;
}

inline void write_index_file(const std::filesystem::path& path, const unsigned char* data, std::size_t size,
                             const char* component) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail<io_error>(component, ": cannot open '", path.string(), "' for writing");
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) fail<io_error>(component, ": failed to write ", size, " bytes to '", path.string(), "'");
}

// Runs an hnswlib call and turns its std::runtime_error (and allocation failures) into
// recpipe::index_error naming the operation.
template <class F>
decltype(auto) call_hnswlib(const char* component, F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const recpipe::error&) {
    throw;
  } catch (const std::bad_alloc&) {
    fail<index_error>(component, ": out of memory inside hnswlib");
  } catch (const std::exception& e) {
    fail<index_error>(component, ": hnswlib failed: ", e.what());
  }
}

}  // namespace detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
