// SPDX-License-Identifier: Apache-2.0
// lookup(rc::device_feature_table) on cuda_backend against the same pipeline on the CPU backend
// (which reads the table's host rows) and against a feature_store: ids identical, scores within
// 1e-5 relative, looked-up rows and missing flags identical; the fail policy's error; the
// synchronisations a run costs. Exits 77 (skipped) without a device.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <recpipe/core/pipeline.hpp>
#include <recpipe/core/versions.hpp>
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/cuda/feature_table.cuh>
#include <recpipe/cuda/stages.cuh>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/score.hpp>

#include "common/cuda_fixtures.cuh"
#include "common/pipeline_compare.hpp"

using namespace recpipe;
namespace rc = recpipe::cuda;

namespace lookup_test {
RECPIPE_COLUMN(item_bias, per_candidate, float);
}

namespace {

using item_table = rc::device_feature_table<col::candidates, col::item_embedding>;
using user_table = rc::device_feature_table<col::user_id, col::user_embedding>;

struct world {
  static constexpr std::size_t items = 3000, users = 200, dim = 48;
  matrix<float> item_rows{items, dim};
  std::vector<id_type> item_ids = std::vector<id_type>(items);
  feature_store<col::user_id, col::user_embedding> user_vectors{dim};
  feature_store<col::candidates, col::item_embedding> item_vectors{dim};
  cpu::exact_index host_index{dim, metric::inner_product, items};

