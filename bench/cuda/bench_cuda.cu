// SPDX-License-Identifier: Apache-2.0
// CUDA benchmark: embedding-bag pooling, top-k and dot scoring against simple GPU peers.
//
// Ceiling: 4.3 TB/s measured device-to-device copy on the H200 (docs: shared/PERFORMANCE.md).
// Each case is checked against the CPU implementation first; then ours and the peer run
// interleaved (A B A B ...), 30 repetitions after warm-up, timed with CUDA events; the table
// shows medians, the spread (p10-p90) and ratio = peer / ours (above 1: we are faster).
// Not the umbrella: this file must build with nvcc alone (no Eigen) on the GPU machine.
#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/dot_score.cuh>
#include <recpipe/cuda/embedding_bag.cuh>
#include <recpipe/cuda/topk.cuh>

#include <cub/device/device_segmented_radix_sort.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <recpipe/cpu/topk.hpp>
#include <recpipe/math/embedding.hpp>
#include <recpipe/math/vector.hpp>

namespace rc = recpipe::cuda;
using recpipe::id_type;

namespace {
constexpr double ceiling_gb_per_s = 4300.0;
constexpr int repetitions = 30;

struct row {
  std::string name;
  double ours_ms, ours_p10, ours_p90, peer_ms, peer_p10, peer_p90, bytes;
  std::string peer_name;
};
std::vector<row> rows;

void fail(const std::string& what) {
  std::fprintf(stderr, "bench_cuda: CHECK FAILED: %s\n", what.c_str());
  std::exit(1);
}

struct stats {
  double median, p10, p90;
};
stats summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[v.size() / 10], v[v.size() * 9 / 10]};
}

// Interleaved timing of two enqueue functions on the backend's stream.
void time_pair(const rc::cuda_backend& backend, const std::string& name, double bytes,
               const std::function<void(int)>& ours, const std::string& peer_name,
               const std::function<void(int)>& peer) {
  cudaEvent_t start, stop;
  RECPIPE_CUDA_TRY(cudaEventCreate(&start));
  RECPIPE_CUDA_TRY(cudaEventCreate(&stop));
  auto once = [&](const std::function<void(int)>& f, int rep) {
    RECPIPE_CUDA_TRY(cudaEventRecord(start, backend.stream()));
    f(rep);
    RECPIPE_CUDA_TRY(cudaEventRecord(stop, backend.stream()));
    RECPIPE_CUDA_TRY(cudaEventSynchronize(stop));
    float ms = 0;
    RECPIPE_CUDA_TRY(cudaEventElapsedTime(&ms, start, stop));
    return static_cast<double>(ms);
  };
  for (int w = 0; w < 3; ++w) {
    once(ours, w);
    if (peer) once(peer, w);
  }
  std::vector<double> a, b;
  for (int r = 0; r < repetitions; ++r) {
    a.push_back(once(ours, r));
    if (peer) b.push_back(once(peer, r));
  }
  const stats sa = summarize(a);
  const stats sb = peer ? summarize(b) : stats{0, 0, 0};
  rows.push_back({name, sa.median, sa.p10, sa.p90, sb.median, sb.p10, sb.p90, bytes, peer_name});
  (void)cudaEventDestroy(start);
  (void)cudaEventDestroy(stop);
}

template <class T>
std::span<const T> cspan(const std::vector<T>& v) {
  return {v.data(), v.size()};
}

