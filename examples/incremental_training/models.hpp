// SPDX-License-Identifier: Apache-2.0
// incremental_training: the model interface the protocol drives, and the logistic matrix
// factorisation baseline.
#pragma once

#include "stream.hpp"

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <algorithm>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace experiment {

//! Which columns a model reads: ids only, or ids + genre bag + online dense features.
enum class feature_set { ids, rich };
inline const char* to_string(feature_set f) { return f == feature_set::ids ? "ids" : "ids+genres+online"; }

//! A model the protocol can warm up, copy, score with and train incrementally.
class model {
 public:
  virtual ~model() = default;
  //! Probability of a like for event e of the stream (reads only what was known before e).
  virtual float predict(const stream& s, std::size_t e) = 0;
  //! One pass of training over the given events, in the given order.
  virtual void train(const stream& s, std::span<const std::uint32_t> events) = 0;
  //! An independent copy (each interval continues from the same warmed-up model).
  virtual std::unique_ptr<model> clone() const = 0;
  //! Parameters, for the "similar size" comparison in the report.
  virtual std::size_t parameters() const = 0;
};

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

//! Hyperparameters of the logistic MF baseline.
struct mf_config {
  std::size_t dim = 16;
  float lr = 0.05f;
  float l2 = 1e-4f;
  float init = 0.1f;
  std::uint64_t seed = 1;
};

//! @brief Logistic matrix factorisation: p(like) = sigmoid(b + b_u + b_i + p_u . q_i), plain SGD
//! on the log loss one event at a time, L2 on the touched rows. The calibration model of issue 8.
class logistic_mf final : public model {
 public:
  logistic_mf(const stream& s, mf_config c) : c_(c), users_(s.users * c.dim), items_(s.items * c.dim),
                                                user_bias_(s.users), item_bias_(s.items) {
    std::mt19937_64 rng(c.seed);
    std::normal_distribution<float> normal(0.0f, c.init);
    for (float& x : users_) x = normal(rng);
    for (float& x : items_) x = normal(rng);
  }
  float predict(const stream& s, std::size_t e) override { return sigmoid(logit(s.events[e])); }
  void train(const stream& s, std::span<const std::uint32_t> events) override {
    const std::size_t d = c_.dim;
    for (std::uint32_t e : events) {
      const event& ev = s.events[e];
      const float g = sigmoid(logit(ev)) - ev.label;  // dL/dlogit of the log loss
      float* p = &users_[ev.user * d];
      float* q = &items_[ev.item * d];
      for (std::size_t k = 0; k < d; ++k) {
        const float pk = p[k], qk = q[k];
        p[k] -= c_.lr * (g * qk + c_.l2 * pk);
        q[k] -= c_.lr * (g * pk + c_.l2 * qk);
      }
      user_bias_[ev.user] -= c_.lr * g;
      item_bias_[ev.item] -= c_.lr * g;
      bias_ -= c_.lr * g;
    }
  }
  std::unique_ptr<model> clone() const override { return std::make_unique<logistic_mf>(*this); }
  std::size_t parameters() const override { return users_.size() + items_.size() + user_bias_.size() + item_bias_.size() + 1; }

 private:
  float logit(const event& ev) const {
    const std::size_t d = c_.dim;
    const float* p = &users_[ev.user * d];
    const float* q = &items_[ev.item * d];
    float dot = 0.0f;
    for (std::size_t k = 0; k < d; ++k) dot += p[k] * q[k];
    return bias_ + user_bias_[ev.user] + item_bias_[ev.item] + dot;
  }

  mf_config c_;
  std::vector<float> users_, items_, user_bias_, item_bias_;
  float bias_ = 0.0f;
};

//! Hyperparameters of the example's own small networks.
struct net_config {
  std::size_t dim = 16;               // embedding width
  std::vector<std::size_t> top{64, 32};  // hidden widths of the top (deep) MLP
  std::size_t cross_layers = 2;       // DCN-v2
  std::size_t bottom = 32;            // DLRM bottom MLP hidden width
  float lr = 0.05f;                   // SGD step of embeddings
  float dense_lr = 0.01f;             // SGD step of dense weights
  float l2 = 1e-4f;                   // on touched embedding rows
  float init = 0.1f;
  std::uint64_t seed = 1;
};

//! y = W x + b with W [out, in], updated in place by SGD in backward (batch of one).
struct linear_layer {
  std::size_t in = 0, out = 0;
  std::vector<float> w, b;
  linear_layer(std::size_t in_, std::size_t out_, std::mt19937_64& rng) : in(in_), out(out_), w(in_ * out_), b(out_) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const float scale = std::sqrt(6.0f / static_cast<float>(in + out));  // Glorot uniform
    for (float& x : w) x = u(rng) * scale;
  }
  void forward(const float* x, float* y) const {
    for (std::size_t o = 0; o < out; ++o) {
      const float* row = &w[o * in];
      float acc = b[o];
      for (std::size_t k = 0; k < in; ++k) acc += row[k] * x[k];
      y[o] = acc;
    }
  }
  // dx = W^T dy with the weights before the step (dx may be null), then W -= lr dy x^T, b -= lr dy.
  void backward(const float* x, const float* dy, float* dx, float lr) {
    if (dx) {
      for (std::size_t k = 0; k < in; ++k) dx[k] = 0.0f;
      for (std::size_t o = 0; o < out; ++o) {
        const float* row = &w[o * in];
        for (std::size_t k = 0; k < in; ++k) dx[k] += row[k] * dy[o];
      }
    }
    for (std::size_t o = 0; o < out; ++o) {
      float* row = &w[o * in];
      const float g = lr * dy[o];
      for (std::size_t k = 0; k < in; ++k) row[k] -= g * x[k];
      b[o] -= g;
    }
  }
  std::size_t parameters() const { return w.size() + b.size(); }
};

