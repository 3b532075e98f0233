// SPDX-License-Identifier: Apache-2.0
// Development check without a GPU (not part of the build): runs the device lookup's real kernels
// (cuda/kernels/lookup.cuh: lookup_rows_kernel, first_missing_id_kernel) on the CPU through
// shim/recpipe/cuda/detail/config.cuh, launched as cuda::device_feature_table::gather launches
// them, and compares every output row, flag and the miss record with cuda::host_feature_table
// (the rows a cpu_backend run reads). Widths 1..70 (every lane count), known and unknown keys,
// an empty table. From the repository root (a few seconds):
//   g++ -std=gnu++20 -O1 -Itools/cuda_emulation/shim -Iinclude tools/cuda_emulation/lookup_check.cpp
//       -o /tmp/lookup_check -pthread && /tmp/lookup_check
// Exit status 0 when everything matches.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <random>
#include <vector>

// Device atomics of the lookup kernel, on host memory.
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
  return std::atomic_ref<unsigned long long>(*address).fetch_add(value);
}
inline unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
  std::atomic_ref<unsigned long long> target(*address);
  unsigned long long old = target.load();
  while (value < old && !target.compare_exchange_weak(old, value)) {
  }
  return old;
}

#include <recpipe/core/columns.hpp>
#include <recpipe/cuda/feature_table_host.hpp>
#include <recpipe/cuda/kernels/lookup.cuh>

using namespace recpipe;
namespace K = recpipe::cuda::kernels;

static int failures = 0;

static void check(std::size_t dim, std::size_t table_size, std::size_t keys_count, bool with_flags, bool with_misses) {
  std::mt19937 rng(static_cast<unsigned>(dim * 131 + table_size));
  std::vector<id_type> ids(table_size);
  for (std::size_t i = 0; i < table_size; ++i) ids[i] = static_cast<id_type>(i * 5 + 3);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<float> rows(table_size * dim);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto& x : rows) x = u(rng);
  const cuda::host_feature_table<col::candidates, col::item_embedding> table(
      ids, matrix_view<const float>(rows.data(), table_size, dim));
  std::vector<id_type> keys(keys_count);
  std::uniform_int_distribution<id_type> pick(-2, static_cast<id_type>(table_size * 5 + 6));
  for (auto& k : keys) k = pick(rng);
  std::vector<float> out(keys_count * dim, -7.0f);
  std::vector<std::uint8_t> flags(keys_count, 9);
  cuda::lookup_misses misses;
  constexpr int block = 256;
  const unsigned lanes = cuda::lookup_lanes(dim);
  const std::uint64_t threads = static_cast<std::uint64_t>(keys_count) * lanes;
  const auto blocks = static_cast<unsigned>((threads + block - 1) / block);
  emu_launch(blocks, 1, block, K::lookup_rows_kernel<block>, keys.data(), static_cast<std::uint64_t>(keys_count),
             table.ids().data(), static_cast<std::uint64_t>(table.size()), table.values().data(),
             static_cast<std::uint32_t>(dim), lanes, out.data(), with_flags ? flags.data() : nullptr,
             with_misses ? &misses : nullptr);
  if (with_misses) emu_launch(1, 1, 1, K::first_missing_id_kernel<id_type>, keys.data(), &misses);
  unsigned long long expected_count = 0, expected_first = ~0ull;
  for (std::size_t i = 0; i < keys_count; ++i) {
    const auto found = table.find(keys[i]);
    for (std::size_t c = 0; c < dim; ++c) {
      const float want = found.empty() ? 0.0f : found[c];
      if (out[i * dim + c] != want) {
        if (failures++ < 10)
          std::printf("dim %zu: key %zu (id %lld) column %zu: %g, want %g\n", dim, i, static_cast<long long>(keys[i]), c,
                      static_cast<double>(out[i * dim + c]), static_cast<double>(want));
      }
    }
    if (with_flags && flags[i] != (found.empty() ? 1 : 0)) {
      if (failures++ < 10) std::printf("dim %zu: key %zu flag %d\n", dim, i, flags[i]);
    }
    if (found.empty()) {
      ++expected_count;
      expected_first = std::min<unsigned long long>(expected_first, i);
    }
  }
  if (with_misses) {
    const bool ok = misses.count == expected_count && misses.first == expected_first &&
                    (expected_count == 0 ? misses.first_id == -1 : misses.first_id == keys[expected_first]);
    if (!ok && failures++ < 10)
      std::printf("dim %zu: misses %llu first %llu id %lld, want %llu %llu\n", dim, misses.count, misses.first,
                  static_cast<long long>(misses.first_id), expected_count, expected_first);
  }
}

int main() {
  for (std::size_t dim = 1; dim <= 70; dim += (dim < 10 ? 1 : 7)) check(dim, 40, 37, dim % 2 == 0, dim % 3 != 0);
  check(48, 0, 20, true, true);     // an empty table: every key misses
  check(16, 100, 0, true, true);    // no keys
  check(32, 1000, 300, true, true);  // most keys known
  std::printf(failures == 0 ? "lookup kernels match host_feature_table\n" : "%d mismatches\n", failures);
  return failures == 0 ? 0 : 1;
}