// ---- peers -----------------------------------------------------------------------------------
// Naive pooling: one thread per output value, rows read with scalar loads.
__global__ void naive_bag_kernel(const float* table, std::size_t dim, const id_type* ids, const std::int64_t* offsets,
                                 std::size_t batch, float* out) {
  const std::size_t t = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= batch * dim) return;
  const std::size_t b = t / dim, c = t % dim;
  float acc = 0.0f;
  for (std::int64_t i = offsets[b]; i < offsets[b + 1]; ++i) acc += table[static_cast<std::size_t>(ids[i]) * dim + c];
  out[t] = acc;
}
// Naive scoring: one thread per candidate, math::dot over the whole row.
__global__ void naive_dot_kernel(const float* queries, const float* items, std::size_t dim, const id_type* candidates,
                                 std::size_t candidates_per_request, std::size_t count, float* out) {
  const std::size_t c = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= count) return;
  out[c] = recpipe::math::dot(queries + (c / candidates_per_request) * dim,
                              items + static_cast<std::size_t>(candidates[c]) * dim, dim);
}
__global__ void iota_kernel(std::int32_t* values, std::size_t n, std::size_t period) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) values[i] = static_cast<std::int32_t>(i % period);
}
__global__ void row_offsets(std::int32_t* offsets, std::size_t rows, std::size_t cols) {
  const std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i <= rows) offsets[i] = static_cast<std::int32_t>(i * cols);
}

// ---- cases -----------------------------------------------------------------------------------
void bench_embedding_bag(rc::cuda_backend& backend, std::size_t table_rows, std::size_t dim, std::size_t bag,
                         std::size_t batch) {
  std::mt19937_64 rng(11);
  std::vector<float> table(table_rows * dim);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (auto& v : table) v = value(rng);
  // 8 id sets used round-robin: "cold" rows (4e6 x 256 B = 1 GiB does not fit the 50 MB L2).
  constexpr int id_sets = 8;
  std::uniform_int_distribution<id_type> id(0, static_cast<id_type>(table_rows) - 1);
  std::vector<std::vector<id_type>> ids(id_sets, std::vector<id_type>(batch * bag));
  for (auto& set : ids)
    for (auto& i : set) i = id(rng);
  std::vector<std::int64_t> offsets(batch + 1);
  for (std::size_t b = 0; b <= batch; ++b) offsets[b] = static_cast<std::int64_t>(b * bag);

  auto d_table = rc::to_device(backend, cspan(table));
  std::vector<rc::device_buffer<id_type>> d_ids;
  for (auto& set : ids) d_ids.push_back(rc::to_device(backend, cspan(set)));
  auto d_offsets = rc::to_device(backend, cspan(offsets));
  rc::device_buffer<float> d_out(backend, batch * dim), d_peer(backend, batch * dim);
  const recpipe::matrix_view<const float> table_view(d_table.data(), table_rows, dim);
  const recpipe::matrix_view<float> out_view(d_out.data(), batch, dim);
  auto ours = [&](int rep) {
    RECPIPE_CUDA_TRY(rc::embedding_bag(backend, table_view, d_ids[rep % id_sets].const_span(), d_offsets.const_span(),
                                       {}, rc::pooling::sum, out_view));
  };
  auto peer = [&](int rep) {
    const std::size_t threads = batch * dim;
    naive_bag_kernel<<<static_cast<unsigned>((threads + 255) / 256), 256, 0, backend.stream()>>>(
        d_table.data(), dim, d_ids[rep % id_sets].data(), d_offsets.data(), batch, d_peer.data());
    RECPIPE_CUDA_TRY(cudaPeekAtLastError());
  };
  // Check both against the CPU (math::accumulate_row, the CPU's own functor) before timing.
  ours(0);
  peer(0);
  const auto got = rc::to_host(backend, d_out.const_span());
  const auto got_peer = rc::to_host(backend, d_peer.const_span());
  std::vector<float> acc(dim);
  for (std::size_t b = 0; b < batch; ++b) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (std::size_t i = b * bag; i < (b + 1) * bag; ++i)
      recpipe::math::accumulate_row(table.data() + static_cast<std::size_t>(ids[0][i]) * dim, 1.0f, acc.data(), dim);
    for (std::size_t c = 0; c < dim; ++c)
      if (std::fabs(got[b * dim + c] - acc[c]) > 1e-4f * (1 + std::fabs(acc[c])) ||
          std::fabs(got_peer[b * dim + c] - acc[c]) > 1e-4f * (1 + std::fabs(acc[c])))
        fail("embedding_bag result differs from the CPU at bag " + std::to_string(b));
  }
  const double bytes = static_cast<double>(batch * bag) * (dim * sizeof(float) + sizeof(id_type)) +
                       static_cast<double>(batch * dim * sizeof(float));
  time_pair(backend, "embedding_bag rows " + std::to_string(table_rows) + " dim " + std::to_string(dim) + " bag " +
                         std::to_string(bag) + " batch " + std::to_string(batch) + " (cold)",
            bytes, ours, "naive kernel", peer);
}

