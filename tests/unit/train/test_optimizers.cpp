// SPDX-License-Identifier: Apache-2.0
// recpipe tests: train/optimizers.hpp against double-precision references of torch.optim's rules,
// option checks, lr 0, snapshots of the state, and lazy (row) updates. Parity with torch itself is
// optim_parity.cpp (run from tools/reference_optimizers.py's fixtures).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <recpipe/train/optimizers.hpp>

namespace train = recpipe::train;

namespace {

struct model {
  std::vector<train::parameter> storage;
  std::vector<train::parameter*> params;
  explicit model(std::uint32_t seed) {
    // 1200 values: the update runs in chunks of 512, so chunk boundaries and a tail are covered
    storage.emplace_back("fc.weight", std::vector<std::size_t>{40, 30});
    storage.emplace_back("fc.bias", std::vector<std::size_t>{4});
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& p : storage)
      for (float& v : p.value) v = normal(rng);
    for (auto& p : storage) params.push_back(&p);
  }
  void set_grads(std::mt19937& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& p : storage)
      for (float& g : p.grad) g = normal(rng);
  }
};

// Double-precision references of torch.optim's update rules for one tensor.
struct reference {
  reference(std::string kind_, double lr_) : kind(std::move(kind_)), lr(lr_) {}
  std::string kind;
  double lr, momentum = 0, dampening = 0, wd = 0, lr_decay = 0, init = 0, eps = 1e-8, b1 = 0.9, b2 = 0.999;
  bool nesterov = false, amsgrad = false;
  std::vector<double> a, b, c;  // state
  int t = 0;
  void step(std::vector<double>& w, const std::vector<float>& grad) {
    ++t;
    if (a.empty()) a.assign(w.size(), kind == "adagrad" ? init : 0.0), b.assign(w.size(), 0.0), c.assign(w.size(), 0.0);
    for (std::size_t k = 0; k < w.size(); ++k) {
      double g = grad[k];
      if (kind == "sgd") {
        g += wd * w[k];
        if (momentum != 0) {
          a[k] = t == 1 ? g : momentum * a[k] + (1 - dampening) * g;
          g = nesterov ? g + momentum * a[k] : a[k];
        }
        w[k] -= lr * g;
      } else if (kind == "adagrad") {
        g += wd * w[k];
        a[k] += g * g;
        w[k] -= lr / (1 + (t - 1) * lr_decay) * g / (std::sqrt(a[k]) + eps);
      } else {
        if (kind == "adamw") w[k] *= 1 - lr * wd;
        else g += wd * w[k];
        a[k] = b1 * a[k] + (1 - b1) * g;
        b[k] = b2 * b[k] + (1 - b2) * g * g;
        c[k] = std::max(c[k], b[k]);
        const double v = amsgrad ? c[k] : b[k];
        w[k] -= lr / (1 - std::pow(b1, t)) * a[k] / (std::sqrt(v) / std::sqrt(1 - std::pow(b2, t)) + eps);
      }
    }
  }
};

struct dense_case {
  std::string label;
  std::function<std::unique_ptr<train::dense_optimizer>()> make;
  reference ref;
};

