// SPDX-License-Identifier: Apache-2.0
// recpipe internal: how a stage holds what it uses (a model, a store, an index): by reference, by
// value, shared, or through a versioned slot.
#pragma once

#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/versions.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

template <class T>
inline constexpr bool is_shared_ptr_v = false;
template <class T>
inline constexpr bool is_shared_ptr_v<std::shared_ptr<T>> = true;

//! The holding mode a stage factory's forwarded argument type asks for: a slot or a shared_ptr is
//! held by value (a handle); a named object by reference; a temporary is moved in.
template <class Arg>
using component_ref_t =
    std::conditional_t<is_slot_v<std::remove_cvref_t<Arg>> || is_shared_ptr_v<std::remove_cvref_t<Arg>>,
                       std::remove_cvref_t<Arg>, Arg>;

template <class Ref>
struct component_value {
  using type = std::remove_cvref_t<Ref>;
};
template <class T>
struct component_value<std::shared_ptr<T>> {
  using type = std::remove_const_t<T>;
};
template <class T>
struct component_value<slot<T>> {
  using type = T;
};

//! @brief What a stage uses, held the way the caller asked (the Eigen ref_selector lesson, plus
//! shared and versioned ownership):
//! - `T&` (a named object): a reference; the object must outlive the pipeline;
//! - `T` (a temporary): moved into the stage and owned by it;
//! - `std::shared_ptr<T>`: shared ownership; the pipeline keeps the object alive;
//! - `slot<T>`: the object of the generation the current run pinned (core/versions.hpp).
//! get() returns a const reference valid for the current run.
template <class Ref>
class component {
 public:
  using value_type = typename component_value<Ref>::type;
  static constexpr bool versioned = is_slot_v<Ref>;

  template <class U>
  explicit component(U&& value) : value_(std::forward<U>(value)) {
    if constexpr (is_shared_ptr_v<Ref>)
      if (!value_) detail::fail("a stage was given a null std::shared_ptr");
  }
  const value_type& get() const {
    if constexpr (std::is_lvalue_reference_v<Ref>)
      return value_.get();
    else if constexpr (is_slot_v<Ref>)
      return value_.get();
    else if constexpr (is_shared_ptr_v<Ref>)
      return *value_;
    else
      return value_;
  }
  //! Pins the slot's generation for the current run; a held object that itself holds slots (a
  //! scorer over a slot) pins those.
  void pin(run_pins& pins) const {
    if constexpr (is_slot_v<Ref>)
      value_.pin(pins);
    else if constexpr (requires(const value_type& v) { v.pin_versions(pins); })
      get().pin_versions(pins);
  }
  //! The slot (versioned components only).
  const Ref& handle() const
    requires(is_slot_v<Ref>)
  {
    return value_;
  }

 private:
  using storage = std::conditional_t<
      std::is_lvalue_reference_v<Ref>, std::reference_wrapper<const value_type>,
      std::conditional_t<is_slot_v<Ref>, Ref, std::conditional_t<is_shared_ptr_v<Ref>, std::shared_ptr<const value_type>, value_type>>>;
  storage value_;
};

}  // namespace detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
