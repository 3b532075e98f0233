// SPDX-License-Identifier: Apache-2.0
// recpipe stage: transform - feature engineering at serve time (NVTabular's TransformWorkflow):
// categorify, hash, cross, normalize, bucketize, log, counts and target encodings. Every op is a
// per-value rule of math/features.hpp, the same function the trainer's feature code calls.
#pragma once

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/pipeline.hpp>
#include <recpipe/core/versions.hpp>
#include <recpipe/detail/component.hpp>
#include <recpipe/detail/meta.hpp>
#include <recpipe/math/features.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN

//! The operations of a recpipe::transform stage (NVTabular's ops, one C++ type each).
namespace ops {

//! Base of every transform op (how transform() recognises them).
struct op_base {};

//! True for the types of recpipe::ops.
template <class T>
inline constexpr bool is_op_v = std::is_base_of_v<op_base, T>;

namespace impl {

template <class C>
inline constexpr bool is_scalar_v = C::shape == column_shape::per_request || C::shape == column_shape::per_candidate;

// An op maps In to Out element by element: Out has In's shape, or is per_candidate when In is
// col::candidates (one value per candidate id).
template <class In, class Out>
inline constexpr bool same_layout_v =
    In::shape == Out::shape || (std::is_same_v<In, col::candidates> && Out::shape == column_shape::per_candidate);

template <class In, class Out>
constexpr void check_elementwise() {
  // READ THIS IF YOUR COMPILE BREAKS HERE: an op writes one value per value it reads.
  static_assert(same_layout_v<In, Out>,
                "recpipe: TRANSFORM_SHAPES_DIFFER - a transform op's output column must have its input column's shape "
                "(or be per_candidate when the input is col::candidates)");
}
template <class In>
constexpr void check_integer_input() {
  static_assert(std::is_integral_v<typename In::value_type>,
                "recpipe: TRANSFORM_INPUT_NOT_INTEGER - categorify, hash_bucket, cross and the count / target encodings "
                "read integer (categorical) columns");
}
template <class In>
constexpr void check_numeric_input() {
  static_assert(std::is_arithmetic_v<typename In::value_type>,
                "recpipe: TRANSFORM_INPUT_NOT_NUMERIC - normalize, bucketize and log1p read numeric columns");
}
template <class Out>
constexpr void check_integer_output() {
  static_assert(std::is_integral_v<typename Out::value_type>,
                "recpipe: TRANSFORM_OUTPUT_NOT_INTEGER - categorify, hash_bucket, cross and bucketize write integer "
                "(index) columns, e.g. RECPIPE_COLUMN(name, per_candidate, recpipe::id_type)");
}
template <class Out>
constexpr void check_float_output() {
  static_assert(std::is_floating_point_v<typename Out::value_type>,
                "recpipe: TRANSFORM_OUTPUT_NOT_FLOAT - normalize, log1p and the count / target encodings write floating "
                "point columns, e.g. RECPIPE_COLUMN(name, per_candidate, float)");
}

// Unary ops: In -> Out, element by element. Derived provides `apply(value)` and `describe()`.
template <class In, class Out>
struct unary : op_base {
  using input = In;
  using output = Out;
  using reads = columns<In>;
  using writes = columns<Out>;
};

// The shortest text that reads back as x ("20", "0.5"), for describe().
inline std::string number(double x) {
  char text[32];
  const auto end = std::to_chars(text, text + sizeof text, x).ptr;
  return std::string(text, end);
}

inline std::string arrow(std::string_view in, std::string_view out) {
  std::string s(in);
  s += " -> ";
  s += out;
  return s;
}

}  // namespace impl

//! The op of ops::categorify (see there).
template <column In, column Out>
struct categorify_op : impl::unary<In, Out> {
  static constexpr std::string_view name = "categorify";
  explicit categorify_op(std::shared_ptr<const math::vocabulary> vocabulary) : vocabulary_(std::move(vocabulary)) {
    if (!vocabulary_) detail::fail("ops::categorify: null vocabulary");
  }
  typename Out::value_type apply(typename In::value_type value) const {
    return static_cast<typename Out::value_type>(vocabulary_->index(static_cast<std::int64_t>(value)));
  }
  const math::vocabulary& vocabulary() const { return *vocabulary_; }
  std::string describe() const {
    return "categorify(" + impl::arrow(In::name, Out::name) + ", " + std::to_string(vocabulary_->size()) +
           " values, unknown -> 0)";
  }

