// SPDX-License-Identifier: Apache-2.0
// recpipe: the stage base, composition with >>, and pipelines with per-stage metrics.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/core/describe.hpp>
#include <recpipe/core/metrics.hpp>
#include <recpipe/core/versions.hpp>
#include <recpipe/detail/meta.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

template <class Derived>
struct stage;
template <class... Stages>
class pipeline;

namespace detail {
template <class D>
D* stage_of(const stage<D>*);
void stage_of(const void*);
}  // namespace detail

//! True for every type derived from recpipe::stage<D> (every stage and every pipeline).
template <class T>
inline constexpr bool is_stage_v =
    std::is_class_v<std::remove_cvref_t<T>> &&
    !std::is_void_v<decltype(detail::stage_of(static_cast<const std::remove_cvref_t<T>*>(nullptr)))>;

namespace detail {

//! What a stage that cannot run returns after its static_assert fired; later stages are skipped
//! so the compiler prints one error, not one per stage.
struct stage_failed {};

// READ THIS IF YOUR COMPILE BREAKS HERE: the first template argument is the stage, the second is
// the column it reads that neither the request batch nor any earlier stage of the pipeline
// provides. Add a stage that writes the column (a lookup, an encode) or put it in the requests.
template <class Stage, class Column>
struct STAGE_READS_MISSING_COLUMN {
  static_assert(always_false<Stage, Column>,
                "recpipe: STAGE_READS_MISSING_COLUMN - a stage reads a column that the request batch and the earlier "
                "stages do not provide; see STAGE_READS_MISSING_COLUMN<Stage, Column> in this diagnostic");
  using type = stage_failed;
};

// The message of a backend without its own missing_stage_impl (see cpu_backend).
template <class Stage, class Backend>
struct generic_missing_stage_impl {
  static_assert(always_false<Stage, Backend>,
                "recpipe: RECPIPE_STAGE_HAS_NO_BACKEND_IMPL - this stage has no stage_impl<Stage, Backend> for the "
                "backend named in STAGE_HAS_NO_BACKEND_IMPL<Stage, Backend> in this diagnostic");
};
template <class Stage, class Backend>
struct missing_stage_impl_message {
  using type = generic_missing_stage_impl<Stage, Backend>;
};
template <class Stage, class Backend>
  requires requires { typename Backend::template missing_stage_impl<Stage>; }
struct missing_stage_impl_message<Stage, Backend> {
  using type = typename Backend::template missing_stage_impl<Stage>;
};

// READ THIS IF YOUR COMPILE BREAKS HERE: the stage (first argument) has no implementation for the
// backend (second argument); specialise recpipe::stage_impl<Stage, Backend> or use another backend.
// The backend words the error (its missing_stage_impl<Stage>), so core/ names no backend.
template <class Stage, class Backend>
struct STAGE_HAS_NO_BACKEND_IMPL {
  static_assert(sizeof(typename missing_stage_impl_message<Stage, Backend>::type) != 0);
  using type = stage_failed;
};

// READ THIS IF YOUR COMPILE BREAKS HERE: the value left of >> (or passed to run) is not a
// recpipe::batch<...>. Build requests with recpipe::make_batch or batch<columns...>(n).
template <class Input, class Stage>
struct STAGE_CANNOT_CONSUME_INPUT {
  static_assert(always_false<Input, Stage>,
                "recpipe: STAGE_CANNOT_CONSUME_INPUT - the stage right of >> only accepts a recpipe::batch<...> "
                "(see STAGE_CANNOT_CONSUME_INPUT<Input, Stage>)");
  using type = stage_failed;
};

//! A stage that reads versioned components (slots) pins their registries for the run.
template <class Stage>
concept pins_versions = requires(const Stage& s, run_pins& pins) { s.pin_versions(pins); };

template <class Stage>
concept declares_columns = requires {
  typename Stage::reads;
  typename Stage::writes;
  { Stage::name } -> std::convertible_to<std::string_view>;
};

//! Runs one stage on one backend, after checking at compile time that it can.
template <class Stage, class Batch, class Backend>
auto apply_stage(const Stage& s, Batch&& input, Backend& backend) {
  using input_batch = std::remove_cvref_t<Batch>;
  static_assert(declares_columns<Stage>,
                "recpipe: STAGE_DECLARATION_INCOMPLETE - a stage declares `using reads = columns<...>`, "
                "`using writes = columns<...>` and `static constexpr std::string_view name`");
  if constexpr (!is_batch_v<input_batch>) {
    return typename STAGE_CANNOT_CONSUME_INPUT<input_batch, Stage>::type{};
  } else {
    using missing = first_missing_t<typename Stage::reads, typename input_batch::column_list>;
    if constexpr (!std::is_void_v<missing>) {
      return typename STAGE_READS_MISSING_COLUMN<Stage, missing>::type{};
    } else if constexpr (!has_stage_impl<Stage, Backend>) {
      return typename STAGE_HAS_NO_BACKEND_IMPL<Stage, Backend>::type{};
    } else {
      // A stage run on its own is a run: it pins its slots' generations until it returns. Inside a
      // pipeline run the scope reuses the pins the pipeline took when the run started.
      run_scope scope;
      if constexpr (pins_versions<Stage>) s.pin_versions(scope.pins());
      backend_run<Backend> backend_scope(backend);
      auto output = stage_impl<Stage, Backend>::run(s, input_batch(std::forward<Batch>(input)), backend);
      backend_scope.finish(output);
      using output_batch = decltype(output);
      static_assert(is_batch_v<output_batch> &&
                        std::is_void_v<first_missing_t<typename Stage::writes, typename output_batch::column_list>>,
                    "recpipe: STAGE_DID_NOT_WRITE_DECLARED_COLUMN - a stage_impl returned a batch without a column "
                    "its stage declares in `writes`");
      return output;
    }
  }
}

//! Columns a sequence of stages needs from its input: each stage's reads minus what earlier
//! stages write.
template <class Available, class Required, class... Stages>
struct pipeline_columns {
  using reads = Required;
  using writes = Available;
};
template <class Available, class Required, class S0, class... Stages>
struct pipeline_columns<Available, Required, S0, Stages...> {
  using rest = pipeline_columns<list_union_t<Available, typename S0::writes>,
                                list_union_t<Required, list_missing_t<typename S0::reads, Available>>,
                                Stages...>;
  using reads = typename rest::reads;
  using writes = typename rest::writes;
};

template <class T>
struct is_pipeline : std::false_type {};
template <class... Ss>
struct is_pipeline<pipeline<Ss...>> : std::true_type {};

template <class S>
auto stages_as_tuple(S&& s) {
  if constexpr (is_pipeline<std::remove_cvref_t<S>>::value)
    return std::forward<S>(s).stages();
  else
    return std::tuple<std::remove_cvref_t<S>>(std::forward<S>(s));
}

template <class A, class B>
auto compose(A&& a, B&& b) {
  auto stages = std::tuple_cat(stages_as_tuple(std::forward<A>(a)), stages_as_tuple(std::forward<B>(b)));
  return std::apply([](auto&&... s) { return pipeline<std::remove_cvref_t<decltype(s)>...>(std::move(s)...); },
                    std::move(stages));
}

//! Hidden friends found only by ADL on stages: they never capture std::istream's or Eigen's >>.
struct pipe_ops {
  //! `batch >> stage` runs the stage on the CPU backend.
  template <class In, class S>
    requires(!is_stage_v<In> && is_stage_v<S>)
  friend decltype(auto) operator>>(In&& input, S&& s) {
    if constexpr (!is_batch_v<In>)
      return typename STAGE_CANNOT_CONSUME_INPUT<std::remove_cvref_t<In>, std::remove_cvref_t<S>>::type{};
    else
      return std::forward<S>(s)(std::forward<In>(input));
  }
  //! `stage >> stage` composes into a pipeline (flattened: (a >> b) >> c == a >> (b >> c)).
  template <class A, class B>
    requires(is_stage_v<A> && is_stage_v<B>)
  friend auto operator>>(A&& a, B&& b) {
    return compose(std::forward<A>(a), std::forward<B>(b));
  }
  // READ THIS IF YOUR COMPILE BREAKS HERE: the right side of `stage >> x` must be a stage.
  template <class A, class B>
    requires(is_stage_v<A> && !is_stage_v<B>)
  friend auto operator>>(A&&, B&&) {
    static_assert(always_false<A, B>,
                  "recpipe: RIGHT_OF_SHIFT_IS_NOT_A_STAGE - `stage >> x` needs a recpipe stage on the right "
                  "(did you call a stage factory without its parentheses?)");
  }
};

}  // namespace detail

