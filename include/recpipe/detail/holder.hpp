// SPDX-License-Identifier: Apache-2.0
// recpipe internal: keep a model by reference when the caller names it, by value when it is a temporary.
#pragma once

#include <functional>
#include <type_traits>
#include <utility>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

//! Eigen's ref_selector lesson: `score(ranker)` must not copy a large model, while
//! `score(dot_product_scorer{})` must not dangle. An lvalue is held by reference (the caller keeps
//! it alive); an rvalue is moved in and owned.
template <class T>
class holder {
 public:
  using value_type = std::remove_cvref_t<T>;
  template <class U>
  explicit holder(U&& value) : value_(std::forward<U>(value)) {}
  const value_type& get() const {
    if constexpr (std::is_lvalue_reference_v<T>)
      return value_.get();
    else
      return value_;
  }

 private:
  std::conditional_t<std::is_lvalue_reference_v<T>, std::reference_wrapper<const value_type>, value_type> value_;
};

}  // namespace detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
