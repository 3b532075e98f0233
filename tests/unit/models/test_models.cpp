// SPDX-License-Identifier: Apache-2.0
// Model loading and forward without PyTorch: naive double references, crafted bad checkpoints
// (missing, extra, misshaped, NaN tensors, bad configs) and bad inputs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <recpipe/io/safetensors.hpp>
#include <recpipe/models/dcn_v2.hpp>
#include <recpipe/models/dlrm.hpp>
#include <recpipe/cpu/isa.hpp>
#include <recpipe/models/mlp.hpp>
#include <recpipe/models/session_transformer.hpp>

#include "common/isa.hpp"
#include "common/tiny_models.hpp"
#include <recpipe/models/two_tower.hpp>

namespace io = recpipe::io;
namespace models = recpipe::models;
using namespace recpipe::testing;
using recpipe::id_type;
using recpipe::matrix;

namespace {

// An MLP 5 -> 4 (relu) -> 3 (sigmoid) and its weights.
struct mlp_fixture {
  io::safetensors_writer writer;
  std::vector<float> w0, b0, w1, b1;
  models::mlp_config config{5, {4, 3}, recpipe::cpu::activation::relu, recpipe::cpu::activation::sigmoid};
  explicit mlp_fixture(const std::string& prefix = "") {
    w0 = add_random(writer, prefix + "layers.0.weight", {4, 5}, 1);
    b0 = add_random(writer, prefix + "layers.0.bias", {4}, 2);
    w1 = add_random(writer, prefix + "layers.2.weight", {3, 4}, 3);
    b1 = add_random(writer, prefix + "layers.2.bias", {3}, 4);
  }
  // Naive double-precision forward of one row.
  std::vector<double> reference(std::span<const float> x) const {
    std::vector<double> h(4), y(3);
    for (std::size_t o = 0; o < 4; ++o) {
      double s = b0[o];
      for (std::size_t i = 0; i < 5; ++i) s += double(w0[o * 5 + i]) * x[i];
      h[o] = std::max(s, 0.0);
    }
    for (std::size_t o = 0; o < 3; ++o) {
      double s = b1[o];
      for (std::size_t i = 0; i < 4; ++i) s += double(w1[o * 4 + i]) * h[i];
      y[o] = 1.0 / (1.0 + std::exp(-s));
    }
    return y;
  }
};

}  // namespace

TEST_CASE("mlp matches a naive double-precision forward, config in code and from metadata") {
  mlp_fixture f;
  f.writer.set_metadata("recpipe.model", "mlp");
  f.writer.set_metadata("recpipe.config", f.config.to_json().dump());
  const auto file = as_file(f.writer);
  for (const auto& model : {models::mlp::load(file, f.config), models::mlp::load(file)}) {
    CHECK(model.input_dim() == 5);
    CHECK(model.output_dim() == 3);
    const std::size_t batch = 7;
    const auto x = random_values(batch * 5, 9, 2.0f);
    matrix<float> y(batch, 3);
    model.forward({x.data(), batch, 5}, y.view());
    for (std::size_t b = 0; b < batch; ++b) {
      const auto want = f.reference({x.data() + b * 5, 5});
      for (std::size_t o = 0; o < 3; ++o) CHECK(y(b, o) == doctest::Approx(want[o]).epsilon(1e-6));
    }
    // The batch of one row gives the same answer as row 0 of the batch.
    matrix<float> one(1, 3);
    model.forward({x.data(), 1, 5}, one.view());
    for (std::size_t o = 0; o < 3; ++o) CHECK(one(0, o) == doctest::Approx(y(0, o)).epsilon(1e-6));
  }
}

