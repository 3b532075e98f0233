// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend, HNSW index: the on-disk header in front of hnswlib's body, its checksum and the size limits.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include <recpipe/core/errors.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

// hnswlib's body is written in native byte order; the recpipe header is little-endian too.
static_assert(std::endian::native == std::endian::little,
              "recpipe: HNSW_INDEX_NEEDS_LITTLE_ENDIAN - the index file format is little-endian");

// 64-bit FNV-1a-style hash over 8-byte words with a rotation, then the tail bytes and the length.
// Each step is a bijection of the running state, so any change confined to one word is always
// detected. A corruption check, not a cryptographic one.
inline std::uint64_t index_checksum(const unsigned char* data, std::size_t size) noexcept {
  constexpr std::uint64_t prime = 0x100000001b3ULL;
  std::uint64_t h = 0xcbf29ce484222325ULL;
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    std::uint64_t word;
    std::memcpy(&word, data + i, 8);
    h = std::rotl((h ^ word) * prime, 27);
  }
  for (; i < size; ++i) h = std::rotl((h ^ data[i]) * prime, 27);
  return std::rotl((h ^ static_cast<std::uint64_t>(size)) * prime, 27);
}

// The fixed 80-byte recpipe header in front of hnswlib's saveIndex body.
struct hnsw_file_header {
  static constexpr char magic[8] = {'R', 'E', 'C', 'P', 'H', 'N', 'S', 'W'};
  static constexpr std::uint32_t current_version = 1;
  static constexpr std::size_t size = 80;

  std::uint32_t version = current_version;
  std::uint32_t kind = 0;
  std::uint64_t dim = 0, count = 0, m = 0, ef_construction = 0, seed = 0, body_size = 0, body_checksum = 0;

  void write(unsigned char* out) const {
    std::memcpy(out, magic, 8);
    std::memcpy(out + 8, &version, 4);
    std::memcpy(out + 12, &kind, 4);
    const std::uint64_t fields[7] = {dim, count, m, ef_construction, seed, body_size, body_checksum};
    std::memcpy(out + 16, fields, sizeof(fields));
    const std::uint64_t header_checksum = index_checksum(out, 72);
    std::memcpy(out + 72, &header_checksum, 8);
  }
  // Validates magic, version and the header checksum; the caller checks the values.
  static hnsw_file_header read(const unsigned char* in, const std::string& path) {
    if (std::memcmp(in, magic, 8) != 0)
      fail<io_error>("hnsw_index: load: '", path, "' is not a recpipe HNSW index (bad magic bytes)");
    hnsw_file_header h;
    std::memcpy(&h.version, in + 8, 4);
    if (h.version != current_version)
      fail<io_error>("hnsw_index: load: '", path, "' has format version ", h.version, "; this build reads version ",
                     current_version);
    std::uint64_t stored = 0;
    std::memcpy(&stored, in + 72, 8);
    if (stored != index_checksum(in, 72))
      fail<io_error>("hnsw_index: load: '", path, "': header checksum mismatch (the header is corrupt)");
    std::memcpy(&h.kind, in + 12, 4);
    std::uint64_t fields[7];
    std::memcpy(fields, in + 16, sizeof(fields));
    h.dim = fields[0];
    h.count = fields[1];
    h.m = fields[2];
    h.ef_construction = fields[3];
    h.seed = fields[4];
    h.body_size = fields[5];
    h.body_checksum = fields[6];
    return h;
  }
};

// Limits shared by the constructor and the loader. Element counts must fit hnswlib's 32-bit
// internal ids and the `int` its visited-list pool uses.
inline constexpr std::size_t hnsw_max_dim = std::size_t{1} << 24;
inline constexpr std::size_t hnsw_max_m = 10000;  // hnswlib caps M at 10000 (2M fits a 16-bit count)
inline constexpr std::size_t hnsw_max_elements = static_cast<std::size_t>(std::numeric_limits<int>::max());
inline constexpr int hnsw_max_level = 1024;  // real graphs stay below ~64 levels

}  // namespace detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