  world() {
    std::mt19937 rng(11);
    // Multiples of 1/4 with |x| <= 2: every dot product of 48 of them is exact in float, so both
    // backends agree bitwise whatever their summation order, and ties are many (ranked by id).
    std::normal_distribution<float> gaussian(0.0f, 2.0f);
    const auto normal = [&gaussian](std::mt19937& g) { return std::clamp(std::round(gaussian(g)), -8.0f, 8.0f) / 4.0f; };
    for (std::size_t i = 0; i < items; ++i) {
      item_ids[i] = static_cast<id_type>(i * 3 + 1);
      for (auto& x : item_rows.row(i)) x = normal(rng);
      item_vectors.insert(item_ids[i], item_rows.row(i));
    }
    std::vector<float> u(dim);
    for (std::size_t r = 0; r < users; ++r) {
      for (auto& x : u) x = normal(rng);
      user_vectors.insert(static_cast<id_type>(r), u);
    }
    host_index.add(item_ids, item_rows.view());
  }
  // Every other item (rows 0, 2, 4...): a table that misses half of what retrieval returns.
  std::vector<id_type> half_ids() const {
    std::vector<id_type> out;
    for (std::size_t i = 0; i < items; i += 2) out.push_back(item_ids[i]);
    return out;
  }
  matrix<float> half_rows() const {
    matrix<float> out(items / 2, dim);
    for (std::size_t i = 0; i < items; i += 2) std::copy(item_rows.row(i).begin(), item_rows.row(i).end(), out.row(i / 2).begin());
    return out;
  }
};


template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("retrieve >> lookup(device table) >> score >> top_k: cuda_backend equals the CPU backend and a feature_store") {
  recpipe_test::exit_unless_device();
  world w;
  rc::cuda_backend backend;
  rc::exact_index device_index(backend, w.item_ids, w.item_rows.view());
  const item_table items(backend, w.item_ids, w.item_rows.view());
  const user_table users_table(backend, w.user_vectors);  // a snapshot of the store
  CHECK(items.size() == world::items);
  CHECK(users_table.size() == world::users);
  const auto users = make_batch<col::user_id>(recpipe_test::users_and_one_unknown(64));
  const auto reference = (lookup(w.user_vectors) >> retrieve<col::user_embedding>(w.host_index, 300) >>
                          lookup(w.item_vectors) >> score(dot_product_scorer<>{}) >> top_k(10))
                             .run(users);
  const auto pipeline = [&](const auto& index) {
    return lookup(users_table) >> retrieve<col::user_embedding>(index, 300) >> lookup(items) >>
           score(dot_product_scorer<>{}) >> top_k(10);
  };
  const auto on_cpu = pipeline(w.host_index).run(users);
  const auto on_gpu = pipeline(device_index).run(users, backend);
  recpipe_test::check_same_recommendations(reference, on_cpu);
  recpipe_test::check_same_recommendations(on_cpu, on_gpu);
  CHECK(on_cpu.get<col::item_embedding>().values() == on_gpu.get<col::item_embedding>().values());
  CHECK(on_cpu.get<col::user_embedding>().values() == on_gpu.get<col::user_embedding>().values());

  // k beyond the catalog: every item of the catalog per request, all looked up on the device.
  const auto all = [&](const auto& index) {
    return lookup(users_table) >> retrieve<col::user_embedding>(index, 5000) >> lookup(items) >>
           score(dot_product_scorer<>{}) >> top_k(4000);
  };
  const auto all_cpu = all(w.host_index).run(users);
  const auto all_gpu = all(device_index).run(users, backend);
  CHECK(all_gpu.get<col::candidates>().total() == users.size() * world::items);
  recpipe_test::check_same_recommendations(all_cpu, all_gpu);

  // An empty batch runs on both.
  const auto none = make_batch<col::user_id>(std::vector<id_type>{});
  CHECK(pipeline(device_index).run(none, backend).size() == 0);
  CHECK(pipeline(w.host_index).run(none).size() == 0);
}

TEST_CASE("per-request lookup, unknown ids: zero rows and flags on both backends, from host and device keys") {
  recpipe_test::exit_unless_device();
  world w;
  rc::cuda_backend backend;
  const user_table users_table(backend, w.user_vectors);
  std::vector<id_type> ids = recpipe_test::users_and_one_unknown(50);
  ids.push_back(-3);  // negative: never held
  const auto users = make_batch<col::user_id>(ids);
  const auto on_cpu = lookup(users_table).flag_missing()(users);
  const auto on_gpu = lookup(users_table).flag_missing()(users, backend);
  const auto from_store = lookup(w.user_vectors).flag_missing()(users);
  CHECK(on_gpu.get<col::user_embedding>().values() == on_cpu.get<col::user_embedding>().values());
  CHECK(on_gpu.get<col::user_embedding>().values() == from_store.get<col::user_embedding>().values());
  CHECK(on_gpu.get<col::user_unknown>() == from_store.get<col::user_unknown>());
  CHECK(on_gpu.get<col::user_unknown>()[50] == 1);
  CHECK(on_gpu.get<col::user_unknown>()[51] == 1);
  CHECK(on_gpu.get<col::user_unknown>()[0] == 0);

  // Device keys (candidates of a device retrieve) against a table holding every other item.
  rc::exact_index device_index(backend, w.item_ids, w.item_rows.view());
  const auto half = w.half_rows();
  const item_table half_items(backend, w.half_ids(), half.view());
  const auto flagged = [&](const auto& index) {
    return lookup(w.user_vectors) >> retrieve<col::user_embedding>(index, 100) >> lookup(half_items).flag_missing() >>
           score(dot_product_scorer<>{}) >> top_k(20);
  };
  const auto requests = make_batch<col::user_id>(recpipe_test::users_and_one_unknown(32));
  const auto flagged_cpu = flagged(w.host_index).run(requests);
  const auto flagged_gpu = flagged(device_index).run(requests, backend);
  recpipe_test::check_same_recommendations(flagged_cpu, flagged_gpu);
  CHECK(flagged_cpu.get<col::item_unknown>() == flagged_gpu.get<col::item_unknown>());
  CHECK(flagged_cpu.get<col::item_embedding>().values() == flagged_gpu.get<col::item_embedding>().values());
  const auto& unknown = flagged_gpu.get<col::item_unknown>();
  CHECK(std::count(unknown.begin(), unknown.end(), std::uint8_t{1}) > 0);
  CHECK(std::count(unknown.begin(), unknown.end(), std::uint8_t{0}) > 0);
  for (std::size_t i = 0; i < unknown.size(); ++i) {
    const auto row = flagged_gpu.get<col::item_embedding>().row(i);
    if (unknown[i] == 1) CHECK(std::all_of(row.begin(), row.end(), [](float x) { return x == 0.0f; }));
  }

  // One value per id (a per-candidate float column).
  std::vector<float> biases(world::items);
  for (std::size_t i = 0; i < biases.size(); ++i) biases[i] = static_cast<float>(i) * 0.5f;
  std::vector<id_type> bias_ids(w.item_ids.begin(), w.item_ids.begin() + 1000);
  const rc::device_feature_table<col::candidates, lookup_test::item_bias> bias_table(
      backend, bias_ids, std::span<const float>(biases.data(), 1000));
  const auto with_bias = [&](const auto& index) {
    return lookup(w.user_vectors) >> retrieve<col::user_embedding>(index, 100) >> lookup(bias_table).flag_missing();
  };
  const auto bias_cpu = with_bias(w.host_index).run(requests);
  const auto bias_gpu = with_bias(device_index).run(requests, backend);
  CHECK(bias_cpu.get<lookup_test::item_bias>() == bias_gpu.get<lookup_test::item_bias>());
  CHECK(bias_cpu.get<col::item_unknown>() == bias_gpu.get<col::item_unknown>());
}

TEST_CASE("on_missing::fail: a recpipe::error naming the first unknown id, from host and device keys") {
  recpipe_test::exit_unless_device();
  world w;
  rc::cuda_backend backend;
  rc::exact_index device_index(backend, w.item_ids, w.item_rows.view());
  const auto half = w.half_rows();
  const item_table strict(backend, w.half_ids(), half.view(), on_missing::fail);
  const auto requests = make_batch<col::user_id>(recpipe_test::users_and_one_unknown(16));
  const auto pipeline = [&](const auto& index) {
    return lookup(w.user_vectors) >> retrieve<col::user_embedding>(index, 50) >> lookup(strict) >>
           score(dot_product_scorer<>{}) >> top_k(5);
  };
  const std::string cpu_error = error_of([&] { (void)pipeline(w.host_index).run(requests); });
  const std::string gpu_error = error_of([&] { (void)pipeline(device_index).run(requests, backend); });
  CHECK(cpu_error.find("is not in the device feature table for column 'item_embedding'") != std::string::npos);
  CHECK(gpu_error == cpu_error);  // the same first unknown id, in batch order
  CHECK(backend.columns().depth() == 0);
  // The backend serves the next run.
  const item_table items(backend, w.item_ids, w.item_rows.view(), on_missing::fail);
  backend.columns().reset_counts();
  const auto fine = (lookup(w.user_vectors) >> retrieve<col::user_embedding>(device_index, 50) >> lookup(items) >>
                     score(dot_product_scorer<>{}) >> top_k(5))
                        .run(requests, backend);
  CHECK(fine.get<col::candidates>().total() == requests.size() * 5);
  CHECK(backend.columns().counts().synchronizations == 2);  // the strict check on device keys, the end

  // Host keys: checked on the host, before any device work.
  auto candidates = make_batch<col::user_id>(std::vector<id_type>{1, 2});
  ragged<id_type> ids;
  ids.assign(std::vector<std::size_t>{0, 2, 4}, std::vector<id_type>{w.item_ids[0], w.item_ids[2], w.item_ids[1], 5}, "c");
  auto with_candidates = std::move(candidates).with<col::candidates>(std::move(ids));
  backend.columns().reset_counts();
  CHECK(error_of([&] { (void)lookup(strict)(with_candidates, backend); }) ==
        "recpipe: lookup: id " + std::to_string(w.item_ids[1]) +
            " is not in the device feature table for column 'item_embedding'");
  CHECK(backend.columns().counts().synchronizations == 0);
}

TEST_CASE("a lookup on device keys adds no synchronisation; a host feature_store lookup there adds one") {
  recpipe_test::exit_unless_device();
  world w;
  rc::cuda_backend backend;
  rc::exact_index device_index(backend, w.item_ids, w.item_rows.view());
  const item_table items(backend, w.item_ids, w.item_rows.view());
  const auto users = make_batch<col::user_id>(recpipe_test::users_and_one_unknown(64));
  const auto on_device = lookup(w.user_vectors) >> retrieve<col::user_embedding>(device_index, 300) >>
                         lookup(items).flag_missing() >> score(dot_product_scorer<>{}) >> top_k(10);
  (void)on_device.run(users, backend);  // warm: staging buffers and the pool
  backend.columns().reset_counts();
  const auto result = on_device.run(users, backend);
  CHECK(backend.columns().counts().synchronizations == 1);  // the run's end only
  CHECK(result.get<col::candidates>().total() == users.size() * 10);
  CHECK(backend.columns().depth() == 0);
  const auto& flags = result.get<col::item_unknown>();
  CHECK(std::all_of(flags.begin(), flags.end(), [](std::uint8_t f) { return f == 0; }));

  backend.columns().reset_counts();
  (void)(lookup(w.user_vectors) >> retrieve<col::user_embedding>(device_index, 300) >> lookup(w.item_vectors) >>
         score(dot_product_scorer<>{}) >> top_k(10))
      .run(users, backend);
  CHECK(backend.columns().counts().synchronizations == 2);  // the host lookup reads device candidates
}

TEST_CASE("lookup(slot<device_feature_table>): each run reads the version it pinned, on both backends") {
  recpipe_test::exit_unless_device();
  world w;
  rc::cuda_backend backend;
  version_registry versions;
  auto published = versions.add("items", std::make_shared<const item_table>(backend, w.item_ids, w.item_rows.view()));
  auto candidates = make_batch<col::user_id>(std::vector<id_type>{1});
  ragged<id_type> ids;
  ids.assign(std::vector<std::size_t>{0, 2}, std::vector<id_type>{w.item_ids[3], 2}, "c");  // 2 is unknown
  const auto requests = std::move(candidates).with<col::candidates>(std::move(ids));
  const auto pipeline = lookup(published).flag_missing();
  const auto first_gpu = pipeline(requests, backend);
  const auto first_cpu = pipeline(requests);
  CHECK(first_gpu.get<col::item_embedding>().values() == first_cpu.get<col::item_embedding>().values());
  CHECK(first_gpu.get<col::item_embedding>()(0, 0) == w.item_rows(3, 0));
  CHECK(first_gpu.get<col::item_unknown>() == std::vector<std::uint8_t>{0, 1});

  matrix<float> next = w.item_rows;
  for (auto& x : next.values()) x += 1.0f;
  versions.publish(published, std::make_shared<const item_table>(backend, w.item_ids, next.view()));
  const auto second_gpu = pipeline(requests, backend);
  CHECK(second_gpu.get<col::item_embedding>()(0, 0) == w.item_rows(3, 0) + 1.0f);
  CHECK(second_gpu.get<col::item_embedding>().values() == pipeline(requests).get<col::item_embedding>().values());
}
