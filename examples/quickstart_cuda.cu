// SPDX-License-Identifier: Apache-2.0
// The quickstart's recommender with exact retrieval, run on the GPU (cuda_backend) and on the CPU
// backend, checking that both return the same recommendations, then timing whole-pipeline runs.
//
//   example_quickstart_cuda            100,000 items, 10,000 users, batches of 64
//   example_quickstart_cuda --smoke    a 20,000-item catalog (ctest runs this; skips without a GPU)
//
// GPU stages: exact retrieval (cuBLAS GEMM + device top-k), the item lookup from a
// cuda::device_feature_table, the dot-product score, softmax_sample. Host stages inside the same
// cuda run: the user and history feature-store lookups, filter_seen, cold_start.
#include <recpipe/core/pipeline.hpp>
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/cpu/stages/cold_start.hpp>
#include <recpipe/cpu/threads.hpp>
#include <recpipe/cuda/feature_table.cuh>
#include <recpipe/cuda/stages.cuh>
#include <recpipe/io/synthetic_catalog.hpp>
#include <recpipe/stages/cold_start.hpp>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/score.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <span>
#include <vector>

int main(int argc, char** argv) {
  using namespace recpipe;
  using clock = std::chrono::steady_clock;
  bool smoke = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) smoke = true;
    else {
      std::fprintf(stderr, "usage: %s [--smoke]\n", argv[0]);
      return 2;
    }
  }
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no CUDA device (%s)\n",
                status != cudaSuccess ? cudaGetErrorString(status) : "cudaGetDeviceCount reports 0 devices");
    return 77;
  }

  io::synthetic_catalog_config config;
  if (smoke) {
    config.items = 20'000;
    config.users = 2'000;
  }
  const std::size_t batch_size = 64, batches = smoke ? 8 : 40, fetch = 500, recommendations = 10;
  const auto catalog = io::synthetic_catalog::generate(config);

  feature_store<col::user_id, col::user_embedding> user_vectors(config.dim);
  feature_store<col::user_id, col::history> histories;
  for (std::size_t u = 0; u < config.users; ++u) {
    user_vectors.insert(static_cast<id_type>(u), catalog.user_vectors.row(u));
    histories.insert(static_cast<id_type>(u), catalog.histories.row(u));
  }
  std::vector<id_type> item_ids(config.items);
  std::iota(item_ids.begin(), item_ids.end(), id_type{0});
  const auto& clicks = catalog.histories.values();
  const auto popular = popular_items::from_interactions(std::span<const id_type>(clicks.data(), clicks.size()));

  recpipe::cuda::cuda_backend gpu;
  cpu::exact_index host_items(config.dim, metric::inner_product, config.items);
  host_items.add(item_ids, catalog.item_vectors.view());
  recpipe::cuda::exact_index device_items(gpu, item_ids, catalog.item_vectors.view());
  // Item features with device rows: the cpu_backend run reads its host rows, the cuda_backend run
  // looks the device candidates up on the GPU (no synchronisation between retrieval and scoring).
  const recpipe::cuda::device_feature_table<col::candidates, col::item_embedding> item_vectors(
      gpu, item_ids, catalog.item_vectors.view());

  // The same expression over either index: on cuda_backend the retrieve stage over
  // recpipe::cuda::exact_index, the item lookup, score and softmax_sample run on the device; the user
  // and history lookups, filter_seen and cold_start run on the host.
  const auto recommender = [&](const auto& index) {
    return lookup(user_vectors).flag_missing() >> lookup(histories) >> retrieve<col::user_embedding>(index, fetch) >>
           filter_seen() >> lookup(item_vectors) >> score(dot_product_scorer<>{}) >>
           softmax_sample(recommendations, 0.05f, 2026) >> cold_start(popular, recommendations);
  };
  const auto on_cpu = recommender(host_items);
  const auto on_gpu = recommender(device_items);

  // 1. Same recommendations on both backends.
  std::vector<id_type> users(batch_size);
  std::size_t mismatches = 0;
  for (std::size_t b = 0; b < batches; ++b) {
    for (std::size_t i = 0; i < batch_size; ++i) users[i] = static_cast<id_type>((b * batch_size + i) % config.users);
    users.back() = static_cast<id_type>(config.users + b);  // one unknown user per batch: cold start
    const auto a = on_cpu.run(make_batch<col::user_id>(users));
    const auto g = on_gpu.run(make_batch<col::user_id>(users), gpu);
    const auto& sa = a.get<col::score>();
    const auto& sg = g.get<col::score>();
    bool same = a.get<col::candidates>().offsets() == g.get<col::candidates>().offsets() &&
                a.get<col::candidates>().values() == g.get<col::candidates>().values() && sa.size() == sg.size();
    for (std::size_t i = 0; same && i < sa.size(); ++i)
      same = std::abs(sa[i] - sg[i]) <= 1e-5f * std::max(1.0f, std::abs(sa[i]));
    mismatches += same ? 0 : 1;
  }
  std::printf("quickstart on cuda_backend vs cpu_backend: %zu of %zu batches differ (%zu items, %zu users)\n",
              mismatches, batches, config.items, config.users);

  // 2. Whole-pipeline latency at batch 64 (warm: one untimed run each).
  const auto time = [&](auto&& run_once) {
    run_once(0);
    std::vector<double> us;
    for (std::size_t b = 0; b < batches; ++b) {
      const auto start = clock::now();
      run_once(b);
      us.push_back(std::chrono::duration<double, std::micro>(clock::now() - start).count());
    }
    std::sort(us.begin(), us.end());
    return us[us.size() / 2];
  };
  const auto fill = [&](std::size_t b) {
    for (std::size_t i = 0; i < batch_size; ++i) users[i] = static_cast<id_type>((b * batch_size + i) % config.users);
  };
  cpu::set_num_threads(2);  // the CPU backend on both cores of the reference machine
  const double cpu_us = time([&](std::size_t b) { fill(b); (void)on_cpu.run(make_batch<col::user_id>(users)); });
  const double gpu_us = time([&](std::size_t b) { fill(b); (void)on_gpu.run(make_batch<col::user_id>(users), gpu); });
  std::printf("| case | ours | peer | ratio | fraction of ceiling |\n|---|---|---|---|---|\n");
  std::printf("| quickstart exact pipeline, batch 64, %zu items (p50 us) | %.1f (cuda) | %.1f (cpu, 2 threads) | %.2fx | - |\n",
              config.items, gpu_us, cpu_us, cpu_us / gpu_us);
  return mismatches == 0 ? 0 : 1;
}
