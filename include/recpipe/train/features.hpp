// SPDX-License-Identifier: Apache-2.0
// recpipe train: one feature definition for serving and training. A feature spec reads pipeline
// columns and builds the model inputs from them; the scoring stage and the trainer call the same
// function, so a model trains on exactly what it is served (no training/serving skew).
#pragma once

#include <concepts>
#include <cstddef>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/backend.hpp>
#include <recpipe/core/batch.hpp>
#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/pipeline.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/detail/component.hpp>
#include <recpipe/detail/meta.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/model.hpp>
#include <recpipe/train/trainer.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace col {
//! The logged outcome of showing a candidate to a request (1 = clicked / liked, 0 = not), in
//! [0, 1]. A training batch is the batch a pipeline scored plus this column.
RECPIPE_COLUMN(label, per_candidate, float);
}  // namespace col

namespace train {

//! @brief A sparse (embedding-bag) feature read from column C: one bag per candidate, in the
//! order the model's tables are given.
//!
//! - `col::candidates`: the candidate's own id (a bag of one);
//! - another per_request_list column (history): the request's whole list, the same bag for each
//!   of its candidates;
//! - a per_request id column (`col::user_id`): the request's id, repeated per candidate;
//! - a per_candidate id column: that candidate's id.
template <column C>
struct sparse {
  // READ THIS IF YOUR COMPILE BREAKS HERE: C is a vector column or holds no integer ids.
  static_assert(std::is_integral_v<typename C::value_type> && C::shape != column_shape::per_request_vector &&
                    C::shape != column_shape::per_candidate_vector,
                "recpipe: SPARSE_FEATURE_NEEDS_AN_ID_COLUMN - train::sparse<C> reads integer ids from a "
                "per_request, per_candidate or per_request_list column");
  using column_type = C;
  static constexpr bool is_sparse = true;
};

//! @brief Dense features read from column C, placed side by side in declaration order:
//! per_candidate_vector (item features): the candidate's row; per_request_vector (user
//! features): the request's row, repeated per candidate; per_candidate / per_request numbers: one
//! value each.
template <column C>
struct dense {
  // READ THIS IF YOUR COMPILE BREAKS HERE: C is a list column or does not hold numbers.
  static_assert(std::is_arithmetic_v<typename C::value_type> && C::shape != column_shape::per_request_list,
                "recpipe: DENSE_FEATURE_NEEDS_A_NUMERIC_COLUMN - train::dense<C> reads numbers from a per_request, "
                "per_candidate, per_request_vector or per_candidate_vector column");
  using column_type = C;
  static constexpr bool is_sparse = false;
};

//! @brief What build_inputs / build_examples need of a feature spec: the columns it reads
//! (`using reads = columns<...>`, col::candidates included), its number of sparse features, and,
//! for a batch holding those columns, `dense_dim(batch)` and
//! `fill_example(batch, request, candidate, examples)`, which fills the current example's dense row
//! (`examples.dense_row()`, zeroed) and adds its ids (`examples.add_id(feature, id)`).
//! train::features<...> is one; a struct of your own with the same members is another.
template <class F>
concept feature_spec = requires {
  typename F::reads;
  { F::num_sparse } -> std::convertible_to<std::size_t>;
} && detail::list_contains_v<col::candidates, typename F::reads>;

namespace impl {
template <class List>
struct batch_of;
template <class... Cs>
struct batch_of<type_list<Cs...>> {
  using type = batch<Cs...>;
};
template <class List>
struct columns_of;
template <class... Fs>
struct columns_of<type_list<Fs...>> {
  using type = type_list<typename Fs::column_type...>;
};
}  // namespace impl

//! @brief The standard feature spec: a list of train::sparse<C> and train::dense<C>. Sparse
//! features become the model's bags in the order listed (= the order of its tables); dense ones
//! become the dense row, side by side in the order listed. `reads` is col::candidates plus every
//! listed column: the scoring stage reads exactly these, and a training batch holds exactly these
//! plus the label (training_batch_t).
//!
//! Serving and training with one definition (tests/unit/train/test_column_training.cpp runs this
//! example): log what the score stage sees, attach the outcomes, train, re-freeze.
//! @code
//! using namespace recpipe;
//! using ranking_features = train::features<train::sparse<col::user_id>, train::sparse<col::candidates>,
//!                                          train::dense<col::user_features>, train::dense<col::item_features>>;
//! train::dlrm_model model(config, {user_table, item_table}, /*seed=*/1);  // dense_dim: user + item widths
//! auto snapshot = model.freeze();
//! std::vector<train::feature_batch_t<ranking_features>> logged;       // a thread-safe queue in a server
//! auto serve = lookup(user_store) >> lookup(item_store)
//!            >> train::log_features<ranking_features>([&](auto seen) { logged.push_back(std::move(seen)); })
//!            >> score(train::scorer<ranking_features>(snapshot)) >> top_k(10);
//! auto shown = serve.run(requests);                                    // requests: user_id, candidates
//! // ... once the outcomes of the logged candidates are known (one label per candidate):
//! auto examples = std::move(logged.back()).with<col::label>(clicks);   // training_batch_t<ranking_features>
//! train::dlrm_model::workspace ws;
//! train::adam adam({.lr = 1e-3});
//! auto step = train::train_step(model, ws, ranking_features{}, examples, train::optimizer_step(adam));
//! snapshot = model.freeze();  // between runs: the score stage now serves the new weights
//! @endcode
template <class... Fs>
struct features {
  static_assert(sizeof...(Fs) > 0, "recpipe: EMPTY_FEATURE_SPEC - name at least one train::sparse<C> or train::dense<C>");
  //! col::candidates (which sets the examples: one per candidate) and every feature's column.
  using reads = detail::list_union_t<columns<col::candidates>, typename impl::columns_of<type_list<Fs...>>::type>;
  static constexpr std::size_t num_sparse = (0 + ... + std::size_t(Fs::is_sparse));

