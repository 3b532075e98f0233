// SPDX-License-Identifier: Apache-2.0
// recpipe internal: compile-time concatenation of stage names ("lookup(user_embedding)").
#pragma once

#include <array>
#include <cstddef>
#include <string_view>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

// Pointers, not references: nvcc's front end re-emits a reference template argument `X` as `&X`
// in the host code it hands to the host compiler, which then fails to convert it.
template <const std::string_view*... Parts>
struct joined_name {
  static constexpr auto storage = [] {
    std::array<char, (Parts->size() + ... + 0) + 1> chars{};
    std::size_t at = 0;
    for (std::string_view part : {*Parts...})
      for (char c : part) chars[at++] = c;
    chars[at] = '\0';
    return chars;
  }();
  static constexpr std::string_view value{storage.data(), storage.size() - 1};
};

inline constexpr std::string_view open_paren = "(";
inline constexpr std::string_view close_paren = ")";

//! "prefix(column)" as a std::string_view with static storage.
//! Pass addresses: `stage_name_v<&detail::top_k_prefix, &Score::name>`.
template <const std::string_view* Prefix, const std::string_view* Column>
inline constexpr std::string_view stage_name_v = joined_name<Prefix, &open_paren, Column, &close_paren>::value;

}  // namespace detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
