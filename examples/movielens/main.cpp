// SPDX-License-Identifier: Apache-2.0
// recpipe movielens: a recommender trained and served by recpipe (issue 9).
//
// A two-tower retriever (sampled softmax, in-batch negatives, log-Q) and a DCN-v2 ranker are
// trained on the first 80 % of the MovieLens timeline and served by one pipeline:
//
//   lookup(history) >> lookup(liked) >> encode(user tower) >> retrieve(hnsw, 200) >> filter_seen()
//     >> lookup(user features) >> lookup(item features) >> score(DCN-v2) >> top_k(10)
//
// The last 20 % is replayed hour by hour: every hour with events, the users active in it make a
// request at the hour's start (state as of then), then the hour's events are observed and, for
// the "updated" variant, the trainer trains on them and publishes the new versions into the live
// pipeline. Recall@10 / NDCG@10 against the user's positives of the next 24 h; see
// docs/incremental-training.md ("Trained and served by recpipe: MovieLens") for the protocol.
//
//   example_movielens ../shared/data/ml-latest-small           MovieLens (a folder or its ratings.csv)
//   RECPIPE_DATA_DIR=../shared/data example_movielens            the same (ml-latest-small/ inside it)
//   example_movielens                                             the built-in synthetic stream
//   example_movielens --smoke                                     a small synthetic stream (ctest)
//   options: --epochs N (initial training)  --k N (retrieved)  --ef N (hnsw search width)
//            --seed N (models, sampling and the synthetic stream)  --events N (synthetic)
#include "../incremental_training/stream.hpp"

#include <recpipe/recpipe.hpp>
#include <recpipe/train/dcn_v2_model.hpp>
#include <recpipe/train/features.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/trainer.hpp>
#include <recpipe/train/two_tower_model.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <unordered_set>
#include <vector>

namespace ml {

using namespace recpipe;
using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point start) { return std::chrono::duration<double>(clock_type::now() - start).count(); }

// The items a user liked (rating >= 4), oldest first: the user tower's input.
RECPIPE_COLUMN(liked_items, per_request_list, id_type);

constexpr std::int64_t hour = 3'600;
constexpr std::int64_t day = 86'400;
constexpr std::size_t liked_window = 50;       // the user tower pools the last 50 liked items
constexpr std::int64_t recent_window = 30 * day;  // "recent popularity": positives of the last 30 days
constexpr std::int64_t target_window = day;    // held-out targets: positives of the next 24 h

// ---------------------------------------------------------------------------------------------
// Online features: every value is computed from the events observed so far (predict, then
// observe), so a feature row never holds anything from the future.
// user row: [share of the user's likes in each genre (G), log1p(events) / 5, smoothed like rate]
// item row: [genre multi-hot (G), log1p(events) / 5, smoothed like rate, log1p(likes in 30 days) / 3]
class feature_state {
 public:
  feature_state(std::size_t users, std::size_t items, const train::category_bags& genres)
      : genres_(&genres), g_(genres.categories()), user_events_(users), user_likes_(users), user_genre_(users * g_),
        item_events_(items), item_likes_(items), item_recent_(items), liked_(users), seen_(users), seen_set_(users) {}

  std::size_t user_dim() const { return g_ + 2; }
  std::size_t item_dim() const { return g_ + 3; }
  std::size_t genres() const { return g_; }

  //! Drops likes older than the recent window from the item counts (t never decreases).
  void advance(std::int64_t t) {
    while (!window_.empty() && window_.front().first <= t - recent_window) {
      --item_recent_[window_.front().second];
      window_.pop_front();
    }
  }
  void observe(const experiment::event& e) {
    advance(e.t);
    ++user_events_[e.user];
    ++item_events_[e.item];
    ++events_;
    if (seen_set_[e.user].insert(e.item).second) seen_[e.user].push_back(static_cast<id_type>(e.item));
    if (e.label > 0.5f) {
      ++user_likes_[e.user];
      ++item_likes_[e.item];
      ++item_recent_[e.item];
      ++likes_;
      window_.emplace_back(e.t, e.item);
      liked_[e.user].push_back(static_cast<id_type>(e.item));
      for (id_type g : genre_ids(e.item)) user_genre_[e.user * g_ + static_cast<std::size_t>(g)] += 1.0f;
    }
  }
  void user_row(std::size_t u, std::span<float> out) const {
    const float likes = static_cast<float>(std::max<std::uint32_t>(1, user_likes_[u]));
    for (std::size_t g = 0; g < g_; ++g) out[g] = user_genre_[u * g_ + g] / likes;
    out[g_] = std::log1p(static_cast<float>(user_events_[u])) / 5.0f;
    out[g_ + 1] = smoothed(user_likes_[u], user_events_[u]);
  }
  void item_row(std::size_t i, std::span<float> out) const {
    std::fill(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(g_), 0.0f);
    for (id_type g : genre_ids(i)) out[static_cast<std::size_t>(g)] = 1.0f;
    out[g_] = std::log1p(static_cast<float>(item_events_[i])) / 5.0f;
    out[g_ + 1] = smoothed(item_likes_[i], item_events_[i]);
    out[g_ + 2] = std::log1p(static_cast<float>(item_recent_[i])) / 3.0f;
  }
  //! The user's last `liked_window` liked items.
  std::span<const id_type> liked(std::size_t u) const {
    const auto& l = liked_[u];
    const std::size_t from = l.size() > liked_window ? l.size() - liked_window : 0;
    return {l.data() + from, l.size() - from};
  }
  std::size_t liked_count(std::size_t u) const { return liked_[u].size(); }
  std::span<const id_type> liked_before(std::size_t u, std::size_t count) const {
    const std::size_t from = count > liked_window ? count - liked_window : 0;
    return {liked_[u].data() + from, count - from};
  }
  const std::vector<id_type>& seen(std::size_t u) const { return seen_[u]; }
  bool has_seen(std::size_t u, std::size_t i) const { return seen_set_[u].count(static_cast<std::uint32_t>(i)) > 0; }
  std::uint32_t item_likes(std::size_t i) const { return item_likes_[i]; }
  std::uint32_t item_recent(std::size_t i) const { return item_recent_[i]; }
  std::uint32_t item_events(std::size_t i) const { return item_events_[i]; }

