// SPDX-License-Identifier: Apache-2.0
// The four-stage pipeline (lookup, retrieve, filter_seen, score, top_k) against a naive reference.
#include <doctest/doctest.h>

#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/lookup.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/score.hpp>
#include <recpipe/stages/transform.hpp>

#include "common/catalog.hpp"

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

using namespace recpipe;

namespace {
// For one user: every item's dot product in double, the best `fetch` by (score desc, id asc),
// minus the history, then the best `k`.
std::vector<id_type> reference(const testing::small_catalog& catalog, id_type user, std::size_t fetch, std::size_t k) {
  const auto query = catalog.users.find(user);
  std::vector<std::pair<double, id_type>> all;
  for (std::size_t i = 0; i < catalog.item_count; ++i) {
    const auto item = catalog.items.find(static_cast<id_type>(i));
    double dot = 0;
    for (std::size_t d = 0; d < testing::small_catalog::dim; ++d) dot += double(query[d]) * double(item[d]);
    all.emplace_back(dot, static_cast<id_type>(i));
  }
  std::sort(all.begin(), all.end(), [](auto a, auto b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  all.resize(std::min(fetch, all.size()));
  const auto seen = catalog.histories.find(user);
  std::vector<id_type> out;
  for (auto [score, id] : all)
    if (std::find(seen.begin(), seen.end(), id) == seen.end() && out.size() < k) out.push_back(id);
  return out;
}
}  // namespace

TEST_CASE("lookup >> retrieve >> filter_seen >> lookup >> score >> top_k matches a naive reference") {
  testing::small_catalog catalog;
  const auto recommend = lookup(catalog.users) >> lookup(catalog.histories) >>
                         retrieve<col::user_embedding>(catalog.index, 50) >> filter_seen() >> lookup(catalog.items) >>
                         score(dot_product_scorer<>{}) >> top_k(10);
  std::vector<id_type> users(20);
  std::iota(users.begin(), users.end(), 0);
  const auto out = recommend.run(make_batch<col::user_id>(users));
  REQUIRE(out.size() == 20);
  const auto& recs = out.get<col::candidates>();
  for (std::size_t r = 0; r < 20; ++r) {
    const auto expected = reference(catalog, users[r], 50, 10);
    const auto got = recs.row(r);
    CHECK(std::vector<id_type>(got.begin(), got.end()) == expected);
    // The score column was reordered with the candidates: scores descend.
    for (std::size_t i = out.get<col::candidates>().offsets()[r] + 1; i < out.get<col::candidates>().offsets()[r + 1]; ++i)
      CHECK(out.get<col::score>()[i - 1] >= out.get<col::score>()[i]);
  }
  CHECK_NOTHROW(out.validate());
}

TEST_CASE("unknown users get the documented default or a clear error") {
  testing::small_catalog catalog;
  const auto lenient = lookup(catalog.users) >> retrieve<col::user_embedding>(catalog.index, 5);
  const auto out = lenient.run(make_batch<col::user_id>(std::vector<id_type>{999, -1}));
  // A zero query scores every item 0: the first five ids, by the tie rule.
  CHECK(std::vector<id_type>(out.get<col::candidates>().row(0).begin(), out.get<col::candidates>().row(0).end()) ==
        std::vector<id_type>{0, 1, 2, 3, 4});

  feature_store<col::user_id, col::user_embedding> strict(testing::small_catalog::dim, on_missing::fail);
  const auto failing = lookup(strict) >> retrieve<col::user_embedding>(catalog.index, 5);
  CHECK_THROWS_WITH_AS(failing.run(make_batch<col::user_id>(std::vector<id_type>{999})),
                       "recpipe: lookup: id 999 is not in the feature store for column 'user_embedding'", error);
}

TEST_CASE("an empty batch and fully filtered candidates flow through") {
  testing::small_catalog catalog(5, 3);
  feature_store<col::user_id, col::history> saw_everything;
  saw_everything.insert(0, {0, 1, 2, 3, 4});
  const auto recommend = lookup(catalog.users) >> lookup(saw_everything) >>
                         retrieve<col::user_embedding>(catalog.index, 100) >> filter_seen() >> lookup(catalog.items) >>
                         score(dot_product_scorer<>{}) >> softmax_sample(3, 1.0f);
  const auto none = recommend.run(batch<col::user_id>(0));
  CHECK(none.size() == 0);
  const auto out = recommend.run(make_batch<col::user_id>(std::vector<id_type>{0, 1}));
  CHECK(out.get<col::candidates>().row(0).empty());
  CHECK(out.get<col::candidates>().row(1).size() == 3);  // k above the catalog: everything, then 3 sampled
}

namespace {
RECPIPE_COLUMN(user_bucket, per_request, id_type);
// A query model for encode (describe needs only its reads).
struct history_encoder {
  using reads = columns<col::history>;
  std::size_t output_dim() const { return 8; }
  template <class Batch>
  void encode(const Batch&, matrix_view<float>) const {}
};
}  // namespace

TEST_CASE("describe names every stage kind with the columns it reads and adds") {
  testing::small_catalog catalog(20, 3);
  const auto recommend = lookup(catalog.users) >> lookup(catalog.histories) >>
                         retrieve<col::user_embedding>(catalog.index, 50) >> filter_seen() >>
                         filter([](id_type item) { return item != 3; }) >>
                         transform(ops::hash_bucket<col::user_id, user_bucket>(16)) >> lookup(catalog.items) >>
                         score(dot_product_scorer<>{}) >> top_k(10);
  CHECK(recommend.describe() ==
        "pipeline of 9 stages (reads: user_id; adds: user_embedding, history, candidates, retrieval_score, user_bucket, "
        "item_embedding, score)\n"
        "  1. lookup(user_embedding)  reads: user_id  adds: user_embedding\n"
        "  2. lookup(history)  reads: user_id  adds: history\n"
        "  3. retrieve(user_embedding)  reads: user_embedding  adds: candidates, retrieval_score\n"
        "  4. filter_seen  reads: candidates, history  adds: -\n"
        "  5. filter  reads: candidates  adds: -\n"
        "  6. transform  reads: user_id  adds: user_bucket\n"
        "       hash_bucket(user_id -> user_bucket, 16 buckets)\n"
        "  7. lookup(item_embedding)  reads: candidates  adds: item_embedding\n"
        "  8. score(score)  reads: candidates, user_embedding, item_embedding  adds: score\n"
        "  9. top_k(score)  reads: candidates, score  adds: -\n");
  const auto sampled = lookup(catalog.histories) >> encode(history_encoder{}) >> retrieve(catalog.index, 5) >>
                       softmax_sample<col::retrieval_score>(3, 1.0f);
  CHECK(sampled.describe() ==
        "pipeline of 4 stages (reads: user_id; adds: history, query_vector, candidates, retrieval_score)\n"
        "  1. lookup(history)  reads: user_id  adds: history\n"
        "  2. encode(query_vector)  reads: history  adds: query_vector\n"
        "  3. retrieve(query_vector)  reads: query_vector  adds: candidates, retrieval_score\n"
        "  4. softmax_sample(retrieval_score)  reads: candidates, retrieval_score  adds: -\n");
  // The pipeline runs as described.
  const auto out = recommend.run(make_batch<col::user_id>(std::vector<id_type>{0, 1}));
  CHECK(out.get<user_bucket>().size() == 2);
}