  //! Dense values per example: the widths of the dense columns (1 for a scalar column).
  template <class Batch>
  std::size_t dense_dim(const Batch& batch) const {
    return (std::size_t{0} + ... + dense_width<Fs>(batch));
  }

  //! Fills example (request r, candidate c) of `out` (its dense row starts zeroed).
  template <class Batch>
  void fill_example(const Batch& batch, std::size_t r, std::size_t c, example_batch& out) const {
    const std::span<float> row = out.dense_row();
    std::size_t at = 0, feature = 0;
    (fill<Fs>(batch, r, c, out, row, at, feature), ...);
  }

 private:
  template <class F, class Batch>
  static std::size_t dense_width(const Batch& batch) {
    using C = typename F::column_type;
    if constexpr (F::is_sparse)
      return 0;
    else if constexpr (C::shape == column_shape::per_request_vector || C::shape == column_shape::per_candidate_vector)
      return batch.template get<C>().cols();
    else
      return 1;
  }

  template <class F, class Batch>
  static void fill(const Batch& batch, std::size_t r, std::size_t c, example_batch& out, std::span<float> row,
                   std::size_t& at, std::size_t& feature) {
    using C = typename F::column_type;
    const auto& values = batch.template get<C>();
    if constexpr (F::is_sparse) {
      if constexpr (std::is_same_v<C, col::candidates>)
        out.add_id(feature, static_cast<id_type>(values.values()[c]));
      else if constexpr (C::shape == column_shape::per_request_list)
        for (const auto id : values.row(r)) out.add_id(feature, static_cast<id_type>(id));
      else if constexpr (C::shape == column_shape::per_request)
        out.add_id(feature, static_cast<id_type>(values[r]));
      else
        out.add_id(feature, static_cast<id_type>(values[c]));
      ++feature;
    } else if constexpr (C::shape == column_shape::per_request_vector || C::shape == column_shape::per_candidate_vector) {
      const auto source = values.row(C::shape == column_shape::per_request_vector ? r : c);
      for (std::size_t i = 0; i < source.size(); ++i) row[at + i] = static_cast<float>(source[i]);
      at += source.size();
    } else {
      row[at++] = static_cast<float>(values[C::shape == column_shape::per_request ? r : c]);
    }
  }
};

//! The batch type a model with feature spec F trains on: exactly the columns F reads, plus Label.
template <feature_spec F, column Label = col::label>
using training_batch_t = typename impl::batch_of<detail::list_union_t<typename F::reads, columns<Label>>>::type;

namespace impl {

// READ THIS IF YOUR COMPILE BREAKS HERE: the batch (first argument) lacks a column (second
// argument) that the feature spec reads. Score or log the batch after the stages that write it.
template <class Batch, class Column>
struct BATCH_LACKS_FEATURE_COLUMN {
  static_assert(detail::always_false<Batch, Column>,
                "recpipe: BATCH_LACKS_FEATURE_COLUMN - the feature spec reads a column this batch does not hold; see "
                "BATCH_LACKS_FEATURE_COLUMN<Batch, Column> in this diagnostic");
};
// READ THIS IF YOUR COMPILE BREAKS HERE: a training batch must hold every column the features
// read (second argument: the first one missing), exactly as the pipeline's score stage saw them.
template <class Batch, class Column>
struct TRAINING_BATCH_LACKS_FEATURE_COLUMN {
  static_assert(detail::always_false<Batch, Column>,
                "recpipe: TRAINING_BATCH_LACKS_FEATURE_COLUMN - the training batch lacks a column the features read; "
                "see TRAINING_BATCH_LACKS_FEATURE_COLUMN<Batch, Column> in this diagnostic");
};
// READ THIS IF YOUR COMPILE BREAKS HERE: a training batch needs its label column (second
// argument, col::label by default): add it with `std::move(served).with<col::label>(labels)`.
template <class Batch, class Label>
struct TRAINING_BATCH_LACKS_LABEL_COLUMN {
  static_assert(detail::always_false<Batch, Label>,
                "recpipe: TRAINING_BATCH_LACKS_LABEL_COLUMN - a training batch holds the columns the features read "
                "plus the label column; see TRAINING_BATCH_LACKS_LABEL_COLUMN<Batch, Label> in this diagnostic");
};

template <class Label>
inline constexpr bool is_label_column_v =
    Label::shape == column_shape::per_candidate && std::is_same_v<typename Label::value_type, float>;

// Whether Batch holds every column Features reads and the Label column (a constant: testing it
// fires no assertion).
template <class Features, class Label, class Batch>
inline constexpr bool training_batch_complete_v =
    std::is_void_v<detail::first_missing_t<typename Features::reads, typename Batch::column_list>> &&
    Batch::template contains<Label> && is_label_column_v<Label>;

// Checks a training batch at compile time; for an incomplete one, fails with the assertion that
// names the first missing column (one error, not a cascade).
template <class Features, class Label, class Batch>
void check_training_batch() {
  static_assert(is_label_column_v<Label>, "recpipe: LABEL_COLUMN_NOT_PER_CANDIDATE_FLOAT - a label column is "
                                          "RECPIPE_COLUMN(name, per_candidate, float)");
  using missing = detail::first_missing_t<typename Features::reads, typename Batch::column_list>;
  if constexpr (!std::is_void_v<missing>)
    static_cast<void>(sizeof(TRAINING_BATCH_LACKS_FEATURE_COLUMN<Batch, missing>));
  else if constexpr (!Batch::template contains<Label>)
    static_cast<void>(sizeof(TRAINING_BATCH_LACKS_LABEL_COLUMN<Batch, Label>));
}

// THE function that turns columns into model inputs, for serving and training alike: one example
// per candidate, in candidate order. With labels (training), an example whose label is not in
// [0, 1] or whose dense values are not finite is dropped; returns how many were dropped.
template <class Features, class Batch>
std::size_t build(const Features& features, const Batch& batch, example_batch& out, const std::vector<float>* labels) {
  const std::size_t dim = features.dense_dim(batch);
  if (out.dense_dim() != dim || out.num_sparse() != Features::num_sparse)
    out = example_batch(dim, Features::num_sparse);
  else
    out.clear();
  const auto& offsets = batch.template get<col::candidates>().offsets();
  std::size_t dropped = 0;
  for (std::size_t r = 0; r < batch.size(); ++r)
    for (std::size_t c = offsets[r]; c < offsets[r + 1]; ++c) {
      out.begin_example(labels ? (*labels)[c] : 0.0f);
      features.fill_example(batch, r, c, out);
      if (labels && !out.last_is_valid()) {
        out.drop_last();
        ++dropped;
      }
    }
  return dropped;
}

}  // namespace impl

//! @brief The model inputs of every candidate of `batch` (one example per candidate, in
//! candidate order), built by `features` into `scratch`; the views stay valid until scratch
//! changes. This is what train::scorer feeds the serving model, and train_step (through
//! build_examples) the trainable one: the same code, so no skew.
//!
//! Non-finite feature values are passed through (the model scores them NaN; ordering stages rank
//! NaN last). @throws recpipe::error (batch::validate) when a column does not match the requests or
//! candidates.
//! @code
//! recpipe::train::example_batch scratch;
//! auto in = recpipe::train::build_inputs(ranking_features{}, scored_batch, scratch);
//! frozen.forward(in, out.view());
//! @endcode
template <feature_spec Features, class Batch>
  requires is_batch_v<Batch>
model_inputs build_inputs(const Features& features, const Batch& batch, example_batch& scratch) {
  using missing = detail::first_missing_t<typename Features::reads, typename Batch::column_list>;
  if constexpr (!std::is_void_v<missing>) {
    [[maybe_unused]] impl::BATCH_LACKS_FEATURE_COLUMN<Batch, missing> error;
    return {};
  } else {
    batch.validate();  // a hand-built batch may be inconsistent: never read past a column
    impl::build(features, batch, scratch, nullptr);
    return scratch.inputs();
  }
}

//! @brief The labelled examples of a training batch (the columns `features` reads plus `Label`):
//! build_inputs' examples with each candidate's label. Candidates whose label is not in [0, 1] or
//! whose dense features are not finite are left out (never trained on); returns their number.
//! A batch lacking a feature column or the label column does not compile
//! (TRAINING_BATCH_LACKS_FEATURE_COLUMN, TRAINING_BATCH_LACKS_LABEL_COLUMN).
//! @throws recpipe::error (batch::validate) when a column, the label included, does not match the
//! requests or candidates.
//! @code
//! recpipe::train::example_batch examples;
//! std::size_t dropped = recpipe::train::build_examples(ranking_features{}, logged, examples);
//! @endcode
template <column Label = col::label, feature_spec Features, class Batch>
  requires is_batch_v<Batch>
std::size_t build_examples(const Features& features, const Batch& batch, example_batch& out) {
  impl::check_training_batch<Features, Label, Batch>();
  if constexpr (!impl::training_batch_complete_v<Features, Label, Batch>) {
    return 0;
  } else {
    batch.validate();  // every column, the label too, matches the requests and candidates
    return impl::build(features, batch, out, &batch.template get<Label>());
  }
}

//! What train_step on a batch of columns did: the step, and the candidates it left out.
struct column_step_result : step_result {
  std::size_t dropped = 0;  //!< candidates with a label outside [0, 1] or non-finite dense features
};

//! @brief One training step on a batch of pipeline columns plus labels: build_examples (the same
//! code the scoring stage runs) then train_step on the examples (forward, BCE with logits,
//! backward, optimizer steps; a step with a non-finite gradient is skipped, see train_step).
//!
//! An empty batch (or one whose every candidate was dropped) does nothing: loss NaN.
//! @throws recpipe::error when the features' dense width or sparse count does not match the model.
//! @code
//! auto served = pipeline_before_score.run(requests);           // what the score stage saw
//! auto logged = std::move(served).with<recpipe::col::label>(clicks);
//! recpipe::train::dlrm_model::workspace ws;
//! auto r = recpipe::train::train_step(model, ws, ranking_features{}, logged, recpipe::train::optimizer_step(adam));
//! @endcode
template <column Label = col::label, trainable_model Model, feature_spec Features, class Batch>
  requires is_batch_v<Batch>
column_step_result train_step(Model& model, typename Model::workspace& ws, const Features& features, const Batch& batch,
                              const dense_step_fn& dense_step, std::vector<float>* logits_out = nullptr) {
  column_step_result result;
  impl::check_training_batch<Features, Label, Batch>();
  if constexpr (impl::training_batch_complete_v<Features, Label, Batch>) {
    example_batch examples;
    result.dropped = build_examples<Label>(features, batch, examples);
    if (!examples.empty() && examples.dense_dim() != model.dense_dim())
      detail::fail("train::train_step: the features give ", examples.dense_dim(),
                   " dense values per candidate but the model takes ", model.dense_dim());
    if (Features::num_sparse != model.num_sparse_features())
      detail::fail("train::train_step: the features give ", Features::num_sparse, " sparse features but the model has ",
                   model.num_sparse_features());
    static_cast<step_result&>(result) = train_step(model, ws, examples, dense_step, logits_out);
  }
  return result;
}

//! A model feature_scorer can serve: `forward(model_inputs, out [batch, 1])`, const and
//! thread-safe (train::frozen<...> from a trainable model's freeze()).
template <class M>
concept input_model = requires(const M& m, const model_inputs& in, matrix_view<float> out) { m.forward(in, out); };

//! @brief A scoring_model (for recpipe::score) that runs a model over the inputs `Features`
//! builds from the batch: it reads exactly Features::reads and calls build_inputs, as training
//! does. Holds the model as `Ref` says: by reference (it must outlive the pipeline), shared
//! (`std::shared_ptr<const Model>`), or through a `recpipe::slot<Model>` that a trainer publishes
//! new frozen versions into (each run scores with the version it pinned). Thread-safe when the
//! model's forward is (one scratch buffer per thread).
template <feature_spec Features, input_model Model, class Ref = const Model&>
class feature_scorer {
 public:
  using reads = typename Features::reads;

