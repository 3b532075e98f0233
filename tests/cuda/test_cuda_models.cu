// SPDX-License-Identifier: Apache-2.0
// The model scorers on the GPU (cuda/models.cuh, cuda/score_stages.cuh): each device model's
// forward against the CPU model's (every config variant), then whole pipelines
// lookup >> score >> top_k on cuda_backend against the CPU backend (ids identical, scores within
// 1e-5 relative), empty batches, NaN features, and the model cache (one upload per model version).
// Exits 77 (skipped) without a device.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <recpipe/core/pipeline.hpp>
#include <recpipe/core/versions.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/cuda/models.cuh>
#include <recpipe/cuda/stages.cuh>
#include <recpipe/io/safetensors_writer.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/mlp_scorer.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/score.hpp>
#include <recpipe/train/dcn_v2_model.hpp>
#include <recpipe/train/dense_mlp_model.hpp>
#include <recpipe/train/dlrm_model.hpp>
#include <recpipe/train/dynamic_table.hpp>
#include <recpipe/train/features.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/two_tower_model.hpp>

#include "common/cuda_fixtures.cuh"
#include "common/pipeline_compare.hpp"

using namespace recpipe;
namespace rc = recpipe::cuda;

namespace {

struct device_check {
  device_check() { recpipe_test::exit_unless_device(); }
} const device_check_instance;  // before any test case: no device, no test

// ---------------------------------------------------------------- models from random weights
std::uint32_t next_seed = 1;

void add_random(io::safetensors_writer& w, const std::string& name, std::vector<std::size_t> shape) {
  std::size_t n = 1;
  for (std::size_t s : shape) n *= s;
  std::mt19937 rng(next_seed++);
  const std::vector<float> v = recpipe_test::random_vector(n, rng, 0.5f);
  w.add(name, std::span<const float>(v), std::move(shape));
}

std::shared_ptr<const io::safetensors_file> as_file(const io::safetensors_writer& w) {
  return std::make_shared<const io::safetensors_file>(io::safetensors_file::from_bytes(w.to_bytes(), "test"));
}

void add_mlp(io::safetensors_writer& w, const std::string& prefix, std::size_t in, const std::vector<std::size_t>& dims) {
  for (std::size_t i = 0; i < dims.size(); ++i) {
    add_random(w, prefix + std::to_string(2 * i) + ".weight", {dims[i], in});
    add_random(w, prefix + std::to_string(2 * i) + ".bias", {dims[i]});
    in = dims[i];
  }
}

models::mlp make_mlp(const models::mlp_config& c) {
  io::safetensors_writer w;
  add_mlp(w, "layers.", c.input_dim, c.dims);
  return models::mlp::load(as_file(w), c);
}

models::dcn_v2 make_dcn(const models::dcn_v2_config& c) {
  io::safetensors_writer w;
  for (std::size_t t = 0; t < c.tables.size(); ++t)
    add_random(w, "embeddings." + std::to_string(t) + ".weight", {c.tables[t].rows, c.tables[t].dim});
  const std::size_t d = c.input_dim();
  for (std::size_t l = 0; l < c.cross_layers; ++l) {
    const std::string b = "cross." + std::to_string(l) + ".";
    if (c.rank == 0) {
      add_random(w, b + "weight", {d, d});
    } else {
      add_random(w, b + "down.weight", {c.rank, d});
      add_random(w, b + "up.weight", {d, c.rank});
    }
    add_random(w, b + "bias", {d});
  }
  add_mlp(w, "deep.layers.", d, c.deep);
  add_random(w, "head.weight", {1, c.head_input_dim()});
  add_random(w, "head.bias", {1});
  return models::dcn_v2::load(as_file(w), c);
}

models::dlrm make_dlrm(const models::dlrm_config& c) {
  io::safetensors_writer w;
  add_mlp(w, "bot_l.", c.dense_dim, c.bottom);
  for (std::size_t t = 0; t < c.table_rows.size(); ++t)
    add_random(w, "emb_l." + std::to_string(t) + ".weight", {c.table_rows[t], c.embedding_dim});
  add_mlp(w, "top_l.", c.top_input_dim(), c.top);
  return models::dlrm::load(as_file(w), c);
}

models::two_tower make_two_tower(const models::two_tower_config& c) {
  io::safetensors_writer w;
  for (const auto& [prefix, tower] : {std::pair{std::string("user_tower."), c.user}, std::pair{std::string("item_tower."), c.item}}) {
    for (std::size_t t = 0; t < tower.tables.size(); ++t)
      add_random(w, prefix + "embeddings." + std::to_string(t) + ".weight", {tower.tables[t].rows, tower.tables[t].dim});
    add_mlp(w, prefix + "mlp.layers.", tower.input_dim(), tower.dims);
  }
  return models::two_tower::load(as_file(w), c);
}

// ---------------------------------------------------------------- inputs, host and device
struct bags_twin {
  std::vector<std::vector<id_type>> ids, offsets;
  std::vector<cpu::bag_input> host;
  std::vector<rc::device_buffer<id_type>> d_ids, d_offsets;
  std::vector<rc::device_bags> device;

