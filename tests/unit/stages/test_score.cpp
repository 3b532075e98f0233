// SPDX-License-Identifier: Apache-2.0
// Tests for score and encode: model ownership, dot products, dimension errors, NaN.
#include <doctest/doctest.h>

#include <recpipe/stages/score.hpp>

#include <cmath>
#include <limits>
#include <vector>

using namespace recpipe;

namespace {
batch<col::user_embedding, col::candidates, col::item_embedding> make_input(std::size_t item_width = 2) {
  batch<col::user_embedding, col::candidates, col::item_embedding> b(2);
  b.get<col::user_embedding>() = matrix<float>({1, 2, 3, 4}, 2, 2);
  b.get<col::candidates>().assign({0, 2, 3}, {7, 8, 9});
  b.get<col::item_embedding>() = matrix<float>(3, item_width, 1.0f);
  return b;
}

// A model that counts how it is held: by reference when named, by value when temporary.
struct constant_model {
  using reads = columns<col::candidates>;
  float value = 0;
  template <class Batch>
  void score(const Batch&, std::span<float> out) const {
    for (auto& s : out) s = value;
  }
};

struct mean_encoder {
  using reads = columns<col::user_embedding>;
  std::size_t output_dim() const { return 1; }
  template <class Batch>
  void encode(const Batch& b, matrix_view<float> out) const {
    const auto& in = b.template get<col::user_embedding>();
    for (std::size_t r = 0; r < in.rows(); ++r) out(r, 0) = (in(r, 0) + in(r, 1)) / 2;
  }
};
}  // namespace

TEST_CASE("dot_product_scorer scores each candidate against its request's vector") {
  const auto out = make_input() >> score(dot_product_scorer<>{});
  CHECK(out.get<col::score>() == std::vector<float>{3.f, 3.f, 7.f});
}

TEST_CASE("mismatched widths are an error naming both columns") {
  CHECK_THROWS_WITH_AS(make_input(3) >> score(dot_product_scorer<>{}),
                       "recpipe: dot_product_scorer: 'user_embedding' has width 2 but 'item_embedding' has width 3", error);
}

TEST_CASE("a named model is held by reference, a temporary is owned") {
  constant_model model{1.0f};
  const auto by_reference = score(model);
  model.value = 2.0f;  // visible through the stage: it refers to `model`
  CHECK((make_input() >> by_reference).get<col::score>() == std::vector<float>{2.f, 2.f, 2.f});
  const auto owned = score(constant_model{5.0f});
  CHECK((make_input() >> owned).get<col::score>() == std::vector<float>{5.f, 5.f, 5.f});
}

TEST_CASE("NaN scores are kept for the ordering stage to rank last") {
  const auto out = make_input() >> score(constant_model{std::numeric_limits<float>::quiet_NaN()});
  CHECK(std::isnan(out.get<col::score>()[0]));
}

TEST_CASE("encode writes one vector per request") {
  const auto out = make_input() >> encode(mean_encoder{});
  CHECK(out.get<col::query_vector>().rows() == 2);
  CHECK(out.get<col::query_vector>()(1, 0) == 3.5f);
}