 private:
  std::shared_ptr<const math::vocabulary> vocabulary_;
};

//! @brief Categorify through a vocabulary: In (integer ids) -> Out (indices): the i-th value of
//! the vocabulary -> i + 1, any other value -> math::oov_index (0). The vocabulary is shared by
//! the stage's copies. Use `math::vocabulary::fit` on the training data to build it.
//! @code
//! RECPIPE_COLUMN(item_index, per_candidate, recpipe::id_type);
//! auto t = recpipe::transform(recpipe::ops::categorify<recpipe::col::candidates, item_index>(vocab));
//! @endcode
template <column In, column Out>
categorify_op<In, Out> categorify(math::vocabulary vocabulary) {
  impl::check_elementwise<In, Out>();
  impl::check_integer_input<In>();
  impl::check_integer_output<Out>();
  return categorify_op<In, Out>(std::make_shared<const math::vocabulary>(std::move(vocabulary)));
}
//! Shares a vocabulary the caller keeps (e.g. the trainer's).
template <column In, column Out>
categorify_op<In, Out> categorify(std::shared_ptr<const math::vocabulary> vocabulary) {
  impl::check_elementwise<In, Out>();
  impl::check_integer_input<In>();
  impl::check_integer_output<Out>();
  return categorify_op<In, Out>(std::move(vocabulary));
}

//! The op of ops::hash_bucket (see there).
template <column In, column Out>
struct hash_bucket_op : impl::unary<In, Out> {
  static constexpr std::string_view name = "hash_bucket";
  explicit hash_bucket_op(std::uint64_t buckets) : buckets_(buckets) {
    if (buckets == 0) detail::fail("ops::hash_bucket: buckets must be at least 1 (got 0)");
  }
  typename Out::value_type apply(typename In::value_type value) const {
    return static_cast<typename Out::value_type>(math::hash_bucket(static_cast<std::int64_t>(value), buckets_));
  }
  std::uint64_t buckets() const noexcept { return buckets_; }
  std::string describe() const {
    return "hash_bucket(" + impl::arrow(In::name, Out::name) + ", " + std::to_string(buckets_) + " buckets)";
  }

 private:
  std::uint64_t buckets_;
};

//! @brief Categorify by hashing: In (integer ids) -> Out = math::hash_bucket(value, buckets), in
//! [0, buckets); unknown values need no vocabulary (collisions are possible).
//! @throws recpipe::error when buckets is 0.
//! @code
//! RECPIPE_COLUMN(user_bucket, per_request, recpipe::id_type);
//! auto t = recpipe::transform(recpipe::ops::hash_bucket<recpipe::col::user_id, user_bucket>(100'000));
//! @endcode
template <column In, column Out>
hash_bucket_op<In, Out> hash_bucket(std::uint64_t buckets) {
  impl::check_elementwise<In, Out>();
  impl::check_integer_input<In>();
  impl::check_integer_output<Out>();
  return hash_bucket_op<In, Out>(buckets);
}

//! The op of ops::normalize (see there).
template <column In, column Out>
struct normalize_op : impl::unary<In, Out> {
  static constexpr std::string_view name = "normalize";
  explicit normalize_op(math::normalization n) : n_(n) {}
  typename Out::value_type apply(typename In::value_type value) const {
    return static_cast<typename Out::value_type>(n_(static_cast<double>(value)));
  }
  const math::normalization& normalization() const noexcept { return n_; }
  std::string describe() const {
    return "normalize(" + impl::arrow(In::name, Out::name) + ", mean " + impl::number(n_.mean()) + ", std " +
           impl::number(n_.stddev()) + ")";
  }