  bags_twin(rc::cuda_backend& backend, const std::vector<std::size_t>& rows, std::size_t batch, std::mt19937& rng) {
    for (std::size_t t = 0; t < rows.size(); ++t) {
      std::vector<id_type> i, o{0};
      for (std::size_t b = 0; b < batch; ++b) {
        const std::size_t count = rng() % 4;  // some bags are empty
        for (std::size_t k = 0; k < count; ++k) i.push_back(static_cast<id_type>(rng() % rows[t]));
        o.push_back(static_cast<id_type>(i.size()));
      }
      ids.push_back(std::move(i));
      offsets.push_back(std::move(o));
    }
    for (std::size_t t = 0; t < rows.size(); ++t) {
      host.push_back({ids[t], offsets[t]});
      d_ids.push_back(rc::to_device(backend, std::span<const id_type>(ids[t])));
      d_offsets.push_back(rc::to_device(backend, std::span<const id_type>(offsets[t])));
    }
    for (std::size_t t = 0; t < rows.size(); ++t) device.push_back({d_ids[t].const_span(), d_offsets[t].const_span()});
  }
};

std::vector<std::size_t> rows_of(const std::vector<models::table_config>& tables) {
  std::vector<std::size_t> r;
  for (const auto& t : tables) r.push_back(t.rows);
  return r;
}

void check_close(const std::vector<float>& expected, const std::vector<float>& got) {
  REQUIRE(expected.size() == got.size());
  for (std::size_t i = 0; i < expected.size(); ++i) {
    CAPTURE(i);
    if (std::isnan(expected[i])) {
      CHECK(std::isnan(got[i]));
      continue;
    }
    CHECK(std::abs(expected[i] - got[i]) <= 1e-5f * std::abs(expected[i]) + 2e-6f);
  }
}

constexpr std::size_t batch_size = 37;

// One NaN in row `r` of a host matrix and its device copy: the CPU models give that row NaN
// outputs (their ReLU keeps NaN), and so must the device models.
void nan_row(rc::cuda_backend& backend, recpipe_test::twin& m, std::size_t r) {
  m.host[r * m.stride + m.cols / 2] = std::numeric_limits<float>::quiet_NaN();
  m.device = rc::to_device(backend, std::span<const float>(m.host));
}

}  // namespace

TEST_CASE("device_mlp equals models::mlp for every activation") {
  rc::cuda_backend backend;
  std::mt19937 rng(1);
  for (const auto act : {math::activation::relu, math::activation::gelu, math::activation::gelu_tanh,
                         math::activation::sigmoid, math::activation::none})
    for (const auto final_act : {math::activation::none, math::activation::sigmoid}) {
      CAPTURE(static_cast<int>(act));
      const models::mlp cpu_model = make_mlp({.input_dim = 11, .dims = {16, 8, 3}, .activation = act, .final_activation = final_act});
      recpipe_test::twin x(backend, batch_size, 11, rng, /*pad=*/2);
      nan_row(backend, x, 2);
      matrix<float> expected(batch_size, 3);
      cpu_model.forward(x.cview(), expected.view());
      const rc::device_mlp gpu(backend, cpu_model);
      CHECK(gpu.bytes() == (16 * 11 + 16 + 8 * 16 + 8 + 3 * 8 + 3) * sizeof(float));
      rc::device_buffer<float> y(backend, batch_size * 3);
      REQUIRE(gpu.forward(backend, x.dcview(), {y.data(), batch_size, 3}) == cudaSuccess);
      check_close(std::vector<float>(expected.data(), expected.data() + batch_size * 3), rc::to_host(backend, y.const_span()));
    }
}

