// SPDX-License-Identifier: Apache-2.0
// recpipe train: dense optimizers (SGD, Adagrad, Adam, AdamW) and row optimizers for embedding tables.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <Eigen/Core>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/train/parameter.hpp>
#include <recpipe/train/table.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

// Update rules are torch.optim's (PyTorch 1.13, single-tensor path, maximize=False), written in
// the same fp32 operation order with the hyper-parameters kept in double as Python keeps them,
// so that 20 steps agree with torch to ~1e-7 (tests/unit/train/optim_parity.cpp).
//
// Learning rate 0 is allowed: the weights do not change, but the state (moments, accumulators,
// step count) advances exactly as torch's does. A NaN, infinite or negative option is a
// recpipe::error naming the option.
//
// Non-finite gradients: the trainer checks all_finite() before each step and skips (and counts)
// a step whose gradients are not finite; step_if_finite() does both in one call. Called with
// finite gradients, no optimizer writes a NaN: the adaptive ones (Adagrad, Adam, AdamW and the
// row optimizers but row_sgd) divide by sqrt(accumulator) + eps with eps > 0 required (a
// gradient so large that g^2 overflows gives an infinite accumulator and a zero step). SGD's
// step is lr * g unbounded, so only an absurd gradient (|lr g| near 3e38) could overflow a
// weight to +-inf; the next step's gradients are then non-finite and skipped.

//! True when every gradient of every parameter is finite.
//! @code
//! if (!recpipe::train::all_finite(params)) ++skipped_steps; else opt.step(params);
//! @endcode
inline bool all_finite(std::span<parameter* const> params) noexcept {
  for (const parameter* p : params)
    if (p != nullptr && !p->grad_is_finite()) return false;
  return true;
}

namespace impl {
// The element-wise updates run through Eigen arrays (vectorised; +, *, / and max are exactly
// rounded, so the operation order alone decides the bits, and it is torch's). Square roots are
// NOT Eigen's: with EIGEN_FAST_MATH (on by default) its packet sqrt is rsqrt + one Newton step,
// 1-2 ulp off and wrong for inf; exact_sqrt uses the exactly rounded sqrt instructions instead
// (a plain std::sqrt loop would not vectorise: errno). Chunks of 512 keep the several passes of
// one update (moments, then weights) inside L1.
inline void exact_sqrt(const float* x, float* out, std::size_t n) noexcept {
  std::size_t k = 0;
#if defined(__AVX__)
  for (; k + 8 <= n; k += 8) _mm256_storeu_ps(out + k, _mm256_sqrt_ps(_mm256_loadu_ps(x + k)));
#endif
#if defined(__SSE2__)
  for (; k + 4 <= n; k += 4) _mm_storeu_ps(out + k, _mm_sqrt_ps(_mm_loadu_ps(x + k)));
#endif
  for (; k < n; ++k) out[k] = std::sqrt(x[k]);
}
template <class Derived>
void exact_sqrt(const Eigen::ArrayBase<Derived>& x, Eigen::Ref<Eigen::ArrayXf> out) noexcept {
  exact_sqrt(x.derived().data(), out.data(), static_cast<std::size_t>(x.size()));
}
using array_map = Eigen::Map<Eigen::ArrayXf>;
using const_array_map = Eigen::Map<const Eigen::ArrayXf>;
inline constexpr std::size_t update_chunk = 512;
inline constexpr std::size_t row_chunk = 64;  // a stack buffer's worth of one embedding row
template <class F>
void for_each_chunk(std::size_t n, F&& f) {
  for (std::size_t first = 0; first < n; first += update_chunk) {
    const std::size_t count = std::min(update_chunk, n - first);
    f(first, static_cast<Eigen::Index>(count));
  }
}

inline void check_option(const char* where, const char* name, double value, bool below_one = false) {
  if (!std::isfinite(value) || value < 0.0 || (below_one && value >= 1.0))
    detail::fail(where, ": option ", name, " must be a finite number in [0, ", below_one ? "1)" : "inf)", " (got ",
                 value, ")");
}
// eps must be > 0 (torch accepts 0): with eps 0, a zero gradient on a zero accumulator is 0 / 0,
// and an optimizer must never write NaN into a table.
inline void check_eps(const char* where, double value) {
  if (!std::isfinite(value) || !(value > 0.0))
    detail::fail(where, ": option eps must be a finite number > 0 (got ", value, ")");
}
}  // namespace impl