 private:
  math::normalization n_;
};

//! @brief Standardizes In (numbers; every element of a vector column) into Out (floats):
//! (x - mean) / std. NaN stays NaN, +-inf stays +-inf. Fit the statistics on training data with
//! math::normalization::fit. @throws recpipe::error when mean is not finite or std is not
//! finite and > 0 (a zero std would divide by zero).
//! @code
//! RECPIPE_COLUMN(price, per_candidate, float);
//! RECPIPE_COLUMN(price_z, per_candidate, float);
//! auto t = recpipe::transform(recpipe::ops::normalize<price, price_z>(12.5, 4.0));
//! @endcode
template <column In, column Out>
normalize_op<In, Out> normalize(double mean, double stddev) {
  impl::check_elementwise<In, Out>();
  impl::check_numeric_input<In>();
  impl::check_float_output<Out>();
  return normalize_op<In, Out>(math::normalization(mean, stddev));
}
//! Standardizes with fitted statistics (math::normalization::fit).
template <column In, column Out>
normalize_op<In, Out> normalize(math::normalization n) {
  impl::check_elementwise<In, Out>();
  impl::check_numeric_input<In>();
  impl::check_float_output<Out>();
  return normalize_op<In, Out>(n);
}

//! The op of ops::bucketize (see there).
template <column In, column Out>
struct bucketize_op : impl::unary<In, Out> {
  static constexpr std::string_view name = "bucketize";
  explicit bucketize_op(std::shared_ptr<const math::bucket_boundaries> b) : b_(std::move(b)) {}
  typename Out::value_type apply(typename In::value_type value) const {
    return static_cast<typename Out::value_type>(b_->index(static_cast<double>(value)));
  }
  const math::bucket_boundaries& boundaries() const noexcept { return *b_; }
  std::string describe() const {
    return "bucketize(" + impl::arrow(In::name, Out::name) + ", " + std::to_string(b_->boundaries().size()) +
           " boundaries, NaN -> " + std::to_string(b_->missing_bucket()) + ")";
  }

 private:
  std::shared_ptr<const math::bucket_boundaries> b_;
};

//! @brief Bucketizes In (numbers) into Out (bucket indices): x -> the number of boundaries <= x
//! (0 .. n for n boundaries), NaN -> n + 1 (see math::bucket_boundaries).
//! @throws recpipe::error when the boundaries are empty, not finite or not strictly increasing.
//! @code
//! RECPIPE_COLUMN(age, per_request, float);
//! RECPIPE_COLUMN(age_bucket, per_request, recpipe::id_type);
//! auto t = recpipe::transform(recpipe::ops::bucketize<age, age_bucket>({18, 25, 35, 50}));
//! @endcode
template <column In, column Out>
bucketize_op<In, Out> bucketize(std::vector<double> boundaries) {
  impl::check_elementwise<In, Out>();
  impl::check_numeric_input<In>();
  impl::check_integer_output<Out>();
  return bucketize_op<In, Out>(std::make_shared<const math::bucket_boundaries>(std::move(boundaries)));
}

//! The op of ops::log1p (see there).
template <column In, column Out>
struct log1p_op : impl::unary<In, Out> {
  static constexpr std::string_view name = "log1p";
  typename Out::value_type apply(typename In::value_type value) const {
    return static_cast<typename Out::value_type>(math::log1p_clamped(static_cast<double>(value)));
  }
  std::string describe() const { return "log1p(" + impl::arrow(In::name, Out::name) + ", negatives -> 0)"; }
};

//! @brief Out = log1p(max(In, 0)) (math::log1p_clamped): negatives and -inf clamp to 0, NaN stays
//! NaN, +inf stays +inf. Chain it before normalize in the same transform (NVTabular's
//! `LogOp >> Normalize`).
//! @code
//! RECPIPE_COLUMN(views, per_candidate, float);
//! RECPIPE_COLUMN(log_views, per_candidate, float);
//! auto t = recpipe::transform(recpipe::ops::log1p<views, log_views>());
//! @endcode
template <column In, column Out>
log1p_op<In, Out> log1p() {
  impl::check_elementwise<In, Out>();
  impl::check_numeric_input<In>();
  impl::check_float_output<Out>();
  return {};
}

//! The op of ops::cross (see there).
template <column A, column B, column Out>
struct cross_op : op_base {
  static_assert(impl::is_scalar_v<Out>, "recpipe: TRANSFORM_SHAPES_DIFFER - cross writes a per_request or per_candidate column");
  using first = A;
  using second = B;
  using output = Out;
  // A per_candidate cross walks the requests' candidate lists (to broadcast per-request values).
  using reads = std::conditional_t<Out::shape == column_shape::per_candidate,
                                   detail::list_union_t<columns<A, B>, columns<col::candidates>>, columns<A, B>>;
  using writes = columns<Out>;
  static constexpr std::string_view name = "cross";

