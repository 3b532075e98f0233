// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: cpu::hnsw_index::load and everything a loaded index then does (search, add,
// remove, save, load again).
//
// Random bytes almost never pass the file's magic, sizes and two checksums, so the harness
// repairs them: the input is a control byte, an operations byte and an hnswlib body; the harness
// writes the recpipe header for it (magic, version, metric, dim/count/M/ef_construction taken from
// the body, body size, both checksums). Unless control bit 1 is set ("raw"), it also repairs the
// body towards a well-formed graph, using the input bytes as the source of every choice: the
// layout fields (offsets, M, maxM, maxM0, mult) from M and dim, the element count from the bytes
// available, link counts and neighbour ids modulo their bounds, flag bits, finite vectors, ids in
// 0..65535, upper-level list sizes, the entry point and the max level. So most inputs reach the
// structural checks that the loader does for a hostile file (levels, links, entry point,
// duplicates), and many reach hnswlib itself.
//
// Input: byte 0 = control (bit 0: l2 metric; bit 1: raw body; bits 4-7: dim - 1 when repaired),
// byte 1 = operations seed, then the body.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <vector>

#include <recpipe/cpu/hnsw_index.hpp>

#include "fuzz_common.hpp"

namespace {

using recpipe::id_type;

// hnswlib 0.6.2 saveIndex: the fields in front of the level-0 block.
constexpr std::size_t at_max_elements = 8, at_count = 16, at_bytes_per_element = 24, at_label_offset = 32,
                      at_data_offset = 40, at_max_level = 48, at_entry_point = 52, at_max_m = 56, at_max_m0 = 64,
                      at_m = 72, at_mult = 80, at_ef_construction = 88, fields_size = 96;

template <class T>
T get(const std::vector<unsigned char>& body, std::size_t at) {
  T value{};
  if (at + sizeof(T) <= body.size()) std::memcpy(&value, body.data() + at, sizeof(T));
  return value;
}
template <class T>
void put(std::vector<unsigned char>& body, std::size_t at, T value) {
  std::memcpy(body.data() + at, &value, sizeof(T));
}

// Makes `body` a plausible hnswlib body for `dim` (see the file comment); returns false when it
// is too short to hold the fields.
bool repair(std::vector<unsigned char>& body, std::size_t dim) {
  if (body.size() < fields_size) return false;
  // Values already in range stay as they are, so a valid body (the seeds) is left unchanged.
  const auto m_raw = get<std::uint64_t>(body, at_m), ef_raw = get<std::uint64_t>(body, at_ef_construction);
  const std::size_t m = m_raw >= 2 && m_raw <= 16 ? m_raw : 2 + m_raw % 15;
  const std::size_t ef = std::max<std::size_t>(m, ef_raw >= 1 && ef_raw <= 64 ? ef_raw : 1 + ef_raw % 64);
  const std::size_t links0 = 2 * m * 4 + 4, links = m * 4 + 4;
  const std::size_t per_element = links0 + dim * 4 + 8;
  const std::size_t fit = (body.size() - fields_size) / (per_element + 4);
  const std::size_t count = std::min<std::size_t>(get<std::uint64_t>(body, at_count), fit);
  put<std::uint64_t>(body, 0, 0);
  const auto max_elements = get<std::uint64_t>(body, at_max_elements);
  put<std::uint64_t>(body, at_max_elements, max_elements >= count && max_elements <= count + 64 ? max_elements : count + max_elements % 4);
  put<std::uint64_t>(body, at_count, count);
  put<std::uint64_t>(body, at_bytes_per_element, per_element);
  put<std::uint64_t>(body, at_label_offset, links0 + dim * 4);
  put<std::uint64_t>(body, at_data_offset, links0);
  put<std::uint64_t>(body, at_max_m, m);
  put<std::uint64_t>(body, at_max_m0, 2 * m);
  put<std::uint64_t>(body, at_m, m);
  put<double>(body, at_mult, 1.0 / std::log(static_cast<double>(m)));
  put<std::uint64_t>(body, at_ef_construction, ef);
  // Level 0.
  for (std::size_t i = 0; i < count; ++i) {
    unsigned char* e = body.data() + fields_size + i * per_element;
    std::uint16_t n = 0;
    std::memcpy(&n, e, 2);
    n = static_cast<std::uint16_t>(n % (2 * m + 1));
    std::memcpy(e, &n, 2);
    e[2] &= 1;  // the delete mark
    e[3] = 0;
    for (std::size_t j = 0; j < n; ++j) {
      std::uint32_t id = 0;
      std::memcpy(&id, e + 4 + 4 * j, 4);
      id %= static_cast<std::uint32_t>(count);
      std::memcpy(e + 4 + 4 * j, &id, 4);
    }
    for (std::size_t j = 0; j < dim; ++j) {
      float v = 0;
      std::memcpy(&v, e + links0 + 4 * j, 4);
      if (!std::isfinite(v) || std::abs(v) > 1e6f) v = static_cast<float>(j % 7) - 3.0f;
      std::memcpy(e + links0 + 4 * j, &v, 4);
    }
    std::uint64_t label = 0;
    std::memcpy(&label, e + links0 + dim * 4, 8);
    label &= 0xffff;
    std::memcpy(e + links0 + dim * 4, &label, 8);
  }
  // Upper levels: as many as the remaining bytes allow, at most 4.
  std::size_t pos = fields_size + count * per_element;
  std::vector<int> levels(count, 0);
  std::vector<std::size_t> lists(count, 0);
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t raw = 0;
    std::memcpy(&raw, body.data() + pos, 4);
    const std::size_t room = (body.size() - pos - 4 - 4 * (count - 1 - i)) / links;
    const std::size_t wanted = raw % links == 0 && raw / links <= 4 ? raw / links : raw % 5;
    const std::size_t level = std::min<std::size_t>(wanted, room);
    const auto bytes = static_cast<std::uint32_t>(level * links);
    std::memcpy(body.data() + pos, &bytes, 4);
    lists[i] = pos + 4;
    levels[i] = static_cast<int>(level);
    pos += 4 + bytes;
  }
  body.resize(pos);
  int max_level = -1;
  std::uint32_t entry = get<std::uint32_t>(body, at_entry_point);
  if (count > 0) {
    entry %= static_cast<std::uint32_t>(count);
    max_level = levels[entry];
    for (std::size_t i = 0; i < count; ++i)
      for (int level = 1; level <= levels[i]; ++level) {
        unsigned char* list = body.data() + lists[i] + static_cast<std::size_t>(level - 1) * links;
        std::uint16_t n = 0;
        std::memcpy(&n, list, 2);
        n = static_cast<std::uint16_t>(n % (m + 1));
        std::memcpy(list, &n, 2);
        list[2] = list[3] = 0;
        for (std::size_t j = 0; j < n; ++j) {
          std::uint32_t id = 0;
          std::memcpy(&id, list + 4 + 4 * j, 4);
          id %= static_cast<std::uint32_t>(count);
          std::memcpy(list + 4 + 4 * j, &id, 4);
        }
      }
  }
  put<int>(body, at_max_level, max_level);
  put<std::uint32_t>(body, at_entry_point, entry);
  return true;
}