  template <class Arg>
  explicit feature_scorer(Arg&& model, Features features = {})
      : model_(std::forward<Arg>(model)), features_(std::move(features)) {}

  template <class Batch>
  void score(const Batch& batch, std::span<float> out) const {
    const std::size_t n = batch.candidate_count();
    if (out.size() != n)
      detail::fail("train::feature_scorer: ", out.size(), " outputs for ", n, " candidates");
    if (n == 0) return;
    thread_local example_batch scratch;  // reused across runs: no allocation once warm
    const model_inputs in = build_inputs(features_, batch, scratch);
    model_.get().forward(in, matrix_view<float>(out.data(), n, 1));
  }

  //! The model (for a slot: the version the current run pinned).
  const Model& model() const { return model_.get(); }
  const Features& features() const noexcept { return features_; }
  //! Pins the slot's registry when the run starts (see recpipe::version_registry).
  void pin_versions(recpipe::detail::run_pins& pins) const { model_.pin(pins); }

 private:
  recpipe::detail::component<Ref> model_;
  Features features_;
};

//! @brief `recpipe::score(recpipe::train::scorer<ranking_features>(frozen))`: scores candidates
//! with a frozen model over the columns the features read (see feature_scorer).
//! @code
//! auto frozen = model.freeze();
//! auto ranked = recpipe::lookup(items) >> recpipe::score(recpipe::train::scorer<ranking_features>(frozen))
//!             >> recpipe::top_k(10);
//! @endcode
template <feature_spec Features, input_model Model>
feature_scorer<Features, Model> scorer(const Model& model, Features features = {}) {
  return feature_scorer<Features, Model>(model, std::move(features));
}
template <feature_spec Features, input_model Model>
void scorer(const Model&&, Features = {}) = delete;  // the scorer keeps a reference: name the model
//! Shares ownership of the model: the pipeline keeps it alive.
template <feature_spec Features, input_model Model>
feature_scorer<Features, Model, std::shared_ptr<const Model>> scorer(std::shared_ptr<const Model> model,
                                                                    Features features = {}) {
  return feature_scorer<Features, Model, std::shared_ptr<const Model>>(std::move(model), std::move(features));
}
//! @brief Scores with the version of `model` each run pinned: a trainer publishes
//! `std::make_shared<const frozen<...>>(trainable.freeze())` into the slot while the pipeline serves.
//! @code
//! recpipe::version_registry versions;
//! auto ranker = versions.add("ranker", std::make_shared<const decltype(model.freeze())>(model.freeze()));
//! auto ranked = recpipe::score(recpipe::train::scorer<ranking_features>(ranker)) >> recpipe::top_k(10);
//! versions.publish(ranker, std::make_shared<const decltype(model.freeze())>(model.freeze()));  // later
//! @endcode
template <feature_spec Features, input_model Model>
feature_scorer<Features, Model, slot<Model>> scorer(const slot<Model>& model, Features features = {}) {
  return feature_scorer<Features, Model, slot<Model>>(model, std::move(features));
}

//! @brief A training batch from a batch the pipeline served: exactly the columns `Features`
//! reads (copied, so `served` may hold more) plus `labels` as Label (one per candidate, in
//! candidate order). @throws recpipe::error when labels.size() differs from the candidate count.
//! @code
//! auto logged = recpipe::train::label_batch<ranking_features>(served, clicks);
//! // decltype(logged) == recpipe::train::training_batch_t<ranking_features>
//! @endcode
template <feature_spec Features, column Label = col::label, class Batch>
  requires is_batch_v<Batch>
training_batch_t<Features, Label> label_batch(const Batch& served, std::vector<float> labels) {
  static_assert(impl::is_label_column_v<Label>, "recpipe: LABEL_COLUMN_NOT_PER_CANDIDATE_FLOAT - a label column is "
                                                "RECPIPE_COLUMN(name, per_candidate, float)");
  training_batch_t<Features, Label> out(served.size());
  using missing = detail::first_missing_t<typename Features::reads, typename Batch::column_list>;
  if constexpr (!std::is_void_v<missing>) {
    [[maybe_unused]] impl::BATCH_LACKS_FEATURE_COLUMN<Batch, missing> error;
  } else {
    [&]<class... Cs>(type_list<Cs...>) {
      ((out.template get<Cs>() = served.template get<Cs>()), ...);
    }(typename Features::reads{});
    if (labels.size() != served.candidate_count())
      detail::fail("train::label_batch: ", labels.size(), " labels but the batch has ", served.candidate_count(), " candidates");
    out.template get<Label>() = std::move(labels);
    out.validate();
  }
  return out;
}

//! The columns a feature spec reads, as a batch: what log_features hands its sink.
template <feature_spec F>
using feature_batch_t = typename impl::batch_of<typename F::reads>::type;

//! The description of a log_features stage (see train::log_features).
template <feature_spec Features, class Sink>
struct log_features_stage : stage<log_features_stage<Features, Sink>> {
  using reads = typename Features::reads;
  using writes = columns<>;
  static constexpr std::string_view name = "log_features";