 private:
  std::span<const id_type> genre_ids(std::size_t item) const {
    auto bag = genres_->bag(static_cast<id_type>(item));
    if (bag.size() == 1 && bag[0] == genres_->unknown_id()) return {};
    return bag;
  }
  float smoothed(std::uint32_t likes, std::uint32_t events) const {
    const float prior = events_ ? static_cast<float>(likes_) / static_cast<float>(events_) : 0.5f;
    return (static_cast<float>(likes) + 20.0f * prior) / (static_cast<float>(events) + 20.0f);
  }

  const train::category_bags* genres_;
  std::size_t g_;
  std::vector<std::uint32_t> user_events_, user_likes_;
  std::vector<float> user_genre_;
  std::vector<std::uint32_t> item_events_, item_likes_, item_recent_;
  std::deque<std::pair<std::int64_t, std::uint32_t>> window_;
  std::vector<std::vector<id_type>> liked_, seen_;
  std::vector<std::unordered_set<std::uint32_t>> seen_set_;
  std::uint64_t events_ = 0, likes_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The ranker's features: ONE definition, read by the score stage and by training.
using ranking_features = train::features<train::sparse<col::user_id>, train::sparse<col::candidates>,
                                         train::dense<col::user_features>, train::dense<col::item_features>>;
using ranking_batch = train::training_batch_t<ranking_features>;

//! The serving ranker: a frozen DCN-v2 behind the score stage's interface (owns its snapshot, so
//! a published version lives as long as a run holds it).
struct ranker {
  train::frozen<models::dcn_v2> model;
  using reads = ranking_features::reads;
  //! The slot's publication check compares configs: a version with other shapes is refused.
  const models::dcn_v2_config& config() const { return model.model.config(); }
  template <class Batch>
  void score(const Batch& batch, std::span<float> out) const {
    train::feature_scorer<ranking_features, train::frozen<models::dcn_v2>>(model).score(batch, out);
  }
};

//! The serving retriever: a frozen two-tower. As an encode-stage model it runs the user tower on
//! (user id, liked items); item_vectors() runs the item tower for the index.
struct retriever {
  train::frozen<models::two_tower> model;
  const train::category_bags* genres = nullptr;
  using reads = columns<col::user_id, liked_items>;

  const models::two_tower_config& config() const { return model.model.config(); }
  std::size_t output_dim() const { return model.model.output_dim(); }
  template <class Batch>
  void encode(const Batch& batch, matrix_view<float> out) const {
    const std::size_t n = batch.size();
    const auto& users = batch.template get<col::user_id>();
    const auto& liked = batch.template get<liked_items>();
    std::vector<id_type> user_offsets(n + 1), liked_offsets(liked.offsets().begin(), liked.offsets().end());
    std::iota(user_offsets.begin(), user_offsets.end(), id_type{0});
    const std::vector<cpu::bag_input> bags = {{users, user_offsets}, {liked.values(), liked_offsets}};
    model.model.encode_users(matrix_view<const float>(nullptr, n, 0, 0), bags, out);
  }
  //! Item tower outputs of `items` ([items.size(), dim]).
  matrix<float> item_vectors(std::span<const id_type> items) const {
    const std::size_t n = items.size(), g = genres->categories();
    matrix<float> dense(n, g), out(n, output_dim());
    for (std::size_t r = 0; r < n; ++r) {
      auto bag = genres->bag(items[r]);
      for (id_type c : bag)
        if (c != genres->unknown_id()) dense(r, static_cast<std::size_t>(c)) = 1.0f;
    }
    std::vector<id_type> offsets(n + 1);
    std::iota(offsets.begin(), offsets.end(), id_type{0});
    const std::vector<cpu::bag_input> bags = {{items, offsets}};
    if (n) model.model.encode_items(dense.view(), bags, out.view());
    return out;
  }
};

//! One version of the models: the retriever and the ranker, always published together.
struct model_version {
  std::shared_ptr<const retriever> retrieval;
  std::shared_ptr<const ranker> ranking;
};

//! The live pipeline's versions: one slot per model in a version_registry. The pipeline's encode
//! and score stages hold the slots; each run pins one generation, so a request never mixes the
//! retriever of one version with the ranker of another (publish() commits both in one transaction).
struct live_models {
  version_registry registry;
  slot<retriever> retrieval;
  slot<ranker> ranking;

  explicit live_models(const model_version& initial)
      : retrieval(registry.add("retriever", initial.retrieval)), ranking(registry.add("ranker", initial.ranking)) {}
  void publish(const model_version& next) {
    auto tx = registry.begin();
    tx.set(retrieval, next.retrieval);
    tx.set(ranking, next.ranking);
    tx.commit();
  }
  //! The latest version (for the trainer's side: indexing new items with the serving item tower).
  const retriever& current_retriever() const { return *retrieval.current(); }
};

// ---------------------------------------------------------------------------------------------
// Feature stores the pipeline's lookups read (kept up to date as events are observed).
struct stores {
  feature_store<col::user_id, col::history> history;
  feature_store<col::user_id, liked_items> liked;
  feature_store<col::user_id, col::user_features> user_features;
  feature_store<col::candidates, col::item_features> item_features;
  stores(std::size_t user_dim, std::size_t item_dim) : user_features(user_dim), item_features(item_dim) {}