//! @brief Base of the dense optimizers: one step over a fixed list of parameters, state that can
//! be listed by name for snapshots, and the step count.
//!
//! State is created on the first step (or by `bind`) for the parameters given then; every later
//! step must get the same list (same count, names and sizes, in order), else recpipe::error. The
//! step count is global (torch keeps one per parameter; they are equal when every parameter
//! steps together, which is what the trainer does).
class dense_optimizer {
 public:
  using state_visitor = std::function<void(const std::string& name, std::span<float> values)>;

  virtual ~dense_optimizer() = default;

  //! One update of every parameter from its `grad` (finite: see all_finite()). Grads are read,
  //! not zeroed.
  void step(std::span<parameter* const> params) {
    bind(params);
    ++steps_;
    update(params);
  }
  //! step() when all_finite(params); otherwise touches nothing and returns false.
  bool step_if_finite(std::span<parameter* const> params) {
    if (!all_finite(params)) return false;
    step(params);
    return true;
  }
  //! Creates the (zero/initial) state for `params` if there is none yet, else checks that
  //! `params` is the list the state belongs to. Call before restoring a snapshot into a fresh
  //! optimizer.
  void bind(std::span<parameter* const> params) {
    if (!bound_) {
      names_.clear();
      sizes_.clear();
      for (std::size_t i = 0; i < params.size(); ++i) {
        if (params[i] == nullptr) detail::fail(name(), ": parameter ", i, " is null");
        if (params[i]->grad.size() != params[i]->value.size())
          detail::fail(name(), ": parameter '", params[i]->name, "' has ", params[i]->value.size(), " values but ",
                       params[i]->grad.size(), " gradients");
        names_.push_back(params[i]->name);
        sizes_.push_back(params[i]->value.size());
      }
      create_state(sizes_);
      bound_ = true;
      return;
    }
    if (params.size() != names_.size())
      detail::fail(name(), ": got ", params.size(), " parameters but the optimizer state is for ", names_.size(),
                   " (the same parameter list must be passed every step)");
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (params[i] == nullptr) detail::fail(name(), ": parameter ", i, " is null");
      if (params[i]->name != names_[i] || params[i]->value.size() != sizes_[i] ||
          params[i]->grad.size() != sizes_[i])
        detail::fail(name(), ": parameter ", i, " is '", params[i]->name, "' with ", params[i]->value.size(),
                     " values but the optimizer state is for '", names_[i], "' with ", sizes_[i], " values");
    }
  }
  bool bound() const noexcept { return bound_; }
  //! Steps taken (torch's state['step']); 0 before the first.
  std::int64_t steps() const noexcept { return steps_; }
  //! Restores the step count from a snapshot (with the state tensors from for_each_state).
  void set_steps(std::int64_t steps) {
    if (steps < 0) detail::fail(name(), ": step count must be >= 0 (got ", steps, ")");
    steps_ = steps;
  }
  double lr() const noexcept { return lr_; }
  //! Changes the learning rate (schedules); same validation as the option.
  void set_lr(double lr) {
    impl::check_option(name(), "lr", lr);
    lr_ = lr;
  }
  //! Calls visit("<parameter name>.<state name>", values) for every state tensor (e.g.
  //! "fc.weight.exp_avg"), in a fixed order; writing through the span restores a snapshot.
  //! Visits nothing before bind()/the first step.
  void for_each_state(const state_visitor& visit) {
    for (std::size_t i = 0; i < names_.size(); ++i) visit_state(i, names_[i], visit);
  }
  //! "sgd", "adagrad", "adam" or "adamw" (also the prefix of error messages).
  virtual const char* name() const noexcept = 0;

 protected:
  explicit dense_optimizer(double lr) : lr_(lr) {}
  virtual void create_state(const std::vector<std::size_t>& sizes) = 0;
  virtual void update(std::span<parameter* const> params) = 0;
  virtual void visit_state(std::size_t index, const std::string& param, const state_visitor& visit) = 0;

  double lr_;
  std::int64_t steps_ = 0;

 private:
  bool bound_ = false;
  std::vector<std::string> names_;
  std::vector<std::size_t> sizes_;
};

