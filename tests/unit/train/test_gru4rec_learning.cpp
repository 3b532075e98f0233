// SPDX-License-Identifier: Apache-2.0
// recpipe tests: GRU4Rec learns. Synthetic click stream with a deterministic next-item rule
// (item i is followed by (7 i + 3) mod N); after a short training, Recall@20 of next-item
// prediction on held-out sessions must be far above the most-popular baseline.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <numeric>
#include <vector>

#include <recpipe/cpu/threads.hpp>
#include <recpipe/train/gru4rec_model.hpp>
#include <recpipe/train/optimizers.hpp>

namespace train = recpipe::train;
using recpipe::id_type;

namespace {

constexpr std::size_t num_items = 300;

struct sessions {
  std::vector<id_type> offsets{0}, items;
};

// Sessions start at an item drawn with a skewed popularity (so most-popular is a real baseline,
// not a uniform guess) and follow the rule for 2 .. 8 items: item i is followed by (7 i + 3) mod N,
// or, with second_order, only the second item is; later ones are (x_t + 3 x_{t-1} + 1) mod N,
// which no predictor that sees only the last item can get right (the GRU's state must carry
// x_{t-1}, across session-parallel steps).
sessions make_sessions(std::size_t count, std::uint64_t seed, bool second_order = false) {
  train::impl::gru4rec_rng rng{seed};
  sessions s;
  for (std::size_t k = 0; k < count; ++k) {
    const double u = rng.unit();
    auto item = static_cast<id_type>(static_cast<double>(num_items) * u * u);  // skewed toward small ids
    const std::size_t length = 2 + rng.below(7);
    const auto n = static_cast<id_type>(num_items);
    for (std::size_t t = 0; t < length; ++t) {
      s.items.push_back(item);
      if (second_order && t > 0)
        item = (item + 3 * s.items[s.items.size() - 2] + 1) % n;
      else
        item = (7 * item + 3) % n;
    }
    s.offsets.push_back(static_cast<id_type>(s.items.size()));
  }
  return s;
}

// Recall@k over every prefix of every test session: is the true next item among the top k?
template <class Scorer>
double recall_at(std::size_t k, const sessions& test, Scorer&& score) {
  std::vector<float> scores(num_items);
  std::vector<std::size_t> order(num_items);
  std::size_t hits = 0, total = 0;
  for (std::size_t s = 0; s + 1 < test.offsets.size(); ++s)
    for (auto end = test.offsets[s] + 1; end < test.offsets[s + 1]; ++end) {
      const std::span<const id_type> prefix(test.items.data() + test.offsets[s], static_cast<std::size_t>(end - test.offsets[s]));
      score(prefix, std::span<float>(scores));
      std::iota(order.begin(), order.end(), std::size_t{0});
      const auto top = order.begin() + static_cast<std::ptrdiff_t>(k);
      std::partial_sort(order.begin(), top, order.end(), [&](std::size_t a, std::size_t b) {
        return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
      });
      const auto target = static_cast<std::size_t>(test.items[static_cast<std::size_t>(end)]);
      hits += std::find(order.begin(), top, target) != top;
      ++total;
    }
  return static_cast<double>(hits) / static_cast<double>(total);
}

// Trains for `epochs`, returns {Recall@1, Recall@20} on te.
std::pair<double, double> train_and_measure(train::gru4rec_options options, const sessions& tr, const sessions& te,
                                            const char* label, int epochs = 3, std::size_t hidden = 48) {
  train::gru4rec_model model({num_items, 32, hidden, 1, false}, options,
                             std::make_shared<train::adagrad_rows>(train::adagrad_rows_options{.lr = 0.1}),
                             std::make_shared<train::adagrad_rows>(train::adagrad_rows_options{.lr = 0.1}), 11);
  model.set_item_counts(train::gru4rec_model::item_counts(tr.items, num_items));
  train::adagrad opt({.lr = 0.1});
  train::session_parallel_batches batches(tr.offsets, tr.items, 32, 5);
  train::session_batch batch;
  const auto start = std::chrono::steady_clock::now();
  std::size_t steps = 0;
  double last_loss = 0.0;
  for (int epoch = 0; epoch < epochs; ++epoch) {
    double loss = 0.0;
    std::size_t n = 0;
    model.reset_state();
    while (batches.next(batch)) {
      const train::step_result r = model.train_step(batch, [&](auto params) { opt.step(params); });
      loss += r.loss;
      ++n;
      ++steps;
    }
    batches.restart();
    last_loss = loss / static_cast<double>(n);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const recpipe::models::gru4rec frozen = model.freeze();
  const auto scorer = [&](std::span<const id_type> prefix, std::span<float> scores) {
    frozen.score_session(prefix, scores);
  };
  const double r1 = recall_at(1, te, scorer), r20 = recall_at(20, te, scorer);
  std::printf("gru4rec %s: %zu steps in %.2f s, last epoch loss %.3f, Recall@1 %.3f, Recall@20 %.3f, skipped %zu\n",
              label, steps, seconds, last_loss, r1, r20, model.skipped_steps());
  CHECK(model.skipped_steps() == 0);
  return {r1, r20};
}

}  // namespace

// Measured (this machine, 2 threads): most popular 0.178; all three losses Recall@20 1.000 after
// 3 epochs (562 steps, 0.5 - 1 s each).
TEST_CASE("gru4rec_model learns a deterministic next-item rule far above most-popular") {
  recpipe::cpu::set_num_threads(2);
  const sessions tr = make_sessions(1500, 1), te = make_sessions(200, 2);
  const std::vector<double> counts = train::gru4rec_model::item_counts(tr.items, num_items);
  const double popular = recall_at(20, te, [&](std::span<const id_type>, std::span<float> scores) {
    for (std::size_t i = 0; i < num_items; ++i) scores[i] = static_cast<float>(counts[i]);
  });
  std::printf("most popular: Recall@20 %.3f\n", popular);
  const double full = train_and_measure({train::gru4rec_loss::full_softmax}, tr, te, "full softmax").second;
  const double sampled =
      train_and_measure({train::gru4rec_loss::sampled_softmax, 64}, tr, te, "sampled softmax (in-batch + 64)").second;
  const double bpr =
      train_and_measure({train::gru4rec_loss::bpr_max, 64, 0.5f, 1.0f}, tr, te, "BPR-max (in-batch + 64)").second;
  CHECK(popular < 0.3);
  CHECK(full > 0.9);
  CHECK(sampled > 0.9);
  CHECK(bpr > 0.9);
}

// The best first-order predictor (the training successors of the last item, most frequent
// first) measured Recall@1 0.376 on this data, the GRU 0.913 after 5 epochs (936 steps, ~1 s); the GRU must
// use the item before the last, carried in its slot's hidden state between steps.
TEST_CASE("gru4rec_model carries session state: a second-order rule beats every first-order predictor") {
  recpipe::cpu::set_num_threads(2);
  const sessions tr = make_sessions(1500, 1, true), te = make_sessions(200, 2, true);
  // first-order oracle from the training transitions
  std::vector<std::vector<float>> successors(num_items, std::vector<float>(num_items, 0.0f));
  for (std::size_t s = 0; s + 1 < tr.offsets.size(); ++s)
    for (auto i = tr.offsets[s]; i + 1 < tr.offsets[s + 1]; ++i)
      successors[static_cast<std::size_t>(tr.items[static_cast<std::size_t>(i)])]
                [static_cast<std::size_t>(tr.items[static_cast<std::size_t>(i + 1)])] += 1.0f;
  const double markov = recall_at(1, te, [&](std::span<const id_type> prefix, std::span<float> scores) {
    const auto& row = successors[static_cast<std::size_t>(prefix.back())];
    std::copy(row.begin(), row.end(), scores.begin());
  });
  std::printf("first-order oracle: Recall@1 %.3f\n", markov);
  const double gru = train_and_measure({train::gru4rec_loss::full_softmax}, tr, te, "second order, full softmax", 5, 64).first;
  CHECK(markov < 0.45);
  CHECK(gru > markov + 0.3);
}
