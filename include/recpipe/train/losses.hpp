// SPDX-License-Identifier: Apache-2.0
// recpipe train: the losses (binary cross-entropy, full and sampled softmax) with their gradients.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

// Every loss returns the MEAN over the batch and writes the gradient of that mean with respect
// to its inputs (overwriting, as for every input gradient in recpipe). Sums are kept in double:
// a batch of thousands of fp32 terms would otherwise lose the low digits the parity tests check.
// An empty batch has loss 0 and writes nothing (PyTorch would return NaN for a mean over nothing;
// a trainer fed an empty interval must not see a NaN loss).

namespace impl {
template <class T>
void check_loss_matrix(const char* where, const char* name, const matrix_view<T>& m, std::size_t rows,
                       std::size_t cols) {
  if (m.rows() != rows || m.cols() != cols)
    detail::fail(where, ": ", name, " is ", m.rows(), " x ", m.cols(), " but must be ", rows, " x ", cols);
  if (rows != 0 && cols != 0 && (m.data() == nullptr || m.stride() < cols))
    detail::fail(where, ": ", name, " has a null pointer or a stride below its column count");
}

// log(1 + exp(-|x|)) + max(x, 0) - x y: the stable form of -[y log s(x) + (1-y) log(1-s(x))].
inline double bce_term(double x, double y) { return std::max(x, 0.0) - x * y + std::log1p(std::exp(-std::fabs(x))); }
inline double sigmoid(double x) {
  // exp of a negative argument only, so neither branch overflows
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}
}  // namespace impl

//! @brief Binary cross-entropy on logits, as torch.nn.functional.binary_cross_entropy_with_logits
//! (reduction "mean", optional per-sample `weight`).
//!
//! loss = (1/n) sum_i w_i [max(x_i, 0) - x_i y_i + log1p(exp(-|x_i|))] (w_i = 1 without
//! weights; the mean divides by n, not by the sum of weights, as PyTorch does), and
//! dlogits_i = w_i (sigmoid(x_i) - y_i) / n. `dlogits` may be empty (loss only, for evaluation);
//! otherwise it has n values. Labels may be soft (any value in [0, 1]).
//! A label outside [0, 1] or NaN throws recpipe::error naming its index, before anything is
//! written: the trainer catches this to skip (and count) a bad event. Non-finite logits give a
//! non-finite loss/gradient (the trainer's all_finite() check then skips the step).
//! @code
//! std::vector<float> x{0.3f, -2.0f}, y{1.0f, 0.0f}, dx(2);
//! float loss = recpipe::train::bce_with_logits(x, y, dx);
//! @endcode
inline float bce_with_logits(std::span<const float> logits, std::span<const float> labels, std::span<float> dlogits,
                             std::span<const float> sample_weights = {}) {
  constexpr const char* where = "train::bce_with_logits";
  const std::size_t n = logits.size();
  if (labels.size() != n) detail::fail(where, ": ", n, " logits but ", labels.size(), " labels");
  if (!dlogits.empty() && dlogits.size() != n)
    detail::fail(where, ": dlogits has ", dlogits.size(), " values but there are ", n, " logits (or pass it empty)");
  if (!sample_weights.empty() && sample_weights.size() != n)
    detail::fail(where, ": sample_weights has ", sample_weights.size(), " values but there are ", n, " logits");
  for (std::size_t i = 0; i < n; ++i)
    if (!(labels[i] >= 0.0f && labels[i] <= 1.0f))
      detail::fail(where, ": label ", i, " is ", labels[i], " (labels must be in [0, 1])");
  for (std::size_t i = 0; i < sample_weights.size(); ++i)
    if (!std::isfinite(sample_weights[i]))
      detail::fail(where, ": sample weight ", i, " is ", sample_weights[i], " (weights must be finite)");
  if (n == 0) return 0.0f;
  const double inv_n = 1.0 / static_cast<double>(n);
  double total = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = logits[i], y = labels[i], w = sample_weights.empty() ? 1.0 : sample_weights[i];
    total += w * impl::bce_term(x, y);
    if (!dlogits.empty()) dlogits[i] = static_cast<float>(w * (impl::sigmoid(x) - y) * inv_n);
  }
  return static_cast<float>(total * inv_n);
}