void bench_top_k(rc::cuda_backend& backend, std::size_t batch_rows, std::size_t cols, std::size_t k) {
  std::mt19937_64 rng(12);
  std::vector<float> scores(batch_rows * cols);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (auto& s : scores) s = value(rng);
  auto d_scores = rc::to_device(backend, cspan(scores));
  rc::device_buffer<id_type> d_ids(backend, batch_rows * k);
  rc::device_buffer<float> d_best(backend, batch_rows * k);
  auto ours = [&](int) {
    RECPIPE_CUDA_TRY(rc::top_k_rows(backend, d_scores.const_span(), batch_rows, cols, {}, k, d_ids.span(), d_best.span()));
  };
  // Peer: "CUB radix sort then slice" (sorts (score, column) pairs per row descending; the k
  // best are the first k of each row; no NaN/-0 canonicalisation and no id tie-break).
  const std::size_t n = batch_rows * cols;
  rc::device_buffer<float> sorted_scores(backend, n);
  rc::device_buffer<std::int32_t> values(backend, n), sorted_values(backend, n), offsets(backend, batch_rows + 1);
  iota_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, backend.stream()>>>(values.data(), n, cols);
  row_offsets<<<static_cast<unsigned>((batch_rows + 256) / 256), 256, 0, backend.stream()>>>(offsets.data(), batch_rows, cols);
  std::size_t temp_bytes = 0;
  RECPIPE_CUDA_TRY(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, temp_bytes, d_scores.data(), sorted_scores.data(), values.data(), sorted_values.data(),
      static_cast<int>(n), static_cast<int>(batch_rows), offsets.data(), offsets.data() + 1, 0, 32, backend.stream()));
  rc::device_buffer<unsigned char> temp(backend, temp_bytes);
  auto peer = [&](int) {
    RECPIPE_CUDA_TRY(cub::DeviceSegmentedRadixSort::SortPairsDescending(
        temp.data(), temp_bytes, d_scores.data(), sorted_scores.data(), values.data(), sorted_values.data(),
        static_cast<int>(n), static_cast<int>(batch_rows), offsets.data(), offsets.data() + 1, 0, 32,
        backend.stream()));
  };
  ours(0);
  const auto got_ids = rc::to_host(backend, d_ids.const_span());
  const auto got_scores = rc::to_host(backend, d_best.const_span());
  std::vector<id_type> want_ids(k);
  std::vector<float> want_scores(k);
  for (std::size_t r = 0; r < batch_rows; ++r) {
    recpipe::cpu::top_k(std::span<const float>(scores.data() + r * cols, cols), {}, k, want_ids, want_scores);
    for (std::size_t j = 0; j < k; ++j)
      if (want_ids[j] != got_ids[r * k + j] || want_scores[j] != got_scores[r * k + j])
        fail("top_k differs from cpu::top_k at row " + std::to_string(r) + " slot " + std::to_string(j));
  }
  time_pair(backend, "top_k rows " + std::to_string(batch_rows) + " N " + std::to_string(cols) + " k " + std::to_string(k),
            static_cast<double>(n * sizeof(float)), ours, "CUB segmented radix sort", peer);
}