void check_search(const recpipe::cpu::hnsw_index& index, std::size_t k, std::size_t ef, float shift) {
  std::vector<float> query(index.dim());
  for (std::size_t j = 0; j < query.size(); ++j) query[j] = shift + 0.25f * static_cast<float>(j);
  std::vector<id_type> ids(k);
  std::vector<float> scores(k);
  const std::size_t n = index.search(query, k, ids, scores, ef);
  recpipe_fuzz::expect(n == std::min(k, index.size()), "search returns min(k, size()) results");
  for (std::size_t i = 0; i < n; ++i) {
    recpipe_fuzz::expect(index.contains(ids[i]), "search returns live ids only");
    recpipe_fuzz::expect(std::isfinite(scores[i]), "scores are finite");
    if (i > 0) recpipe_fuzz::expect(scores[i - 1] >= scores[i], "results are sorted by score");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t control = data[0], ops = data[1];
  std::vector<unsigned char> body(data + 2, data + size);
  std::size_t dim = 1 + (control >> 4);
  if (control & 2) {
    const auto data_offset = get<std::uint64_t>(body, at_data_offset);
    const auto label_offset = get<std::uint64_t>(body, at_label_offset);
    dim = label_offset > data_offset ? (label_offset - data_offset) / 4 : 0;
  } else if (!repair(body, dim)) {
    return 0;
  }
  recpipe::detail::hnsw_file_header header;
  header.kind = control & 1;
  header.dim = dim;
  header.count = get<std::uint64_t>(body, at_count);
  header.m = get<std::uint64_t>(body, at_m);
  header.ef_construction = get<std::uint64_t>(body, at_ef_construction);
  header.seed = ops;
  header.body_size = body.size();
  header.body_checksum = recpipe::detail::index_checksum(body.data(), body.size());
  std::vector<unsigned char> file(recpipe::detail::hnsw_file_header::size + body.size());
  header.write(file.data());
  if (!body.empty()) std::memcpy(file.data() + recpipe::detail::hnsw_file_header::size, body.data(), body.size());
  const std::filesystem::path path = recpipe_fuzz::temp_path("index.hnsw");
  recpipe_fuzz::write_file(path, file.data(), file.size());

  std::optional<recpipe::cpu::hnsw_index> loaded;
  try {
    loaded.emplace(recpipe::cpu::hnsw_index::load(path));
  } catch (const recpipe::error&) {
    return 0;
  }
  recpipe::cpu::hnsw_index& index = *loaded;
  recpipe_fuzz::expect(index.dim() == dim && index.size() <= header.count, "the loaded index matches its header");
  const std::size_t k = 1 + ops % 8, ef = 1 + (ops >> 3) % 16;
  check_search(index, k, ef, 0.0f);

  // Churn: replace some ids, add new ones, remove most, add again (the pattern that once crashed
  // hnswlib's insertion), searching in between.
  std::vector<float> v(dim);
  const auto vector_for = [&](std::size_t i) {
    for (std::size_t j = 0; j < dim; ++j) v[j] = static_cast<float>((i * 7 + j * 3) % 11) - 5.0f;
    return std::span<const float>(v);
  };
  const std::size_t adds = 1 + (ops >> 4);
  for (std::size_t i = 0; i < adds; ++i) index.add(static_cast<id_type>(i % 3 == 0 ? i : 70000 + i), vector_for(i));
  check_search(index, k, ef, 1.0f);
  {
    // Every live id (a search for all of them), then remove about 90%.
    const std::size_t live = index.size();
    std::vector<id_type> ids(live);
    std::vector<float> scores(live);
    const std::size_t n = index.search(vector_for(0), live, ids, scores, ef);
    recpipe_fuzz::expect(n == live, "a search for size() items returns every live item");
    std::size_t removed = 0;
    for (std::size_t i = 0; i < n; ++i)
      if ((i + ops) % 10 != 0) {
        recpipe_fuzz::expect(index.remove(ids[i]), "a listed id can be removed");
        ++removed;
      }
    recpipe_fuzz::expect(index.size() == live - removed, "size() counts the removals");
  }
  check_search(index, k, ef, -1.0f);
  for (std::size_t i = 0; i < adds; ++i) index.add(static_cast<id_type>(80000 + i), vector_for(i + 1));
  check_search(index, k, ef, 2.0f);

  const std::filesystem::path saved = recpipe_fuzz::temp_path("saved.hnsw");
  index.save(saved);
  const recpipe::cpu::hnsw_index again = recpipe::cpu::hnsw_index::load(saved);
  recpipe_fuzz::expect(again.size() == index.size(), "save and load keep the live count");
  check_search(again, k, ef, 2.0f);
  return 0;
}