TEST_CASE("mlp: the packed AVX-512 path and the portable path agree, into a column block of a wider matrix") {
  mlp_fixture f;
  const auto model = models::mlp::load(as_file(f.writer), f.config);
  const isa_guard guard;
  const std::vector<recpipe::cpu::isa> isas = available_isas();
  for (const std::size_t batch : {1u, 13u, 40u}) {
    const auto x = random_values(batch * 5, 11, 2.0f);
    for (const auto choice : isas) {
      CAPTURE(batch);
      CAPTURE(recpipe::cpu::to_string(choice));
      recpipe::cpu::set_isa(choice);
      matrix<float> wide(batch, 8, -5.0f);  // y is columns [2, 5): the others must stay -5
      model.forward({x.data(), batch, 5}, {wide.data() + 2, batch, 3, 8});
      for (std::size_t b = 0; b < batch; ++b) {
        const auto want = f.reference({x.data() + b * 5, 5});
        for (std::size_t o = 0; o < 3; ++o) CHECK(wide(b, 2 + o) == doctest::Approx(want[o]).epsilon(1e-6));
        for (std::size_t c : {0u, 1u, 5u, 6u, 7u}) CHECK(wide(b, c) == -5.0f);
      }
    }
  }
}

TEST_CASE("mlp keeps the mapping alive after the caller drops the file") {
  mlp_fixture f;
  models::mlp model = [&] { return models::mlp::load(as_file(f.writer), f.config); }();
  const auto x = random_values(5, 1);
  matrix<float> y(1, 3);
  model.forward({x.data(), 1, 5}, y.view());
  CHECK(y(0, 0) == doctest::Approx(f.reference(x)[0]).epsilon(1e-6));
}

TEST_CASE("load_options::prefix selects one model of several in a file") {
  mlp_fixture f("ranker.");
  add_random(f.writer, "other.weight", {2, 2}, 5);  // outside the prefix: ignored
  const auto model = models::mlp::load(as_file(f.writer), f.config, {.prefix = "ranker."});
  CHECK(model.output_dim() == 3);
}

TEST_CASE("missing, extra and misshaped tensors are errors naming the file and the tensor") {
  mlp_fixture f;
  SUBCASE("missing") {
    io::safetensors_writer w;
    w.add("layers.0.weight", std::span<const float>(f.w0), {4, 5});
    w.add("layers.0.bias", std::span<const float>(f.b0), {4});
    CHECK_THROWS_WITH_AS(models::mlp::load(as_file(w, "ckpt.safetensors"), f.config),
                         "recpipe: mlp: ckpt.safetensors: tensor 'layers.2.weight': missing (the mlp config needs it)",
                         recpipe::io_error);
  }
  SUBCASE("extra") {
    add_random(f.writer, "layers.4.weight", {2, 3}, 7);
    CHECK_THROWS_WITH_AS(models::mlp::load(as_file(f.writer), f.config),
                         doctest::Contains("tensor 'layers.4.weight': unexpected tensor"), recpipe::io_error);
    models::load_options lenient;
    lenient.allow_extra_tensors = true;
    CHECK_NOTHROW(models::mlp::load(as_file(f.writer), f.config, lenient));
  }
  SUBCASE("shape mismatch with the config") {
    models::mlp_config wrong = f.config;
    wrong.input_dim = 6;
    CHECK_THROWS_WITH_AS(models::mlp::load(as_file(f.writer), wrong),
                         "recpipe: mlp: test.safetensors: tensor 'layers.0.weight': shape is [4, 5] but the config needs [4, 6]",
                         recpipe::io_error);
  }
  SUBCASE("wrong dtype for a dense weight") {
    io::safetensors_writer w;
    const std::vector<std::int64_t> ints(20, 1);
    w.add("layers.0.weight", std::span<const std::int64_t>(ints), {4, 5});
    w.add("layers.0.bias", std::span<const float>(f.b0), {4});
    w.add("layers.2.weight", std::span<const float>(f.w1), {3, 4});
    w.add("layers.2.bias", std::span<const float>(f.b1), {3});
    // Integer weights are converted like F16/BF16 (exact for small ints), not rejected.
    CHECK_NOTHROW(models::mlp::load(as_file(w), f.config));
  }
}

