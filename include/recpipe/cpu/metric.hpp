// SPDX-License-Identifier: Apache-2.0
// recpipe: the similarity metric of a retrieval index and its "higher is better" score convention.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string_view>
#include <thread>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! @brief How a retrieval index compares a query q with an item vector x.
//!
//! Every index reports a score where **higher is better**, so results of different metrics and
//! different indexes sort the same way:
//! - `inner_product`: score = dot(q, x).
//! - `l2`: score = -||q - x||^2 (the negative squared Euclidean distance, always <= 0).
//!
//! @code
//! recpipe::cpu::exact_index index(64, recpipe::metric::l2);
//! @endcode
enum class metric : std::uint32_t {
  inner_product = 0,
  l2 = 1,
};

//! The metric's name as used in messages and docs: "inner_product" or "l2" ("unknown" otherwise).
//! @code
//! assert(recpipe::metric_name(recpipe::metric::l2) == "l2");
//! @endcode
constexpr std::string_view metric_name(metric m) noexcept {
  switch (m) {
    case metric::inner_product:
      return "inner_product";
    case metric::l2:
      return "l2";
  }
  return "unknown";
}

//! True for the enumerators above; false for a value cast from an arbitrary integer (e.g. a file).
constexpr bool is_valid_metric(metric m) noexcept { return m == metric::inner_product || m == metric::l2; }

namespace detail {
// Argument checks shared by cpu::exact_index and cpu::hnsw_index, so both throw the same messages.
// `component` is e.g. "hnsw_index: add".

inline void check_index_id(const char* component, id_type id) {
  if (id < 0) fail(component, ": id ", id, " is negative (ids must be >= 0)");
}

// A stored vector: exactly `dim` values, all finite (NaN or inf would poison every distance).
inline void check_index_vector(const char* component, id_type id, std::span<const float> vector, std::size_t dim) {
  if (vector.size() != dim)
    fail(component, ": vector for id ", id, " has dimension ", vector.size(), " but the index has dimension ", dim);
  for (std::size_t j = 0; j < dim; ++j)
    if (!std::isfinite(vector[j]))
      fail(component, ": vector for id ", id, " has a non-finite value (", vector[j], ") at position ", j);
}

// A query: exactly `dim` values, all finite (a NaN query has no meaningful nearest neighbours).
inline void check_index_query(const char* component, std::span<const float> query, std::size_t dim) {
  if (query.size() != dim)
    fail(component, ": query has dimension ", query.size(), " but the index has dimension ", dim);
  for (std::size_t j = 0; j < dim; ++j)
    if (!std::isfinite(query[j]))
      fail(component, ": query has a non-finite value (", query[j], ") at position ", j);
}

// The lock of an index: many searches share it, add/remove take it alone. glibc's rwlock prefers
// readers, so a steady stream of searches would starve an add forever; here a waiting writer makes
// new readers yield until it holds the lock (readers then sleep on the lock, they do not spin).
class index_mutex {
 public:
  std::shared_lock<std::shared_mutex> shared() const {
    while (waiting_writers_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    return std::shared_lock<std::shared_mutex>(mutex_);
  }
  std::unique_lock<std::shared_mutex> exclusive() const {
    waiting_writers_.fetch_add(1, std::memory_order_acq_rel);
    std::unique_lock<std::shared_mutex> lock(mutex_);
    waiting_writers_.fetch_sub(1, std::memory_order_release);
    return lock;
  }

 private:
  mutable std::shared_mutex mutex_;
  mutable std::atomic<int> waiting_writers_{0};
};

// Output spans of a single search must hold `count` results.
inline void check_index_outputs(const char* component, std::size_t ids, std::size_t scores, std::size_t count) {
  if (ids < count || scores < count)
    fail(component, ": output spans hold ", ids, " ids and ", scores, " scores but ", count, " results are needed");
}

// search_batch: queries is rows x dim; outputs have as many rows and at least `count` columns.
template <class Id, class Score>
void check_index_batch(const char* component, matrix_view<const float> queries, std::size_t dim,
                       matrix_view<Id> out_ids, matrix_view<Score> out_scores, std::size_t count) {
  if (queries.rows() > 0 && queries.cols() != dim)
    fail(component, ": queries have dimension ", queries.cols(), " but the index has dimension ", dim);
  if (queries.rows() > 0 && queries.stride() < queries.cols())
    fail(component, ": queries have stride ", queries.stride(), " smaller than their ", queries.cols(), " columns");
  if (out_ids.rows() < queries.rows() || out_scores.rows() < queries.rows())
    fail(component, ": outputs have ", out_ids.rows(), " and ", out_scores.rows(), " rows but there are ",
         queries.rows(), " queries");
  if (queries.rows() > 0 && (out_ids.cols() < count || out_scores.cols() < count))
    fail(component, ": outputs have ", out_ids.cols(), " and ", out_scores.cols(), " columns but ", count,
         " results per query are needed");
  if (out_ids.stride() < out_ids.cols() || out_scores.stride() < out_scores.cols())
    fail(component, ": an output view has a stride smaller than its column count");
}
}  // namespace detail

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
