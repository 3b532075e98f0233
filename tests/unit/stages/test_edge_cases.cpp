// SPDX-License-Identifier: Apache-2.0
// The edge cases Merlin Systems' users hit, each with its documented result: an ANN index that
// returns fewer than k or invalid ids, a user missing from the store, k larger than the index,
// every candidate filtered out, duplicates from two retrievers, an empty session, and one batch
// that mixes them all.
#include <doctest/doctest.h>

#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/feature_store.hpp>
#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/merge.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/rules.hpp>
#include <recpipe/stages/score.hpp>
#include <recpipe/stages/session_encoder.hpp>

#include "common/tiny_models.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <span>
#include <vector>

using namespace recpipe;

namespace {
const float not_a_number = std::numeric_limits<float>::quiet_NaN();

//! An ANN index that misbehaves the ways real ones do: it finds fewer than k items, reports one
//! invalid id (-1, hnswlib's and FAISS's "no result"), leaves garbage after what it found, and
//! may even claim more results than asked for.
struct flaky_index {
  std::size_t claimed = 3;
  std::size_t dim() const { return 2; }
  std::size_t search(std::span<const float>, std::size_t k, std::span<id_type> ids, std::span<float> scores) const {
    std::fill(ids.begin(), ids.end(), 999);  // garbage past the results
    std::fill(scores.begin(), scores.end(), 99.f);
    const id_type found[] = {4, -1, 6};
    const float score[] = {1.f, 5.f, 0.5f};
    for (std::size_t i = 0; i < std::min<std::size_t>(k, 3); ++i) ids[i] = found[i], scores[i] = score[i];
    return claimed;
  }
};

std::vector<id_type> row_of(const auto& out, std::size_t r) {
  const auto row = out.template get<col::candidates>().row(r);
  return {row.begin(), row.end()};
}

batch<col::query_vector> one_query(float x, float y) {
  batch<col::query_vector> b(1);
  b.get<col::query_vector>() = matrix<float>(1, 2);
  b.get<col::query_vector>()(0, 0) = x;
  b.get<col::query_vector>()(0, 1) = y;
  return b;
}

//! Items 1..4 of dim 2.
void fill_catalog(auto& index) {
  index.add(1, std::vector<float>{1.f, 0.f});
  index.add(2, std::vector<float>{0.9f, 0.1f});
  index.add(3, std::vector<float>{0.f, 1.f});
  index.add(4, std::vector<float>{0.5f, 0.5f});
}
}  // namespace

TEST_CASE("an ANN index returning fewer than k, invalid ids or garbage: only its valid results, never more than k") {
  flaky_index flaky;
  CHECK(row_of(one_query(1, 0) >> retrieve(flaky, 10), 0) == std::vector<id_type>{4, 6});
  CHECK((one_query(1, 0) >> retrieve(flaky, 10)).get<col::retrieval_score>() == std::vector<float>{1.f, 0.5f});
  CHECK(row_of(one_query(1, 0) >> retrieve(flaky, 1), 0) == std::vector<id_type>{4});
  flaky.claimed = 50;  // claims more than k: the stage never reads past k
  CHECK(row_of(one_query(1, 0) >> retrieve(flaky, 2), 0) == std::vector<id_type>{4});
  flaky.claimed = 0;
  CHECK((one_query(1, 0) >> retrieve(flaky, 5)).get<col::candidates>().total() == 0);
}

TEST_CASE("k larger than the index returns every item, exact and HNSW, removed items excluded") {
  cpu::exact_index exact(2);
  fill_catalog(exact);
  CHECK(row_of(one_query(1, 0) >> retrieve(exact, 100), 0) == std::vector<id_type>{1, 2, 4, 3});
  cpu::hnsw_index hnsw(2, metric::inner_product, 16);
  fill_catalog(hnsw);
  hnsw.remove(2);
  CHECK(row_of(one_query(1, 0) >> retrieve(hnsw, 100), 0) == std::vector<id_type>{1, 4, 3});
  cpu::hnsw_index empty(2, metric::inner_product, 16);
  CHECK((one_query(1, 0) >> retrieve(empty, 10)).get<col::candidates>().total() == 0);
}