namespace impl {
inline float softmax_cross_entropy(const char* where, matrix_view<const float> logits, std::span<const id_type> targets,
                                   matrix_view<float> dlogits, bool has_ignore, id_type ignore_index) {
  const std::size_t rows = logits.rows(), classes = logits.cols();
  if (targets.size() != rows) detail::fail(where, ": logits has ", rows, " rows but there are ", targets.size(), " targets");
  check_loss_matrix(where, "logits", logits, rows, classes);
  const bool want_grad = !(dlogits.rows() == 0 && dlogits.data() == nullptr);
  if (want_grad) check_loss_matrix(where, "dlogits", dlogits, rows, classes);
  std::size_t counted = 0;
  for (std::size_t r = 0; r < rows; ++r) {
    const id_type t = targets[r];
    if (has_ignore && t == ignore_index) continue;
    if (t < 0 || static_cast<std::size_t>(t) >= classes)
      detail::fail(where, ": target of row ", r, " is ", t, " but the catalog has ", classes, " classes");
    ++counted;
  }
  if (counted == 0) {  // nothing to learn from: zero loss and zero gradient
    if (want_grad)
      for (std::size_t r = 0; r < rows; ++r) std::fill(dlogits.row(r).begin(), dlogits.row(r).end(), 0.0f);
    return 0.0f;
  }
  const double inv = 1.0 / static_cast<double>(counted);
  double total = 0.0;
  for (std::size_t r = 0; r < rows; ++r) {
    const id_type t = targets[r];
    if (has_ignore && t == ignore_index) {
      if (want_grad) std::fill(dlogits.row(r).begin(), dlogits.row(r).end(), 0.0f);
      continue;
    }
    // One fp32 exp per logit (a catalog can be 1e5 wide; double exp would double the cost),
    // summed in double; the exponentials are kept in dlogits and scaled once the sum is known.
    const std::span<const float> x = logits.row(r);
    const std::size_t target = static_cast<std::size_t>(t);
    float peak = -std::numeric_limits<float>::infinity();
    for (float v : x) peak = std::max(peak, v);
    double sum = 0.0;
    if (want_grad) {
      const std::span<float> d = dlogits.row(r);
      for (std::size_t c = 0; c < classes; ++c) sum += d[c] = std::exp(x[c] - peak);
      const double target_p = d[target] / sum;
      const float scale = static_cast<float>(inv / sum);
      for (std::size_t c = 0; c < classes; ++c) d[c] *= scale;
      d[target] = static_cast<float>((target_p - 1.0) * inv);  // in double: p_t may be ~1
    } else {
      for (float v : x) sum += std::exp(v - peak);
    }
    total += static_cast<double>(peak) + std::log(sum) - static_cast<double>(x[target]);
  }
  return static_cast<float>(total * inv);
}
}  // namespace impl

//! @brief Softmax cross-entropy over the full catalog (next-item prediction), as
//! torch.nn.functional.cross_entropy(logits, targets) with reduction "mean".
//!
//! loss = (1/B) sum_b [logsumexp(logits_b) - logits_b[t_b]];
//! dlogits_b = (softmax(logits_b) - onehot(t_b)) / B. logits and dlogits are [B, C]; dlogits may be
//! a default-constructed view (loss only). A target outside [0, C) throws recpipe::error naming
//! its row (use the ignore_index overload for padded targets).
//! @code
//! float loss = recpipe::train::softmax_cross_entropy(scores.view(), next_items, dscores.view());
//! @endcode
inline float softmax_cross_entropy(matrix_view<const float> logits, std::span<const id_type> targets,
                                   matrix_view<float> dlogits) {
  return impl::softmax_cross_entropy("train::softmax_cross_entropy", logits, targets, dlogits, false, 0);
}

//! @brief As above, but rows whose target equals `ignore_index` (e.g. -1 for padding) contribute
//! nothing: their gradient rows are 0 and the mean is over the other rows only (as PyTorch's
//! `ignore_index`). If every row is ignored the loss is 0 (PyTorch returns NaN).
//! @code
//! float loss = recpipe::train::softmax_cross_entropy(scores.view(), targets, dscores.view(), -1);
//! @endcode
inline float softmax_cross_entropy(matrix_view<const float> logits, std::span<const id_type> targets,
                                   matrix_view<float> dlogits, id_type ignore_index) {
  return impl::softmax_cross_entropy("train::softmax_cross_entropy", logits, targets, dlogits, true, ignore_index);
}

