// SPDX-License-Identifier: Apache-2.0
// recpipe example: writing your own stage. A business rule that adds a popularity prior to every
// candidate's score, dropped into a pipeline between score and top_k. The stage is lines 14-40.
#include <recpipe/io/synthetic_catalog.hpp>
#include <recpipe/recpipe.hpp>

#include <cmath>
#include <cstdio>
#include <numeric>
#include <vector>

// --- the stage: a description (what it reads, writes and holds) ... ---------------------------
RECPIPE_COLUMN(popularity_prior, per_candidate, float);  // a column of our own, declared in one line

struct add_popularity_prior : recpipe::stage<add_popularity_prior> {
  using reads = recpipe::columns<recpipe::col::candidates, recpipe::col::score>;
  using writes = recpipe::columns<popularity_prior, recpipe::col::score>;
  static constexpr std::string_view name = "add_popularity_prior";
  const std::vector<double>* popularity;  // held by reference: must outlive the pipeline
  float weight;
};

// --- ... and how it runs on the CPU backend. -----------------------------------------------------
template <>
struct recpipe::stage_impl<add_popularity_prior, recpipe::cpu_backend> {
  template <class Batch>
  static auto run(const add_popularity_prior& stage, Batch&& batch, cpu_backend&) {
    const auto& ids = batch.template get<col::candidates>().values();
    auto& scores = batch.template get<col::score>();
    std::vector<float> prior(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const auto item = static_cast<std::size_t>(ids[i]);
      prior[i] = item < stage.popularity->size() ? stage.weight * static_cast<float>(std::log((*stage.popularity)[item])) : 0.0f;
      scores[i] += prior[i];
    }
    return std::forward<Batch>(batch).template with<popularity_prior>(std::move(prior));
  }
};

int main() {
  using namespace recpipe;
  const auto catalog = io::synthetic_catalog::generate({.items = 5'000, .users = 100, .dim = 16});
  feature_store<col::user_id, col::user_embedding> users(16);
  feature_store<col::candidates, col::item_embedding> items(16);
  cpu::exact_index index(16);
  for (std::size_t u = 0; u < 100; ++u) users.insert(static_cast<id_type>(u), catalog.user_vectors.row(u));
  for (std::size_t i = 0; i < 5'000; ++i) {
    items.insert(static_cast<id_type>(i), catalog.item_vectors.row(i));
    index.add(static_cast<id_type>(i), catalog.item_vectors.row(i));
  }

  const auto recommend = lookup(users) >> retrieve<col::user_embedding>(index, 100) >> lookup(items) >>
                         score(dot_product_scorer<>{}) >> add_popularity_prior{{}, &catalog.item_popularity, 0.05f} >>
                         top_k(5);
  const auto out = recommend.run(make_batch<col::user_id>(std::vector<id_type>{0, 1, 2}));
  for (std::size_t r = 0; r < out.size(); ++r) {
    std::printf("user %lld:", static_cast<long long>(out.get<col::user_id>()[r]));
    for (std::size_t at = out.get<col::candidates>().offsets()[r]; at < out.get<col::candidates>().offsets()[r + 1]; ++at)
      std::printf(" %lld (score %.3f, prior %+.3f)", static_cast<long long>(out.get<col::candidates>().values()[at]),
                  static_cast<double>(out.get<col::score>()[at]), static_cast<double>(out.get<popularity_prior>()[at]));
    std::printf("\n");
  }
  return out.get<col::candidates>().total() == 15 ? 0 : 1;
}