//! Options of train::sgd (torch.optim.SGD's arguments and defaults, lr 0.01 where torch has none).
struct sgd_options {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

//! @brief torch.optim.SGD: g = grad + wd w; with momentum, buf = g on the first step, then
//! buf = momentum buf + (1 - dampening) g; g = nesterov ? g + momentum buf : buf; w -= lr g.
//! State: "<param>.momentum_buffer" (only when momentum != 0).
//! @code
//! recpipe::train::sgd opt({.lr = 0.1, .momentum = 0.9});
//! opt.step(params);
//! @endcode
class sgd final : public dense_optimizer {
 public:
  explicit sgd(sgd_options options = {}) : dense_optimizer(options.lr), o_(options) {
    impl::check_option("train::sgd", "lr", o_.lr);
    impl::check_option("train::sgd", "momentum", o_.momentum);
    impl::check_option("train::sgd", "dampening", o_.dampening);
    impl::check_option("train::sgd", "weight_decay", o_.weight_decay);
    if (o_.nesterov && (o_.momentum <= 0.0 || o_.dampening != 0.0))
      detail::fail("train::sgd: option nesterov needs momentum > 0 and dampening 0 (got momentum ", o_.momentum,
                   ", dampening ", o_.dampening, ")");
  }
  const sgd_options& options() const noexcept { return o_; }
  const char* name() const noexcept override { return "train::sgd"; }

 private:
  void create_state(const std::vector<std::size_t>& sizes) override {
    buffers_.clear();
    if (o_.momentum != 0.0)
      for (std::size_t n : sizes) buffers_.emplace_back(n, 0.0f);
  }
  void update(std::span<parameter* const> params) override {
    const float wd = static_cast<float>(o_.weight_decay), mom = static_cast<float>(o_.momentum);
    const float keep = static_cast<float>(1.0 - o_.dampening), neg_lr = static_cast<float>(-lr_);
    Eigen::ArrayXf d(static_cast<Eigen::Index>(impl::update_chunk));
    for (std::size_t i = 0; i < params.size(); ++i) {
      impl::for_each_chunk(params[i]->value.size(), [&](std::size_t at, Eigen::Index n) {
        impl::array_map w(params[i]->value.data() + at, n);
        const impl::const_array_map g(params[i]->grad.data() + at, n);
        auto dk = d.head(n);
        if (o_.weight_decay != 0.0) dk = g + wd * w;
        else dk = g;
        if (o_.momentum != 0.0) {
          impl::array_map buf(buffers_[i].data() + at, n);
          if (steps_ == 1) buf = dk;
          else buf = buf * mom + keep * dk;
          if (o_.nesterov) dk = dk + mom * buf;
          else dk = buf;
        }
        w = w + neg_lr * dk;
      });
    }
  }
  void visit_state(std::size_t i, const std::string& param, const state_visitor& visit) override {
    if (o_.momentum != 0.0) visit(param + ".momentum_buffer", buffers_[i]);
  }

  sgd_options o_;
  std::vector<std::vector<float>> buffers_;
};

//! Options of train::adagrad (torch.optim.Adagrad's defaults).
struct adagrad_options {
  double lr = 0.01;
  double lr_decay = 0.0;
  double weight_decay = 0.0;
  double initial_accumulator_value = 0.0;
  double eps = 1e-10;
};

//! @brief torch.optim.Adagrad: g = grad + wd w; clr = lr / (1 + (step - 1) lr_decay);
//! sum += g^2; w -= clr g / (sqrt(sum) + eps). State: "<param>.sum".
//! @code
//! recpipe::train::adagrad opt({.lr = 0.05});
//! @endcode
class adagrad final : public dense_optimizer {
 public:
  explicit adagrad(adagrad_options options = {}) : dense_optimizer(options.lr), o_(options) {
    impl::check_option("train::adagrad", "lr", o_.lr);
    impl::check_option("train::adagrad", "lr_decay", o_.lr_decay);
    impl::check_option("train::adagrad", "weight_decay", o_.weight_decay);
    impl::check_option("train::adagrad", "initial_accumulator_value", o_.initial_accumulator_value);
    impl::check_eps("train::adagrad", o_.eps);
  }
  const adagrad_options& options() const noexcept { return o_; }
  const char* name() const noexcept override { return "train::adagrad"; }

