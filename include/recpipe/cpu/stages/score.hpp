// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: how score and encode run.
#pragma once

#include <span>
#include <utility>
#include <vector>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/stages/score.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

template <class ModelRef, class Out>
struct stage_impl<score_stage<ModelRef, Out>, cpu_backend> {
  template <class Batch>
  static auto run(const score_stage<ModelRef, Out>& stage, Batch&& batch, cpu_backend&) {
    std::vector<float> scores(batch.candidate_count());
    stage.model().score(std::as_const(batch), std::span<float>(scores));
    return std::forward<Batch>(batch).template with<Out>(std::move(scores));
  }
};

template <class ModelRef, class Out>
struct stage_impl<encode_stage<ModelRef, Out>, cpu_backend> {
  template <class Batch>
  static auto run(const encode_stage<ModelRef, Out>& stage, Batch&& batch, cpu_backend&) {
    matrix<float> encoded(batch.size(), stage.model().output_dim());
    stage.model().encode(std::as_const(batch), encoded.view());
    return std::forward<Batch>(batch).template with<Out>(std::move(encoded));
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