//! Extra sampled negatives for sampled_softmax: N item embeddings with their ids and log sampling
//! probabilities (log_q may be empty: no correction), and where their gradient goes ([N, d],
//! overwritten; may be a default-constructed view when the negatives are not trained).
struct sampled_negatives {
  matrix_view<const float> items;
  std::span<const id_type> ids;
  std::span<const float> log_q;
  matrix_view<float> grad;
};

namespace impl {
inline float sampled_softmax(matrix_view<const float> queries, matrix_view<const float> items,
                             std::span<const id_type> item_ids, std::span<const float> log_q,
                             matrix_view<float> dqueries, matrix_view<float> ditems, const sampled_negatives* extra,
                             float temperature) {
  constexpr const char* where = "train::sampled_softmax";
  const std::size_t batch = queries.rows(), dim = queries.cols();
  check_loss_matrix(where, "queries", queries, batch, dim);
  check_loss_matrix(where, "items", items, batch, dim);
  check_loss_matrix(where, "dqueries", dqueries, batch, dim);
  check_loss_matrix(where, "ditems", ditems, batch, dim);
  if (item_ids.size() != batch) detail::fail(where, ": ", batch, " queries but ", item_ids.size(), " item ids");
  if (!log_q.empty() && log_q.size() != batch)
    detail::fail(where, ": ", batch, " queries but log_q has ", log_q.size(), " values (or pass it empty)");
  if (!(temperature > 0.0f) || !std::isfinite(temperature))
    detail::fail(where, ": temperature must be a finite number > 0 (got ", temperature, ")");
  std::size_t negatives = 0;
  bool negatives_grad = false;
  if (extra != nullptr) {
    negatives = extra->items.rows();
    check_loss_matrix(where, "negatives.items", extra->items, negatives, dim);
    if (extra->ids.size() != negatives)
      detail::fail(where, ": ", negatives, " extra negatives but ", extra->ids.size(), " negative ids");
    if (!extra->log_q.empty() && extra->log_q.size() != negatives)
      detail::fail(where, ": ", negatives, " extra negatives but negatives.log_q has ", extra->log_q.size(), " values");
    negatives_grad = !(extra->grad.rows() == 0 && extra->grad.data() == nullptr);
    if (negatives_grad) check_loss_matrix(where, "negatives.grad", extra->grad, negatives, dim);
  }
  if (batch == 0) {
    if (negatives_grad)
      for (std::size_t j = 0; j < negatives; ++j) std::fill(extra->grad.row(j).begin(), extra->grad.row(j).end(), 0.0f);
    return 0.0f;
  }
  const std::size_t width = batch + negatives;
  const double inv_t = 1.0 / static_cast<double>(temperature), inv_b = 1.0 / static_cast<double>(batch);
  const auto candidate = [&](std::size_t j) { return j < batch ? items.row(j) : extra->items.row(j - batch); };
  const auto candidate_id = [&](std::size_t j) { return j < batch ? item_ids[j] : extra->ids[j - batch]; };
  const auto candidate_log_q = [&](std::size_t j) -> double {
    if (j < batch) return log_q.empty() ? 0.0 : log_q[j];
    return extra->log_q.empty() ? 0.0 : extra->log_q[j - batch];
  };
  // ds[b, j] = d loss / d logit(b, j), already divided by B and by the temperature.
  std::vector<double> ds(batch * width, 0.0), logit(width);
  std::vector<char> masked(width);
  double total = 0.0;
  for (std::size_t b = 0; b < batch; ++b) {
    const std::span<const float> q = queries.row(b);
    double peak = -std::numeric_limits<double>::infinity();
    for (std::size_t j = 0; j < width; ++j) {
      // an accidental hit (another candidate with the positive's id) is not a negative
      masked[j] = j != b && candidate_id(j) == item_ids[b];
      if (masked[j]) continue;
      const std::span<const float> p = candidate(j);
      double dot = 0.0;
      for (std::size_t c = 0; c < dim; ++c) dot += static_cast<double>(q[c]) * p[c];
      logit[j] = dot * inv_t - candidate_log_q(j);
      peak = std::max(peak, logit[j]);
    }
    double sum = 0.0;
    for (std::size_t j = 0; j < width; ++j)
      if (!masked[j]) sum += std::exp(logit[j] - peak);
    const double log_z = peak + std::log(sum);
    total += log_z - logit[b];
    double* row = ds.data() + b * width;
    for (std::size_t j = 0; j < width; ++j)
      if (!masked[j]) row[j] = std::exp(logit[j] - log_z) * inv_b * inv_t;
    row[b] -= inv_b * inv_t;
  }
  // dq_b = sum_j ds[b, j] p_j ; dp_j = sum_b ds[b, j] q_b
  for (std::size_t b = 0; b < batch; ++b) {
    const double* row = ds.data() + b * width;
    std::vector<double> acc(dim, 0.0);
    for (std::size_t j = 0; j < width; ++j) {
      if (row[j] == 0.0) continue;
      const std::span<const float> p = candidate(j);
      for (std::size_t c = 0; c < dim; ++c) acc[c] += row[j] * p[c];
    }
    for (std::size_t c = 0; c < dim; ++c) dqueries(b, c) = static_cast<float>(acc[c]);
  }
  std::vector<double> acc(dim);
  for (std::size_t j = 0; j < width; ++j) {
    if (j >= batch && !negatives_grad) break;
    std::fill(acc.begin(), acc.end(), 0.0);
    for (std::size_t b = 0; b < batch; ++b) {
      const double g = ds[b * width + j];
      if (g == 0.0) continue;
      const std::span<const float> q = queries.row(b);
      for (std::size_t c = 0; c < dim; ++c) acc[c] += g * q[c];
    }
    const std::span<float> out = j < batch ? ditems.row(j) : extra->grad.row(j - batch);
    for (std::size_t c = 0; c < dim; ++c) out[c] = static_cast<float>(acc[c]);
  }
  return static_cast<float>(total * inv_b);
}
}  // namespace impl