std::vector<dense_case> dense_cases() {
  std::vector<dense_case> cases;
  cases.push_back({"sgd", [] { return std::make_unique<train::sgd>(train::sgd_options{.lr = 0.1}); }, reference("sgd", 0.1)});
  {
    reference r{"sgd", 0.05};
    r.momentum = 0.9, r.dampening = 0.1, r.wd = 0.01;
    cases.push_back({"sgd momentum",
                     [] {
                       return std::make_unique<train::sgd>(
                           train::sgd_options{.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
                     },
                     r});
  }
  {
    reference r{"sgd", 0.05};
    r.momentum = 0.9, r.nesterov = true, r.wd = 0.001;
    cases.push_back({"sgd nesterov",
                     [] {
                       return std::make_unique<train::sgd>(
                           train::sgd_options{.lr = 0.05, .momentum = 0.9, .weight_decay = 0.001, .nesterov = true});
                     },
                     r});
  }
  {
    reference r{"adagrad", 0.1};
    r.lr_decay = 0.01, r.wd = 0.01, r.init = 0.1, r.eps = 1e-10;
    cases.push_back({"adagrad",
                     [] {
                       return std::make_unique<train::adagrad>(train::adagrad_options{
                           .lr = 0.1, .lr_decay = 0.01, .weight_decay = 0.01, .initial_accumulator_value = 0.1});
                     },
                     r});
  }
  {
    reference r{"adam", 0.01};
    cases.push_back({"adam", [] { return std::make_unique<train::adam>(train::adam_options{.lr = 0.01}); }, r});
  }
  {
    reference r{"adam", 0.01};
    r.b1 = 0.8, r.b2 = 0.99, r.wd = 0.05, r.amsgrad = true;
    cases.push_back({"adam l2 amsgrad",
                     [] {
                       return std::make_unique<train::adam>(
                           train::adam_options{.lr = 0.01, .beta1 = 0.8, .beta2 = 0.99, .weight_decay = 0.05, .amsgrad = true});
                     },
                     r});
  }
  {
    reference r{"adamw", 0.01};
    r.wd = 0.1;
    cases.push_back({"adamw", [] { return std::make_unique<train::adamw>(train::adamw_options{.lr = 0.01, .weight_decay = 0.1}); },
                     r});
  }
  return cases;
}

}  // namespace

TEST_CASE("dense optimizers follow torch.optim's update rules (double reference, 20 steps)") {
  for (const dense_case& c : dense_cases()) {
    CAPTURE(c.label);
    model m(1);
    std::vector<std::vector<double>> w;
    std::vector<reference> refs;
    for (auto& p : m.storage) w.emplace_back(p.value.begin(), p.value.end()), refs.push_back(c.ref);
    auto opt = c.make();
    std::mt19937 rng(2);
    double worst = 0.0;
    for (int step = 0; step < 20; ++step) {
      m.set_grads(rng);
      opt->step(m.params);
      for (std::size_t i = 0; i < m.storage.size(); ++i) {
        refs[i].step(w[i], m.storage[i].grad);
        for (std::size_t k = 0; k < w[i].size(); ++k)
          worst = std::max(worst, std::fabs(m.storage[i].value[k] - w[i][k]) / std::max(1.0, std::fabs(w[i][k])));
      }
    }
    CHECK(opt->steps() == 20);
    CHECK(worst < 2e-6);
  }
}

TEST_CASE("dense optimizers: lr 0 leaves weights unchanged but advances the state") {
  for (const dense_case& c : dense_cases()) {
    CAPTURE(c.label);
    auto opt = c.make();
    opt->set_lr(0.0);
    model m(3);
    const auto before = m.storage[0].value;
    std::mt19937 rng(4);
    m.set_grads(rng);
    opt->step(m.params);
    opt->step(m.params);
    CHECK(m.storage[0].value == before);
    CHECK(opt->steps() == 2);
    bool moved = false;  // SGD without momentum has no state
    opt->for_each_state([&](const std::string&, std::span<float> s) {
      for (float v : s) moved = moved || v != 0.0f;
    });
    if (c.label != "sgd") CHECK(moved);
  }
}

TEST_CASE("dense optimizers: options are validated and name the bad option") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (double bad : {nan, inf, -0.1}) {
    CHECK_THROWS_WITH_AS(train::sgd(train::sgd_options{.lr = bad}), doctest::Contains("option lr"), recpipe::error);
    CHECK_THROWS_WITH_AS(train::adagrad(train::adagrad_options{.lr = bad}), doctest::Contains("option lr"), recpipe::error);
    CHECK_THROWS_WITH_AS(train::adam(train::adam_options{.lr = bad}), doctest::Contains("train::adam: option lr"),
                         recpipe::error);
    CHECK_THROWS_WITH_AS(train::adamw(train::adamw_options{.lr = bad}), doctest::Contains("train::adamw: option lr"),
                         recpipe::error);
    CHECK_THROWS_WITH_AS(train::adam(train::adam_options{.eps = bad}), doctest::Contains("option eps"), recpipe::error);
    CHECK_THROWS_WITH_AS(train::sgd(train::sgd_options{.momentum = bad}), doctest::Contains("option momentum"),
                         recpipe::error);
  }
  CHECK_THROWS_WITH_AS(train::adam(train::adam_options{.eps = 0.0}), doctest::Contains("option eps must be a finite number > 0"),
                       recpipe::error);
  CHECK_THROWS_WITH_AS(train::lazy_adam(train::lazy_adam_options{.eps = 0.0}), doctest::Contains("option eps"), recpipe::error);
  CHECK_THROWS_WITH_AS(train::adam(train::adam_options{.beta1 = 1.0}), doctest::Contains("option beta1"), recpipe::error);
  CHECK_THROWS_WITH_AS(train::adam(train::adam_options{.beta2 = 1.5}), doctest::Contains("option beta2"), recpipe::error);
  CHECK_THROWS_WITH_AS(train::sgd(train::sgd_options{.nesterov = true}), doctest::Contains("nesterov"), recpipe::error);
  train::adam ok;
  CHECK_THROWS_WITH_AS(ok.set_lr(nan), doctest::Contains("option lr"), recpipe::error);
  CHECK(ok.lr() == 1e-3);
  CHECK_NOTHROW(train::sgd(train::sgd_options{.lr = 0.0}));
}