  explicit cross_op(std::uint64_t buckets) : buckets_(buckets) {
    if (buckets == 0) detail::fail("ops::cross: buckets must be at least 1 (got 0)");
  }
  typename Out::value_type apply(typename A::value_type a, typename B::value_type b) const {
    return static_cast<typename Out::value_type>(
        math::hash_cross(static_cast<std::int64_t>(a), static_cast<std::int64_t>(b), buckets_));
  }
  std::uint64_t buckets() const noexcept { return buckets_; }
  std::string describe() const {
    return "cross(" + std::string(A::name) + " x " + std::string(B::name) + " -> " + std::string(Out::name) + ", " +
           std::to_string(buckets_) + " buckets)";
  }

 private:
  std::uint64_t buckets_;
};

namespace impl {
// A cross input is one value per request, one per candidate, or the candidate ids themselves.
template <class C>
inline constexpr bool cross_input_v = is_scalar_v<C> || std::is_same_v<C, col::candidates>;
template <class C>
inline constexpr bool per_candidate_input_v = C::shape == column_shape::per_candidate || std::is_same_v<C, col::candidates>;
}  // namespace impl

//! @brief The hash cross of two categorical columns: Out = math::hash_cross(a, b, buckets) in
//! [0, buckets). A and B are per_request, per_candidate or col::candidates; Out is per_request
//! when both are per_request, else per_candidate (a per_request value is paired with each of its
//! request's candidates). @throws recpipe::error when buckets is 0.
//! @code
//! RECPIPE_COLUMN(user_x_item, per_candidate, recpipe::id_type);
//! auto t = recpipe::transform(recpipe::ops::cross<recpipe::col::user_id, recpipe::col::candidates, user_x_item>(1'000'000));
//! @endcode
template <column A, column B, column Out>
cross_op<A, B, Out> cross(std::uint64_t buckets) {
  static_assert(impl::cross_input_v<A> && impl::cross_input_v<B>,
                "recpipe: TRANSFORM_CROSS_INPUT - cross reads per_request, per_candidate or col::candidates columns");
  static_assert(Out::shape == ((impl::per_candidate_input_v<A> || impl::per_candidate_input_v<B>)
                                   ? column_shape::per_candidate
                                   : column_shape::per_request),
                "recpipe: TRANSFORM_SHAPES_DIFFER - cross writes per_candidate when either input is per candidate, "
                "else per_request");
  impl::check_integer_input<A>();
  impl::check_integer_input<B>();
  impl::check_integer_output<Out>();
  return cross_op<A, B, Out>(buckets);
}

//! A store that count_encode / target_encode read: counts of a key and the global like rate
//! (math::count_table; train::online_features::user_counts() / item_counts()).
template <class S>
concept count_source = requires(const S& s, std::int64_t key) {
  { s.counts(key) } -> std::convertible_to<math::event_counts>;
  { s.prior() } -> std::convertible_to<double>;
};

//! The op of ops::count_encode (Target false) and ops::target_encode (Target true).
template <column Key, column Out, class Ref, bool Target>
struct store_encode_op : impl::unary<Key, Out> {
  using store_type = typename detail::component<Ref>::value_type;
  static constexpr std::string_view name = Target ? "target_encode" : "count_encode";

  template <class Arg>
  store_encode_op(Arg&& store, double smoothing) : store_(std::forward<Arg>(store)), smoothing_(smoothing) {
    if constexpr (Target) math::check_smoothing(smoothing, "ops::target_encode");
  }
  //! One value; for a whole column the stage reads prior() once (apply_with_prior).
  typename Out::value_type apply(typename Key::value_type key) const {
    return apply_with_prior(key, Target ? store_.get().prior() : 0.0);
  }
  typename Out::value_type apply_with_prior(typename Key::value_type key, double prior) const {
    const math::event_counts c = store_.get().counts(static_cast<std::int64_t>(key));
    if constexpr (Target)
      return static_cast<typename Out::value_type>(math::target_encoding(c, prior, smoothing_));
    else
      return static_cast<typename Out::value_type>(math::log_count(c.events));
  }
  const store_type& store() const { return store_.get(); }
  double smoothing() const noexcept { return smoothing_; }
  void pin_versions(detail::run_pins& pins) const { store_.pin(pins); }
  std::string describe() const {
    if constexpr (Target)
      return "target_encode(" + impl::arrow(Key::name, Out::name) + ", smoothing " + impl::number(smoothing_) + ")";
    else
      return "count_encode(" + impl::arrow(Key::name, Out::name) + ", log1p(events))";
  }