TEST_CASE("device_dcn_v2 equals models::dcn_v2: stacked / parallel, full / low rank, sum / mean, sigmoid / logit") {
  rc::cuda_backend backend;
  std::mt19937 rng(2);
  for (const auto structure : {models::dcn_structure::stacked, models::dcn_structure::parallel})
    for (const std::size_t rank : {std::size_t{0}, std::size_t{3}})
      for (const std::size_t layers : {std::size_t{0}, std::size_t{2}})
        for (const bool sigmoid : {true, false}) {
          const auto pool = sigmoid ? cpu::pooling::sum : cpu::pooling::mean;
          for (const std::size_t dense_dim : {std::size_t{0}, std::size_t{5}}) {
            CAPTURE(static_cast<int>(structure));
            CAPTURE(rank);
            CAPTURE(layers);
            CAPTURE(sigmoid);
            CAPTURE(dense_dim);
            models::dcn_v2_config c;
            c.dense_dim = dense_dim;
            c.tables = {{13, 4}, {7, 6}};
            c.pooling = pool;
            c.cross_layers = layers;
            c.rank = rank;
            c.deep = {12, 6};
            c.structure = structure;
            c.sigmoid = sigmoid;
            const models::dcn_v2 cpu_model = make_dcn(c);
            recpipe_test::twin dense(backend, batch_size, dense_dim, rng, 1);
            if (dense_dim > 0) nan_row(backend, dense, 3);
            bags_twin bags(backend, rows_of(c.tables), batch_size, rng);
            matrix<float> expected(batch_size, 1);
            cpu_model.forward(dense_dim ? dense.cview() : matrix_view<const float>(), bags.host, expected.view());
            const rc::device_dcn_v2 gpu(backend, cpu_model);
            gpu.check_inputs(dense_dim ? dense.cview() : matrix_view<const float>(), bags.host, batch_size);
            rc::device_buffer<float> out(backend, batch_size);
            REQUIRE(gpu.forward(backend, dense_dim ? dense.dcview() : matrix_view<const float>(), bags.device,
                                {out.data(), batch_size, 1}) == cudaSuccess);
            check_close(std::vector<float>(expected.data(), expected.data() + batch_size),
                        rc::to_host(backend, out.const_span()));
          }
        }
}

TEST_CASE("device_dlrm equals models::dlrm, with and without self-interaction, sigmoid or logit") {
  rc::cuda_backend backend;
  std::mt19937 rng(3);
  for (const bool self : {false, true})
    for (const auto final_act : {math::activation::sigmoid, math::activation::none}) {
      CAPTURE(self);
      models::dlrm_config c;
      c.dense_dim = 6;
      c.embedding_dim = 4;
      c.bottom = {8, 4};
      c.table_rows = {9, 5, 11};
      c.top = {10, 1};
      c.self_interaction = self;
      c.final_activation = final_act;
      const models::dlrm cpu_model = make_dlrm(c);
      recpipe_test::twin dense(backend, batch_size, 6, rng);
      nan_row(backend, dense, 5);
      bags_twin bags(backend, c.table_rows, batch_size, rng);
      matrix<float> expected(batch_size, 1);
      cpu_model.forward(dense.cview(), bags.host, expected.view());
      const rc::device_dlrm gpu(backend, cpu_model);
      rc::device_buffer<float> out(backend, batch_size);
      REQUIRE(gpu.forward(backend, dense.dcview(), bags.device, {out.data(), batch_size, 1}) == cudaSuccess);
      check_close(std::vector<float>(expected.data(), expected.data() + batch_size), rc::to_host(backend, out.const_span()));
    }
}

TEST_CASE("device_two_tower equals models::two_tower, normalised or not, a tower without dense features") {
  rc::cuda_backend backend;
  std::mt19937 rng(4);
  for (const bool normalize : {true, false}) {
    CAPTURE(normalize);
    models::two_tower_config c;
    c.user = {.dense_dim = 3, .tables = {{8, 4}}, .pooling = cpu::pooling::mean, .dims = {10, 5}};
    c.item = {.dense_dim = 0, .tables = {{6, 4}, {4, 2}}, .pooling = cpu::pooling::sum, .dims = {5},
              .activation = math::activation::gelu};
    c.normalize = normalize;
    const models::two_tower cpu_model = make_two_tower(c);
    recpipe_test::twin user_dense(backend, batch_size, 3, rng);
    nan_row(backend, user_dense, 7);
    bags_twin user_bags(backend, rows_of(c.user.tables), batch_size, rng);
    bags_twin item_bags(backend, rows_of(c.item.tables), batch_size, rng);
    matrix<float> expected(batch_size, 1);
    cpu_model.forward(user_dense.cview(), user_bags.host, {}, item_bags.host, expected.view());
    const rc::device_two_tower gpu(backend, cpu_model);
    rc::device_buffer<float> out(backend, batch_size);
    REQUIRE(gpu.forward(backend, user_dense.dcview(), user_bags.device, {}, item_bags.device, {out.data(), batch_size, 1}) ==
            cudaSuccess);
    check_close(std::vector<float>(expected.data(), expected.data() + batch_size), rc::to_host(backend, out.const_span()));
  }
}