TEST_CASE("dense optimizers: the same parameter list every step") {
  model m(5), other(6);
  train::adam opt;
  opt.step(m.params);
  std::vector<train::parameter*> fewer{m.params[0]};
  CHECK_THROWS_WITH_AS(opt.step(fewer), doctest::Contains("got 1 parameters but the optimizer state is for 2"),
                       recpipe::error);
  std::vector<train::parameter*> swapped{m.params[1], m.params[0]};
  CHECK_THROWS_WITH_AS(opt.step(swapped), doctest::Contains("'fc.bias'"), recpipe::error);
  other.storage[1].name = "head.bias";
  CHECK_THROWS_AS(opt.step(other.params), recpipe::error);
  std::vector<train::parameter*> null_param{m.params[0], nullptr};
  CHECK_THROWS_WITH_AS(opt.step(null_param), doctest::Contains("null"), recpipe::error);
  CHECK(opt.steps() == 1);
  // a parameter list with the same names and sizes (e.g. the model copied) is the same list
  model copy(5);
  CHECK_NOTHROW(opt.step(copy.params));
}

TEST_CASE("dense optimizers: non-finite gradients are detected and the step skipped") {
  model m(7);
  std::mt19937 rng(8);
  m.set_grads(rng);
  CHECK(train::all_finite(m.params));
  m.storage[1].grad[2] = std::numeric_limits<float>::infinity();
  CHECK_FALSE(train::all_finite(m.params));
  train::adam opt;
  const auto before = m.storage[0].value;
  CHECK_FALSE(opt.step_if_finite(m.params));
  CHECK(m.storage[0].value == before);
  CHECK(opt.steps() == 0);
  m.storage[1].grad[2] = 0.5f;
  CHECK(opt.step_if_finite(m.params));
  CHECK(opt.steps() == 1);
  // large finite gradients never produce a non-finite weight
  for (auto& p : m.storage)
    for (float& g : p.grad) g = 3e38f;
  for (int i = 0; i < 3; ++i) opt.step(m.params);
  for (auto& p : m.storage)
    for (float v : p.value) CHECK(std::isfinite(v));
  // zero gradients on fresh state (0 / (0 + eps)) leave every optimizer's weights finite
  for (const dense_case& c : dense_cases()) {
    CAPTURE(c.label);
    model z(1);
    auto zero = c.make();
    for (int i = 0; i < 3; ++i) zero->step(z.params);
    for (auto& p : z.storage)
      for (float v : p.value) CHECK(std::isfinite(v));
  }
}

TEST_CASE("dense optimizers: state snapshot round trip in memory") {
  for (const dense_case& c : dense_cases()) {
    CAPTURE(c.label);
    model a(9), b(9);
    auto first = c.make();
    std::mt19937 rng(10);
    for (int i = 0; i < 5; ++i) {
      a.set_grads(rng);
      first->step(a.params);
    }
    // snapshot: weights, state tensors by name, step count
    std::map<std::string, std::vector<float>> saved;
    first->for_each_state([&](const std::string& name, std::span<float> s) {
      CHECK(saved.count(name) == 0);
      saved[name].assign(s.begin(), s.end());
    });
    for (std::size_t i = 0; i < a.storage.size(); ++i) b.storage[i].value = a.storage[i].value;
    auto second = c.make();
    second->bind(b.params);
    std::size_t restored = 0;
    second->for_each_state([&](const std::string& name, std::span<float> s) {
      REQUIRE(saved.count(name) == 1);
      std::copy(saved[name].begin(), saved[name].end(), s.begin());
      ++restored;
    });
    CHECK(restored == saved.size());
    second->set_steps(first->steps());
    for (int i = 0; i < 5; ++i) {
      a.set_grads(rng);
      for (std::size_t p = 0; p < a.storage.size(); ++p) b.storage[p].grad = a.storage[p].grad;
      first->step(a.params);
      second->step(b.params);
    }
    for (std::size_t p = 0; p < a.storage.size(); ++p) CHECK(a.storage[p].value == b.storage[p].value);
  }
  train::adam named(train::adam_options{.amsgrad = true});
  model m(1);
  named.bind(m.params);
  std::vector<std::string> names;
  named.for_each_state([&](const std::string& name, std::span<float>) { names.push_back(name); });
  CHECK(names == std::vector<std::string>{"fc.weight.exp_avg", "fc.weight.exp_avg_sq", "fc.weight.max_exp_avg_sq",
                                          "fc.bias.exp_avg", "fc.bias.exp_avg_sq", "fc.bias.max_exp_avg_sq"});
  CHECK_THROWS_AS(named.set_steps(-1), recpipe::error);
}