TEST_CASE("a user missing from the store: the zero vector by default, or an error naming the user") {
  cpu::exact_index index(2);
  fill_catalog(index);
  feature_store<col::user_id, col::user_embedding> users(2);
  users.insert(1, std::vector<float>{1.f, 0.f});
  const auto out = (lookup(users) >> retrieve<col::user_embedding>(index, 2))
                       .run(make_batch<col::user_id>(std::vector<id_type>{1, 404}));
  CHECK(row_of(out, 0) == std::vector<id_type>{1, 2});
  CHECK(row_of(out, 1) == std::vector<id_type>{1, 2});  // every item scores 0: the lowest ids win the tie
  CHECK(out.get<col::retrieval_score>()[2] == 0.f);
  feature_store<col::user_id, col::user_embedding> strict(2, on_missing::fail);
  strict.insert(1, std::vector<float>{1.f, 0.f});
  CHECK_THROWS_WITH_AS((lookup(strict) >> retrieve<col::user_embedding>(index, 2))
                           .run(make_batch<col::user_id>(std::vector<id_type>{1, 404})),
                       doctest::Contains("404"), error);
}

TEST_CASE("every candidate filtered out: every later stage returns valid empty rows") {
  cpu::exact_index index(2);
  fill_catalog(index);
  feature_store<col::candidates, col::item_embedding> items(2);
  feature_store<col::candidates, col::item_category> categories;
  const auto recommend = retrieve(index, 10) >> filter_in(id_set{}) >> lookup(items) >> lookup(categories) >>
                         score(dot_product_scorer<col::query_vector>{}) >> diversify(3, 0.5f) >> cap(1) >> pin(1, 0) >>
                         softmax_sample(2, 1.f) >> top_k(2);
  batch<col::query_vector> b(2);
  b.get<col::query_vector>() = matrix<float>(2, 2);
  const auto out = recommend.run(b);
  CHECK(out.get<col::candidates>().offsets() == std::vector<std::size_t>{0, 0, 0});
  CHECK(out.get<col::score>().empty());
  CHECK(out.get<col::item_embedding>().rows() == 0);
  CHECK_NOTHROW(out.validate());
  const auto blocked = (retrieve(index, 10) >> filter_out(id_set{1, 2, 3, 4}) >> top_k<col::retrieval_score>(3)).run(b);
  CHECK(blocked.get<col::candidates>().total() == 0);
}

TEST_CASE("duplicate candidates from two retrievers are merged into one, before and after the rules") {
  cpu::exact_index a(2), b(2);
  fill_catalog(a);
  fill_catalog(b);
  b.add(5, std::vector<float>{0.2f, 0.f});
  const auto both = (retrieve(a, 3) + retrieve(b, 5)) >> top_k<col::retrieval_score>(10);
  const auto out = both.run(one_query(1, 0));
  const auto ids = row_of(out, 0);
  CHECK(ids == std::vector<id_type>{1, 2, 4, 5, 3});
  CHECK(std::set<id_type>(ids.begin(), ids.end()).size() == ids.size());
  CHECK(out.get<col::retrieval_score>() == std::vector<float>{1.f, 0.9f, 0.5f, 0.2f, 0.f});
}

TEST_CASE("an empty session: the zero query (lowest ids), nothing filtered, unknown session items are skipped") {
  const auto model = models::session_transformer::load(testing::as_file(testing::tiny_session_weights()),
                                                       testing::tiny_session_config());
  cpu::exact_index items(8);
  for (id_type i = 0; i < 10; ++i) {
    std::vector<float> v(8, 0.f);
    v[static_cast<std::size_t>(i) % 8] = 1.f + static_cast<float>(i);
    items.add(i, v);
  }
  const auto next = encode(session_encoder(model)) >> retrieve(items, 3) >> filter_seen<col::session_items>() >>
                    top_k<col::retrieval_score>(2);
  batch<col::session_items> sessions(2);
  sessions.get<col::session_items>().assign({0, 0, 2}, {999, -5});  // empty; only unknown items
  const auto out = next.run(sessions);
  CHECK(row_of(out, 0) == std::vector<id_type>{0, 1});
  CHECK(row_of(out, 1) == std::vector<id_type>{0, 1});
  CHECK(next.run(batch<col::session_items>(0)).size() == 0);
}