TEST_CASE("device models: host checks throw as the CPU forward does; device shape errors name the argument") {
  rc::cuda_backend backend;
  std::mt19937 rng(5);
  models::dcn_v2_config c;
  c.dense_dim = 2;
  c.tables = {{5, 4}};
  c.cross_layers = 1;
  c.deep = {4};
  const models::dcn_v2 cpu_model = make_dcn(c);
  const rc::device_dcn_v2 gpu(backend, cpu_model);
  recpipe_test::twin dense(backend, 3, 2, rng);
  const std::vector<id_type> ids = {0, 5, 1}, offsets = {0, 1, 2, 3};
  const std::vector<cpu::bag_input> bags = {{ids, offsets}};
  matrix<float> out(3, 1);
  CHECK_THROWS_WITH_AS(cpu_model.forward(dense.cview(), bags, out.view()), doctest::Contains("ids[1] = 5 is outside [0, 5)"), error);
  CHECK_THROWS_WITH_AS(gpu.check_inputs(dense.cview(), bags, 3),
                       doctest::Contains("dcn_v2: forward: inputs[0]: cpu::embedding_bag: ids[1] = 5 is outside [0, 5)"), error);
  CHECK_THROWS_WITH_AS(gpu.check_inputs(dense.cview(), bags, 4), doctest::Contains("dense must be 4 x 2"), error);
  rc::device_buffer<float> d_out(backend, 6);
  CHECK_THROWS_WITH_AS(gpu.forward(backend, dense.dcview(), {}, {d_out.data(), 3, 2}),
                       doctest::Contains("out has 2 columns but the model outputs 1"), error);
}

// ---------------------------------------------------------------- whole pipelines
namespace {

constexpr std::size_t user_dim = 3, item_dim = 4, emb_dim = 4, num_users = 12, num_items = 60;

using ranking_features = train::features<train::sparse<col::user_id>, train::sparse<col::candidates>,
                                         train::dense<col::user_features>, train::dense<col::item_features>>;
using dense_features = train::features<train::dense<col::user_features>, train::dense<col::item_features>>;

struct world {
  feature_store<col::user_id, col::user_features> users{user_dim};
  feature_store<col::candidates, col::item_features> items{item_dim};
  feature_store<col::user_id, col::user_embedding> user_vectors{8};
  feature_store<col::candidates, col::item_embedding> item_vectors{8};