void bench_dot_scores(rc::cuda_backend& backend, std::size_t requests, std::size_t per_request, std::size_t num_items,
                      std::size_t dim) {
  std::mt19937_64 rng(13);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  std::vector<float> queries(requests * dim), items(num_items * dim);
  for (auto& v : queries) v = value(rng);
  for (auto& v : items) v = value(rng);
  std::uniform_int_distribution<id_type> id(0, static_cast<id_type>(num_items) - 1);
  std::vector<id_type> candidates(requests * per_request);
  for (auto& c : candidates) c = id(rng);
  std::vector<std::int64_t> offsets(requests + 1);
  for (std::size_t r = 0; r <= requests; ++r) offsets[r] = static_cast<std::int64_t>(r * per_request);
  auto d_queries = rc::to_device(backend, cspan(queries));
  auto d_items = rc::to_device(backend, cspan(items));
  auto d_candidates = rc::to_device(backend, cspan(candidates));
  auto d_offsets = rc::to_device(backend, cspan(offsets));
  rc::device_buffer<float> d_out(backend, candidates.size()), d_peer(backend, candidates.size());
  auto ours = [&](int) {
    RECPIPE_CUDA_TRY(rc::dot_scores(backend, recpipe::matrix_view<const float>(d_queries.data(), requests, dim),
                                    recpipe::matrix_view<const float>(d_items.data(), num_items, dim),
                                    d_candidates.const_span(), d_offsets.const_span(), d_out.span()));
  };
  auto peer = [&](int) {
    naive_dot_kernel<<<static_cast<unsigned>((candidates.size() + 255) / 256), 256, 0, backend.stream()>>>(
        d_queries.data(), d_items.data(), dim, d_candidates.data(), per_request, candidates.size(), d_peer.data());
    RECPIPE_CUDA_TRY(cudaPeekAtLastError());
  };
  ours(0);
  peer(0);
  const auto got = rc::to_host(backend, d_out.const_span());
  const auto got_peer = rc::to_host(backend, d_peer.const_span());
  for (std::size_t c = 0; c < candidates.size(); ++c) {
    const float want = recpipe::math::dot(queries.data() + (c / per_request) * dim,
                                          items.data() + static_cast<std::size_t>(candidates[c]) * dim, dim);
    if (std::fabs(got[c] - want) > 1e-4f * (1 + std::fabs(want)) || std::fabs(got_peer[c] - want) > 1e-4f * (1 + std::fabs(want)))
      fail("dot_scores differs from math::dot at candidate " + std::to_string(c));
  }
  const double bytes = static_cast<double>(candidates.size()) * (dim * sizeof(float) + sizeof(id_type) + sizeof(float));
  time_pair(backend, "dot_scores requests " + std::to_string(requests) + " x " + std::to_string(per_request) + " dim " +
                         std::to_string(dim),
            bytes, ours, "naive kernel", peer);
}
}  // namespace

int main(int argc, char** argv) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    std::printf("SKIPPED: no CUDA device (%s)\n", status != cudaSuccess ? cudaGetErrorString(status) : "0 devices");
    return 77;
  }
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  cudaDeviceProp prop{};
  RECPIPE_CUDA_TRY(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, CUB %d, %d repetitions (median, p10-p90)\n", prop.name, CUB_VERSION, repetitions);
  rc::cuda_backend backend;
  bench_embedding_bag(backend, quick ? 100000 : 4000000, 64, 20, 2048);
  bench_embedding_bag(backend, quick ? 100000 : 4000000, 128, 100, 2048);
  bench_embedding_bag(backend, 100000, 32, 1, 64);
  bench_top_k(backend, 1, quick ? 100000 : 1000000, 100);
  bench_top_k(backend, 64, 100000, 100);
  if (!quick) bench_top_k(backend, 1, 10000000, 1000);
  bench_dot_scores(backend, 2048, 500, 1000000, 64);
  std::printf("\n| case | ours (ms) | peer (ms) | ratio | fraction of ceiling |\n|---|---|---|---|---|\n");
  for (const auto& r : rows) {
    const double gbps = r.bytes / (r.ours_ms * 1e-3) / 1e9;
    std::printf("| %s | %.4f (%.4f-%.4f) | %s %.4f (%.4f-%.4f) | %.2f | %.1f GB/s = %.3f of 4.3 TB/s |\n", r.name.c_str(),
                r.ours_ms, r.ours_p10, r.ours_p90, r.peer_name.c_str(), r.peer_ms, r.peer_p10, r.peer_p90,
                r.peer_ms / r.ours_ms, gbps, gbps / ceiling_gb_per_s);
  }
  return 0;
}