 private:
  void create_state(const std::vector<std::size_t>& sizes) override {
    sums_.clear();
    for (std::size_t n : sizes) sums_.emplace_back(n, static_cast<float>(o_.initial_accumulator_value));
  }
  void update(std::span<parameter* const> params) override {
    const double clr = lr_ / (1.0 + static_cast<double>(steps_ - 1) * o_.lr_decay);
    const float wd = static_cast<float>(o_.weight_decay), eps = static_cast<float>(o_.eps);
    const float neg_clr = static_cast<float>(-clr);
    Eigen::ArrayXf d(static_cast<Eigen::Index>(impl::update_chunk)), root(d.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      impl::for_each_chunk(params[i]->value.size(), [&](std::size_t at, Eigen::Index n) {
        impl::array_map w(params[i]->value.data() + at, n), sum(sums_[i].data() + at, n);
        const impl::const_array_map g(params[i]->grad.data() + at, n);
        auto dk = d.head(n);
        if (o_.weight_decay != 0.0) dk = g + wd * w;
        else dk = g;
        sum = sum + dk * dk;
        impl::exact_sqrt(sum, root.head(n));
        w = w + neg_clr * (dk / (root.head(n) + eps));
      });
    }
  }
  void visit_state(std::size_t i, const std::string& param, const state_visitor& visit) override {
    visit(param + ".sum", sums_[i]);
  }

  adagrad_options o_;
  std::vector<std::vector<float>> sums_;
};

//! Options of train::adam (torch.optim.Adam's defaults; weight_decay is L2 added to the gradient).
struct adam_options {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool amsgrad = false;
};

//! Options of train::adamw (torch.optim.AdamW's defaults: decoupled weight decay 0.01).
struct adamw_options {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;
};

//! @brief torch.optim.Adam (and, as train::adamw, torch.optim.AdamW).
//!
//! Adam: g = grad + wd w. AdamW: w *= 1 - lr wd (decoupled), g = grad. Then
//! m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; vmax = max(vmax, v) with amsgrad;
//! w -= lr / (1 - b1^t) * m / (sqrt(v or vmax) / sqrt(1 - b2^t) + eps).
//! State: "<param>.exp_avg", "<param>.exp_avg_sq", and "<param>.max_exp_avg_sq" with amsgrad.
//! @code
//! recpipe::train::adam opt({.lr = 1e-3});
//! for (auto& batch : batches) { zero grads; forward; backward; opt.step(params); }
//! @endcode
class adam : public dense_optimizer {
 public:
  explicit adam(adam_options options = {}) : adam(options, false, "train::adam") {}
  const adam_options& options() const noexcept { return o_; }
  const char* name() const noexcept override { return name_; }

 protected:
  adam(adam_options options, bool decoupled, const char* name)
      : dense_optimizer(options.lr), o_(options), decoupled_(decoupled), name_(name) {
    impl::check_option(name_, "lr", o_.lr);
    impl::check_option(name_, "beta1", o_.beta1, true);
    impl::check_option(name_, "beta2", o_.beta2, true);
    impl::check_eps(name_, o_.eps);
    impl::check_option(name_, "weight_decay", o_.weight_decay);
  }