TEST_CASE("NaN and infinite weights are an error by default, loadable on request") {
  mlp_fixture f;
  io::safetensors_writer w;
  auto bad = f.w1;
  bad[5] = std::numeric_limits<float>::quiet_NaN();
  w.add("layers.0.weight", std::span<const float>(f.w0), {4, 5});
  w.add("layers.0.bias", std::span<const float>(f.b0), {4});
  w.add("layers.2.weight", std::span<const float>(bad), {3, 4});
  w.add("layers.2.bias", std::span<const float>(f.b1), {3});
  CHECK_THROWS_WITH_AS(models::mlp::load(as_file(w), f.config),
                       doctest::Contains("tensor 'layers.2.weight': value nan at flat index 5 is not finite"),
                       recpipe::io_error);
  models::load_options lenient;
  lenient.allow_non_finite = true;
  const auto model = models::mlp::load(as_file(w), f.config, lenient);
  const auto x = random_values(5, 3);
  matrix<float> y(1, 3);
  model.forward({x.data(), 1, 5}, y.view());
  CHECK(std::isnan(y(0, 1)));  // row 1 of layer 2 holds the NaN

  io::safetensors_writer inf_writer;
  auto infinite = f.b0;
  infinite[0] = INFINITY;
  inf_writer.add("layers.0.weight", std::span<const float>(f.w0), {4, 5});
  inf_writer.add("layers.0.bias", std::span<const float>(infinite), {4});
  inf_writer.add("layers.2.weight", std::span<const float>(f.w1), {3, 4});
  inf_writer.add("layers.2.bias", std::span<const float>(f.b1), {3});
  CHECK_THROWS_WITH_AS(models::mlp::load(as_file(inf_writer), f.config), doctest::Contains("'layers.0.bias': value inf"),
                       recpipe::io_error);
  // NaN in an F16 embedding table is caught too.
  io::safetensors_writer emb;
  std::vector<float> table = random_values(6 * 2, 4);
  table[3] = NAN;
  emb.add_converted("emb_l.0.weight", io::dtype::f16, table, {6, 2});
  models::dlrm_config dc{1, 2, {2}, {6}, {1}, false, recpipe::cpu::activation::sigmoid};
  add_random(emb, "bot_l.0.weight", {2, 1}, 1);
  add_random(emb, "bot_l.0.bias", {2}, 2);
  add_random(emb, "top_l.0.weight", {1, 3}, 3);
  add_random(emb, "top_l.0.bias", {1}, 4);
  CHECK_THROWS_WITH_AS(models::dlrm::load(as_file(emb), dc), doctest::Contains("'emb_l.0.weight': value nan at flat index 3"),
                       recpipe::io_error);
}

