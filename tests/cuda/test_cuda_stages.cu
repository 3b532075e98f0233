// SPDX-License-Identifier: Apache-2.0
// Whole pipelines on cuda_backend against the CPU backend: ids identical, scores within 1e-5
// relative. Exits 77 (skipped) without a device.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include <recpipe/core/pipeline.hpp>
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/cuda/stages.cuh>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/score.hpp>
#include <recpipe/stages/session_encoder.hpp>

#include "common/cuda_fixtures.cuh"
#include "common/pipeline_compare.hpp"
#include "common/tiny_models.hpp"

using namespace recpipe;

namespace {

void require_device() { recpipe_test::exit_unless_device(); }

struct world {
  static constexpr std::size_t items = 3000, users = 200, dim = 48;
  matrix<float> item_rows{items, dim};
  std::vector<id_type> item_ids = std::vector<id_type>(items);
  feature_store<col::user_id, col::user_embedding> user_vectors{dim};
  feature_store<col::user_id, col::history> histories;
  feature_store<col::candidates, col::item_embedding> item_vectors{dim};
  cpu::exact_index host_index{dim, metric::inner_product, items};

  world() {
    std::mt19937 rng(7);
    // Multiples of 1/4 with |x| <= 2: every product and sum of 48 of them is exact in float, so
    // cuBLAS, the dot kernel, OpenBLAS and Eigen agree bitwise whatever their summation order, and
    // ties are many (ranked by id on both backends).
    std::normal_distribution<float> gaussian(0.0f, 2.0f);
    const auto normal = [&gaussian](std::mt19937& g) { return std::clamp(std::round(gaussian(g)), -8.0f, 8.0f) / 4.0f; };
    std::uniform_int_distribution<id_type> pick(0, items - 1);
    for (std::size_t i = 0; i < items; ++i) {
      item_ids[i] = static_cast<id_type>(i * 3 + 1);  // not row numbers: ids travel through the device
      for (auto& x : item_rows.row(i)) x = normal(rng);
      item_vectors.insert(item_ids[i], item_rows.row(i));
    }
    std::vector<float> u(dim);
    std::vector<id_type> seen(20);
    for (std::size_t r = 0; r < users; ++r) {
      for (auto& x : u) x = normal(rng);
      user_vectors.insert(static_cast<id_type>(r), u);
      for (auto& s : seen) s = item_ids[static_cast<std::size_t>(pick(rng))];
      histories.insert(static_cast<id_type>(r), seen);
    }
    host_index.add(item_ids, item_rows.view());
  }
};

}  // namespace

TEST_CASE("exact retrieve >> top_k: cuda_backend equals the CPU backend") {
  require_device();
  world w;
  recpipe::cuda::cuda_backend backend;
  recpipe::cuda::exact_index device_index(backend, w.item_ids, w.item_rows.view());
  const auto users = make_batch<col::user_id>(recpipe_test::users_and_one_unknown(64));
  const auto on_cpu = (lookup(w.user_vectors) >> retrieve<col::user_embedding>(w.host_index, 200) >>
                       top_k<col::retrieval_score>(10))
                          .run(users);
  const auto on_gpu = (lookup(w.user_vectors) >> retrieve<col::user_embedding>(device_index, 200) >>
                       top_k<col::retrieval_score>(10))
                          .run(users, backend);
  recpipe_test::check_same_recommendations<col::retrieval_score>(on_cpu, on_gpu);
  // k beyond the catalog returns every item on both
  const auto all_gpu = (lookup(w.user_vectors) >> retrieve<col::user_embedding>(device_index, 5000)).run(users, backend);
  CHECK(all_gpu.get<col::candidates>().total() == users.size() * world::items);
}

TEST_CASE("retrieve >> lookup >> score >> top_k and the sampling pipeline: cuda_backend equals the CPU backend") {
  require_device();
  world w;
  recpipe::cuda::cuda_backend backend;
  recpipe::cuda::exact_index device_index(backend, w.item_ids, w.item_rows.view());
  const auto users = make_batch<col::user_id>(recpipe_test::users_and_one_unknown(64));
  const auto tail = lookup(w.item_vectors) >> score(dot_product_scorer<>{}) >> top_k(10);
  const auto on_cpu = (lookup(w.user_vectors) >> retrieve<col::user_embedding>(w.host_index, 300) >> tail).run(users);
  const auto on_gpu =
      (lookup(w.user_vectors) >> retrieve<col::user_embedding>(device_index, 300) >> tail).run(users, backend);
  recpipe_test::check_same_recommendations(on_cpu, on_gpu);

  const auto sampled = [&](const auto& index) {
    return lookup(w.user_vectors) >> lookup(w.histories) >> retrieve<col::user_embedding>(index, 300) >>
           filter_seen() >> lookup(w.item_vectors) >> score(dot_product_scorer<>{}) >>
           softmax_sample(10, 0.05f, 2026);
  };
  recpipe_test::check_same_recommendations(sampled(w.host_index).run(users), sampled(device_index).run(users, backend));
  const auto greedy = [&](const auto& index) {
    return lookup(w.user_vectors) >> retrieve<col::user_embedding>(index, 300) >> lookup(w.item_vectors) >>
           score(dot_product_scorer<>{}) >> softmax_sample(10, 0.0f, 1);
  };
  recpipe_test::check_same_recommendations(greedy(w.host_index).run(users), greedy(device_index).run(users, backend));
  // an empty batch runs on both
  CHECK(sampled(device_index).run(make_batch<col::user_id>(std::vector<id_type>{}), backend).size() == 0);
}

