// SPDX-License-Identifier: Apache-2.0
// Tests for top_k and softmax_sample: determinism, NaN, ties, temperature, distribution.
#include <doctest/doctest.h>

#include <recpipe/stages/order.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <vector>

using namespace recpipe;

namespace {
using scored = batch<col::user_id, col::candidates, col::score, col::item_embedding>;
scored make_scored(std::vector<float> scores, std::vector<id_type> ids, id_type user = 1) {
  scored b(1);
  b.get<col::user_id>() = {user};
  b.get<col::candidates>().assign({0, ids.size()}, ids);
  b.get<col::item_embedding>() = matrix<float>(ids.size(), 1);
  for (std::size_t i = 0; i < ids.size(); ++i) b.get<col::item_embedding>()(i, 0) = static_cast<float>(ids[i]);
  b.get<col::score>() = std::move(scores);
  return b;
}
std::vector<id_type> ids_of(const scored& b) { return b.get<col::candidates>().values(); }
const float not_a_number = std::numeric_limits<float>::quiet_NaN();
const float infinity = std::numeric_limits<float>::infinity();
}  // namespace

TEST_CASE("top_k orders by score descending then id ascending, NaN last") {
  const auto out = make_scored({1.f, not_a_number, 3.f, 3.f, -infinity, 2.f}, {50, 40, 30, 20, 10, 60}) >> top_k(10);
  CHECK(ids_of(out) == std::vector<id_type>{20, 30, 60, 50, 10, 40});
  // every per-candidate column follows the candidates
  for (std::size_t i = 0; i < 6; ++i)
    CHECK(out.get<col::item_embedding>()(i, 0) == static_cast<float>(out.get<col::candidates>().values()[i]));
  const auto best_two = make_scored({1.f, not_a_number, 3.f, 3.f}, {50, 40, 30, 20}) >> top_k(2);
  CHECK(ids_of(best_two) == std::vector<id_type>{20, 30});
  CHECK_THROWS_WITH_AS(top_k(0), "recpipe: top_k: k must be at least 1 (got 0)", error);
}

TEST_CASE("top_k on empty candidate lists and by another column") {
  scored empty_rows(2);
  empty_rows.get<col::user_id>() = {1, 2};
  const auto none = empty_rows >> top_k(3);
  CHECK(none.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 0, 0});
  batch<col::candidates, col::retrieval_score> b(1);
  b.get<col::candidates>().assign({0, 2}, {1, 2});
  b.get<col::retrieval_score>() = {0.5f, 0.7f};
  const auto best = b >> top_k<col::retrieval_score>(1);
  CHECK(best.get<col::candidates>().values() == std::vector<id_type>{2});
}

TEST_CASE("softmax_sample is reproducible and temperature 0 is exactly top_k") {
  const std::vector<float> scores{0.1f, 0.5f, 0.3f, 0.9f, 0.7f, 0.2f};
  const std::vector<id_type> ids{1, 2, 3, 4, 5, 6};
  const auto a = make_scored(scores, ids) >> softmax_sample(4, 1.0f, 7);
  const auto b = make_scored(scores, ids) >> softmax_sample(4, 1.0f, 7);
  CHECK(ids_of(a) == ids_of(b));
  CHECK(ids_of(a).size() == 4);
  const auto greedy = make_scored(scores, ids) >> softmax_sample(4, 0.0f);
  CHECK(ids_of(greedy) == ids_of(make_scored(scores, ids) >> top_k(4)));
  const auto cold = make_scored(scores, ids) >> softmax_sample(6, 1e-4f, 99);
  CHECK(ids_of(cold) == std::vector<id_type>{4, 5, 2, 3, 6, 1});  // the top_k order as temperature -> 0
}

TEST_CASE("softmax_sample draws the first item with probability softmax(score / T)") {
  const std::vector<float> scores{0.0f, 1.0f, 2.0f};
  const float temperature = 1.0f;
  std::map<id_type, int> first;
  const int draws = 6000;
  for (int seed = 0; seed < draws; ++seed) {
    const auto out = make_scored(scores, {0, 1, 2}) >> softmax_sample(1, temperature, static_cast<std::uint64_t>(seed));
    ++first[ids_of(out)[0]];
  }
  const double z = std::exp(0.0) + std::exp(1.0) + std::exp(2.0);
  for (id_type i = 0; i < 3; ++i) {
    const double expected = std::exp(scores[static_cast<std::size_t>(i)] / temperature) / z;
    const double observed = static_cast<double>(first[i]) / draws;
    CHECK(std::abs(observed - expected) < 4.0 * std::sqrt(expected * (1 - expected) / draws) + 1e-3);
  }
}

TEST_CASE("softmax_sample: request seeds vary the sample, NaN never precedes a number, bad arguments") {
  std::vector<float> flat(50, 0.0f);
  std::vector<id_type> ids(50);
  for (std::size_t i = 0; i < 50; ++i) ids[i] = static_cast<id_type>(i);
  auto one = make_scored(flat, ids, 1) >> softmax_sample(5, 1.0f, 3);
  auto other = make_scored(flat, ids, 2) >> softmax_sample(5, 1.0f, 3);
  CHECK(ids_of(one) != ids_of(other));  // the user id feeds the stream

  const auto with_nan = make_scored({not_a_number, 0.f, not_a_number, -100.f}, {1, 2, 3, 4}) >> softmax_sample(4, 5.0f);
  CHECK(ids_of(with_nan)[2] == 1);
  CHECK(ids_of(with_nan)[3] == 3);

  CHECK_THROWS_AS(softmax_sample(0, 1.0f), error);
  CHECK_THROWS_AS(softmax_sample(3, -1.0f), error);
  CHECK_THROWS_AS(softmax_sample(3, not_a_number), error);
  CHECK_THROWS_AS(softmax_sample(3, infinity), error);
}
