// SPDX-License-Identifier: Apache-2.0
// A user stage that declares its columns but has no CPU implementation.
// EXPECT: recpipe: RECPIPE_STAGE_HAS_NO_CPU_IMPL
// EXPECT: STAGE_HAS_NO_BACKEND_IMPL<unimplemented, recpipe::(v0::)?cpu_backend>
#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/pipeline.hpp>

#include <string_view>
#include <utility>
#include <vector>

struct unimplemented : recpipe::stage<unimplemented> {
  using reads = recpipe::columns<recpipe::col::user_id>;
  using writes = recpipe::columns<>;
  static constexpr std::string_view name = "unimplemented";
};
#ifndef RECPIPE_SHOULD_FAIL
template <>
struct recpipe::stage_impl<unimplemented, recpipe::cpu_backend> {
  template <class Batch>
  static auto run(const unimplemented&, Batch&& batch, cpu_backend&) {
    return std::forward<Batch>(batch);
  }
};
#endif

int main() {
  auto out = recpipe::make_batch<recpipe::col::user_id>(std::vector<recpipe::id_type>{1}) >> unimplemented{};
  return static_cast<int>(out.size()) - 1;
}
