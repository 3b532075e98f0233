// SPDX-License-Identifier: Apache-2.0
// recpipe: backends and the stage_impl customisation point that connects stages to them.
#pragma once

#include <string_view>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! @brief The CPU backend: the default and the reference. Stateless; stages keep their scratch
//! thread-locally, so one pipeline may run on many threads at once.
//!
//! What a backend is (the CPU and CUDA backends, or your own): a type with a `name`, passed to
//! `pipeline.run(batch, backend)`, for which stages specialise stage_impl. Optionally it says
//! what a stage without an implementation for it reads as: a member template
//! `missing_stage_impl<Stage>` whose instantiation fails with the backend's own message (core/
//! names no backend in its errors, so a new backend needs no edit here).
struct cpu_backend {
  static constexpr std::string_view name = "cpu";

  // READ THIS IF YOUR COMPILE BREAKS HERE: the stage named in this diagnostic has no CPU
  // implementation; specialise recpipe::stage_impl<Stage, recpipe::cpu_backend>.
  template <class Stage>
  struct missing_stage_impl {
    static_assert(sizeof(Stage) == 0, "recpipe: RECPIPE_STAGE_HAS_NO_CPU_IMPL - this stage has no stage_impl<Stage, cpu_backend>");
  };
};

//! @brief How stage `Stage` runs on `Backend`. A backend specialises it with
//! `template <class Batch> static auto run(const Stage&, Batch&&, Backend&)`, returning the
//! batch with the stage's output columns added. Left undefined on purpose: a stage without an
//! implementation for a backend fails to compile with RECPIPE_STAGE_HAS_NO_<BACKEND>_IMPL.
template <class Stage, class Backend>
struct stage_impl;

//! True when stage_impl<Stage, Backend> has been specialised (is a complete type).
template <class Stage, class Backend>
concept has_stage_impl = requires { sizeof(stage_impl<Stage, Backend>); };

//! @brief A backend that keeps per-run state (the CUDA backend's device copies of columns) has
//! run hooks: `begin_run()`, `finish_run(batch&)` (the run produced `batch`: make it current on the
//! host) and `abort_run() noexcept` (a stage threw). Pipelines call them around a whole run and
//! around each stage (nested: only the outermost level finishes), so a stage run on its own
//! (`stage(batch, backend)`) is a run too. The CPU backend has none.
template <class Backend>
concept backend_with_run_hooks = requires(Backend& backend) {
  backend.begin_run();
  backend.abort_run();
};

namespace detail {
//! Calls a backend's run hooks (nothing for a backend without them): begin on construction,
//! finish(batch) on success, abort when destroyed without finishing (an exception unwinds).
template <class Backend>
class backend_run {
 public:
  explicit backend_run(Backend& backend) : backend_(backend) {
    if constexpr (backend_with_run_hooks<Backend>) backend_.begin_run();
  }
  backend_run(const backend_run&) = delete;
  backend_run& operator=(const backend_run&) = delete;
  template <class Batch>
  void finish(Batch& batch) {
    done_ = true;  // a finish that throws has cleaned up itself
    if constexpr (backend_with_run_hooks<Backend>) backend_.finish_run(batch);
  }
  ~backend_run() {
    if constexpr (backend_with_run_hooks<Backend>)
      if (!done_) backend_.abort_run();
  }

 private:
  Backend& backend_;
  bool done_ = false;
};
}  // namespace detail

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