  void refresh_user(const feature_state& f, std::size_t u, std::vector<float>& scratch) {
    history.insert(static_cast<id_type>(u), std::span<const id_type>(f.seen(u)));
    liked.insert(static_cast<id_type>(u), f.liked(u));
    scratch.resize(f.user_dim());
    f.user_row(u, scratch);
    user_features.insert(static_cast<id_type>(u), std::span<const float>(scratch));
  }
  void refresh_item(const feature_state& f, std::size_t i, std::vector<float>& scratch) {
    scratch.resize(f.item_dim());
    f.item_row(i, scratch);
    item_features.insert(static_cast<id_type>(i), std::span<const float>(scratch));
  }
};

//! The whole recommender: the models come from the live slots (the version a run pins), the index
//! and the stores by reference (updated between runs; see the docs on why the index is not a slot).
template <class Index>
auto recommend(const live_models& live, const Index& index, const stores& s, std::size_t k) {
  return lookup(s.history) >> lookup(s.liked) >> encode(live.retrieval) >> retrieve<col::query_vector>(index, k) >>
         filter_seen() >> lookup(s.user_features) >> lookup(s.item_features) >> score(live.ranking) >> top_k(10);
}
//! The same without the ranker (a diagnostic): the retrieved order.
template <class Index>
auto retrieve_only(const live_models& live, const Index& index, const stores& s, std::size_t k) {
  return lookup(s.history) >> lookup(s.liked) >> encode(live.retrieval) >> retrieve<col::query_vector>(index, k) >>
         filter_seen() >> top_k<col::retrieval_score>(10);
}

// ---------------------------------------------------------------------------------------------
// Training.
struct options {
  std::filesystem::path data;
  bool smoke = false;
  std::size_t epochs = 3;
  std::size_t k = 200;
  std::size_t ef = 256;
  std::size_t events = 0;
  std::uint64_t seed = 42;
};

// One logged example of each kind: what was known just before the event.
struct tt_example {
  std::uint32_t user, item;
  std::uint32_t liked_count;  // the user's liked items before the event (the bag is the last 50 of them)
};
struct rank_example {
  std::uint32_t user, item;
  float label;
  std::size_t row;  // index into the logged feature rows
};

struct trainer_state {
  std::size_t users, items, genres;
  std::shared_ptr<train::fixed_table> tt_user, tt_liked, tt_item, rk_user, rk_item;
  std::optional<train::two_tower_model> two_tower;
  std::optional<train::dcn_v2_model> dcn;
  train::two_tower_model::workspace tt_ws;
  train::dcn_v2_model::workspace dcn_ws;
  train::adam tt_adam{{.lr = 2e-3}}, tt_user_adam{{.lr = 1e-3}}, dcn_adam{{.lr = 1e-3}};
  std::vector<train::parameter*> tt_user_params;
  std::vector<float> log_q;  // per item: log of its share of the training positives
  const train::category_bags* genre_bags = nullptr;
  const feature_state* features = nullptr;
  // Logged feature rows of the ranker's examples: [user row | item row] each.
  std::vector<float> rank_rows;
  std::size_t user_dim = 0, item_dim = 0;

  trainer_state(std::size_t u, std::size_t i, const train::category_bags& g, std::size_t user_d, std::size_t item_d,
                std::uint64_t seed)
      : users(u), items(i), genres(g.categories()), genre_bags(&g), user_dim(user_d), item_dim(item_d) {
    const std::size_t dim = 32;
    const auto table = [&](std::size_t rows, std::size_t d, std::uint64_t s, const char* name, double lr) {
      return std::make_shared<train::fixed_table>(
          train::fixed_table::config{.rows = rows, .dim = d, .init = {.kind = train::row_init::distribution::normal, .scale = 0.05f, .seed = seed + s}, .name = name},
          std::make_shared<train::rowwise_adagrad>(train::rowwise_adagrad_options{.lr = lr}));
    };
    tt_user = table(users, dim, 1, "tt_user", 0.05);
    tt_liked = table(items, dim, 2, "tt_liked", 0.05);
    tt_item = table(items, dim, 3, "tt_item", 0.05);
    models::two_tower_config c;
    c.user.tables = {{users, dim}, {items, dim}};
    c.user.dims = {64, dim};
    c.user.pooling = cpu::pooling::mean;
    c.item.dense_dim = genres;
    c.item.tables = {{items, dim}};
    c.item.dims = {dim};
    c.item.pooling = cpu::pooling::mean;
    c.normalize = true;
    two_tower.emplace(c, std::vector<std::shared_ptr<train::trainable_table>>{tt_user, tt_liked},
                      std::vector<std::shared_ptr<train::trainable_table>>{tt_item}, seed, /*temperature=*/0.05f);
    for (train::parameter* p : two_tower->parameters())
      if (p->name.rfind("user_tower.", 0) == 0) tt_user_params.push_back(p);

    rk_user = table(users, 16, 4, "rk_user", 0.05);
    rk_item = table(items, 16, 5, "rk_item", 0.05);
    models::dcn_v2_config d;
    d.dense_dim = user_dim + item_dim;
    d.tables = {{users, 16}, {items, 16}};
    d.cross_layers = 2;
    d.deep = {64, 32};
    d.sigmoid = true;
    dcn.emplace(d, std::vector<std::shared_ptr<train::trainable_table>>{rk_user, rk_item}, seed + 7);
  }