TEST_CASE("configs from metadata: absent, wrong kind, malformed") {
  mlp_fixture f;
  CHECK_THROWS_WITH_AS(models::mlp::load(as_file(f.writer)), doctest::Contains("metadata has no 'recpipe.model'"),
                       recpipe::io_error);
  f.writer.set_metadata("recpipe.model", "dlrm");
  f.writer.set_metadata("recpipe.config", "{}");
  CHECK_THROWS_WITH_AS(models::mlp::load(as_file(f.writer)), doctest::Contains("holds a 'dlrm', not a 'mlp'"),
                       recpipe::io_error);
  f.writer.set_metadata("recpipe.model", "mlp");
  f.writer.set_metadata("recpipe.config", "{not json");
  CHECK_THROWS_WITH_AS(models::mlp::load(as_file(f.writer)), doctest::Contains("recpipe.config is not valid JSON"),
                       recpipe::io_error);
  f.writer.set_metadata("recpipe.config", R"({"input_dim": 5})");
  CHECK_THROWS_WITH_AS(models::mlp::load(as_file(f.writer)), "recpipe: mlp: config: field 'dims' is missing", recpipe::error);
  f.writer.set_metadata("recpipe.config", R"({"input_dim": 5, "dims": [4, -3]})");
  CHECK_THROWS_WITH_AS(models::mlp::load(as_file(f.writer)), doctest::Contains("'dims' must be an array of positive integers"),
                       recpipe::error);
  f.writer.set_metadata("recpipe.config", R"({"input_dim": 5, "dims": [4, 3], "activation": "swish"})");
  CHECK_THROWS_WITH_AS(models::mlp::load(as_file(f.writer)), doctest::Contains("unknown activation 'swish'"), recpipe::error);
  CHECK_THROWS_WITH_AS(models::dlrm_config::from_json(nlohmann::json::parse(
                           R"({"dense_dim":3,"embedding_dim":8,"bottom":[4],"table_rows":[10],"top":[1]})")),
                       doctest::Contains("bottom MLP ends at 4 but embedding_dim is 8"), recpipe::error);
  CHECK_THROWS_AS(models::session_transformer_config::from_json(nlohmann::json::parse(
                      R"({"num_items":10,"embedding_dim":6,"max_length":4,"num_heads":4,"ffn_dim":8,"num_layers":1})")),
                  recpipe::error);
  CHECK_THROWS_WITH_AS(
      models::dcn_v2_config::from_json(nlohmann::json::parse(
          R"({"dense_dim":3,"tables":[[10,0]],"cross_layers":1,"deep":[4]})")),
      doctest::Contains("[rows, dim] pairs of positive integers"), recpipe::error);
}

TEST_CASE("mlp forward rejects wrong shapes") {
  mlp_fixture f;
  const auto model = models::mlp::load(as_file(f.writer), f.config);
  matrix<float> x(2, 4), y(2, 3), y_bad(3, 3);
  CHECK_THROWS_WITH_AS(model.forward(x.view(), y.view()), "recpipe: mlp: forward: x has 4 columns but the model's input_dim is 5",
                       recpipe::error);
  matrix<float> x_ok(2, 5);
  CHECK_THROWS_WITH_AS(model.forward(x_ok.view(), y_bad.view()), doctest::Contains("y must be 2 x 3"), recpipe::error);
  matrix<float> empty_x(0, 5), empty_y(0, 3);
  CHECK_NOTHROW(model.forward(empty_x.view(), empty_y.view()));
}

namespace {
// A small DLRM: dense 3, dim 4, tables {10, 7}, bottom [8, 4], top [5, 1].
struct dlrm_fixture {
  io::safetensors_writer writer;
  models::dlrm_config config{3, 4, {8, 4}, {10, 7}, {5, 1}, false, recpipe::cpu::activation::sigmoid};
  dlrm_fixture() {
    add_random(writer, "bot_l.0.weight", {8, 3}, 1);
    add_random(writer, "bot_l.0.bias", {8}, 2);
    add_random(writer, "bot_l.2.weight", {4, 8}, 3);
    add_random(writer, "bot_l.2.bias", {4}, 4);
    add_random(writer, "emb_l.0.weight", {10, 4}, 5);
    add_random(writer, "emb_l.1.weight", {7, 4}, 6);
    add_random(writer, "top_l.0.weight", {5, 4 + 3}, 7);
    add_random(writer, "top_l.0.bias", {5}, 8);
    add_random(writer, "top_l.2.weight", {1, 5}, 9);
    add_random(writer, "top_l.2.bias", {1}, 10);
  }
};
}  // namespace

