// SPDX-License-Identifier: Apache-2.0
// recpipe: describe() - a stage's or pipeline's name and the columns it reads and adds, as text.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <tuple>

#include <recpipe/detail/meta.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

//! "a, b, c" for columns<a, b, c>; "-" for none.
template <class... Cs>
void append_column_names(std::string& out, type_list<Cs...>) {
  if constexpr (sizeof...(Cs) == 0) {
    out += '-';
  } else {
    bool first = true;
    (
        [&] {
          if (!first) out += ", ";
          out += Cs::name;
          first = false;
        }(),
        ...);
  }
}

//! Appends `text` with every line indented by `indent` spaces, each line ending in '\n'.
inline void append_indented(std::string& out, std::string_view text, std::size_t indent) {
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    out.append(indent, ' ');
    out += text.substr(0, end);
    out += '\n';
    if (end == std::string_view::npos) break;
    text.remove_prefix(end + 1);
  }
}

//! One stage's line: indent, prefix, "name  reads: ...  adds: ...", then its parameters (a stage
//! may provide `std::string describe_parameters() const`, e.g. transform's ops), indented under
//! its name by 2 more.
template <class Stage>
void describe_stage_into(std::string& out, const Stage& s, std::size_t indent, std::string_view prefix = {}) {
  out.append(indent, ' ');
  out += prefix;
  out += Stage::name;
  out += "  reads: ";
  append_column_names(out, typename Stage::reads{});
  out += "  adds: ";
  append_column_names(out, typename Stage::writes{});
  out += '\n';
  if constexpr (requires { s.describe_parameters(); })
    append_indented(out, s.describe_parameters(), indent + prefix.size() + 2);
}

//! A pipeline's description (see pipeline::describe).
template <class Reads, class Writes, class... Stages>
std::string describe_pipeline(const std::tuple<Stages...>& stages) {
  std::string out = "pipeline of " + std::to_string(sizeof...(Stages)) + (sizeof...(Stages) == 1 ? " stage" : " stages");
  out += " (reads: ";
  append_column_names(out, Reads{});
  out += "; adds: ";
  append_column_names(out, Writes{});
  out += ")\n";
  std::size_t index = 0;
  std::apply(
      [&](const auto&... s) {
        (
            [&] {
              describe_stage_into(out, s, 2, std::to_string(++index) + ". ");
            }(),
            ...);
      },
      stages);
  return out;
}

}  // namespace detail

//! @brief One stage as text: its name, the columns it reads and the columns it adds, then its
//! parameters where the stage describes them (transform lists its ops), e.g.
//! `top_k(score)  reads: candidates, score  adds: -`. A pipeline gives pipeline::describe().
//! @code
//! std::string line = recpipe::describe(recpipe::top_k(10));
//! @endcode
template <class Stage>
  requires requires {
    typename Stage::reads;
    typename Stage::writes;
    Stage::name;
  }
std::string describe(const Stage& s) {
  if constexpr (requires { s.describe(); }) {
    return s.describe();
  } else {
    std::string out;
    detail::describe_stage_into(out, s, 0);
    return out;
  }
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