 private:
  void create_state(const std::vector<std::size_t>& sizes) override {
    m_.clear(), v_.clear(), vmax_.clear();
    for (std::size_t n : sizes) {
      m_.emplace_back(n, 0.0f);
      v_.emplace_back(n, 0.0f);
      if (o_.amsgrad) vmax_.emplace_back(n, 0.0f);
    }
  }
  void update(std::span<parameter* const> params) override {
    const double t = static_cast<double>(steps_);
    const double bias1 = 1.0 - std::pow(o_.beta1, t), bias2 = 1.0 - std::pow(o_.beta2, t);
    const float neg_step = static_cast<float>(-(lr_ / bias1)), bias2_sqrt = static_cast<float>(std::sqrt(bias2));
    const float b1 = static_cast<float>(o_.beta1), b2 = static_cast<float>(o_.beta2);
    const float one_b1 = static_cast<float>(1.0 - o_.beta1), one_b2 = static_cast<float>(1.0 - o_.beta2);
    const float eps = static_cast<float>(o_.eps), wd = static_cast<float>(o_.weight_decay);
    const float decay = static_cast<float>(1.0 - lr_ * o_.weight_decay);
    Eigen::ArrayXf scratch(static_cast<Eigen::Index>(impl::update_chunk)), root(scratch.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      impl::for_each_chunk(params[i]->value.size(), [&](std::size_t at, Eigen::Index n) {
        impl::array_map w(params[i]->value.data() + at, n), m(m_[i].data() + at, n), v(v_[i].data() + at, n);
        const impl::const_array_map grad(params[i]->grad.data() + at, n);
        auto g = scratch.head(n);
        g = grad;
        if (o_.weight_decay != 0.0) {
          if (decoupled_) w = w * decay;
          else g = g + wd * w;
        }
        m = m * b1 + one_b1 * g;
        v = v * b2 + one_b2 * g * g;
        if (o_.amsgrad) {
          // a plain loop: Eigen's AVX-512 max trips GCC 12's -Wmaybe-uninitialized under -march=native
          float* vmax = vmax_[i].data() + at;
          for (Eigen::Index k = 0; k < n; ++k) vmax[k] = std::max(vmax[k], v[k]);
          impl::exact_sqrt(vmax, root.data(), static_cast<std::size_t>(n));
        } else {
          impl::exact_sqrt(v, root.head(n));
        }
        w = w + neg_step * (m / (root.head(n) / bias2_sqrt + eps));
      });
    }
  }
  void visit_state(std::size_t i, const std::string& param, const state_visitor& visit) override {
    visit(param + ".exp_avg", m_[i]);
    visit(param + ".exp_avg_sq", v_[i]);
    if (o_.amsgrad) visit(param + ".max_exp_avg_sq", vmax_[i]);
  }

  adam_options o_;
  bool decoupled_;
  const char* name_;
  std::vector<std::vector<float>> m_, v_, vmax_;
};

//! @brief torch.optim.AdamW: Adam with decoupled weight decay (w *= 1 - lr wd before the update).
//! @code
//! recpipe::train::adamw opt({.lr = 1e-3, .weight_decay = 0.05});
//! @endcode
class adamw final : public adam {
 public:
  explicit adamw(adamw_options o = {})
      : adam(adam_options{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad}, true, "train::adamw") {}
};

// ---- row optimizers (embedding tables) ----------------------------------------------------------

namespace impl {
inline void check_row(const char* where, std::span<float> row, std::span<float> state, std::span<const float> grad,
                      std::size_t state_size) {
  if (grad.size() != row.size() || state.size() != state_size)
    detail::fail(where, ": update_row got a row of ", row.size(), ", a gradient of ", grad.size(), " and a state of ",
                 state.size(), " floats (needs ", state_size, ")");
}
}  // namespace impl

//! @brief Base of recpipe's row optimizers: the learning rate (settable) and the global step
//! count that begin_step() advances (saved in snapshots beside the tables' per-row state).
class basic_row_optimizer : public row_optimizer {
 public:
  void begin_step() override {
    ++steps_;
    refresh();
  }
  std::int64_t steps() const noexcept { return steps_; }
  void set_steps(std::int64_t steps) {
    if (steps < 0) detail::fail(name_, ": step count must be >= 0 (got ", steps, ")");
    steps_ = steps;
    refresh();
  }
  double lr() const noexcept { return lr_; }
  void set_lr(double lr) {
    impl::check_option(name_, "lr", lr);
    lr_ = lr;
    refresh();
  }
  const char* name() const noexcept { return name_; }