TEST_CASE("dlrm: bad ids, offsets and feature counts are errors naming the feature") {
  dlrm_fixture f;
  const auto model = models::dlrm::load(as_file(f.writer), f.config);
  matrix<float> dense(2, 3, 0.5f), out(2, 1);
  std::vector<id_type> ids0 = {1, 2, 3}, off0 = {0, 2, 3}, ids1 = {6, 0}, off1 = {0, 1, 2};
  std::vector<recpipe::cpu::bag_input> sparse = {{ids0, off0}, {ids1, off1}};
  model.forward(dense.view(), sparse, out.view());
  CHECK(out(0, 0) > 0.0f);
  CHECK(out(0, 0) < 1.0f);
  std::vector<id_type> bad_ids1 = {7, 0};
  sparse[1].ids = bad_ids1;
  CHECK_THROWS_WITH_AS(model.forward(dense.view(), sparse, out.view()),
                       doctest::Contains("inputs[1]: cpu::embedding_bag: ids[0] = 7 is outside [0, 7)"), recpipe::error);
  std::vector<id_type> negative = {-1, 0};
  sparse[1].ids = negative;
  CHECK_THROWS_AS(model.forward(dense.view(), sparse, out.view()), recpipe::error);
  sparse[1].ids = ids1;
  std::vector<id_type> bad_offsets = {0, 5, 2};
  sparse[0].offsets = bad_offsets;
  CHECK_THROWS_AS(model.forward(dense.view(), sparse, out.view()), recpipe::error);
  sparse[0].offsets = off0;
  CHECK_THROWS_WITH_AS(model.forward(dense.view(), std::span(sparse).first(1), out.view()),
                       "recpipe: dlrm: forward: the model has 2 sparse features but 1 bag inputs were given", recpipe::error);
  matrix<float> wrong_dense(2, 4);
  CHECK_THROWS_WITH_AS(model.forward(wrong_dense.view(), sparse, out.view()), "recpipe: dlrm: forward: dense must be 2 x 3 (got 2 x 4)",
                       recpipe::error);
  matrix<float> wrong_out(2, 2);
  CHECK_THROWS_AS(model.forward(dense.view(), sparse, wrong_out.view()), recpipe::error);
}

TEST_CASE("dlrm: a caller's workspace gives the same scores, is empty after a throw, and a warm forward allocates nothing") {
  dlrm_fixture f;
  const auto model = models::dlrm::load(as_file(f.writer), f.config);
  matrix<float> dense(2, 3, 0.5f), want(2, 1), got(2, 1);
  std::vector<id_type> ids0 = {1, 2, 3}, off0 = {0, 2, 3}, ids1 = {6, 0}, off1 = {0, 1, 2};
  std::vector<recpipe::cpu::bag_input> sparse = {{ids0, off0}, {ids1, off1}};
  model.forward(dense.view(), sparse, want.view());
  recpipe::cpu::workspace ws;
  model.forward(dense.view(), sparse, got.view(), ws);
  CHECK(got(0, 0) == want(0, 0));
  CHECK(got(1, 0) == want(1, 0));
  CHECK(ws.in_use() == 0);
  const std::size_t allocations = ws.allocations();
  for (int run = 0; run < 3; ++run) model.forward(dense.view(), sparse, got.view(), ws);
  CHECK(ws.allocations() == allocations);
  std::vector<id_type> bad_ids1 = {7, 0};
  sparse[1].ids = bad_ids1;  // throws after the model took its buffers
  CHECK_THROWS_AS(model.forward(dense.view(), sparse, got.view(), ws), recpipe::error);
  CHECK(ws.in_use() == 0);
}