//! Linear layers with ReLU between them (none after the last); keeps its activations for backward.
struct mlp_stack {
  std::vector<linear_layer> layers;
  std::vector<std::vector<float>> acts;  // acts[0] input, acts[l + 1] output of layer l (after ReLU)
  std::vector<float> grad_a, grad_b;

  mlp_stack(std::size_t in, const std::vector<std::size_t>& widths, std::mt19937_64& rng) {
    std::size_t prev = in;
    acts.emplace_back(in);
    for (std::size_t w : widths) {
      layers.emplace_back(prev, w, rng);
      acts.emplace_back(w);
      prev = w;
    }
  }
  const std::vector<float>& forward(const float* x) {
    std::copy(x, x + acts[0].size(), acts[0].begin());
    for (std::size_t l = 0; l < layers.size(); ++l) {
      layers[l].forward(acts[l].data(), acts[l + 1].data());
      if (l + 1 < layers.size())
        for (float& a : acts[l + 1]) a = std::max(a, 0.0f);
    }
    return acts.back();
  }
  // dout: gradient of the last output; writes dL/dx into dx (size of the input) and steps.
  void backward(const float* dout, float* dx, float lr) {
    grad_a.assign(dout, dout + acts.back().size());
    for (std::size_t l = layers.size(); l-- > 0;) {
      if (l + 1 < layers.size())  // ReLU of layer l's output
        for (std::size_t k = 0; k < grad_a.size(); ++k)
          if (acts[l + 1][k] <= 0.0f) grad_a[k] = 0.0f;
      grad_b.assign(layers[l].in, 0.0f);
      layers[l].backward(acts[l].data(), grad_a.data(), grad_b.data(), lr);
      grad_a.swap(grad_b);
    }
    std::copy(grad_a.begin(), grad_a.end(), dx);
  }
  std::size_t parameters() const {
    std::size_t n = 0;
    for (const auto& l : layers) n += l.parameters();
    return n;
  }
};

//! Which interaction the example network uses.
enum class net_kind { mlp, dlrm, dcn };

