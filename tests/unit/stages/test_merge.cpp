// SPDX-License-Identifier: Apache-2.0
// Tests for merge / `a + b`: two branches over the same requests joined, de-duplicated, checked.
#include <doctest/doctest.h>

#include <recpipe/core/versions.hpp>
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/merge.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/rules.hpp>

#include <limits>
#include <memory>
#include <vector>

using namespace recpipe;

namespace {
using requests = batch<col::user_id, col::query_vector>;
requests make_requests(std::vector<std::vector<float>> rows) {
  requests b(rows.size());
  for (std::size_t r = 0; r < rows.size(); ++r) b.get<col::user_id>()[r] = static_cast<id_type>(100 + r);
  b.get<col::query_vector>() = matrix<float>(rows.size(), 2);
  for (std::size_t r = 0; r < rows.size(); ++r)
    for (std::size_t d = 0; d < 2; ++d) b.get<col::query_vector>()(r, d) = rows[r][d];
  return b;
}

//! Index A holds items 1..3, index B holds 3..5; item 3 is in both, nearer the query in B.
struct two_indexes {
  cpu::exact_index a{2, metric::inner_product}, b{2, metric::inner_product};
  two_indexes() {
    a.add(1, std::vector<float>{3, 0});
    a.add(2, std::vector<float>{2, 0});
    a.add(3, std::vector<float>{1, 0});
    b.add(3, std::vector<float>{5, 0});
    b.add(4, std::vector<float>{4, 0});
    b.add(5, std::vector<float>{0.5f, 0});
  }
};

//! A candidate source that returns fixed rows, duplicates and invalid ids included (a misbehaving
//! retriever, or a rule-based source).
struct fixed_source : stage<fixed_source> {
  using reads = columns<col::user_id>;
  using writes = columns<col::candidates, col::retrieval_score>;
  static constexpr std::string_view name = "fixed_source";
  std::vector<id_type> ids;
  std::vector<float> scores;
};
}  // namespace

template <>
struct recpipe::stage_impl<fixed_source, cpu_backend> {
  template <class Batch>
  static auto run(const fixed_source& s, Batch&& batch, cpu_backend&) {
    ragged<id_type> candidates;
    std::vector<float> scores;
    for (std::size_t r = 0; r < batch.size(); ++r) {
      candidates.push_row(std::span<const id_type>(s.ids));
      scores.insert(scores.end(), s.scores.begin(), s.scores.end());
    }
    return std::forward<Batch>(batch).template with<col::candidates>(std::move(candidates))
        .template with<col::retrieval_score>(std::move(scores));
  }
};

TEST_CASE("a + b: left candidates first, then the right's new ones, first occurrence kept") {
  two_indexes idx;
  const auto both = retrieve(idx.a, 3) + retrieve(idx.b, 3);
  const auto out = both(make_requests({{1, 0}, {-1, 0}}));
  static_assert(std::is_same_v<std::remove_cvref_t<decltype(out)>,
                               batch<col::user_id, col::query_vector, col::candidates, col::retrieval_score>>);
  CHECK(out.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 5, 10});
  CHECK(out.get<col::candidates>().row(0)[0] == 1);
  CHECK(std::vector<id_type>(out.get<col::candidates>().row(0).begin(), out.get<col::candidates>().row(0).end()) ==
        std::vector<id_type>{1, 2, 3, 4, 5});
  // item 3 keeps the left branch's score (1), not the right's (5)
  CHECK(std::vector<float>(out.get<col::retrieval_score>().begin(), out.get<col::retrieval_score>().begin() + 5) ==
        std::vector<float>{3, 2, 1, 4, 0.5f});
  CHECK(out.get<col::user_id>() == std::vector<id_type>{100, 101});
  CHECK_NOTHROW(out.validate());
  CHECK(decltype(both)::name == "merge");
}

TEST_CASE("merge<Score> keeps an item's first position and the values of its best-scored occurrence") {
  two_indexes idx;
  const auto best = merge<col::retrieval_score>(retrieve(idx.a, 3), retrieve(idx.b, 3));
  const auto out = best(make_requests({{1, 0}}));
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{1, 2, 3, 4, 5});
  CHECK(out.get<col::retrieval_score>() == std::vector<float>{3, 2, 5, 4, 0.5f});
  // then top_k ranks the merged list
  const auto ranked = best >> top_k<col::retrieval_score>(2);
  CHECK(ranked.run(make_requests({{1, 0}})).get<col::candidates>().values() == std::vector<id_type>{3, 4});
}

