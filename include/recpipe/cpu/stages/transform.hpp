// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: how transform runs (each op maps its input column into a new column).
#pragma once

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/core/column.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/stages/transform.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

//! Column Out of `batch`, element by element f(value of In): same rows, widths and list offsets
//! (col::candidates -> one value per candidate).
template <class In, class Out, class Batch, class F>
column_storage_t<Out> map_column(const Batch& batch, const F& f) {
  using out_type = typename Out::value_type;
  const auto& in = batch.template get<In>();
  if constexpr (In::shape == column_shape::per_request_list) {
    const auto& values = in.values();
    std::vector<out_type> out(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) out[i] = f(values[i]);
    if constexpr (Out::shape == column_shape::per_candidate)
      return out;
    else
      return ragged<out_type>(in.offsets(), std::move(out));
  } else if constexpr (In::shape == column_shape::per_request_vector || In::shape == column_shape::per_candidate_vector) {
    const auto& values = in.values();
    std::vector<out_type> out(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) out[i] = f(values[i]);
    return matrix<out_type>(std::move(out), in.rows(), in.cols());
  } else {
    std::vector<out_type> out(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) out[i] = f(in[i]);
    return out;
  }
}

//! The values of a cross input, indexed by (request, flat candidate position); checks its length
//! first (a batch run through a stage on its own was not validated by a pipeline).
template <class C, class Batch>
struct cross_input {
  const Batch& batch;
  auto operator()(std::size_t r, std::size_t c) const {
    if constexpr (std::is_same_v<C, col::candidates>)
      return batch.template get<col::candidates>().values()[c];
    else if constexpr (C::shape == column_shape::per_request)
      return batch.template get<C>()[r];
    else
      return batch.template get<C>()[c];
  }
  void check() const {
    if constexpr (C::shape == column_shape::per_request) {
      if (batch.template get<C>().size() != batch.size())
        fail("transform: cross: column '", C::name, "' has ", batch.template get<C>().size(), " values for ", batch.size(),
             " requests");
    } else if constexpr (C::shape == column_shape::per_candidate) {
      if (batch.template get<C>().size() != batch.candidate_count())
        fail("transform: cross: column '", C::name, "' has ", batch.template get<C>().size(), " values for ",
             batch.candidate_count(), " candidates");
    }
  }
};

template <class Op, class Batch>
auto compute_op(const Op& op, const Batch& batch) {
  if constexpr (requires { typename Op::first; }) {
    using A = typename Op::first;
    using B = typename Op::second;
    using Out = typename Op::output;
    const cross_input<A, Batch> a{batch};
    const cross_input<B, Batch> b{batch};
    a.check();
    b.check();
    std::vector<typename Out::value_type> out;
    if constexpr (Out::shape == column_shape::per_request) {
      out.resize(batch.size());
      for (std::size_t r = 0; r < batch.size(); ++r) out[r] = op.apply(a(r, 0), b(r, 0));
    } else {
      const auto& candidates = batch.template get<col::candidates>();
      if (candidates.rows() != batch.size())
        fail("transform: cross: col::candidates has ", candidates.rows(), " rows for ", batch.size(), " requests");
      const auto& offsets = candidates.offsets();
      out.resize(candidates.total());
      for (std::size_t r = 0; r < batch.size(); ++r)
        for (std::size_t c = offsets[r]; c < offsets[r + 1]; ++c) out[c] = op.apply(a(r, c), b(r, c));
    }
    return out;
  } else if constexpr (requires { op.apply_with_prior(typename Op::input::value_type{}, 0.0); }) {
    // Count / target encodings: read the store's prior once per column, not once per value.
    const double prior = op.store().prior();
    return map_column<typename Op::input, typename Op::output>(
        batch, [&](typename Op::input::value_type key) { return op.apply_with_prior(key, prior); });
  } else {
    return map_column<typename Op::input, typename Op::output>(
        batch, [&](typename Op::input::value_type value) { return op.apply(value); });
  }
}

}  // namespace detail

template <class... Ops>
struct stage_impl<transform_stage<Ops...>, cpu_backend> {
  template <class Batch>
  static auto run(const transform_stage<Ops...>& stage, Batch&& batch, cpu_backend&) {
    return run_from<0>(stage, std::remove_cvref_t<Batch>(std::forward<Batch>(batch)));
  }

 private:
  // Each op adds (or replaces) its output column, so the batch type may change after each.
  template <std::size_t I, class Batch>
  static auto run_from(const transform_stage<Ops...>& stage, Batch batch) {
    if constexpr (I == sizeof...(Ops)) {
      return batch;
    } else {
      using op_type = std::tuple_element_t<I, std::tuple<Ops...>>;
      const op_type& op = std::get<I>(stage.ops());
      auto values = detail::compute_op(op, batch);
      return run_from<I + 1>(stage, std::move(batch).template with<typename op_type::output>(std::move(values)));
    }
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