//! @brief The example's own MLP / DLRM / DCN-v2 over user and item embeddings (+ genre bag and
//! online dense features for the rich set), trained by SGD one event at a time with a
//! hand-written backward pass. A stand-in until the library's trainable models are wired in.
//!   mlp:  [u, i (, g, dense)] -> top MLP -> logit
//!   dlrm: bottom MLP(dense, or a constant 1 for ids only) -> b; [b, pairwise dots of {b, u, i (, g)}] -> top MLP
//!   dcn:  x0 = [u, i (, g, dense)]; x_{l+1} = x0 * (W x_l + c) + x_l (full rank); x_L -> top MLP
class local_net final : public model {
 public:
  local_net(const stream& s, net_kind kind, feature_set f, net_config c)
      : kind_(kind), rich_(f == feature_set::rich), c_(c), users_(s.users * c.dim), items_(s.items * c.dim),
        genres_(s.genres.rows() * c.dim) {
    std::mt19937_64 rng(c.seed);
    std::normal_distribution<float> normal(0.0f, c.init);
    for (auto* t : {&users_, &items_, &genres_})
      for (float& x : *t) x = normal(rng);
    const std::size_t d = c.dim;
    const std::size_t concat = 2 * d + (rich_ ? d + dense_dim : 0);
    std::vector<std::size_t> top = c.top;
    top.push_back(1);
    if (kind == net_kind::dlrm) {
      bottom_.emplace(rich_ ? dense_dim : 1, std::vector<std::size_t>{c.bottom, d}, rng);
      const std::size_t vectors = rich_ ? 4 : 3;
      top_.emplace(d + vectors * (vectors - 1) / 2, top, rng);
    } else {
      if (kind == net_kind::dcn)
        for (std::size_t l = 0; l < c.cross_layers; ++l) cross_.emplace_back(concat, concat, rng);
      top_.emplace(concat, top, rng);
    }
  }

  float predict(const stream& s, std::size_t e) override { return sigmoid(forward(s, e)); }

  void train(const stream& s, std::span<const std::uint32_t> events) override {
    for (std::uint32_t e : events) {
      const float g = sigmoid(forward(s, e)) - s.events[e].label;
      backward(s, e, g);
    }
  }
  std::unique_ptr<model> clone() const override { return std::make_unique<local_net>(*this); }
  std::size_t parameters() const override {
    std::size_t n = users_.size() + items_.size() + (rich_ ? genres_.size() : 0) + top_->parameters();
    if (bottom_) n += bottom_->parameters();
    for (const auto& l : cross_) n += l.parameters();
    return n;
  }

 private:
  float* user_row(const stream& s, std::size_t e) { return &users_[s.events[e].user * c_.dim]; }
  float* item_row(const stream& s, std::size_t e) { return &items_[s.events[e].item * c_.dim]; }

  // Gathers the embeddings (and the genre mean) into vecs_ = [u, i, g].
  void gather(const stream& s, std::size_t e) {
    const std::size_t d = c_.dim;
    vecs_.assign((rich_ ? 3 : 2) * d, 0.0f);
    std::copy_n(user_row(s, e), d, vecs_.begin());
    std::copy_n(item_row(s, e), d, vecs_.begin() + static_cast<std::ptrdiff_t>(d));
    if (rich_) {
      const auto bag = s.bag(e);
      for (id_type gid : bag)
        for (std::size_t k = 0; k < d; ++k) vecs_[2 * d + k] += genres_[static_cast<std::size_t>(gid) * d + k];
      for (std::size_t k = 0; k < d; ++k) vecs_[2 * d + k] /= static_cast<float>(bag.size());
    }
  }

  float forward(const stream& s, std::size_t e) {
    gather(s, e);
    const std::size_t d = c_.dim;
    if (kind_ == net_kind::dlrm) {
      const float one = 1.0f;
      const auto& b = bottom_->forward(rich_ ? s.dense[e].data() : &one);
      // Interaction vectors: b, u, i (, g).
      ivecs_.assign(b.begin(), b.end());
      ivecs_.insert(ivecs_.end(), vecs_.begin(), vecs_.end());
      const std::size_t v = ivecs_.size() / d;
      x_.assign(b.begin(), b.end());
      for (std::size_t a = 0; a < v; ++a)
        for (std::size_t c = a + 1; c < v; ++c) {
          float dot = 0.0f;
          for (std::size_t k = 0; k < d; ++k) dot += ivecs_[a * d + k] * ivecs_[c * d + k];
          x_.push_back(dot);
        }
      return top_->forward(x_.data())[0];
    }
    x_.assign(vecs_.begin(), vecs_.end());
    if (rich_) x_.insert(x_.end(), s.dense[e].begin(), s.dense[e].end());
    if (kind_ == net_kind::dcn) {
      // x_{l+1} = x0 * (W x_l + c) + x_l; keep every x_l and W x_l + c for backward.
      xs_.assign(1, x_);
      pre_.clear();
      for (auto& layer : cross_) {
        std::vector<float> z(x_.size());
        layer.forward(xs_.back().data(), z.data());
        std::vector<float> next(x_.size());
        for (std::size_t k = 0; k < next.size(); ++k) next[k] = xs_[0][k] * z[k] + xs_.back()[k];
        pre_.push_back(std::move(z));
        xs_.push_back(std::move(next));
      }
      return top_->forward(xs_.back().data())[0];
    }
    return top_->forward(x_.data())[0];
  }