 protected:
  basic_row_optimizer(const char* name, double lr) : lr_(lr), name_(name) { impl::check_option(name_, "lr", lr); }
  //! Recomputes the per-step coefficients (powers of beta, decayed lr) once per step rather than
  //! once per row: update_row runs for every row of the batch.
  virtual void refresh() {}
  void require_step() const {
    if (steps_ == 0) detail::fail(name_, ": update_row before the first begin_step()");
  }
  double lr_;
  std::int64_t steps_ = 0;
  const char* name_;
};

//! @brief Plain SGD on rows (torch.optim.SGD on a sparse gradient): row -= lr grad. No state.
//! @code
//! auto opt = std::make_unique<recpipe::train::row_sgd>(0.05);
//! @endcode
class row_sgd final : public basic_row_optimizer {
 public:
  explicit row_sgd(double lr = 0.01) : basic_row_optimizer("train::row_sgd", lr) {}
  std::size_t state_size(std::size_t) const override { return 0; }
  void init_state(std::span<float>) const override {}
  void update_row(std::span<float> row, std::span<float> state, std::span<const float> grad) const override {
    impl::check_row(name_, row, state, grad, 0);
    const float neg_lr = static_cast<float>(-lr_);
    for (std::size_t k = 0; k < row.size(); ++k) row[k] = row[k] + neg_lr * grad[k];
  }
};

//! Options of train::rowwise_adagrad (FBGEMM's split_table_batched_embeddings defaults).
struct rowwise_adagrad_options {
  double lr = 0.01;
  double eps = 1e-8;
  double initial_accumulator_value = 0.0;
};

//! @brief Row-wise Adagrad, ONE accumulator per row: FBGEMM's EXACT_ROWWISE_ADAGRAD (TorchRec's
//! default for embedding tables), weight_decay_mode NONE:
//!   acc += mean_k(g_k^2);  row -= lr / (sqrt(acc) + eps) * g
//! (the mean over the row's `dim` values, as FBGEMM's g_avg_square; eps added after the sqrt).
//! State: 1 float per row.
//! @code
//! auto opt = std::make_unique<recpipe::train::rowwise_adagrad>(recpipe::train::rowwise_adagrad_options{.lr = 0.05});
//! @endcode
class rowwise_adagrad final : public basic_row_optimizer {
 public:
  explicit rowwise_adagrad(rowwise_adagrad_options o = {}) : basic_row_optimizer("train::rowwise_adagrad", o.lr), o_(o) {
    impl::check_eps(name_, o_.eps);
    impl::check_option(name_, "initial_accumulator_value", o_.initial_accumulator_value);
  }
  std::size_t state_size(std::size_t) const override { return 1; }
  void init_state(std::span<float> state) const override {
    std::fill(state.begin(), state.end(), static_cast<float>(o_.initial_accumulator_value));
  }
  void update_row(std::span<float> row, std::span<float> state, std::span<const float> grad) const override {
    impl::check_row(name_, row, state, grad, 1);
    if (row.empty()) return;
    const auto n = static_cast<Eigen::Index>(row.size());
    const impl::const_array_map g(grad.data(), n);
    const float square = g.square().sum();  // Eigen sums in packets: no serial dependency chain
    state[0] = state[0] + square / static_cast<float>(row.size());
    const float multiplier = static_cast<float>(lr_) / (std::sqrt(state[0]) + static_cast<float>(o_.eps));
    impl::array_map w(row.data(), n);
    w = w - multiplier * g;
  }
  const rowwise_adagrad_options& options() const noexcept { return o_; }

 private:
  rowwise_adagrad_options o_;
};

//! Options of train::adagrad_rows (torch.optim.Adagrad's; weight decay is not supported on sparse
//! gradients by torch either).
struct adagrad_rows_options {
  double lr = 0.01;
  double lr_decay = 0.0;
  double initial_accumulator_value = 0.0;
  double eps = 1e-10;
};

//! @brief Element-wise Adagrad on rows: torch.optim.Adagrad on a sparse gradient. With t the
//! global step (begin_step()), clr = lr / (1 + (t - 1) lr_decay); acc += g^2;
//! row -= clr g / (sqrt(acc) + eps). State: `dim` floats per row.
//! @code
//! auto opt = std::make_unique<recpipe::train::adagrad_rows>(recpipe::train::adagrad_rows_options{.lr = 0.1});
//! @endcode
class adagrad_rows final : public basic_row_optimizer {
 public:
  explicit adagrad_rows(adagrad_rows_options o = {}) : basic_row_optimizer("train::adagrad_rows", o.lr), o_(o) {
    impl::check_option(name_, "lr_decay", o_.lr_decay);
    impl::check_eps(name_, o_.eps);
    impl::check_option(name_, "initial_accumulator_value", o_.initial_accumulator_value);
  }
  std::size_t state_size(std::size_t dim) const override { return dim; }
  void init_state(std::span<float> state) const override {
    std::fill(state.begin(), state.end(), static_cast<float>(o_.initial_accumulator_value));
  }
  void update_row(std::span<float> row, std::span<float> state, std::span<const float> grad) const override {
    impl::check_row(name_, row, state, grad, row.size());
    require_step();
    const float neg_clr = neg_clr_, eps = static_cast<float>(o_.eps);
    float buffer[impl::row_chunk];
    for (std::size_t at = 0; at < row.size(); at += impl::row_chunk) {
      const auto n = static_cast<Eigen::Index>(std::min(impl::row_chunk, row.size() - at));
      const impl::const_array_map g(grad.data() + at, n);
      impl::array_map w(row.data() + at, n), acc(state.data() + at, n), root(buffer, n);
      acc = acc + g * g;
      impl::exact_sqrt(acc.data(), buffer, static_cast<std::size_t>(n));
      w = w + neg_clr * (g / (root + eps));
    }
  }
  const adagrad_rows_options& options() const noexcept { return o_; }

