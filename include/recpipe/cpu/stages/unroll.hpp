// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: how unroll runs.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <utility>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/stages/unroll.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

//! Width of a source column (1 for per_request), after checking its rows against the batch.
template <class Source, class Batch>
std::size_t unroll_source_width(const Batch& batch) {
  const auto& source = batch.template get<Source>();
  std::size_t rows = 0, width = 1;
  if constexpr (Source::shape == column_shape::per_request_vector) {
    rows = source.rows();
    width = source.cols();
  } else {
    rows = source.size();
  }
  if (rows != batch.size())
    fail("unroll: '", Source::name, "' has ", rows, " rows but the batch has ", batch.size(), " requests");
  return width;
}

//! Copies request r's values of Source into dst (width values).
template <class Source, class Batch>
float* unroll_copy(const Batch& batch, std::size_t r, float* dst) {
  const auto& source = batch.template get<Source>();
  if constexpr (Source::shape == column_shape::per_request_vector) {
    const auto row = source.row(r);
    return std::copy(row.begin(), row.end(), dst);
  } else {
    *dst = source[r];
    return dst + 1;
  }
}

}  // namespace detail

template <class Out, class... Sources>
struct stage_impl<unroll_stage<Out, Sources...>, cpu_backend> {
  template <class Batch>
  static auto run(const unroll_stage<Out, Sources...>& stage, Batch&& batch, cpu_backend&) {
    const std::array<std::size_t, sizeof...(Sources)> widths{detail::unroll_source_width<Sources>(batch)...};
    std::size_t width = 0;
    for (const std::size_t w : widths) width += w;
    const auto& candidates = batch.template get<col::candidates>();
    if (candidates.rows() != batch.size())
      detail::fail("unroll: 'candidates' has ", candidates.rows(), " rows but the batch has ", batch.size(), " requests");
    const std::size_t total = candidates.total();
    if (stage.width() != 0 && width != stage.width()) {
      std::size_t i = 0;
      std::string described;
      ((described += (i ? " + '" : "'") + std::string(Sources::name) + "' (" + std::to_string(widths[i]) + ")", ++i), ...);
      detail::fail("unroll: ", described, " = ", width, " features but ", stage.width(), " are expected");
    }
    if (total > 0 && width == 0)
      detail::fail("unroll: the request features have width 0 (were they looked up?) but there are ", total,
                   " candidates");

    matrix<float> out(total, width);
    const auto& offsets = candidates.offsets();
    for (std::size_t r = 0; r < batch.size(); ++r) {
      const std::size_t first = offsets[r], last = offsets[r + 1];
      if (first == last) continue;
      // Gather the request's row once, then repeat it for the rest of its candidates.
      float* row = out.row(first).data();
      float* at = row;
      ((at = detail::unroll_copy<Sources>(batch, r, at)), ...);
      for (std::size_t c = first + 1; c < last; ++c) std::copy(row, row + width, out.row(c).data());
    }
    return std::forward<Batch>(batch).template with<Out>(std::move(out));
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