TEST_CASE("one batch mixing them all: a normal user, a missing user, a user whose candidates are all filtered, a "
          "corrupt user vector, duplicates and a flaky second retriever") {
  cpu::exact_index catalog(2);
  fill_catalog(catalog);
  flaky_index flaky;
  feature_store<col::user_id, col::user_embedding> users(2);
  users.insert(1, std::vector<float>{1.f, 0.f});
  users.insert(2, std::vector<float>{0.f, 1.f});
  users.insert(3, std::vector<float>{not_a_number, 0.f});
  feature_store<col::user_id, col::history> histories;
  histories.insert(1, std::vector<id_type>{1});
  histories.insert(2, std::vector<id_type>{1, 2, 3, 4, 6});
  feature_store<col::candidates, col::item_embedding> items(2);
  feature_store<col::candidates, col::item_category> categories;
  for (id_type i = 1; i <= 4; ++i) {
    items.insert(i, std::vector<float>{static_cast<float>(i), 1.f});
    categories.insert(i, i % 2);
  }
  const auto recommend = lookup(users) >> lookup(histories) >>
                         (retrieve<col::user_embedding>(catalog, 100) + retrieve<col::user_embedding>(flaky, 10)) >>
                         filter_seen() >> filter_out({3}) >> lookup(items) >> lookup(categories) >>
                         score(dot_product_scorer<>{}) >> cap(2) >> diversify(3, 0.7f) >> pin(4, 0);
  const auto out = recommend.run(make_batch<col::user_id>(std::vector<id_type>{1, 9, 2, 3}));
  CHECK_NOTHROW(out.validate());
  CHECK(out.get<col::candidates>().rows() == 4);
  for (std::size_t r = 0; r < 4; ++r) {
    const auto ids = row_of(out, r);
    CHECK(ids.size() <= 3);
    CHECK(std::set<id_type>(ids.begin(), ids.end()).size() == ids.size());  // no duplicates
    for (const id_type id : ids) {
      CHECK(id >= 0);
      CHECK(id != 3);  // blocked
      CHECK(id != 999);
    }
    if (!ids.empty()) CHECK(ids[0] == 4);  // pinned wherever 4 survived
  }
  // user 1: history {1} and the block list leave 2, 4 and 6 (from the flaky index, unknown to the
  // item store: zero vector, category 0); scores 2, 4, 0; all of category 0, so cap(2) keeps 4, 2.
  CHECK(row_of(out, 0) == std::vector<id_type>{4, 2});
  CHECK(row_of(out, 1).size() == 3);            // missing user: the zero query still gets items
  CHECK(row_of(out, 2).empty());                // everything seen
  CHECK(row_of(out, 3).empty());                // NaN vector: no candidates from either retriever
  CHECK(recommend.run(make_batch<col::user_id>(std::vector<id_type>{})).size() == 0);  // the empty batch
}

TEST_CASE("a hand-built batch with columns of the wrong length is an error naming the stage and the column") {
  batch<col::history, col::candidates, col::score> b(2);
  b.get<col::candidates>().assign({0, 2, 3}, {1, 2, 3});
  b.get<col::score>() = {0.5f, 0.4f};  // three candidates, two scores
  CHECK_THROWS_WITH_AS(b >> top_k(1), "recpipe: top_k: column 'score' has 2 entries but the batch has 3 candidates", error);
  CHECK_THROWS_WITH_AS(b >> softmax_sample(1, 1.f), doctest::Contains("softmax_sample: column 'score'"), error);
  CHECK_THROWS_WITH_AS(b >> filter([](id_type) { return true; }), doctest::Contains("filter: column 'score'"), error);
  b.get<col::score>().push_back(0.3f);
  b.get<col::history>().assign({0, 1}, {2});  // one history row for two requests
  CHECK_THROWS_WITH_AS(b >> filter_seen(), "recpipe: filter_seen: column 'history' has 1 rows but the batch has 2 requests",
                       error);
  b.get<col::history>().assign({0, 1, 1}, {2});
  CHECK((b >> filter_seen()).get<col::candidates>().values() == std::vector<id_type>{1, 3});
}