//! @brief Sampled softmax with in-batch negatives and log-Q correction (two-tower retrieval,
//! Yi et al. 2019 "Sampling-bias-corrected neural modeling"; the same scores as TensorFlow
//! Recommenders' Retrieval task with `candidate_sampling_probability` and `remove_accidental_hits`).
//!
//! queries and items are [B, d]; item row b is query b's positive and every other row is one of
//! its negatives. With s(b, j) = <q_b, p_j> / temperature - log_q[j] (the correction applies to
//! the positive too; log_q may be empty for none), and M_b the candidates j != b whose id equals
//! item_ids[b] (accidental hits, excluded from row b's softmax):
//!   loss = (1/B) sum_b [ log sum_{j not in M_b} exp s(b, j) - s(b, b) ],
//!   with P(b, j) = the softmax over row b, G(b, j) = (P(b, j) - [j == b]) / (B temperature):
//!   dqueries_b = sum_j G(b, j) p_j,  ditems_j = sum_b G(b, j) q_b   (both overwritten).
//! Cost O(B^2 d); an empty batch has loss 0. A non-finite temperature or one <= 0 is an error.
//! @code
//! float loss = recpipe::train::sampled_softmax(users.view(), items.view(), ids, log_q, du.view(), di.view(), 0.05f);
//! @endcode
inline float sampled_softmax(matrix_view<const float> queries, matrix_view<const float> items,
                             std::span<const id_type> item_ids, std::span<const float> log_q,
                             matrix_view<float> dqueries, matrix_view<float> ditems, float temperature = 1.0f) {
  return impl::sampled_softmax(queries, items, item_ids, log_q, dqueries, ditems, nullptr, temperature);
}

//! @brief As above, plus N extra sampled negatives shared by every query (e.g. drawn from a
//! popularity distribution): the softmax of row b runs over the B in-batch candidates and the N
//! extra ones (an extra negative with the positive's id is an accidental hit, masked too), and
//! negatives.grad_j = sum_b G(b, B + j) q_b.
//! @code
//! recpipe::train::sampled_negatives extra{neg.view(), neg_ids, neg_log_q, dneg.view()};
//! float loss = recpipe::train::sampled_softmax(q.view(), p.view(), ids, log_q, dq.view(), dp.view(), extra);
//! @endcode
inline float sampled_softmax(matrix_view<const float> queries, matrix_view<const float> items,
                             std::span<const id_type> item_ids, std::span<const float> log_q,
                             matrix_view<float> dqueries, matrix_view<float> ditems, const sampled_negatives& negatives,
                             float temperature = 1.0f) {
  return impl::sampled_softmax(queries, items, item_ids, log_q, dqueries, ditems, &negatives, temperature);
}

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