TEST_CASE("(a + b) >> c: merged retrievers inside a pipeline, with branch pipelines") {
  two_indexes idx;
  const auto recommend = (retrieve(idx.a, 2) + (retrieve(idx.b, 3) >> filter_out({4}))) >> top_k<col::retrieval_score>(3);
  static_assert(decltype(recommend)::stage_count == 2);
  const auto out = recommend.run(make_requests({{1, 0}}));
  // A: 1 (3), 2 (2); B without 4: 3 (5), 5 (0.5); ranked by score
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{3, 1, 2});
  CHECK(out.get<col::retrieval_score>() == std::vector<float>{5, 3, 2});
  // three sources: (a + b) + c
  fixed_source c;
  c.ids = {9, 1};
  c.scores = {0.f, 0.f};
  const auto three = retrieve(idx.a, 1) + retrieve(idx.b, 1) + c;
  CHECK(three(make_requests({{1, 0}})).get<col::candidates>().values() == std::vector<id_type>{1, 3, 9});
}

TEST_CASE("merge drops invalid ids and duplicates within one branch, empty sides and empty batches") {
  fixed_source messy, empty;
  messy.ids = {7, -1, 7, 8, -5};
  messy.scores = {0.1f, 9.f, 0.7f, 0.2f, 9.f};
  const auto out = merge<col::retrieval_score>(messy, empty)(make_requests({{0, 0}, {0, 0}}));
  CHECK(out.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 2, 4});
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{7, 8, 7, 8});
  CHECK(out.get<col::retrieval_score>() == std::vector<float>{0.7f, 0.2f, 0.7f, 0.2f});
  const auto first = (messy + empty)(make_requests({{0, 0}}));
  CHECK(first.get<col::retrieval_score>() == std::vector<float>{0.1f, 0.2f});
  const auto nothing = (empty + empty)(make_requests({{0, 0}}));
  CHECK(nothing.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 0});
  CHECK((messy + empty)(make_requests({})).size() == 0);
}

TEST_CASE("NaN scores lose to numbers in merge<Score>, a request one branch cannot serve gets the other's") {
  fixed_source nan_first, numbers;
  nan_first.ids = {1, 2};
  nan_first.scores = {std::numeric_limits<float>::quiet_NaN(), 0.5f};
  numbers.ids = {1};
  numbers.scores = {-3.f};
  const auto out = merge<col::retrieval_score>(nan_first, numbers)(make_requests({{0, 0}}));
  CHECK(out.get<col::retrieval_score>() == std::vector<float>{-3.f, 0.5f});

  two_indexes idx;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const auto out2 = (retrieve(idx.a, 1) + numbers)(make_requests({{nan, 0}, {1, 0}}));
  CHECK(out2.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 1, 2});
  CHECK(out2.get<col::candidates>().values() == std::vector<id_type>{1, 1});  // row 0: only the fixed source
}

TEST_CASE("per-candidate vectors are merged, widths must agree, per-request columns of a branch stay inside") {
  two_indexes idx;
  feature_store<col::candidates, col::item_embedding> narrow(2), wide(3);
  feature_store<col::user_id, col::user_embedding> users(2);
  for (id_type i = 1; i <= 5; ++i) {
    narrow.insert(i, std::vector<float>{static_cast<float>(i), 0});
    wide.insert(i, std::vector<float>{static_cast<float>(i), 0, 0});
  }
  const auto both = (lookup(users) >> retrieve(idx.a, 1) >> lookup(narrow)) + (retrieve(idx.b, 1) >> lookup(narrow));
  const auto out = both(make_requests({{1, 0}}));
  static_assert(!std::remove_cvref_t<decltype(out)>::contains<col::user_embedding>);
  CHECK(out.get<col::candidates>().values() == std::vector<id_type>{1, 3});
  CHECK(out.get<col::item_embedding>()(1, 0) == 3.f);
  const auto mismatched = (retrieve(idx.a, 1) >> lookup(narrow)) + (retrieve(idx.b, 1) >> lookup(wide));
  CHECK_THROWS_WITH_AS(mismatched(make_requests({{1, 0}})),
                       "recpipe: merge: column 'item_embedding' has width 2 in the left branch but 3 in the right branch",
                       error);
}

TEST_CASE("branches over versioned slots read the generation the run pinned") {
  version_registry versions;
  auto index = std::make_shared<cpu::exact_index>(2, metric::inner_product);
  index->add(1, std::vector<float>{1, 0});
  auto slot_a = versions.add<cpu::exact_index>("a", index);
  two_indexes idx;
  const auto recommend = (retrieve(slot_a, 5) + retrieve(idx.b, 1)) >> top_k<col::retrieval_score>(5);
  CHECK(recommend.run(make_requests({{1, 0}})).get<col::candidates>().values() == std::vector<id_type>{3, 1});
  auto next = std::make_shared<cpu::exact_index>(2, metric::inner_product);
  next->add(7, std::vector<float>{9, 0});
  versions.publish(slot_a, std::shared_ptr<const cpu::exact_index>(next));
  CHECK(recommend.run(make_requests({{1, 0}})).get<col::candidates>().values() == std::vector<id_type>{7, 3});
  // a branch error propagates
  CHECK_THROWS_AS((retrieve(idx.a, 1) + retrieve(idx.b, 1))(batch<col::query_vector>(1)), error);
}
