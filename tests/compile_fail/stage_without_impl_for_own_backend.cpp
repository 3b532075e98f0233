// SPDX-License-Identifier: Apache-2.0
// A third backend, defined outside recpipe without a missing_stage_impl of its own: running a
// stage it has no implementation for names the stage and the backend in a generic message
// (core/ names no backend, so adding one needs no edit there).
// EXPECT: recpipe: RECPIPE_STAGE_HAS_NO_BACKEND_IMPL
// EXPECT: STAGE_HAS_NO_BACKEND_IMPL<unimplemented, my_backend>
#include <recpipe/core/batch.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/pipeline.hpp>

#include <string_view>
#include <utility>
#include <vector>

struct my_backend {
  static constexpr std::string_view name = "mine";
};

struct unimplemented : recpipe::stage<unimplemented> {
  using reads = recpipe::columns<recpipe::col::user_id>;
  using writes = recpipe::columns<>;
  static constexpr std::string_view name = "unimplemented";
};
template <>
struct recpipe::stage_impl<unimplemented, recpipe::cpu_backend> {
  template <class Batch>
  static auto run(const unimplemented&, Batch&& batch, cpu_backend&) {
    return std::forward<Batch>(batch);
  }
};
#ifndef RECPIPE_SHOULD_FAIL
template <>
struct recpipe::stage_impl<unimplemented, my_backend> {
  template <class Batch>
  static auto run(const unimplemented&, Batch&& batch, my_backend&) {
    return std::forward<Batch>(batch);
  }
};
#endif

int main() {
  const auto pipeline = recpipe::pipeline(unimplemented{});
  my_backend backend;
  auto out = pipeline.run(recpipe::make_batch<recpipe::col::user_id>(std::vector<recpipe::id_type>{1}), backend);
  return static_cast<int>(out.size()) - 1;
}
