// SPDX-License-Identifier: Apache-2.0
// recpipe internal: type lists and small metaprogramming helpers.
#pragma once

#include <cstddef>
#include <type_traits>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! A compile-time list of types; stages declare `using reads = columns<a, b>`.
template <class... Ts>
struct type_list {
  static constexpr std::size_t size = sizeof...(Ts);
};

namespace detail {

//! `static_assert(always_false<T>, ...)` fails only when instantiated.
template <class...>
inline constexpr bool always_false = false;

template <class T, class List>
struct list_contains;
template <class T, class... Ts>
struct list_contains<T, type_list<Ts...>> : std::bool_constant<(std::is_same_v<T, Ts> || ...)> {};
template <class T, class List>
inline constexpr bool list_contains_v = list_contains<T, List>::value;

template <class A, class B>
struct list_concat;
template <class... As, class... Bs>
struct list_concat<type_list<As...>, type_list<Bs...>> {
  using type = type_list<As..., Bs...>;
};
template <class A, class B>
using list_concat_t = typename list_concat<A, B>::type;

//! List `A` followed by the members of `B` that are not already in `A`.
template <class A, class B>
struct list_union;
template <class A>
struct list_union<A, type_list<>> {
  using type = A;
};
template <class A, class B0, class... Bs>
struct list_union<A, type_list<B0, Bs...>> {
  using with_b0 = std::conditional_t<list_contains_v<B0, A>, A, list_concat_t<A, type_list<B0>>>;
  using type = typename list_union<with_b0, type_list<Bs...>>::type;
};
template <class A, class B>
using list_union_t = typename list_union<A, B>::type;

//! The first member of `Needed` that `Have` lacks, or void when none is missing.
template <class Needed, class Have>
struct first_missing;
template <class Have>
struct first_missing<type_list<>, Have> {
  using type = void;
};
template <class N0, class... Ns, class Have>
struct first_missing<type_list<N0, Ns...>, Have> {
  using type = std::conditional_t<list_contains_v<N0, Have>, typename first_missing<type_list<Ns...>, Have>::type, N0>;
};
template <class Needed, class Have>
using first_missing_t = typename first_missing<Needed, Have>::type;

//! The members of `Needed` that `Have` lacks, in order.
template <class Needed, class Have>
struct list_missing;
template <class Have>
struct list_missing<type_list<>, Have> {
  using type = type_list<>;
};
template <class N0, class... Ns, class Have>
struct list_missing<type_list<N0, Ns...>, Have> {
  using rest = typename list_missing<type_list<Ns...>, Have>::type;
  using type = std::conditional_t<list_contains_v<N0, Have>, rest, list_concat_t<type_list<N0>, rest>>;
};
template <class Needed, class Have>
using list_missing_t = typename list_missing<Needed, Have>::type;

template <class T, class... Ts>
inline constexpr std::size_t index_of_v = [] {
  constexpr bool matches[] = {std::is_same_v<T, Ts>...};
  for (std::size_t i = 0; i < sizeof...(Ts); ++i)
    if (matches[i]) return i;
  return sizeof...(Ts);
}();

}  // namespace detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