//! @brief CRTP base of every stage: `struct my_stage : recpipe::stage<my_stage> {...}`.
//!
//! A stage object is a description (parameters and references). It declares
//! `using reads = columns<...>`, `using writes = columns<...>` and
//! `static constexpr std::string_view name`; a backend provides `stage_impl<Stage, Backend>`.
//! `batch >> stage` and `stage(batch)` run it on the CPU backend; `stage(batch, backend)` on another.
template <class Derived>
struct stage : detail::pipe_ops {
  template <class Batch>
  auto operator()(Batch&& input) const {
    cpu_backend backend;
    return detail::apply_stage(static_cast<const Derived&>(*this), std::forward<Batch>(input), backend);
  }
  template <class Batch, class Backend>
  auto operator()(Batch&& input, Backend& backend) const {
    return detail::apply_stage(static_cast<const Derived&>(*this), std::forward<Batch>(input), backend);
  }
};

//! @brief A sequence of stages built with `>>`; itself a stage.
//!
//! `run` validates the request batch (column lengths), runs each stage in order and records each
//! stage's wall time in lock-free histograms (`stats()` gives count, mean, p50, p99 per stage).
//! Runs are thread-safe: many threads may call `run` on the same pipeline at once. A pipeline
//! holds its stages by value; stages hold the indexes, stores and models they use by reference
//! (named objects, which must outlive the pipeline), by value (temporaries), shared
//! (`std::shared_ptr`) or through versioned slots (`recpipe::slot`, core/versions.hpp).
//! Versions: when a run starts it pins the current generation of every version_registry its
//! stages' slots belong to, and every stage of that run reads that generation, so a run never
//! mixes versions that were published together; a trainer's later publications are seen by the
//! next runs.
//!
//! @code
//! auto recommend = recpipe::lookup(user_vectors) >> recpipe::retrieve<recpipe::col::user_embedding>(index, 100)
//!                >> recpipe::top_k(10);
//! auto result = recommend.run(recpipe::make_batch<recpipe::col::user_id>(ids));
//! for (auto s : recommend.stats()) std::printf("%s p99 %.1f us\n", s.name.data(), s.p99_us);
//! @endcode
template <class... Stages>
class pipeline : public stage<pipeline<Stages...>> {
  using columns_info = detail::pipeline_columns<type_list<>, type_list<>, Stages...>;

