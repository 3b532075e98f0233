// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: how merge (a + b) runs.
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/math/topk.hpp>
#include <recpipe/stages/merge.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

template <class List>
struct batch_of;
template <class... Cs>
struct batch_of<type_list<Cs...>> {
  using type = batch<Cs...>;
};

//! Where a merged candidate's values come from: the left (0) or right (1) branch's output, at a
//! flat candidate position.
struct merge_source {
  unsigned char side;
  std::size_t position;
};

//! Builds per-candidate column C of the merged batch from the two branch outputs.
template <class C, class Out, class LeftBatch, class RightBatch>
void gather_merged_column(Out& out, const LeftBatch& left, const RightBatch& right, const std::vector<merge_source>& from) {
  const auto& a = left.template get<C>();
  const auto& b = right.template get<C>();
  auto& target = out.template get<C>();
  if constexpr (C::shape == column_shape::per_candidate) {
    target.resize(from.size());
    for (std::size_t i = 0; i < from.size(); ++i) target[i] = from[i].side == 0 ? a[from[i].position] : b[from[i].position];
  } else {
    // A branch without candidates may leave its matrix 0 x 0; the width comes from one that has rows.
    if (a.rows() > 0 && b.rows() > 0 && a.cols() != b.cols())
      detail::fail("merge: column '", C::name, "' has width ", a.cols(), " in the left branch but ", b.cols(),
                   " in the right branch");
    const std::size_t width = a.rows() > 0 ? a.cols() : b.cols();
    target = matrix<typename C::value_type>(from.size(), width);
    for (std::size_t i = 0; i < from.size(); ++i) {
      const auto row = from[i].side == 0 ? a.row(from[i].position) : b.row(from[i].position);
      std::copy(row.begin(), row.end(), target.row(i).begin());
    }
  }
}

}  // namespace detail

template <class Left, class Right, class Score>
struct stage_impl<merge_stage<Left, Right, Score>, cpu_backend> {
  template <class Batch>
  static auto run(const merge_stage<Left, Right, Score>& stage, Batch&& input, cpu_backend& backend) {
    using input_batch = std::remove_cvref_t<Batch>;
    using candidate_columns = typename merge_stage<Left, Right, Score>::writes;
    using output_batch = typename detail::batch_of<
        detail::list_concat_t<detail::per_request_columns_t<typename input_batch::column_list>, candidate_columns>>::type;

    if constexpr (!detail::join_ok_v<Left, Right, Score>) {
      return output_batch(input.size());  // JOIN_BRANCH_LACKS_COLUMN fired already: no second error
    } else {
      // Each branch gets its own copy; the requests' own per-request columns go to the output as
      // they came in (a branch may replace one of them, e.g. a lookup into an existing column).
      auto left = stage.left()(input_batch(input), backend);
      auto right = stage.right()(input_batch(input), backend);
      const std::size_t n = input.size();
      const auto& left_candidates = left.template get<col::candidates>();
      const auto& right_candidates = right.template get<col::candidates>();
      if (left_candidates.rows() != n || right_candidates.rows() != n)
        detail::fail("merge: the branches returned ", left_candidates.rows(), " and ", right_candidates.rows(),
                     " candidate rows for ", n, " requests");

      std::vector<std::size_t> offsets(n + 1, 0);
      std::vector<id_type> ids;
      std::vector<detail::merge_source> from;
      ids.reserve(left_candidates.total() + right_candidates.total());
      from.reserve(ids.capacity());
      thread_local std::unordered_map<id_type, std::size_t> slot_of;  // item -> index into ids, this request
      for (std::size_t r = 0; r < n; ++r) {
        slot_of.clear();
        const auto take = [&](unsigned char side, const auto& candidates, const auto& branch) {
          for (std::size_t at = candidates.offsets()[r]; at < candidates.offsets()[r + 1]; ++at) {
            const id_type id = candidates.values()[at];
            if (id < 0) continue;  // an invalid id never reaches later stages
            const auto [it, fresh] = slot_of.try_emplace(id, ids.size());
            if (fresh) {
              ids.push_back(id);
              from.push_back({side, at});
              continue;
            }
            if constexpr (!std::is_same_v<Score, keep_first>) {
              // Keep the first position, take the values of the better-scored occurrence.
              auto& kept = from[it->second];
              const float kept_score = kept.side == 0 ? left.template get<Score>()[kept.position]
                                                      : right.template get<Score>()[kept.position];
              const float score = branch.template get<Score>()[at];
              const bool kept_nan = kept_score != kept_score, nan = score != score;
              if ((kept_nan && !nan) || (!nan && score > kept_score)) kept = {side, at};
            }
          }
        };
        take(0, left_candidates, left);
        take(1, right_candidates, right);
        offsets[r + 1] = ids.size();
      }

      output_batch out(n);
      [&]<class... Cs>(type_list<Cs...>) {
        ((out.template get<Cs>() = std::move(input.template get<Cs>())), ...);
      }(detail::per_request_columns_t<typename input_batch::column_list>{});
      [&]<class... Cs>(type_list<Cs...>) {
        (detail::gather_merged_column<Cs>(out, left, right, from), ...);
      }(detail::list_missing_t<candidate_columns, columns<col::candidates>>{});
      out.template get<col::candidates>().assign(std::move(offsets), std::move(ids), "merge");
      return out;
    }
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