  explicit log_features_stage(Sink sink) : sink_(std::move(sink)) {}
  //! Hands sink a copy of exactly the columns Features reads.
  template <class Batch>
  void log(const Batch& batch) const {
    feature_batch_t<Features> copy(batch.size());
    [&]<class... Cs>(type_list<Cs...>) { ((copy.template get<Cs>() = batch.template get<Cs>()), ...); }(reads{});
    sink_(std::move(copy));
  }

 private:
  Sink sink_;
};

//! @brief A pipeline stage that logs what the score stage will see: put it right before
//! `score(scorer<Features>(...))` and it hands `sink` a train::feature_batch_t<Features> (a copy
//! of exactly the columns the features read) per run, and passes the batch on unchanged. When the
//! outcomes are known, `std::move(logged).with<col::label>(labels)` is a training batch.
//!
//! `sink` is called as `sink(feature_batch_t<Features>&&)` on the thread that runs the
//! pipeline, possibly on many threads at once (make it thread-safe); what it throws propagates.
//! @code
//! std::vector<recpipe::train::feature_batch_t<ranking_features>> log;
//! auto served = recpipe::lookup(items) >> recpipe::train::log_features<ranking_features>([&](auto b) { log.push_back(std::move(b)); })
//!             >> recpipe::score(recpipe::train::scorer<ranking_features>(frozen)) >> recpipe::top_k(10);
//! @endcode
template <feature_spec Features, class Sink>
log_features_stage<Features, std::decay_t<Sink>> log_features(Sink&& sink) {
  static_assert(std::is_invocable_v<const std::decay_t<Sink>&, feature_batch_t<Features>&&>,
                "recpipe: LOG_SINK_NOT_CALLABLE - log_features needs a sink callable as sink(feature_batch_t<Features>&&) const");
  return log_features_stage<Features, std::decay_t<Sink>>(std::forward<Sink>(sink));
}

}  // namespace train

template <class Features, class Sink>
struct stage_impl<train::log_features_stage<Features, Sink>, cpu_backend> {
  template <class Batch>
  static auto run(const train::log_features_stage<Features, Sink>& stage, Batch&& batch, cpu_backend&) {
    stage.log(std::as_const(batch));
    return std::remove_cvref_t<Batch>(std::forward<Batch>(batch));
  }
};

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