  explicit world(bool nan_user = false) {
    std::mt19937 rng(11);
    for (std::size_t u = 0; u < num_users; ++u) {
      std::vector<float> v = recpipe_test::random_vector(user_dim, rng);
      if (nan_user && u == 2) v[1] = std::numeric_limits<float>::quiet_NaN();
      users.insert(static_cast<id_type>(u), std::span<const float>(v));
      const std::vector<float> e = recpipe_test::random_vector(8, rng);
      user_vectors.insert(static_cast<id_type>(u), std::span<const float>(e));
    }
    for (std::size_t i = 0; i < num_items; ++i) {
      const std::vector<float> v = recpipe_test::random_vector(item_dim, rng);
      items.insert(static_cast<id_type>(i), std::span<const float>(v));
      const std::vector<float> e = recpipe_test::random_vector(8, rng);
      item_vectors.insert(static_cast<id_type>(i), std::span<const float>(e));
    }
  }
};

// `n` requests of users 0..num_users-1 (cycling) with 0..39 distinct candidates; request 1 has none.
batch<col::user_id, col::candidates> requests(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  batch<col::user_id, col::candidates> b(n);
  auto& candidates = b.get<col::candidates>();
  candidates.clear();
  std::vector<id_type> all(num_items);
  for (std::size_t i = 0; i < num_items; ++i) all[i] = static_cast<id_type>(i);
  for (std::size_t r = 0; r < n; ++r) {
    b.get<col::user_id>()[r] = static_cast<id_type>(r % num_users);
    candidates.begin_row();
    std::shuffle(all.begin(), all.end(), rng);
    const std::size_t count = r == 1 ? 0 : rng() % 40;
    for (std::size_t c = 0; c < count; ++c) candidates.push_back(all[c]);
  }
  return b;
}

// Ids identical, scores within 1e-5 relative + 2e-6; two candidates whose scores agree within the
// tolerance may come in either order (the backends' summation orders differ in the last bits).
template <class Batch>
void check_same(const Batch& cpu, const Batch& gpu) {
  recpipe_test::check_same_recommendations(cpu, gpu, 1e-5f, 2e-6f, true);
}

std::shared_ptr<train::fixed_table> fixed(std::size_t rows, std::uint64_t seed) {
  return std::make_shared<train::fixed_table>(
      train::fixed_table::config{.rows = rows, .dim = emb_dim, .init = {.scale = 0.3f, .seed = seed}},
      std::make_shared<train::row_sgd>(0.2));
}

models::dcn_v2_config dcn_config() {
  models::dcn_v2_config c;
  c.dense_dim = user_dim + item_dim;
  c.tables = {{num_users, emb_dim}, {num_items, emb_dim}};
  c.cross_layers = 2;
  c.rank = 3;
  c.deep = {8};
  c.sigmoid = true;
  return c;
}

template <class Frozen, class Features = ranking_features>
void check_feature_pipeline(const Frozen& frozen, const world& w) {
  rc::cuda_backend backend;
  const auto pipeline = lookup(w.users) >> lookup(w.items) >> score(train::scorer<Features>(frozen)) >> top_k(7);
  for (const std::uint32_t seed : {1u, 2u}) {
    const auto in = requests(24, seed);
    check_same(pipeline.run(in), pipeline.run(in, backend));
  }
  CHECK(backend.models().uploads() == 1);  // the second run reused the device copy
  CHECK(backend.models().hits() >= 1);
  // An empty batch: no candidates, no CUDA call.
  const auto empty = pipeline.run(batch<col::user_id, col::candidates>(0), backend);
  CHECK(empty.size() == 0);
  auto no_candidates = requests(3, 5);
  no_candidates.get<col::candidates>().assign({0, 0, 0, 0}, std::vector<id_type>{});
  CHECK(pipeline.run(no_candidates, backend).candidate_count() == 0);
}

}  // namespace

TEST_CASE("lookup >> score(mlp_scorer) >> top_k: cuda_backend equals the CPU backend") {
  const world w;
  const models::mlp ranker = make_mlp({.input_dim = 16, .dims = {12, 1}});
  rc::cuda_backend backend;
  const auto pipeline = lookup(w.user_vectors) >> lookup(w.item_vectors) >> score(mlp_scorer(ranker)) >> top_k(5);
  const auto in = requests(30, 3);
  check_same(pipeline.run(in), pipeline.run(in, backend));
  check_same(pipeline.run(in), pipeline.run(in, backend));
  CHECK(backend.models().uploads() == 1);
  CHECK(pipeline.run(batch<col::user_id, col::candidates>(0), backend).size() == 0);
  // A network whose input width does not match the columns: the CPU stage's error.
  const models::mlp narrow = make_mlp({.input_dim = 10, .dims = {1}});
  const auto wrong = lookup(w.user_vectors) >> lookup(w.item_vectors) >> score(mlp_scorer(narrow)) >> top_k(5);
  CHECK_THROWS_WITH_AS(wrong.run(in, backend), doctest::Contains("= 16 features but the network's input_dim is 10"), error);
  CHECK_THROWS_WITH_AS(wrong.run(in), doctest::Contains("= 16 features but the network's input_dim is 10"), error);
}