TEST_CASE("dlrm with F16 and BF16 weights computes what the F32 weights compute, to half precision") {
  dlrm_fixture f;
  const auto reference_file = as_file(f.writer);
  for (io::dtype type : {io::dtype::f16, io::dtype::bf16}) {
    io::safetensors_writer converted;
    for (const io::tensor_view& t : reference_file->tensors())
      converted.add_converted(std::string(t.name), type, t.data<float>(), {t.shape.begin(), t.shape.end()});
    const auto exact = models::dlrm::load(reference_file, f.config);
    const auto reduced = models::dlrm::load(as_file(converted), f.config);
    matrix<float> dense(3, 3, 0.25f), a(3, 1), b(3, 1);
    std::vector<id_type> ids0 = {1, 9}, off0 = {0, 1, 2, 2}, ids1 = {6, 0, 3}, off1 = {0, 1, 2, 3};
    std::vector<recpipe::cpu::bag_input> sparse = {{ids0, off0}, {ids1, off1}};
    exact.forward(dense.view(), sparse, a.view());
    reduced.forward(dense.view(), sparse, b.view());
    for (std::size_t r = 0; r < 3; ++r) CHECK(b(r, 0) == doctest::Approx(a(r, 0)).epsilon(0.02));
  }
}

TEST_CASE("two_tower: towers with mismatched output widths are rejected") {
  models::two_tower_config c;
  c.user = {2, {{5, 3}}, recpipe::cpu::pooling::mean, {4}, recpipe::cpu::activation::relu};
  c.item = {2, {{5, 3}}, recpipe::cpu::pooling::mean, {6}, recpipe::cpu::activation::relu};
  io::safetensors_writer w;
  CHECK_THROWS_WITH_AS(models::two_tower::load(as_file(w), c), doctest::Contains("last dims must be equal"), recpipe::error);
}

TEST_CASE("two_tower: normalized towers output unit vectors; an all-zero output stays finite") {
  io::safetensors_writer w;
  for (const char* side : {"user_tower.", "item_tower."}) {
    add_random(w, std::string(side) + "embeddings.0.weight", {5, 3}, 1);
    add_random(w, std::string(side) + "mlp.layers.0.weight", {4, 5}, 2);
    add_random(w, std::string(side) + "mlp.layers.0.bias", {4}, 3);
  }
  models::two_tower_config c;
  c.user = {2, {{5, 3}}, recpipe::cpu::pooling::mean, {4}, recpipe::cpu::activation::relu};
  c.item = c.user;
  const auto model = models::two_tower::load(as_file(w), c);
  matrix<float> dense(2, 2, 1.0f), out(2, 4);
  std::vector<id_type> ids = {0, 4}, offsets = {0, 1, 2};
  std::vector<recpipe::cpu::bag_input> sparse = {{ids, offsets}};
  model.encode_users(dense.view(), sparse, out.view());
  for (std::size_t r = 0; r < 2; ++r) {
    double norm = 0;
    for (float v : out.row(r)) norm += double(v) * v;
    CHECK(std::sqrt(norm) == doctest::Approx(1.0).epsilon(1e-6));
  }
  matrix<float> scores(2, 1);
  model.forward(dense.view(), sparse, dense.view(), sparse, scores.view());
  CHECK(scores(0, 0) == doctest::Approx(1.0).epsilon(1e-5));  // same tower weights, same input: cosine 1
}

TEST_CASE("session_transformer: batching, truncation to max_length, empty sessions, causality") {
  const auto model = models::session_transformer::load(as_file(tiny_session_weights()), tiny_session_config());
  // Sessions: {3, 5, 7}, {}, {1, 2, 3, 4, 5, 6} (longer than max_length 4), {9}
  std::vector<id_type> items = {3, 5, 7, 1, 2, 3, 4, 5, 6, 9};
  std::vector<id_type> offsets = {0, 3, 3, 9, 10};
  matrix<float> out(4, 8);
  model.encode(offsets, items, out.view());
  for (float v : out.row(1)) CHECK(v == 0.0f);  // empty session -> zeros

  // Each session alone gives the same vector as in the batch.
  auto alone = [&](std::vector<id_type> session) {
    std::vector<id_type> o = {0, static_cast<id_type>(session.size())};
    matrix<float> v(1, 8);
    model.encode(o, session, v.view());
    return v;
  };
  const auto first = alone({3, 5, 7});
  const auto truncated = alone({3, 4, 5, 6});  // the last max_length items of the long session
  const auto single = alone({9});
  for (std::size_t c = 0; c < 8; ++c) {
    CHECK(out(0, c) == doctest::Approx(first(0, c)).epsilon(1e-5));
    CHECK(out(2, c) == doctest::Approx(truncated(0, c)).epsilon(1e-5));
    CHECK(out(3, c) == doctest::Approx(single(0, c)).epsilon(1e-5));
  }
  // Earlier items reach the last position through attention: changing the first item changes it.
  const auto changed = alone({4, 5, 7});
  bool differs = false;
  for (std::size_t c = 0; c < 8; ++c) differs = differs || std::fabs(changed(0, c) - first(0, c)) > 1e-6f;
  CHECK(differs);

  matrix<float> scores(4, 20);
  model.score_all_items(out.view(), scores.view());
  double dot = 0;
  for (std::size_t c = 0; c < 8; ++c) dot += double(out(0, c)) * model.item_embeddings()(7, c);
  CHECK(scores(0, 7) == doctest::Approx(dot).epsilon(1e-5));
  for (float v : scores.row(1)) CHECK(v == 0.0f);
}