 private:
  detail::component<Ref> store_;
  double smoothing_;
};

namespace impl {
template <class Key, class Out>
constexpr void check_store_op() {
  check_elementwise<Key, Out>();
  check_integer_input<Key>();
  check_float_output<Out>();
  static_assert(is_scalar_v<Out>, "recpipe: TRANSFORM_SHAPES_DIFFER - count_encode and target_encode read one key per "
                                  "request or per candidate (per_request, per_candidate or col::candidates)");
}
}  // namespace impl

//! @brief The count feature of each key, read from a store: Out = math::log_count(events) =
//! log1p(events) (0 for a key never seen). The store (math::count_table, or
//! train::online_features::user_counts()) is held by reference (it must outlive the pipeline and
//! not change during a run), shared (`std::shared_ptr`), or through a recpipe::slot (each run
//! reads the version it pinned, so a trainer can publish new counts while serving).
//! @code
//! RECPIPE_COLUMN(item_popularity, per_candidate, float);
//! auto t = recpipe::transform(recpipe::ops::count_encode<recpipe::col::candidates, item_popularity>(item_counts));
//! @endcode
template <column Key, column Out, class Store>
  requires(!is_slot_v<Store> && !detail::is_shared_ptr_v<Store>)
store_encode_op<Key, Out, const Store&, false> count_encode(const Store& store) {
  static_assert(count_source<Store>, "recpipe: NOT_A_COUNT_SOURCE - count_encode reads a store with counts(key) and prior()");
  impl::check_store_op<Key, Out>();
  return store_encode_op<Key, Out, const Store&, false>(store, 0.0);
}
//! Shares ownership of the store.
template <column Key, column Out, class Store>
store_encode_op<Key, Out, std::shared_ptr<Store>, false> count_encode(std::shared_ptr<Store> store) {
  impl::check_store_op<Key, Out>();
  return store_encode_op<Key, Out, std::shared_ptr<Store>, false>(std::move(store), 0.0);
}
//! Reads the store version each run pinned.
template <column Key, column Out, class Store>
store_encode_op<Key, Out, slot<Store>, false> count_encode(const slot<Store>& store) {
  impl::check_store_op<Key, Out>();
  return store_encode_op<Key, Out, slot<Store>, false>(store, 0.0);
}
// READ THIS IF YOUR COMPILE BREAKS HERE: the op keeps a reference to the store; name it.
template <column Key, column Out, class Store>
  requires(!is_slot_v<Store> && !detail::is_shared_ptr_v<Store>)
void count_encode(const Store&& store) = delete;

//! @brief The target encoding of each key, read from a store: Out = math::target_encoding(
//! counts(key), prior(), smoothing) = (likes + m * prior) / (events + m), the like rate smoothed
//! towards the store's global rate (a key never seen gets the prior). Held as count_encode holds
//! its store. @throws recpipe::error when smoothing is negative or not finite.
//! @code
//! RECPIPE_COLUMN(user_rate, per_request, float);
//! auto t = recpipe::transform(recpipe::ops::target_encode<recpipe::col::user_id, user_rate>(features.user_counts(), 20.0));
//! @endcode
template <column Key, column Out, class Store>
  requires(!is_slot_v<Store> && !detail::is_shared_ptr_v<Store>)
store_encode_op<Key, Out, const Store&, true> target_encode(const Store& store, double smoothing) {
  static_assert(count_source<Store>, "recpipe: NOT_A_COUNT_SOURCE - target_encode reads a store with counts(key) and prior()");
  impl::check_store_op<Key, Out>();
  return store_encode_op<Key, Out, const Store&, true>(store, smoothing);
}
//! Shares ownership of the store.
template <column Key, column Out, class Store>
store_encode_op<Key, Out, std::shared_ptr<Store>, true> target_encode(std::shared_ptr<Store> store, double smoothing) {
  impl::check_store_op<Key, Out>();
  return store_encode_op<Key, Out, std::shared_ptr<Store>, true>(std::move(store), smoothing);
}
//! Reads the store version each run pinned.
template <column Key, column Out, class Store>
store_encode_op<Key, Out, slot<Store>, true> target_encode(const slot<Store>& store, double smoothing) {
  impl::check_store_op<Key, Out>();
  return store_encode_op<Key, Out, slot<Store>, true>(store, smoothing);
}
// READ THIS IF YOUR COMPILE BREAKS HERE: the op keeps a reference to the store; name it.
template <column Key, column Out, class Store>
  requires(!is_slot_v<Store> && !detail::is_shared_ptr_v<Store>)
void target_encode(const Store&& store, double smoothing) = delete;

}  // namespace ops

