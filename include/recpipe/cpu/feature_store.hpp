// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: an in-memory feature store keyed by user or item id.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <unordered_map>
#include <vector>

#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! What `lookup` does with an id the store does not hold.
enum class on_missing {
  use_default,  //!< zeros for vectors and values, an empty list for lists (documented, counted)
  fail,         //!< throw recpipe::error naming the id and the store's column
};

//! @brief Features keyed by id, read by the `lookup` stage: `Key` is the column holding the ids
//! (`col::user_id` for per-request features, `col::candidates` for per-item features) and `Value`
//! is the column the lookup writes.
//!
//! Value shapes: a vector per id (per_request_vector / per_candidate_vector, fixed `dim`), a list
//! per id (per_request_list, e.g. a user's history), or one value per id. Ids below 2^24 are
//! found through a direct table (one load), others through a hash map.
//!
//! Thread safety: any number of concurrent lookups; inserts must not run concurrently with
//! lookups (build, then serve; online updates swap whole stores).
//!
//! @code
//! recpipe::feature_store<recpipe::col::user_id, recpipe::col::user_embedding> users(64);
//! users.insert(7, std::span<const float>(vector_of_64_floats));
//! auto pipeline = recpipe::lookup(users) >> ...;
//! @endcode
template <column Key, column Value>
class feature_store {
  static constexpr bool keyed_by_candidates = std::is_same_v<Key, col::candidates>;
  static constexpr bool per_candidate_value = is_per_candidate_v<Value>;
  // READ THIS IF YOUR COMPILE BREAKS HERE: per-request keys (user_id) give per-request values;
  // the candidates column gives per-candidate values.
  static_assert(std::is_same_v<typename Key::value_type, id_type> &&
                    (Key::shape == column_shape::per_request || keyed_by_candidates),
                "recpipe: STORE_KEY_NOT_AN_ID_COLUMN - the key column must be a per-request id column or col::candidates");
  static_assert(keyed_by_candidates == per_candidate_value,
                "recpipe: LOOKUP_SHAPE_MISMATCH - a store keyed by col::candidates must hold a per-candidate column, and "
                "a store keyed by a per-request id must hold a per-request column");

 public:
  using key_column = Key;
  using value_column = Value;
  using value_type = typename Value::value_type;
  static constexpr bool holds_vectors =
      Value::shape == column_shape::per_request_vector || Value::shape == column_shape::per_candidate_vector;
  static constexpr bool holds_lists = Value::shape == column_shape::per_request_list;

  //! @param dim     width of each vector (ignored for lists and single values; must be >= 1 for vectors)
  //! @param missing what lookups do with unknown ids
  explicit feature_store(std::size_t dim = 1, on_missing missing = on_missing::use_default)
      : dim_(holds_vectors ? dim : 1), missing_(missing) {
    if (holds_vectors && dim == 0) detail::fail("feature_store<", Value::name, ">: dim must be at least 1");
  }

  std::size_t dim() const { return dim_; }
  std::size_t size() const { return count_; }
  on_missing missing_policy() const { return missing_; }

  //! Inserts or replaces the features of `id` (a vector of dim() values, or a list).
  //! @throws recpipe::error for a negative id or a vector of the wrong width.
  void insert(id_type id, std::span<const value_type> values) {
    static_assert(holds_vectors || holds_lists, "recpipe: STORE_HOLDS_SINGLE_VALUES - use insert(id, value)");
    if constexpr (holds_vectors) {
      if (values.size() != dim_)
        detail::fail("feature_store<", Value::name, ">: id ", id, " has ", values.size(), " values but the store's dim is ", dim_);
    }
    const std::size_t slot = slot_for_insert(id);
    if constexpr (holds_vectors) {
      std::copy(values.begin(), values.end(), data_.begin() + static_cast<std::ptrdiff_t>(slot * dim_));
    } else {
      // Lists: append and repoint; a replaced list's old values stay until the store is rebuilt.
      list_begin_[slot] = data_.size();
      data_.insert(data_.end(), values.begin(), values.end());
      list_end_[slot] = data_.size();
    }
  }
  void insert(id_type id, std::initializer_list<value_type> values) { insert(id, std::span<const value_type>(values.begin(), values.size())); }
  //! Inserts or replaces the single value of `id`.
  void insert(id_type id, const value_type& value) {
    static_assert(!holds_vectors && !holds_lists, "recpipe: STORE_HOLDS_VECTORS - use insert(id, span)");
    data_[slot_for_insert(id)] = value;
  }

  bool contains(id_type id) const { return slot_of(id) != npos; }

  //! The vector or list of `id`; an empty span when the id is unknown.
  std::span<const value_type> find(id_type id) const {
    const std::size_t slot = slot_of(id);
    if (slot == npos) return {};
    if constexpr (holds_vectors) return {data_.data() + slot * dim_, dim_};
    else if constexpr (holds_lists) return {data_.data() + list_begin_[slot], list_end_[slot] - list_begin_[slot]};
    else return {data_.data() + slot, 1};
  }

  //! Like find(), applying the missing-id policy: an empty span (use_default) or an error (fail).
  std::span<const value_type> find_or_apply_policy(id_type id) const {
    auto found = find(id);
    if (found.empty() && missing_ == on_missing::fail && !contains(id))
      detail::fail("lookup: id ", id, " is not in the feature store for column '", Value::name, "'");
    return found;
  }

 private:
  static constexpr std::size_t npos = std::numeric_limits<std::size_t>::max();
  static constexpr id_type direct_limit = id_type{1} << 24;  // 64 MiB of slots at most

  std::size_t slot_of(id_type id) const {
    if (id < 0) return npos;
    if (id < direct_limit) {
      const auto at = static_cast<std::size_t>(id);
      return at < direct_.size() && direct_[at] != unused ? direct_[at] : npos;
    }
    const auto it = hashed_.find(id);
    return it == hashed_.end() ? npos : it->second;
  }

  std::size_t slot_for_insert(id_type id) {
    if (id < 0) detail::fail("feature_store<", Value::name, ">: id ", id, " is negative; ids must be >= 0");
    if (const std::size_t existing = slot_of(id); existing != npos) return existing;
    const std::size_t slot = count_++;
    if (id < direct_limit) {
      const auto at = static_cast<std::size_t>(id);
      if (at >= direct_.size()) direct_.resize(std::max(at + 1, direct_.size() * 2), unused);
      direct_[at] = static_cast<std::uint32_t>(slot);
    } else {
      hashed_.emplace(id, slot);
    }
    if constexpr (holds_vectors) data_.resize(count_ * dim_);
    else if constexpr (holds_lists) {
      list_begin_.push_back(0);
      list_end_.push_back(0);
    } else data_.resize(count_);
    return slot;
  }

  static constexpr std::uint32_t unused = std::numeric_limits<std::uint32_t>::max();
  std::size_t dim_;
  on_missing missing_;
  std::size_t count_ = 0;
  std::vector<std::uint32_t> direct_;
  std::unordered_map<id_type, std::size_t> hashed_;
  std::vector<value_type> data_;
  std::vector<std::size_t> list_begin_, list_end_;
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