TEST_CASE("session_transformer: bad inputs") {
  const auto model = models::session_transformer::load(as_file(tiny_session_weights()), tiny_session_config());
  matrix<float> out(1, 8);
  std::vector<id_type> items = {3, 20};
  std::vector<id_type> offsets = {0, 2};
  CHECK_THROWS_WITH_AS(model.encode(offsets, items, out.view()),
                       "recpipe: session_transformer: encode: items[1] = 20 is outside [0, 20)", recpipe::error);
  items = {3, -2};
  CHECK_THROWS_AS(model.encode(offsets, items, out.view()), recpipe::error);
  items = {3, 4};
  std::vector<id_type> bad = {0, 3};
  CHECK_THROWS_WITH_AS(model.encode(bad, items, out.view()), doctest::Contains("must equal items.size() = 2"), recpipe::error);
  std::vector<id_type> decreasing = {0, 2, 1, 2};
  matrix<float> out3(3, 8);
  CHECK_THROWS_WITH_AS(model.encode(decreasing, items, out3.view()), doctest::Contains("must not decrease"), recpipe::error);
  CHECK_THROWS_AS(model.encode({}, items, out.view()), recpipe::error);
  matrix<float> wrong(2, 8);
  CHECK_THROWS_WITH_AS(model.encode(offsets, items, wrong.view()), doctest::Contains("out must be 1 x 8"), recpipe::error);
  matrix<float> scores(1, 19);
  CHECK_THROWS_AS(model.score_all_items(out.view(), scores.view()), recpipe::error);
}

TEST_CASE("dcn_v2: low-rank tensors under a full-rank config are reported") {
  io::safetensors_writer w;
  add_random(w, "cross.0.down.weight", {2, 3}, 1);
  add_random(w, "cross.0.up.weight", {3, 2}, 2);
  add_random(w, "cross.0.bias", {3}, 3);
  add_random(w, "deep.layers.0.weight", {4, 3}, 4);
  add_random(w, "deep.layers.0.bias", {4}, 5);
  add_random(w, "head.weight", {1, 4}, 6);
  add_random(w, "head.bias", {1}, 7);
  models::dcn_v2_config c;
  c.dense_dim = 3;
  c.cross_layers = 1;
  c.deep = {4};
  CHECK_THROWS_WITH_AS(models::dcn_v2::load(as_file(w), c), doctest::Contains("tensor 'cross.0.weight': missing"),
                       recpipe::io_error);
  c.rank = 2;
  const auto model = models::dcn_v2::load(as_file(w), c);
  matrix<float> dense(2, 3, 0.1f), out(2, 1);
  model.forward(dense.view(), {}, out.view());
  CHECK(out(0, 0) == doctest::Approx(out(1, 0)));
  CHECK(out(0, 0) > 0.0f);
}