TEST_CASE("score(train::scorer) with a frozen DCN-v2, DLRM, two-tower and MLP: cuda_backend equals the CPU backend") {
  const world w;
  SUBCASE("dcn_v2") {
    train::dcn_v2_model model(dcn_config(), {fixed(num_users, 1), fixed(num_items, 2)}, 5);
    check_feature_pipeline(model.freeze(), w);
  }
  SUBCASE("dcn_v2 parallel, logit") {
    auto c = dcn_config();
    c.structure = models::dcn_structure::parallel;
    c.sigmoid = false;
    c.rank = 0;
    train::dcn_v2_model model(c, {fixed(num_users, 1), fixed(num_items, 2)}, 6);
    check_feature_pipeline(model.freeze(), w);
  }
  SUBCASE("dlrm over dynamic tables: id maps, unknown ids read the zero row") {
    models::dlrm_config c;
    c.dense_dim = user_dim + item_dim;
    c.embedding_dim = emb_dim;
    c.bottom = {8, emb_dim};
    c.table_rows = {0, 0};
    c.top = {8, 1};
    auto dynamic = [] {
      return std::make_shared<train::dynamic_table>(train::dynamic_table_config{.dim = emb_dim},
                                                    std::make_shared<train::row_sgd>(0.2));
    };
    train::dlrm_model model(c, {dynamic(), dynamic()}, 4);
    // One training step admits the ids of a few requests; the others stay unknown.
    const auto served = (lookup(w.users) >> lookup(w.items)).run(requests(4, 9));
    std::vector<float> labels(served.candidate_count());
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<float>(i % 2);
    auto logged = train::label_batch<ranking_features>(served, labels);
    train::dlrm_model::workspace ws;
    train::adam adam({.lr = 0.05});
    train::train_step(model, ws, ranking_features{}, logged, train::optimizer_step(adam));
    const auto frozen = model.freeze();
    REQUIRE(frozen.id_maps[0].has_value());
    check_feature_pipeline(frozen, w);
  }
  SUBCASE("two_tower") {
    models::two_tower_config c;
    c.user = {.dense_dim = user_dim, .tables = {{num_users, emb_dim}}, .pooling = cpu::pooling::mean, .dims = {8, 4}};
    c.item = {.dense_dim = item_dim, .tables = {{num_items, emb_dim}}, .pooling = cpu::pooling::sum, .dims = {4}};
    train::two_tower_model model(c, {fixed(num_users, 1)}, {fixed(num_items, 2)}, 7);
    check_feature_pipeline(model.freeze(), w);
  }
  SUBCASE("mlp over dense features") {
    train::dense_mlp_model model({.input_dim = user_dim + item_dim, .dims = {8, 1}}, 8);
    check_feature_pipeline<decltype(model.freeze()), dense_features>(model.freeze(), w);
  }
}

TEST_CASE("NaN features keep NaN scores, ranked last as on the CPU; an id outside a fixed table throws as on the CPU") {
  const world w(/*nan_user=*/true);
  train::dcn_v2_model model(dcn_config(), {fixed(num_users, 1), fixed(num_items, 2)}, 5);
  const auto frozen = model.freeze();
  rc::cuda_backend backend;
  const auto pipeline = lookup(w.users) >> lookup(w.items) >> score(train::scorer<ranking_features>(frozen)) >> top_k(7);
  const auto in = requests(24, 4);
  const auto on_cpu = pipeline.run(in), on_gpu = pipeline.run(in, backend);
  check_same(on_cpu, on_gpu);
  const auto& scores = on_gpu.get<col::score>();
  CHECK(std::any_of(scores.begin(), scores.end(), [](float s) { return std::isnan(s); }));

  auto unknown = requests(3, 6);
  unknown.get<col::user_id>()[2] = static_cast<id_type>(num_users);  // the fixed user table has num_users rows
  CHECK_THROWS_WITH_AS(pipeline.run(unknown), doctest::Contains("is outside [0, 12)"), error);
  CHECK_THROWS_WITH_AS(pipeline.run(unknown, backend), doctest::Contains("is outside [0, 12)"), error);
  check_same(pipeline.run(in), pipeline.run(in, backend));  // the backend still serves after the error
}

TEST_CASE("a slot's new frozen version uploads once; runs between publishes upload nothing") {
  const world w;
  train::dcn_v2_model model(dcn_config(), {fixed(num_users, 1), fixed(num_items, 2)}, 5);
  using frozen_t = decltype(model.freeze());
  version_registry versions;
  auto ranker = versions.add("ranker", std::make_shared<const frozen_t>(model.freeze()));
  rc::cuda_backend backend;
  const auto pipeline = lookup(w.users) >> lookup(w.items) >> score(train::scorer<ranking_features>(ranker)) >> top_k(5);
  const auto in = requests(16, 8);
  check_same(pipeline.run(in), pipeline.run(in, backend));
  (void)pipeline.run(in, backend);
  CHECK(backend.models().uploads() == 1);
  train::dcn_v2_model retrained(dcn_config(), {fixed(num_users, 3), fixed(num_items, 4)}, 9);
  versions.publish(ranker, std::make_shared<const frozen_t>(retrained.freeze()));
  check_same(pipeline.run(in), pipeline.run(in, backend));
  (void)pipeline.run(in, backend);
  CHECK(backend.models().uploads() == 2);
}
