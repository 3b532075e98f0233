// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend, HNSW index: the structural validator of an hnswlib 0.6.2 saveIndex body (run before hnswlib parses it).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/hnsw/file_format.hpp>
#include <recpipe/cpu/hnsw/hnswlib.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

// hnswlib's entry point of an empty graph (its constructor stores -1 in the unsigned field).
inline constexpr std::uint32_t hnsw_no_entry_point = 0xFFFFFFFFu;

// Walks an hnswlib 0.6.2 saveIndex body and checks every field and link that loadIndex, the
// insertion and the search trust, so that a file that passes cannot make them read out of
// bounds: layout sizes, element count, the entry point (the "none" value -1 in an empty graph;
// below the count and on the top level otherwise), the level of every node (at most the max
// level), link counts (at most maxM0 / maxM), every neighbour id (below the count, and on the
// level of the link), finite vectors, unique non-negative labels, no trailing bytes. Returns
// the number of elements marked deleted. With `unreachable`, it also receives the live elements
// that no path of links (any level) leads to from the entry point: the graph cannot be trusted
// to find them, so the loader re-inserts them.
inline std::size_t validate_hnsw_body(const unsigned char* body, std::size_t size, const hnsw_file_header& h,
                                      const std::string& path,
                                      std::vector<std::uint32_t>* unreachable = nullptr) {
  std::size_t pos = 0;
  const auto bad = [&](const auto&... what) { fail<io_error>("hnsw_index: load: '", path, "': ", what...); };
  const auto read = [&](auto& value, const char* what) {
    if (size - pos < sizeof(value)) bad("hnswlib body ends while reading ", what, " at byte ", pos);
    std::memcpy(&value, body + pos, sizeof(value));
    pos += sizeof(value);
  };
  std::size_t offset_level0 = 0, max_elements = 0, count = 0, bytes_per_element = 0, label_offset = 0,
              data_offset = 0, max_m = 0, max_m0 = 0, m = 0, ef_construction = 0;
  int max_level = 0;
  unsigned int entry_point = 0;
  double mult = 0;
  read(offset_level0, "offsetLevel0");
  read(max_elements, "max_elements");
  read(count, "element count");
  read(bytes_per_element, "size_data_per_element");
  read(label_offset, "label_offset");
  read(data_offset, "offsetData");
  read(max_level, "maxlevel");
  read(entry_point, "enterpoint_node");
  read(max_m, "maxM");
  read(max_m0, "maxM0");
  read(m, "M");
  read(mult, "mult");
  read(ef_construction, "ef_construction");

  if (count != h.count) bad("body holds ", count, " elements but the header says ", h.count);
  if (count > hnsw_max_elements) bad("element count ", count, " exceeds the limit ", hnsw_max_elements);
  if (max_elements < count) bad("max_elements ", max_elements, " is below the element count ", count);
  if (m != h.m || max_m != m || max_m0 != 2 * m)
    bad("link sizes M=", m, " maxM=", max_m, " maxM0=", max_m0, " do not match the header's M=", h.m);
  if (ef_construction != std::max<std::uint64_t>(h.ef_construction, h.m))
    bad("ef_construction ", ef_construction, " does not match the header's ", h.ef_construction);
  const std::size_t links0_bytes = max_m0 * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
  const std::size_t links_bytes = max_m * sizeof(hnswlib::tableint) + sizeof(hnswlib::linklistsizeint);
  const std::size_t data_bytes = h.dim * sizeof(float);
  if (offset_level0 != 0 || data_offset != links0_bytes || label_offset != links0_bytes + data_bytes ||
      bytes_per_element != links0_bytes + data_bytes + sizeof(hnswlib::labeltype))
    bad("element layout (offsets ", offset_level0, "/", data_offset, "/", label_offset, ", ", bytes_per_element,
        " bytes per element) does not match dim ", h.dim, " and M ", h.m);
  const double expected_mult = 1.0 / std::log(static_cast<double>(m));
  if (!std::isfinite(mult) || std::abs(mult - expected_mult) > 1e-9 * expected_mult)
    bad("level multiplier ", mult, " does not match M ", m);
  if (count == 0) {
    if (max_level != -1) bad("empty graph with max level ", max_level);
    if (entry_point != hnsw_no_entry_point) bad("empty graph with entry point ", entry_point, " (must be none, -1)");
  } else {
    if (max_level < 0 || max_level > hnsw_max_level) bad("max level ", max_level, " is out of range");
    if (entry_point >= count) bad("entry point ", entry_point, " is not below the element count ", count);
  }

  // Level 0: per element [u16 count, u8 flags, u8 0, maxM0 neighbour ids][dim floats][u64 label].
  if ((size - pos) / bytes_per_element < count)
    bad("hnswlib body is truncated: ", count, " elements need ", count, " x ", bytes_per_element, " bytes");
  const unsigned char* level0 = body + pos;
  pos += count * bytes_per_element;
  std::size_t deleted = 0;
  std::vector<std::uint64_t> labels(count);
  std::vector<std::pair<std::uint64_t, std::size_t>> by_label(count);  // (id, element)
  std::vector<bool> is_deleted(count, false);
  for (std::size_t i = 0; i < count; ++i) {
    const unsigned char* element = level0 + i * bytes_per_element;
    std::uint16_t links = 0;
    std::memcpy(&links, element, 2);
    if (links > max_m0) bad("element ", i, " has ", links, " level-0 links (at most ", max_m0, ")");
    if ((element[2] & ~hnswlib::HierarchicalNSW<float>::DELETE_MARK) != 0 || element[3] != 0)
      bad("element ", i, " has unknown flag bits");
    if (element[2] & hnswlib::HierarchicalNSW<float>::DELETE_MARK) {
      ++deleted;
      is_deleted[i] = true;
    }
    for (std::size_t j = 0; j < links; ++j) {
      hnswlib::tableint neighbour = 0;
      std::memcpy(&neighbour, element + 4 + j * 4, 4);
      if (neighbour >= count) bad("element ", i, " links to element ", neighbour, " of ", count);
    }
    for (std::size_t j = 0; j < h.dim; ++j) {
      float value = 0;
      std::memcpy(&value, element + data_offset + j * sizeof(float), sizeof(float));
      if (!std::isfinite(value)) bad("element ", i, " has a non-finite vector value at position ", j);
    }
    std::memcpy(&labels[i], element + label_offset, sizeof(std::uint64_t));
    if (labels[i] > static_cast<std::uint64_t>(std::numeric_limits<id_type>::max()))
      bad("element ", i, " has id ", labels[i], ", beyond the largest id");
    by_label[i] = {labels[i], i};
  }
  // An id may appear more than once only as removed copies ("tombstones", left by replacing a
  // vector while serving) followed by its newest element: hnswlib's loader maps an id to its last
  // element, so every earlier element of the id must be marked deleted.
  std::sort(by_label.begin(), by_label.end());
  for (std::size_t j = 1; j < count; ++j)
    if (by_label[j].first == by_label[j - 1].first && !is_deleted[by_label[j - 1].second])
      bad("id ", by_label[j].first, " appears twice");

  // Upper levels: per element u32 byte size, then `level` blocks of [u32 count, maxM ids].
  std::vector<int> levels(count, 0);
  std::vector<std::size_t> offsets(count, 0);
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t bytes = 0;
    read(bytes, "a link list size");
    if (bytes % links_bytes != 0) bad("element ", i, " has a link list of ", bytes, " bytes (not a multiple of ", links_bytes, ")");
    if (bytes / links_bytes > static_cast<std::size_t>(max_level))
      bad("element ", i, " has level ", bytes / links_bytes, " above the max level ", max_level);
    if (size - pos < bytes) bad("hnswlib body ends inside the link lists of element ", i);
    levels[i] = static_cast<int>(bytes / links_bytes);
    offsets[i] = pos;
    pos += bytes;
  }
  if (pos != size) bad(size - pos, " unexpected bytes after the link lists");
  if (count > 0 && levels[entry_point] != max_level)
    bad("entry point ", entry_point, " has level ", levels[entry_point], " but the max level is ", max_level);
  for (std::size_t i = 0; i < count; ++i) {
    for (int level = 1; level <= levels[i]; ++level) {
      const unsigned char* list = body + offsets[i] + static_cast<std::size_t>(level - 1) * links_bytes;
      std::uint16_t links = 0;
      std::memcpy(&links, list, 2);
      if (links > max_m) bad("element ", i, " has ", links, " links at level ", level, " (at most ", max_m, ")");
      for (std::size_t j = 0; j < links; ++j) {
        hnswlib::tableint neighbour = 0;
        std::memcpy(&neighbour, list + 4 + j * 4, 4);
        if (neighbour >= count || levels[neighbour] < level)
          bad("element ", i, " links at level ", level, " to element ", neighbour, " which is not on that level");
      }
    }
  }
  if (unreachable != nullptr) {
    unreachable->clear();
    if (count == 0) return deleted;
    // Depth-first walk over the links of every level; every link was checked above.
    std::vector<bool> reached(count, false);
    std::vector<std::uint32_t> stack{entry_point};
    reached[entry_point] = true;
    const auto visit = [&](const unsigned char* list) {
      std::uint16_t links = 0;
      std::memcpy(&links, list, 2);
      for (std::size_t j = 0; j < links; ++j) {
        hnswlib::tableint neighbour = 0;
        std::memcpy(&neighbour, list + 4 + j * 4, 4);
        if (!reached[neighbour]) {
          reached[neighbour] = true;
          stack.push_back(neighbour);
        }
      }
    };
    while (!stack.empty()) {
      const std::uint32_t i = stack.back();
      stack.pop_back();
      visit(level0 + i * bytes_per_element);
      for (int level = 1; level <= levels[i]; ++level)
        visit(body + offsets[i] + static_cast<std::size_t>(level - 1) * links_bytes);
    }
    for (std::size_t i = 0; i < count; ++i)
      if (!reached[i] && !is_deleted[i]) unreachable->push_back(static_cast<std::uint32_t>(i));
  }
  return deleted;
}

}  // namespace detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