 public:
  static constexpr std::size_t stage_count = sizeof...(Stages);
  static constexpr std::string_view name = "pipeline";
  //! Columns the request batch must provide.
  using reads = typename columns_info::reads;
  //! Columns the pipeline adds.
  using writes = typename columns_info::writes;

  explicit pipeline(Stages... stages) : stages_(std::move(stages)...), metrics_(std::make_unique<metrics_block>()) {}
  pipeline(const pipeline& other) : stages_(other.stages_), metrics_(std::make_unique<metrics_block>()) {}
  pipeline(pipeline&&) noexcept = default;
  pipeline& operator=(const pipeline& other) {
    stages_ = other.stages_;
    metrics_ = std::make_unique<metrics_block>();
    return *this;
  }
  pipeline& operator=(pipeline&&) noexcept = default;

  //! Runs the pipeline on a batch of requests (any size, including 0) on the CPU backend.
  template <class Batch>
  auto run(Batch&& requests) const {
    cpu_backend backend;
    return run_impl(std::forward<Batch>(requests), backend, nullptr);
  }
  //! Runs on `backend`.
  template <class Batch, class Backend>
    requires(!std::is_same_v<std::remove_cvref_t<Backend>, run_report<sizeof...(Stages)>>)
  auto run(Batch&& requests, Backend& backend) const {
    return run_impl(std::forward<Batch>(requests), backend, nullptr);
  }
  //! Runs on the CPU backend and fills `report` with each stage's wall time for this run.
  template <class Batch>
  auto run(Batch&& requests, run_report<stage_count>& report) const {
    cpu_backend backend;
    return run_impl(std::forward<Batch>(requests), backend, &report);
  }
  template <class Batch>
  auto operator()(Batch&& requests) const {
    return run(std::forward<Batch>(requests));
  }
  template <class Batch, class Backend>
  auto operator()(Batch&& requests, Backend& backend) const {
    return run(std::forward<Batch>(requests), backend);
  }

  //! Count, mean, p50 and p99 of each stage's wall time over all runs so far.
  std::array<stage_stats, stage_count> stats() const {
    std::array<stage_stats, stage_count> out{};
    for (std::size_t i = 0; i < stage_count; ++i) {
      const auto& h = metrics_->stages[i];
      out[i] = {stage_names[i], h.count(), h.mean_ns() / 1e3, h.percentile_ns(0.5) / 1e3, h.percentile_ns(0.99) / 1e3};
    }
    return out;
  }
  //! Statistics of whole runs (validation included).
  stage_stats total_stats() const {
    const auto& h = metrics_->total;
    return {name, h.count(), h.mean_ns() / 1e3, h.percentile_ns(0.5) / 1e3, h.percentile_ns(0.99) / 1e3};
  }
  //! Turns the always-on statistics off (or on again). Timing costs one clock read per stage
  //! plus one (about 20-100 ns each, depending on the machine); a pipeline of microsecond stages
  //! that does not need them can skip them. A run given a run_report is always timed.
  void enable_stats(bool enabled) { metrics_->enabled.store(enabled, std::memory_order_relaxed); }
  bool stats_enabled() const { return metrics_->enabled.load(std::memory_order_relaxed); }