TEST_CASE("a run moves each column once and synchronises once at its end") {
  require_device();
  world w;
  recpipe::cuda::cuda_backend backend;
  recpipe::cuda::exact_index device_index(backend, w.item_ids, w.item_rows.view());
  const auto users = make_batch<col::user_id>(recpipe_test::users_and_one_unknown(64));
  // Host lookup, then only device stages: the user vectors go up once; candidates and scores
  // come back once, at the end.
  const auto device_tail = lookup(w.user_vectors) >> retrieve<col::user_embedding>(device_index, 300) >>
                           top_k<col::retrieval_score>(10);
  (void)device_tail.run(users, backend);  // warm: staging buffers and the pool
  backend.columns().reset_counts();
  const auto result = device_tail.run(users, backend);
  const auto& counts = backend.columns().counts();
  CHECK(counts.synchronizations == 1);
  CHECK(counts.downloads == 2);  // candidates and retrieval_score, once each
  CHECK(result.get<col::candidates>().total() == users.size() * 10);
  CHECK(backend.columns().depth() == 0);

  // A host stage reading a device column in the middle costs one more synchronisation, and
  // filter_seen one (its kept counts): never more.
  backend.columns().reset_counts();
  const auto mixed = (lookup(w.user_vectors) >> lookup(w.histories) >> retrieve<col::user_embedding>(device_index, 300) >>
                      filter_seen() >> lookup(w.item_vectors) >> score(dot_product_scorer<>{}) >> top_k(10))
                         .run(users, backend);
  CHECK(backend.columns().counts().synchronizations == 3);
  CHECK(mixed.get<col::candidates>().total() == users.size() * 10);
}

TEST_CASE("a stage run on its own on cuda_backend is a run: its result is on the host when it returns") {
  require_device();
  world w;
  recpipe::cuda::cuda_backend backend;
  auto b = make_batch<col::user_id>(recpipe_test::users_and_one_unknown(8));
  auto candidates = (lookup(w.user_vectors) >> retrieve<col::user_embedding>(w.host_index, 50)).run(b);
  const auto on_cpu = top_k<col::retrieval_score>(5)(candidates);
  const auto on_gpu = top_k<col::retrieval_score>(5)(std::move(candidates), backend);
  CHECK(on_cpu.get<col::candidates>().values() == on_gpu.get<col::candidates>().values());
  CHECK(on_cpu.get<col::retrieval_score>() == on_gpu.get<col::retrieval_score>());
}

TEST_CASE("encode(session_encoder) >> retrieve >> filter_seen >> top_k: cuda_backend equals the CPU backend") {
  require_device();
  const auto model = models::session_transformer::load(testing::as_file(testing::tiny_session_weights()),
                                                       testing::tiny_session_config());
  const std::size_t items = model.config().num_items, dim = model.embedding_dim();
  std::vector<id_type> ids(items);
  std::iota(ids.begin(), ids.end(), id_type{0});
  cpu::exact_index host_index(dim, metric::inner_product, items);
  host_index.add(ids, model.item_embeddings());
  recpipe::cuda::cuda_backend backend;
  recpipe::cuda::exact_index device_index(backend, ids, model.item_embeddings());
  // Sessions longer than the window, unknown items (skipped on both backends), an empty session
  // and one holding only unknown items (both encode to zeros: every score 0, ranked by id).
  ragged<id_type> sessions;
  std::mt19937 rng(11);
  std::uniform_int_distribution<id_type> pick(0, static_cast<id_type>(items) - 1);
  for (std::size_t r = 0; r < 30; ++r) {
    std::vector<id_type> row(r % 7);
    for (auto& item : row) item = pick(rng);
    if (r % 5 == 1) row.push_back(static_cast<id_type>(items) + 4);
    if (r % 5 == 2) row.insert(row.begin(), id_type{-1});
    sessions.push_row(row);
  }
  sessions.push_row(std::vector<id_type>{-3, static_cast<id_type>(items)});
  const auto batch = make_batch<col::session_items>(std::move(sessions));
  const auto pipeline = [&](const auto& index) {
    return encode(session_encoder(model)) >> retrieve<col::query_vector>(index, 12) >>
           filter_seen<col::session_items>() >> top_k<col::retrieval_score>(5);
  };
  const auto on_cpu = pipeline(host_index).run(batch);
  const auto on_gpu = pipeline(device_index).run(batch, backend);
  const auto& qa = on_cpu.get<col::query_vector>();
  const auto& qb = on_gpu.get<col::query_vector>();
  REQUIRE(qa.rows() == qb.rows());
  for (std::size_t r = 0; r < qa.rows(); ++r)
    for (std::size_t c = 0; c < dim; ++c) CHECK(std::abs(qa(r, c) - qb(r, c)) <= 1e-4f * std::abs(qa(r, c)) + 1e-5f);
  // Random float weights: the encoders round differently, so items whose scores tie within that
  // may swap.
  recpipe_test::check_same_recommendations<col::retrieval_score>(on_cpu, on_gpu, 1e-4f, 1e-4f, true);

  // The weights went up once: a second run reuses the device copy.
  CHECK(backend.models().uploads() == 1);
  (void)pipeline(device_index).run(batch, backend);
  CHECK(backend.models().uploads() == 1);
  CHECK(backend.models().hits() == 1);
  // An empty batch makes no CUDA call and returns an empty column.
  const auto empty = pipeline(device_index).run(make_batch<col::session_items>(ragged<id_type>{}), backend);
  CHECK(empty.get<col::query_vector>().rows() == 0);
}