// ---- row optimizers -------------------------------------------------------------------------

namespace {
// A minimal table: rows and their optimizer state side by side, as a trainable_table keeps them.
struct tiny_table {
  std::size_t dim;
  std::vector<float> rows, state;
  train::row_optimizer& opt;
  tiny_table(std::size_t n, std::size_t d, train::row_optimizer& o) : dim(d), rows(n * d), state(n * o.state_size(d)), opt(o) {
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& v : rows) v = normal(rng);
    const std::size_t s = o.state_size(d);
    for (std::size_t r = 0; r < n; ++r) o.init_state(std::span<float>(state).subspan(r * s, s));
  }
  void apply(const std::vector<std::size_t>& ids, const std::vector<float>& grads) {
    opt.begin_step();
    const std::size_t s = opt.state_size(dim);
    for (std::size_t i = 0; i < ids.size(); ++i)
      opt.update_row(std::span<float>(rows).subspan(ids[i] * dim, dim), std::span<float>(state).subspan(ids[i] * s, s),
                     std::span<const float>(grads).subspan(i * dim, dim));
  }
};

// Double references of the row rules (per row, state as doubles).
struct row_reference {
  std::string kind;
  double lr, eps, init = 0, lr_decay = 0, b1 = 0.9, b2 = 0.999;
  void update(std::vector<double>& row, std::vector<double>& state, const float* g, int t) const {
    const std::size_t d = row.size();
    if (kind == "sgd") {
      for (std::size_t k = 0; k < d; ++k) row[k] -= lr * g[k];
    } else if (kind == "rowwise") {
      double sq = 0;
      for (std::size_t k = 0; k < d; ++k) sq += double(g[k]) * g[k];
      state[0] += sq / static_cast<double>(d);
      for (std::size_t k = 0; k < d; ++k) row[k] -= lr / (std::sqrt(state[0]) + eps) * g[k];
    } else if (kind == "adagrad") {
      for (std::size_t k = 0; k < d; ++k) {
        state[k] += double(g[k]) * g[k];
        row[k] -= lr / (1 + (t - 1) * lr_decay) * g[k] / (std::sqrt(state[k]) + eps);
      }
    } else {
      for (std::size_t k = 0; k < d; ++k) {
        state[k] = b1 * state[k] + (1 - b1) * g[k];
        state[d + k] = b2 * state[d + k] + (1 - b2) * double(g[k]) * g[k];
        row[k] -= lr * std::sqrt(1 - std::pow(b2, t)) / (1 - std::pow(b1, t)) * state[k] / (std::sqrt(state[d + k]) + eps);
      }
    }
  }
};
}  // namespace