 private:
  void refresh() override {
    neg_clr_ = steps_ == 0 ? 0.0f : static_cast<float>(-(lr_ / (1.0 + static_cast<double>(steps_ - 1) * o_.lr_decay)));
  }
  adagrad_rows_options o_;
  float neg_clr_ = 0.0f;
};

//! Options of train::lazy_adam (torch.optim.SparseAdam's defaults).
struct lazy_adam_options {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

//! @brief Lazy Adam on rows: torch.optim.SparseAdam. Only rows in the batch are updated; their
//! moments decay only when they are in a batch; bias correction uses the global step t advanced
//! by begin_step(): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//! row -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
//! (SparseAdam's form: eps is added to sqrt(v) before the bias correction, unlike Adam's).
//! State: 2 dim floats per row (m, then v).
//! @code
//! auto opt = std::make_unique<recpipe::train::lazy_adam>(recpipe::train::lazy_adam_options{.lr = 1e-3});
//! @endcode
class lazy_adam final : public basic_row_optimizer {
 public:
  explicit lazy_adam(lazy_adam_options o = {}) : basic_row_optimizer("train::lazy_adam", o.lr), o_(o) {
    impl::check_option(name_, "beta1", o_.beta1, true);
    impl::check_option(name_, "beta2", o_.beta2, true);
    impl::check_eps(name_, o_.eps);
  }
  std::size_t state_size(std::size_t dim) const override { return 2 * dim; }
  void init_state(std::span<float> state) const override { std::fill(state.begin(), state.end(), 0.0f); }
  void update_row(std::span<float> row, std::span<float> state, std::span<const float> grad) const override {
    const std::size_t dim = row.size();
    impl::check_row(name_, row, state, grad, 2 * dim);
    require_step();
    const float neg_step = neg_step_;
    const float one_b1 = static_cast<float>(1.0 - o_.beta1), one_b2 = static_cast<float>(1.0 - o_.beta2);
    const float eps = static_cast<float>(o_.eps);
    float buffer[impl::row_chunk];
    for (std::size_t at = 0; at < dim; at += impl::row_chunk) {
      const auto n = static_cast<Eigen::Index>(std::min(impl::row_chunk, dim - at));
      const impl::const_array_map g(grad.data() + at, n);
      impl::array_map w(row.data() + at, n), m(state.data() + at, n), v(state.data() + dim + at, n), root(buffer, n);
      // old += (1 - b) (new - old), in SparseAdam's order
      m = m + (g - m) * one_b1;
      v = v + (g * g - v) * one_b2;
      impl::exact_sqrt(v.data(), buffer, static_cast<std::size_t>(n));
      w = w + neg_step * (m / (root + eps));
    }
  }
  const lazy_adam_options& options() const noexcept { return o_; }

 private:
  void refresh() override {
    if (steps_ == 0) {
      neg_step_ = 0.0f;
      return;
    }
    const double t = static_cast<double>(steps_);
    const double bias1 = 1.0 - std::pow(o_.beta1, t), bias2 = 1.0 - std::pow(o_.beta2, t);
    neg_step_ = static_cast<float>(-(lr_ * std::sqrt(bias2) / bias1));
  }
  lazy_adam_options o_;
  float neg_step_ = 0.0f;
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