  // One sampled-softmax step of the initial training (shuffled positives: in-batch negatives).
  // Appends the two-tower examples of `batch` (item genres as dense input; user id, the user's
  // earlier likes and the item id as bags), their target items and their log-Q corrections.
  void add_tt_examples(std::span<const tt_example> batch, const feature_state& f, train::example_batch& b,
                       std::vector<id_type>& ids, std::vector<float>& lq) const {
    for (const tt_example& e : batch) {
      b.begin_example(1.0f);
      auto row = b.dense_row();
      for (id_type g : genre_bags->bag(e.item))
        if (g != genre_bags->unknown_id()) row[static_cast<std::size_t>(g)] = 1.0f;
      b.add_id(0, e.user);
      for (id_type i : f.liked_before(e.user, e.liked_count)) b.add_id(1, i);
      b.add_id(2, e.item);
      ids.push_back(e.item);
      lq.push_back(log_q[e.item]);
    }
  }

  float tt_step(std::span<const tt_example> batch, const feature_state& f) {
    train::example_batch b(genres, 3);
    std::vector<id_type> ids;
    std::vector<float> lq;
    add_tt_examples(batch, f, b, ids, lq);
    return train::train_step_sampled_softmax(*two_tower, tt_ws, b, ids, lq, train::optimizer_step(tt_adam)).loss;
  }

  // One hourly two-tower step: the hour's positives `fresh` plus `replay` (random earlier
  // positives: in-batch negatives from other users; MovieLens hours are often one user's burst,
  // whose items would be false negatives of each other). Only the user tower's dense layers step,
  // and only the item rows of `fresh` are updated (replay rows serve as negatives only), so that
  // exactly the items in `touched_items` move in the index.
  float tt_hour_step(std::span<const tt_example> fresh, std::span<const tt_example> replay, const feature_state& f,
                     std::vector<id_type>& touched_items) {
    train::example_batch b(genres, 3);
    std::vector<id_type> ids;
    std::vector<float> lq;
    add_tt_examples(fresh, f, b, ids, lq);
    add_tt_examples(replay, f, b, ids, lq);
    std::unordered_set<id_type> keep;
    for (const tt_example& e : fresh) keep.insert(e.item), touched_items.push_back(e.item);
    const std::vector<train::parameter*> params = two_tower->parameters();
    for (train::parameter* p : params) p->zero_grad();
    two_tower->forward(b.inputs(), tt_ws);
    train::step_result r;
    r.examples = b.size();
    r.loss = two_tower->backward_sampled_softmax(tt_ws, ids, lq);
    // The item table is the last sparse feature (user id, liked items, item id).
    cpu::sparse_gradient& g = tt_ws.table_grads.back();
    cpu::sparse_gradient kept;
    kept.rows = matrix<float>(0, g.rows.cols());
    std::vector<std::size_t> rows;
    for (std::size_t k = 0; k < g.ids.size(); ++k)
      if (keep.count(g.ids[k])) rows.push_back(k);
    kept.ids.reserve(rows.size());
    kept.rows = matrix<float>(rows.size(), g.rows.cols());
    for (std::size_t k = 0; k < rows.size(); ++k) {
      kept.ids.push_back(g.ids[rows[k]]);
      std::copy_n(g.rows.row(rows[k]).begin(), g.rows.cols(), kept.rows.row(k).begin());
    }
    g = std::move(kept);
    const train::dense_step_fn step = [this](std::span<train::parameter* const>) { tt_user_adam.step(tt_user_params); };
    train::impl::apply_if_finite(*two_tower, tt_ws, params, step, r);
    return r.loss;
  }

  // One BCE step of the ranker on `batch`, built as the pipeline's columns (the score stage's
  // feature code builds the model inputs from them).
  float rank_step(std::span<const rank_example> batch) {
    const std::size_t n = batch.size();
    ranking_batch b(n);
    auto& users_col = b.get<col::user_id>();
    std::vector<std::size_t> offsets(n + 1);
    std::iota(offsets.begin(), offsets.end(), std::size_t{0});
    std::vector<id_type> cands(n);
    matrix<float> uf(n, user_dim), itf(n, item_dim);
    std::vector<float> labels(n);
    for (std::size_t r = 0; r < n; ++r) {
      users_col[r] = batch[r].user;
      cands[r] = batch[r].item;
      const float* row = rank_rows.data() + batch[r].row * (user_dim + item_dim);
      std::copy_n(row, user_dim, uf.row(r).begin());
      std::copy_n(row + user_dim, item_dim, itf.row(r).begin());
      labels[r] = batch[r].label;
    }
    b.get<col::candidates>().assign(std::move(offsets), std::move(cands));
    b.get<col::user_features>() = std::move(uf);
    b.get<col::item_features>() = std::move(itf);
    b.get<col::label>() = std::move(labels);
    return train::train_step(*dcn, dcn_ws, ranking_features{}, b, train::optimizer_step(dcn_adam)).loss;
  }

  // Logs the ranker's examples of event e (the rated item, label = like, and `negatives` items
  // drawn uniformly from the catalog so far, label 0) with the features as of just before e.
  void log_rank(const experiment::event& e, const feature_state& f, std::size_t catalog_size,
                const std::vector<std::uint32_t>& catalog, std::mt19937_64& rng, std::size_t negatives,
                std::vector<rank_example>& out) {
    const auto add = [&](std::uint32_t item, float label) {
      const std::size_t row = rank_rows.size() / (user_dim + item_dim);
      rank_rows.resize(rank_rows.size() + user_dim + item_dim);
      float* p = rank_rows.data() + row * (user_dim + item_dim);
      f.user_row(e.user, {p, user_dim});
      f.item_row(item, {p + user_dim, item_dim});
      out.push_back({e.user, item, label, row});
    };
    add(e.item, e.label);
    for (std::size_t k = 0; k < negatives && catalog_size > 0; ++k) {
      const std::uint32_t j = catalog[rng() % catalog_size];
      if (j != e.item && !f.has_seen(e.user, j)) add(j, 0.0f);
    }
  }