TEST_CASE("row optimizers: rules, and only the rows in the batch change") {
  train::row_sgd sgd(0.1);
  train::rowwise_adagrad rowwise(train::rowwise_adagrad_options{.lr = 0.1, .initial_accumulator_value = 0.05});
  train::adagrad_rows adagrad(train::adagrad_rows_options{.lr = 0.1, .lr_decay = 0.01, .initial_accumulator_value = 0.1});
  train::lazy_adam adam(train::lazy_adam_options{.lr = 0.01});
  const std::vector<std::pair<train::basic_row_optimizer*, row_reference>> cases{
      {&sgd, {"sgd", 0.1, 0}},
      {&rowwise, {"rowwise", 0.1, 1e-8, 0.05}},
      {&adagrad, {"adagrad", 0.1, 1e-10, 0.1, 0.01}},
      {&adam, {"adam", 0.01, 1e-8}}};
  for (const std::size_t d : {std::size_t{4}, std::size_t{150}})  // 150: rows run in chunks of 64
  for (const auto& entry : cases) {  // not a structured binding: clang 14 cannot capture one (CAPTURE)
    train::basic_row_optimizer* const opt = entry.first;
    const row_reference& ref = entry.second;
    CAPTURE(ref.kind);
    CAPTURE(d);
    opt->set_steps(0);  // each table starts at step 0 (the reference's t)
    const std::size_t n = 10, s = opt->state_size(d);
    tiny_table table(n, d, *opt);
    std::vector<std::vector<double>> rows(n), states(n);
    for (std::size_t r = 0; r < n; ++r) {
      rows[r].assign(table.rows.begin() + static_cast<long>(r * d), table.rows.begin() + static_cast<long>((r + 1) * d));
      states[r].assign(table.state.begin() + static_cast<long>(r * s), table.state.begin() + static_cast<long>((r + 1) * s));
    }
    std::mt19937 rng(12);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    double worst = 0.0;
    for (int t = 1; t <= 20; ++t) {
      std::vector<std::size_t> ids;
      for (std::size_t r = 0; r < n; ++r)
        if (rng() % 3 == 0) ids.push_back(r);
      std::vector<float> grads(ids.size() * d);
      for (float& g : grads) g = normal(rng);
      const auto rows_before = table.rows;
      const auto state_before = table.state;
      table.apply(ids, grads);
      for (std::size_t i = 0; i < ids.size(); ++i) ref.update(rows[ids[i]], states[ids[i]], grads.data() + i * d, t);
      for (std::size_t r = 0; r < n; ++r) {
        const bool in_batch = std::find(ids.begin(), ids.end(), r) != ids.end();
        for (std::size_t k = 0; k < d; ++k) {
          if (!in_batch) CHECK(table.rows[r * d + k] == rows_before[r * d + k]);  // bit for bit
          worst = std::max(worst, std::fabs(table.rows[r * d + k] - rows[r][k]) / std::max(1.0, std::fabs(rows[r][k])));
        }
        if (!in_batch)
          for (std::size_t k = 0; k < s; ++k) CHECK(table.state[r * s + k] == state_before[r * s + k]);
      }
    }
    CHECK(worst < 2e-6);
  }
  CHECK(adam.steps() == 20);
}

TEST_CASE("row optimizers: checks, lr 0 and step counts") {
  train::lazy_adam adam;
  std::vector<float> row(4, 1.0f), state(8, 0.0f), grad(4, 0.5f), short_state(3);
  CHECK_THROWS_WITH_AS(adam.update_row(row, state, grad), doctest::Contains("before the first begin_step"), recpipe::error);
  adam.begin_step();
  CHECK_THROWS_WITH_AS(adam.update_row(row, short_state, grad), doctest::Contains("needs 8"), recpipe::error);
  std::vector<float> short_grad(3);
  CHECK_THROWS_AS(adam.update_row(row, state, short_grad), recpipe::error);
  adam.set_lr(0.0);
  adam.update_row(row, state, grad);
  CHECK(row == std::vector<float>(4, 1.0f));
  CHECK(state[0] != 0.0f);  // state advances at lr 0, as torch's does
  adam.set_steps(41);
  adam.begin_step();
  CHECK(adam.steps() == 42);
  for (double bad : {std::numeric_limits<double>::quiet_NaN(), -1.0, std::numeric_limits<double>::infinity()}) {
    CHECK_THROWS_WITH_AS(train::row_sgd{bad}, doctest::Contains("train::row_sgd: option lr"), recpipe::error);
    CHECK_THROWS_WITH_AS(train::rowwise_adagrad(train::rowwise_adagrad_options{.lr = bad}), doctest::Contains("option lr"),
                         recpipe::error);
    CHECK_THROWS_WITH_AS(train::adagrad_rows(train::adagrad_rows_options{.eps = bad}), doctest::Contains("option eps"),
                         recpipe::error);
    CHECK_THROWS_WITH_AS(train::lazy_adam(train::lazy_adam_options{.lr = bad}), doctest::Contains("option lr"),
                         recpipe::error);
  }
  train::rowwise_adagrad rowwise(train::rowwise_adagrad_options{.initial_accumulator_value = 2.0});
  std::vector<float> one(1);
  rowwise.init_state(one);
  CHECK(one[0] == 2.0f);
  CHECK(rowwise.state_size(128) == 1);
  std::vector<float> empty_row;
  CHECK_NOTHROW(rowwise.update_row(empty_row, one, {}));
}