  void reset_stats() {
    for (auto& h : metrics_->stages) h.reset();
    metrics_->total.reset();
  }

  //! Pins the generation of every registry the stages' slots belong to (a run does this first).
  void pin_versions(detail::run_pins& pins) const {
    std::apply(
        [&](const auto&... s) {
          (
              [&] {
                if constexpr (detail::pins_versions<std::remove_cvref_t<decltype(s)>>) s.pin_versions(pins);
              }(),
              ...);
        },
        stages_);
  }

  const std::tuple<Stages...>& stages() const& { return stages_; }
  std::tuple<Stages...> stages() && { return std::move(stages_); }

  static constexpr std::array<std::string_view, stage_count> stage_names{Stages::name...};

  //! @brief The pipeline as text: the columns the requests must hold and the columns it adds,
  //! then one line per stage with the columns it reads and adds (and its parameters where the
  //! stage describes them, e.g. transform's ops). core/describe.hpp; `recpipe::describe(stage)`
  //! describes one stage.
  //! @code
  //! auto p = recpipe::lookup(users) >> recpipe::retrieve<recpipe::col::user_embedding>(index, 100)
  //!        >> recpipe::top_k<recpipe::col::retrieval_score>(10);
  //! std::cout << p;   // same text as p.describe():
  //! // pipeline of 3 stages (reads: user_id; adds: user_embedding, candidates, retrieval_score)
  //! //   1. lookup(user_embedding)  reads: user_id  adds: user_embedding
  //! //   2. retrieve(user_embedding)  reads: user_embedding  adds: candidates, retrieval_score
  //! //   3. top_k(retrieval_score)  reads: candidates, retrieval_score  adds: -
  //! @endcode
  std::string describe() const { return detail::describe_pipeline<reads, writes>(stages_); }
  //! Writes describe() to a stream (a template, so this header needs no <ostream>).
  template <class Stream>
    requires requires(Stream& os, const std::string& text) { os << text; }
  friend Stream& operator<<(Stream& os, const pipeline& p) {
    os << p.describe();
    return os;
  }

 private:
  using clock = std::chrono::steady_clock;
  struct metrics_block {
    std::array<latency_histogram, stage_count> stages;
    latency_histogram total;
    std::atomic<bool> enabled{true};
  };

  template <class Batch, class Backend>
  auto run_impl(Batch&& requests, Backend& backend, run_report<stage_count>* report) const {
    using input_batch = std::remove_cvref_t<Batch>;
    if constexpr (!is_batch_v<input_batch>) {
      return typename detail::STAGE_CANNOT_CONSUME_INPUT<input_batch, pipeline>::type{};
    } else {
      input_batch batch(std::forward<Batch>(requests));
      detail::run_scope scope;
      pin_versions(scope.pins());
      const bool timed = report != nullptr || metrics_->enabled.load(std::memory_order_relaxed);
      const auto start = timed ? clock::now() : clock::time_point{};
      batch.validate();
      if (report) report->stage_names = stage_names;
      auto stage_start = start;
      // A backend with per-run state (CUDA) brings every column back to the host here, once.
      // Its stages only enqueue work, so their times are enqueue times and the wait is in the total.
      detail::backend_run<Backend> backend_scope(backend);
      auto output = run_from<0>(std::move(batch), backend, report, timed, stage_start);
      if constexpr (is_batch_v<decltype(output)>) backend_scope.finish(output);
      if constexpr (backend_with_run_hooks<Backend>) {  // the total includes finish_run's wait
        if (timed) metrics_->total.record(clock::now() - start);
      } else {
        if (timed) metrics_->total.record(stage_start - start);
      }
      return output;
    }
  }

  // Each stage's end time is the next stage's start time: N + 1 clock reads for N stages.
  template <std::size_t I, class Batch, class Backend>
  auto run_from(Batch&& batch, Backend& backend, run_report<stage_count>* report, bool timed,
                clock::time_point& stage_start) const {
    if constexpr (I == stage_count) {
      return std::move(batch);
    } else {
      auto next = detail::apply_stage(std::get<I>(stages_), std::move(batch), backend);
      if constexpr (std::is_same_v<decltype(next), detail::stage_failed>) {
        return next;
      } else {
        if (timed) {
          const auto now = clock::now();
          metrics_->stages[I].record(now - stage_start);
          if (report) report->stage_time[I] = now - stage_start;
          stage_start = now;
        }
        return run_from<I + 1>(std::move(next), backend, report, timed, stage_start);
      }
    }
  }

  std::tuple<Stages...> stages_;
  std::unique_ptr<metrics_block> metrics_;
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