  // One SGD step from dL/dlogit = g (forward(s, e) ran just before).
  void backward(const stream& s, std::size_t e, float g) {
    const std::size_t d = c_.dim;
    dx_.assign(top_->acts[0].size(), 0.0f);
    top_->backward(&g, dx_.data(), c_.dense_lr);
    dvecs_.assign(vecs_.size(), 0.0f);
    if (kind_ == net_kind::dlrm) {
      const std::size_t v = ivecs_.size() / d;
      std::vector<float> div(ivecs_.size(), 0.0f);
      for (std::size_t k = 0; k < d; ++k) div[k] = dx_[k];  // b feeds the top MLP directly
      std::size_t p = d;
      for (std::size_t a = 0; a < v; ++a)
        for (std::size_t c = a + 1; c < v; ++c, ++p)
          for (std::size_t k = 0; k < d; ++k) {
            div[a * d + k] += dx_[p] * ivecs_[c * d + k];
            div[c * d + k] += dx_[p] * ivecs_[a * d + k];
          }
      std::vector<float> dbottom_in(bottom_->acts[0].size());
      bottom_->backward(div.data(), dbottom_in.data(), c_.dense_lr);
      std::copy(div.begin() + static_cast<std::ptrdiff_t>(d), div.end(), dvecs_.begin());
    } else {
      if (kind_ == net_kind::dcn) {
        // Through the cross layers, last to first; dx0 collects the direct x0 terms.
        std::vector<float> dxl = dx_, dx0(dx_.size(), 0.0f), dz(dx_.size()), dprev(dx_.size());
        for (std::size_t l = cross_.size(); l-- > 0;) {
          for (std::size_t k = 0; k < dz.size(); ++k) {
            dz[k] = dxl[k] * xs_[0][k];
            dx0[k] += dxl[k] * pre_[l][k];
          }
          cross_[l].backward(xs_[l].data(), dz.data(), dprev.data(), c_.dense_lr);
          for (std::size_t k = 0; k < dxl.size(); ++k) dxl[k] += dprev[k];  // residual + W^T dz
        }
        for (std::size_t k = 0; k < dx_.size(); ++k) dx_[k] = dxl[k] + dx0[k];
      }
      std::copy_n(dx_.begin(), vecs_.size(), dvecs_.begin());
    }
    // Embedding rows: SGD with L2 on the touched rows.
    auto step = [&](float* row, const float* grad, float scale) {
      for (std::size_t k = 0; k < d; ++k) row[k] -= c_.lr * (scale * grad[k] + c_.l2 * row[k]);
    };
    step(user_row(s, e), &dvecs_[0], 1.0f);
    step(item_row(s, e), &dvecs_[d], 1.0f);
    if (rich_) {
      const auto bag = s.bag(e);
      for (id_type gid : bag) step(&genres_[static_cast<std::size_t>(gid) * d], &dvecs_[2 * d], 1.0f / static_cast<float>(bag.size()));
    }
  }

  net_kind kind_;
  bool rich_;
  net_config c_;
  std::vector<float> users_, items_, genres_;
  std::optional<mlp_stack> top_, bottom_;
  std::vector<linear_layer> cross_;
  std::vector<float> vecs_, ivecs_, x_, dx_, dvecs_;
  std::vector<std::vector<float>> xs_, pre_;
};

}  // namespace experiment