//! The description of a transform stage: its ops, run in order (see recpipe::transform).
template <class... Ops>
struct transform_stage : stage<transform_stage<Ops...>> {
  // An op may read what an earlier op of the same transform wrote (log1p then normalize).
  using reads = typename detail::pipeline_columns<type_list<>, type_list<>, Ops...>::reads;
  using writes = typename detail::pipeline_columns<type_list<>, type_list<>, Ops...>::writes;
  static constexpr std::string_view name = "transform";

  explicit transform_stage(Ops... ops) : ops_(std::move(ops)...) {}
  const std::tuple<Ops...>& ops() const noexcept { return ops_; }

  //! Pins the slots of the stores the ops read.
  void pin_versions(detail::run_pins& pins) const {
    std::apply(
        [&](const auto&... op) {
          (
              [&] {
                if constexpr (requires { op.pin_versions(pins); }) op.pin_versions(pins);
              }(),
              ...);
        },
        ops_);
  }
  //! @brief The ops, one per line ("categorify(user_id -> user_index, 3 values, unknown -> 0)"),
  //! as pipeline::describe() prints them.
  //! @code
  //! std::string text = recpipe::transform(recpipe::ops::log1p<views, log_views>()).describe_parameters();
  //! @endcode
  std::string describe_parameters() const {
    std::string out;
    std::apply([&](const auto&... op) { ((out += (out.empty() ? "" : "\n") + op.describe()), ...); }, ops_);
    return out;
  }

 private:
  std::tuple<Ops...> ops_;
};

//! @brief Feature engineering at serve time (NVTabular's TransformWorkflow, Merlin's
//! TransformWorkflow operator): runs `ops` in order, each reading its input columns and adding
//! its output column (an op may read what an earlier one wrote; an output that already exists is
//! replaced). The pipeline checks at compile time that every input column exists
//! (STAGE_READS_MISSING_COLUMN names it).
//!
//! Ops (namespace recpipe::ops; each value goes through the math/features.hpp rule the trainer
//! calls too): categorify (vocabulary; unknown -> 0), hash_bucket, cross, normalize, bucketize
//! (NaN -> its own bucket), log1p (negatives -> 0), count_encode and target_encode (from a
//! store). An empty batch gives empty columns. Cost: one pass over each input column per op.
//! @code
//! RECPIPE_COLUMN(user_bucket, per_request, recpipe::id_type);
//! RECPIPE_COLUMN(item_rate, per_candidate, float);
//! auto features = recpipe::transform(recpipe::ops::hash_bucket<recpipe::col::user_id, user_bucket>(100'000),
//!                                    recpipe::ops::target_encode<recpipe::col::candidates, item_rate>(item_counts, 20.0));
//! auto ranked = retrieval >> features >> recpipe::score(ranker) >> recpipe::top_k(10);
//! @endcode
template <class... Ops>
transform_stage<std::decay_t<Ops>...> transform(Ops&&... ops) {
  static_assert(sizeof...(Ops) > 0, "recpipe: EMPTY_TRANSFORM - transform() needs at least one recpipe::ops:: op");
  static_assert((ops::is_op_v<std::decay_t<Ops>> && ...),
                "recpipe: NOT_A_TRANSFORM_OP - transform() takes ops from namespace recpipe::ops (categorify, hash_bucket, "
                "cross, normalize, bucketize, log1p, count_encode, target_encode)");
  return transform_stage<std::decay_t<Ops>...>(std::forward<Ops>(ops)...);
}

RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
#include <recpipe/cpu/stages/transform.hpp>
