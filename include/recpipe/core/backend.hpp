// SPDX-License-Identifier: Apache-2.0
// recpipe: backends and the stage_impl customisation point that connects stages to them.
#pragma once

#include <string_view>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

enum class backend_kind { cpu, cuda };

//! @brief The CPU backend: the default and the reference. Stateless; stages keep their scratch
//! thread-locally, so one pipeline may run on many threads at once.
struct cpu_backend {
  static constexpr backend_kind kind = backend_kind::cpu;
  static constexpr std::string_view name = "cpu";
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

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