  model_version freeze() const {
    model_version v;
    v.retrieval = std::make_shared<const retriever>(retriever{two_tower->freeze(), genre_bags});
    v.ranking = std::make_shared<const ranker>(ranker{dcn->freeze()});
    return v;
  }
};

// ---------------------------------------------------------------------------------------------
// Evaluation.
struct metric_sum {
  double recall = 0, ndcg = 0;
  std::size_t requests = 0;
  std::vector<double> per_request;  // Recall@10 of each request, in request order
  void add(std::span<const id_type> top, const std::unordered_set<id_type>& targets) {
    const std::size_t ideal = std::min<std::size_t>(10, targets.size());
    double dcg = 0, idcg = 0;
    std::size_t hits = 0;
    for (std::size_t r = 0; r < top.size() && r < 10; ++r)
      if (targets.count(top[r])) {
        ++hits;
        dcg += 1.0 / std::log2(static_cast<double>(r) + 2.0);
      }
    for (std::size_t r = 0; r < ideal; ++r) idcg += 1.0 / std::log2(static_cast<double>(r) + 2.0);
    recall += static_cast<double>(hits) / static_cast<double>(ideal);
    ndcg += dcg / idcg;
    per_request.push_back(static_cast<double>(hits) / static_cast<double>(ideal));
    ++requests;
  }
};

struct variant_result {
  std::string name;
  metric_sum m;
  double train_s = 0;
  std::size_t publications = 0;
};

int run(const options& o) {
  const auto t_start = clock_type::now();
  // 1. The stream, in time order.
  experiment::stream s;
  if (!o.data.empty()) {
    std::filesystem::path p = o.data;
    if (std::filesystem::is_directory(p)) p = std::filesystem::exists(p / "ratings.csv") ? p / "ratings.csv" : p / "ml-latest-small" / "ratings.csv";
    if (!std::filesystem::exists(p)) {
      std::fprintf(stderr, "movielens: %s does not exist\n", p.string().c_str());
      return 1;
    }
    s = experiment::load_movielens(p, 0.8);
  } else {
    experiment::synthetic_config c;
    c.events = o.events ? o.events : (o.smoke ? 6'000 : 60'000);
    if (o.smoke) {
      c.users = 150;
      c.initial_items = 400;
      c.new_items_per_day = 10;
      c.days = 30;
    }
    c.seed = o.seed;
    s = experiment::synthetic_stream(c, 0.8);
    std::printf("data: the built-in SYNTHETIC stream (no data path given; pass the ml-latest-small folder or set RECPIPE_DATA_DIR)\n");
  }
  const std::size_t n = s.events.size();
  if (n < 10) {
    std::fprintf(stderr, "movielens: only %zu events\n", n);
    return 1;
  }
  // Training = events before the start of the hour after the 80 % event (a request at an hour's
  // start must not see a model trained on that hour).
  const std::int64_t split_t = (s.events[std::min(n - 1, n * 8 / 10)].t / hour + 1) * hour;
  std::size_t split = 0;
  while (split < n && s.events[split].t < split_t) ++split;
  std::printf("data: %s: %zu events, %zu users, %zu items, %zu genres; training %zu events, test %zu events\n",
              s.name.c_str(), n, s.users, s.items, s.genres.categories(), split, n - split);

  // 2. Replay the training period: log the examples with their features as of each event.
  feature_state f(s.users, s.items, s.genres);
  trainer_state tr(s.users, s.items, s.genres, f.user_dim(), f.item_dim(), o.seed);
  std::mt19937_64 rng(o.seed);
  std::vector<std::uint32_t> catalog;  // items seen so far, in order of first appearance
  std::vector<std::uint8_t> in_catalog(s.items, 0);
  std::vector<tt_example> tt_train;
  std::vector<rank_example> rank_train;
  std::vector<double> positives(s.items, 0.0);
  for (std::size_t e = 0; e < split; ++e) {
    const auto& ev = s.events[e];
    f.advance(ev.t);
    if (!in_catalog[ev.item]) in_catalog[ev.item] = 1, catalog.push_back(ev.item);
    if (ev.label > 0.5f) {
      tt_train.push_back({ev.user, ev.item, static_cast<std::uint32_t>(f.liked_count(ev.user))});
      positives[ev.item] += 1.0;
    }
    tr.log_rank(ev, f, catalog.size(), catalog, rng, 2, rank_train);
    f.observe(ev);
  }
  // log-Q: the item's share of training positives (smoothed: an unseen item gets half a count).
  {
    double total = 0;
    for (double c : positives) total += c + 0.5;
    tr.log_q.resize(s.items);
    for (std::size_t i = 0; i < s.items; ++i) tr.log_q[i] = static_cast<float>(std::log((positives[i] + 0.5) / total));
  }

  // 3. Initial training: shuffled epochs over the training period.
  auto t0 = clock_type::now();
  const std::size_t tt_batch = 256, rank_batch = 256;
  for (std::size_t epoch = 0; epoch < o.epochs; ++epoch) {
    std::shuffle(tt_train.begin(), tt_train.end(), rng);
    double loss = 0;
    std::size_t steps = 0;
    for (std::size_t b = 0; b + 1 < tt_train.size(); b += tt_batch) {
      const std::size_t m = std::min(tt_batch, tt_train.size() - b);
      const float l = tr.tt_step(std::span<const tt_example>(tt_train).subspan(b, m), f);
      if (std::isfinite(l)) loss += l, ++steps;
    }
    std::shuffle(rank_train.begin(), rank_train.end(), rng);
    double rloss = 0;
    std::size_t rsteps = 0;
    for (std::size_t b = 0; b < rank_train.size(); b += rank_batch) {
      const float l = tr.rank_step(std::span<const rank_example>(rank_train).subspan(b, std::min(rank_batch, rank_train.size() - b)));
      if (std::isfinite(l)) rloss += l, ++rsteps;
    }
    std::printf("epoch %zu: two-tower sampled softmax %.4f (%zu positives), DCN-v2 BCE %.4f (%zu examples)\n", epoch + 1,
                steps ? loss / static_cast<double>(steps) : 0.0, tt_train.size(), rsteps ? rloss / static_cast<double>(rsteps) : 0.0,
                rank_train.size());
  }
  const double initial_train_s = seconds_since(t0);
  std::printf("initial training: %.1f s\n", initial_train_s);

  // 4. Serving state: feature stores, the live versions, and the indexes (item tower vectors of
  // the catalog). The frozen variant keeps the first version; the updated one gets a new version
  // every hour. Both add newly seen items to their indexes every hour.
  stores st(f.user_dim(), f.item_dim());
  std::vector<float> scratch;
  for (std::size_t u = 0; u < s.users; ++u) st.refresh_user(f, u, scratch);
  for (std::size_t i = 0; i < s.items; ++i) st.refresh_item(f, i, scratch);
  t0 = clock_type::now();
  const model_version initial = tr.freeze();
  const double first_freeze_s = seconds_since(t0);
  live_models frozen_live(initial), updated_live(initial);
  const std::size_t dim = initial.retrieval->output_dim();
  struct indexes {
    cpu::hnsw_index ann;
    cpu::exact_index exact;
    indexes(std::size_t d, std::size_t cap, std::size_t ef, std::uint64_t seed)
        : ann(d, metric::inner_product, cap, 16, 100, seed), exact(d, metric::inner_product, cap) {
      ann.set_ef(ef);
    }
    // Adds the items (or replaces their vectors) with the item tower of `r`.
    void add(const retriever& r, std::span<const id_type> items) {
      if (items.empty()) return;
      const matrix<float> v = r.item_vectors(items);
      ann.add(items, v.view());
      exact.add(items, v.view());
    }
  };
  indexes frozen_index(dim, s.items, o.ef, o.seed), updated_index(dim, s.items, o.ef, o.seed);
  {
    std::vector<id_type> items(catalog.begin(), catalog.end());
    frozen_index.add(*initial.retrieval, items);
    updated_index.add(*initial.retrieval, items);
  }
  std::printf("catalog at the split: %zu items indexed (hnsw M 16, ef_construction 100, ef %zu; k %zu)\n", catalog.size(),
              o.ef, o.k);

  // The pipelines, built once: the models are the live slots, so a publication reaches them
  // without rebuilding anything.
  const auto frozen_exact_pipe = recommend(frozen_live, frozen_index.exact, st, o.k);
  const auto frozen_ann_pipe = recommend(frozen_live, frozen_index.ann, st, o.k);
  const auto updated_exact_pipe = recommend(updated_live, updated_index.exact, st, o.k);
  const auto updated_ann_pipe = recommend(updated_live, updated_index.ann, st, o.k);
  const auto frozen_retrieval_pipe = retrieve_only(frozen_live, frozen_index.exact, st, o.k);
  const auto updated_retrieval_pipe = retrieve_only(updated_live, updated_index.exact, st, o.k);

  // 5. The test period, hour by hour.
  enum { pop_all, pop_recent, frozen_retrieval, updated_retrieval, frozen_exact, frozen_ann, updated_exact, updated_ann, variants };
  std::vector<variant_result> results(variants);
  results[pop_all].name = "popularity (all time)";
  results[pop_recent].name = "popularity (last 30 days)";
  results[frozen_retrieval].name = "frozen, two-tower only (exact, no ranker)";
  results[updated_retrieval].name = "updated hourly, two-tower only (exact, no ranker)";
  results[frozen_exact].name = "frozen, exact retrieval";
  results[frozen_ann].name = "frozen, hnsw retrieval";
  results[updated_exact].name = "updated hourly, exact retrieval";
  results[updated_ann].name = "updated hourly, hnsw retrieval";
  double incremental_train_s = 0, publish_s = 0, serve_s = 0;
  std::size_t hours = 0, skipped_requests = 0, republished_items = 0, seen_recommended = 0;
  // Every positive so far in time order (tt_train was shuffled): the replay buffer.
  std::vector<tt_example> tt_all;
  {
    feature_state g(s.users, s.items, s.genres);
    for (std::size_t e = 0; e < split; ++e) {
      const auto& ev = s.events[e];
      if (ev.label > 0.5f) tt_all.push_back({ev.user, ev.item, static_cast<std::uint32_t>(g.liked_count(ev.user))});
      g.observe(ev);
    }
  }
  std::vector<rank_example> rank_all = rank_train;
  std::vector<id_type> by_likes, by_recent;

  std::size_t e = split;
  while (e < n) {
    const std::int64_t h = s.events[e].t / hour;
    std::size_t end = e;
    while (end < n && s.events[end].t / hour == h) ++end;
    const std::int64_t now = h * hour;
    f.advance(now);
    ++hours;
    // Requests: the users active in this hour, at its start; targets: their positives in
    // [now, now + 24 h) that they had not rated before now.
    std::vector<id_type> users;
    std::vector<std::unordered_set<id_type>> targets;
    {
      std::unordered_set<std::uint32_t> asked;
      for (std::size_t k = e; k < end; ++k) {
        const std::uint32_t u = s.events[k].user;
        if (!asked.insert(u).second) continue;
        std::unordered_set<id_type> t;
        for (std::size_t j = k; j < n && s.events[j].t < now + target_window; ++j)
          if (s.events[j].user == u && s.events[j].label > 0.5f && !f.has_seen(u, s.events[j].item)) t.insert(s.events[j].item);
        if (t.empty()) {
          ++skipped_requests;
          continue;
        }
        users.push_back(u);
        targets.push_back(std::move(t));
      }
    }
    if (!users.empty()) {
      const auto t_serve = clock_type::now();
      // Item features as of now (the 30-day counts slide even without events).
      for (std::uint32_t i : catalog) st.refresh_item(f, i, scratch);
      const auto requests = make_batch<col::user_id>(users);
      const auto score_run = [&](const auto& pipeline, variant_result& out) {
        const auto served = pipeline.run(requests);
        for (std::size_t r = 0; r < users.size(); ++r) {
          const auto top = served.template get<col::candidates>().row(r);
          for (id_type i : top)  // filter_seen must have removed everything the user rated before
            if (f.has_seen(static_cast<std::size_t>(users[r]), static_cast<std::size_t>(i))) ++seen_recommended;
          if (top.size() > 10) ++seen_recommended;
          out.m.add(top, targets[r]);
        }
      };
      score_run(frozen_exact_pipe, results[frozen_exact]);
      score_run(frozen_ann_pipe, results[frozen_ann]);
      score_run(updated_exact_pipe, results[updated_exact]);
      score_run(updated_ann_pipe, results[updated_ann]);
      score_run(frozen_retrieval_pipe, results[frozen_retrieval]);
      score_run(updated_retrieval_pipe, results[updated_retrieval]);
      // Popularity baselines: the catalog's unseen items by likes so far / likes in the last 30 days.
      by_likes.assign(catalog.begin(), catalog.end());
      by_recent = by_likes;
      std::sort(by_likes.begin(), by_likes.end(), [&](id_type a, id_type b) {
        const auto ca = f.item_likes(static_cast<std::size_t>(a)), cb = f.item_likes(static_cast<std::size_t>(b));
        return ca != cb ? ca > cb : a < b;
      });
      std::sort(by_recent.begin(), by_recent.end(), [&](id_type a, id_type b) {
        const auto ca = f.item_recent(static_cast<std::size_t>(a)), cb = f.item_recent(static_cast<std::size_t>(b));
        const auto la = f.item_likes(static_cast<std::size_t>(a)), lb = f.item_likes(static_cast<std::size_t>(b));
        return ca != cb ? ca > cb : la != lb ? la > lb : a < b;
      });
      for (std::size_t r = 0; r < users.size(); ++r) {
        for (auto* ranked : {&by_likes, &by_recent}) {
          std::vector<id_type> top;
          for (id_type i : *ranked) {
            if (f.has_seen(static_cast<std::size_t>(users[r]), static_cast<std::size_t>(i))) continue;
            top.push_back(i);
            if (top.size() == 10) break;
          }
          results[ranked == &by_likes ? pop_all : pop_recent].m.add(top, targets[r]);
        }
      }
      serve_s += seconds_since(t_serve);
    }

    // Observe the hour's events: log the training examples (features before each event), update
    // the feature state, the stores and the catalog.
    std::vector<tt_example> hour_tt;
    std::vector<rank_example> hour_rank;
    std::vector<id_type> new_items;
    std::unordered_set<std::uint32_t> touched_users;
    for (std::size_t k = e; k < end; ++k) {
      const auto& ev = s.events[k];
      f.advance(ev.t);
      if (!in_catalog[ev.item]) in_catalog[ev.item] = 1, catalog.push_back(ev.item), new_items.push_back(ev.item);
      if (ev.label > 0.5f) hour_tt.push_back({ev.user, ev.item, static_cast<std::uint32_t>(f.liked_count(ev.user))});
      tr.log_rank(ev, f, catalog.size(), catalog, rng, 2, hour_rank);
      f.observe(ev);
      touched_users.insert(ev.user);
    }
    for (std::uint32_t u : touched_users) st.refresh_user(f, u, scratch);
    // Frozen models: new items enter the index, encoded by the frozen item tower.
    frozen_index.add(frozen_live.current_retriever(), new_items);

    // Updated models: train on the hour, each batch mixed with random earlier examples, then
    // publish both models together and re-index the items whose vectors changed.
    t0 = clock_type::now();
    std::vector<id_type> touched_items(new_items.begin(), new_items.end());
    constexpr std::size_t fresh_per_step = 32;
    for (std::size_t b = 0; b < hour_tt.size(); b += fresh_per_step) {
      const auto fresh = std::span<const tt_example>(hour_tt).subspan(b, std::min(fresh_per_step, hour_tt.size() - b));
      std::vector<tt_example> replay;
      for (std::size_t k = 0; k < tt_batch - fresh.size() && !tt_all.empty(); ++k) replay.push_back(tt_all[rng() % tt_all.size()]);
      tr.tt_hour_step(fresh, replay, f, touched_items);
    }
    tt_all.insert(tt_all.end(), hour_tt.begin(), hour_tt.end());
    for (std::size_t b = 0; b < hour_rank.size(); b += rank_batch / 2) {
      std::vector<rank_example> batch(hour_rank.begin() + static_cast<std::ptrdiff_t>(b),
                                      hour_rank.begin() + static_cast<std::ptrdiff_t>(std::min(hour_rank.size(), b + rank_batch / 2)));
      const std::size_t fresh = batch.size();
      for (std::size_t k = 0; k < fresh && !rank_all.empty(); ++k) batch.push_back(rank_all[rng() % rank_all.size()]);
      tr.rank_step(batch);
    }
    rank_all.insert(rank_all.end(), hour_rank.begin(), hour_rank.end());
    incremental_train_s += seconds_since(t0);
    t0 = clock_type::now();
    const model_version next = tr.freeze();
    std::sort(touched_items.begin(), touched_items.end());
    touched_items.erase(std::unique(touched_items.begin(), touched_items.end()), touched_items.end());
    updated_index.add(*next.retrieval, touched_items);  // replaces the vectors of items already indexed
    updated_live.publish(next);
    publish_s += seconds_since(t0);
    republished_items += touched_items.size();
    e = end;
  }

  // 6. Report.
  const std::size_t commits = updated_live.registry.publications();
  for (int v : {frozen_retrieval, frozen_exact, frozen_ann}) {
    results[static_cast<std::size_t>(v)].train_s = initial_train_s;
    results[static_cast<std::size_t>(v)].publications = frozen_live.registry.publications();
  }
  for (int v : {updated_retrieval, updated_exact, updated_ann}) {
    results[static_cast<std::size_t>(v)].train_s = initial_train_s + incremental_train_s;
    results[static_cast<std::size_t>(v)].publications = commits;
  }
  std::printf("\n| variant | Recall@10 | NDCG@10 | requests | train s | publish count |\n|---|---:|---:|---:|---:|---:|\n");
  for (const variant_result& r : results) {
    const double q = static_cast<double>(std::max<std::size_t>(1, r.m.requests));
    std::printf("| %s | %.4f | %.4f | %zu | %.1f | %zu |\n", r.name.c_str(), r.m.recall / q, r.m.ndcg / q, r.m.requests,
                r.train_s, r.publications);
  }
  const double per = commits ? 1.0 / static_cast<double>(commits) : 0.0;
  std::printf("\nupdated hourly: %zu publications into the live pipeline (one per hour with events, %zu hours), mean "
              "publish %.2f ms (freeze both models, re-index %.1f items on average, commit both slots; a freeze alone "
              "took %.2f ms at the split), hourly training %.1f s in all (%.2f ms per hour)\n",
              commits, hours, 1e3 * publish_s * per, static_cast<double>(republished_items) * per, 1e3 * first_freeze_s,
              incremental_train_s, 1e3 * incremental_train_s * per);
  std::printf("serving (all variants and baselines): %.1f s\n", serve_s);
  // Paired differences over the same requests, with a normal 95 % interval (requests of one user
  // are correlated, so read it as a rough guide).
  const auto paired = [&](int a, int b) {
    const auto& x = results[static_cast<std::size_t>(a)].m.per_request;
    const auto& y = results[static_cast<std::size_t>(b)].m.per_request;
    if (x.size() != y.size() || x.size() < 2) return;
    double mean = 0, sq = 0;
    for (std::size_t r = 0; r < x.size(); ++r) mean += x[r] - y[r];
    mean /= static_cast<double>(x.size());
    for (std::size_t r = 0; r < x.size(); ++r) sq += (x[r] - y[r] - mean) * (x[r] - y[r] - mean);
    const double se = std::sqrt(sq / static_cast<double>(x.size() - 1) / static_cast<double>(x.size()));
    std::printf("Recall@10, %s minus %s: %+.4f +- %.4f (95 %% interval, paired over requests)\n",
                results[static_cast<std::size_t>(a)].name.c_str(), results[static_cast<std::size_t>(b)].name.c_str(), mean,
                1.96 * se);
  };
  paired(updated_exact, frozen_exact);
  paired(updated_ann, frozen_ann);
  paired(updated_exact, pop_all);
  paired(frozen_exact, frozen_ann);
  std::printf("requests without a positive in the next 24 h (not scored): %zu; catalog at the end: %zu items\n",
              skipped_requests, catalog.size());
  std::printf("total: %.1f s\n", seconds_since(t_start));
  if (seen_recommended) {
    std::fprintf(stderr, "movielens: %zu recommendations were items the user had rated (or lists longer than 10)\n",
                 seen_recommended);
    return 1;
  }
  if (updated_live.registry.version() != commits || frozen_live.registry.version() != 0) {
    std::fprintf(stderr, "movielens: registry versions %llu / %llu do not match the publications\n",
                 static_cast<unsigned long long>(updated_live.registry.version()),
                 static_cast<unsigned long long>(frozen_live.registry.version()));
    return 1;
  }
  if (o.smoke) {
    // The smoke run checks the plumbing, not the quality: every variant served every request.
    for (const variant_result& r : results)
      if (r.m.requests != results[0].m.requests || r.m.requests == 0) {
        std::fprintf(stderr, "movielens --smoke: variant '%s' scored %zu requests (expected %zu > 0)\n", r.name.c_str(),
                     r.m.requests, results[0].m.requests);
        return 1;
      }
  }
  return 0;
}

}  // namespace ml

int main(int argc, char** argv) {
  ml::options o;
  if (const char* dir = std::getenv("RECPIPE_DATA_DIR"); dir && *dir) o.data = dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "movielens: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--smoke") o.smoke = true;
    else if (a == "--epochs") o.epochs = std::stoul(next());
    else if (a == "--k") o.k = std::stoul(next());
    else if (a == "--ef") o.ef = std::stoul(next());
    else if (a == "--events") o.events = std::stoul(next());
    else if (a == "--seed") o.seed = std::stoull(next());
    else if (a == "--synthetic") o.data.clear();
    else if (!a.empty() && a[0] != '-') o.data = a;
    else {
      std::fprintf(stderr, "usage: %s [DATA (ml-latest-small folder or ratings.csv)] [--smoke] [--synthetic] [--epochs N] "
                           "[--k N] [--ef N] [--events N] [--seed N]\n", argv[0]);
      return 2;
    }
  }
  if (o.smoke) {
    o.data.clear();  // the smoke run is always the synthetic stream
    o.epochs = std::min<std::size_t>(o.epochs, 2);
  }
  try {
    return ml::run(o);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "movielens: %s\n", ex.what());
    return 1;
  }
}
