// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: approximate nearest-neighbour index over item vectors (adapter over hnswlib 0.6.2).
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <concepts>
#include <exception>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <queue>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/hnsw/file_format.hpp>
#include <recpipe/cpu/hnsw/hnswlib.hpp>
#include <recpipe/cpu/hnsw/io.hpp>
#include <recpipe/cpu/hnsw/mips.hpp>
#include <recpipe/cpu/hnsw/space.hpp>
#include <recpipe/cpu/hnsw/validate.hpp>
#include <recpipe/cpu/metric.hpp>
#include <recpipe/cpu/topk.hpp>
#include <recpipe/math/random.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! @brief Construction options of cpu::hnsw_index (use with designated initializers).
//!
//! The last four concern `metric::inner_product` only (see docs/retrieval.md, "Inner product").
//! By default the graph is built over the items reduced to L2 search: each item x is stored as
//! [x, sqrt(R^2 - |x|^2)], so every stored vector has norm R and the graph is built with a true
//! metric; searches still return the exact inner product. R (`max_norm`) is fixed once, at
//! construction or at the first add (`norm_headroom` x the largest norm of that add), because
//! every stored vector depends on it. An item added later with a norm above R is an "overflow":
//! it is still added and found (searches score it by its true inner product), but it is stored
//! with an extra coordinate of 0, so its graph links are built from a distorted distance and it
//! may be missed more often; `hnsw_index::norm_overflows()` counts them. When that count is more
//! than a small fraction of the index, rebuild it with a larger `max_norm` (or set
//! `reject_norm_overflow` to make such adds throw instead).
//! @code
//! recpipe::cpu::hnsw_index index(64, recpipe::metric::inner_product,
//!                                {.capacity = 100'000, .m = 32, .ef_construction = 200});
//! @endcode
struct hnsw_options {
  std::size_t capacity = 1024;        //!< elements allocated up front (grows automatically)
  std::size_t m = 16;                 //!< HNSW links per node (hnswlib's M), 2 .. 10000
  std::size_t ef_construction = 200;  //!< search width while inserting, >= 1
  std::uint64_t seed = 100;           //!< seed of the level generator
  //! Inner product: build the graph over augmented vectors (the L2 reduction, default) or over
  //! the raw vectors with the inner product as distance (hnswlib's own way; lower recall when
  //! item norms differ, e.g. 0.72 instead of 0.99 at k = 500 on the quickstart catalog).
  bool mips_reduction = true;
  //! R of the reduction, >= every item norm; 0 = `norm_headroom` x the largest norm of the first
  //! add that has a nonzero vector.
  float max_norm = 0;
  //! Room left for later items with longer vectors when R comes from the first add (>= 1).
  float norm_headroom = 1.25f;
  //! true: adding a vector longer than R throws recpipe::error (nothing is added) instead of
  //! adding it as an overflow.
  bool reject_norm_overflow = false;
};

//! @brief Approximate nearest-neighbour index over item vectors: an adapter over hnswlib 0.6.2's
//! HNSW graph that hides its `void*`/virtual API.
//!
//! - **Scores, higher is better**: `metric::inner_product` gives dot(q, x); `metric::l2` gives
//!   -||q - x||^2. Results are sorted by score descending, then id ascending.
//! - **Inner product** is searched, by default, through the reduction to L2 search (see
//!   `hnsw_options`): the graph is built over [x, sqrt(R^2 - |x|^2)], which keeps recall high when
//!   item norms differ; scores are still the exact dot(q, x).
//! - **Filtered search**: `search_filtered(query, k, allowed, ...)` returns the best k items for
//!   which `allowed(id)` is true, found inside the graph walk (hnswlib 0.8's filter-functor
//!   semantics; a `hnswlib::BaseFilterFunctor` works as `allowed`), and all of them when fewer
//!   than k exist.
//! - **Ids** are `recpipe::id_type` >= 0; negative ids are rejected. Adding an id that is already
//!   present replaces its vector (a removed id comes back): the old element is marked removed (a
//!   "tombstone" that keeps its slot, like `remove`) and the new vector gets a fresh slot, so a
//!   concurrent search never reads a half-written vector. Search never returns a removed id or an
//!   id that was not added.
//! - **Vectors** must have `dim()` finite values: NaN or infinity throws `recpipe::error` on add
//!   and on search (nothing is added).
//! - **Capacity** grows automatically (doubling); `reserve` avoids the regrowth for a known
//!   count. Removed items and replaced vectors keep their slots. At most 2^31 - 1 elements
//!   (hnswlib's 32-bit internal ids).
//! - **Threads**: every member function may be called from any number of threads at once.
//!   Searches (`search`, `search_batch`, `contains`, `size`) run *while* `add`, `remove` and
//!   `reserve` run: writers are serialised among themselves (one writer mutex; a batch `add` with
//!   `threads` > 1 inserts in parallel inside it) and insert with hnswlib's per-element link-list
//!   locks, which searches also take for the instant they copy one node's links. A search never
//!   waits for a whole insertion: the links of an element still being inserted are not followed
//!   (its vector is still scored). Growing the capacity builds the larger arrays while searches
//!   continue on the old ones, then swaps them under a brief exclusive lock that waits only for
//!   the searches in flight. Once `remove(id)` (or the `add` that replaces id's vector) has
//!   returned, no search that starts later returns the removed element. `save` blocks writers
//!   (not searches) while it copies the graph. The search width is a per-call argument
//!   (hnswlib's global setEf is never touched after construction), so concurrent searches with
//!   different `ef` do not interfere.
//! - **Errors**: hnswlib's exceptions become `recpipe::index_error`; bad files throw
//!   `recpipe::io_error` (see `save`/`load`).
//!
//! @code
//! recpipe::cpu::hnsw_index index(64, recpipe::metric::inner_product, 100000);
//! index.add(ids, item_vectors.view());                     // ids[i] <-> row i
//! std::vector<recpipe::id_type> out_ids(10);
//! std::vector<float> out_scores(10);
//! std::size_t n = index.search(query, 10, out_ids, out_scores);  // n = min(10, index.size())
//! index.save("items.hnsw");
//! auto again = recpipe::cpu::hnsw_index::load("items.hnsw");
//! @endcode
class hnsw_index {
 public:
  //! Default search width (hnswlib's `ef`); the effective width of a search is max(k, ef).
  static constexpr std::size_t default_ef = 64;

  //! @brief An empty index.
  //! @param dim              vector dimension, 1 .. 2^24.
  //! @param kind             the metric (see class comment for the score it yields).
  //! @param capacity         elements to allocate for up front (grows automatically).
  //! @param m                HNSW links per node (hnswlib's M), 2 .. 10000.
  //! @param ef_construction  search width while inserting, >= 1 (hnswlib uses max(ef_construction, M)).
  //! @param seed             seed of the level generator; a fixed seed and single-threaded adds
  //!                         give the same graph every time.
  //! @throws recpipe::error on an invalid argument, recpipe::index_error if allocation fails.
  //! @code
  //! recpipe::cpu::hnsw_index index(32, recpipe::metric::l2, 1000, 16, 200, 42);
  //! @endcode
  explicit hnsw_index(std::size_t dim, recpipe::metric kind = recpipe::metric::inner_product,
                      std::size_t capacity = 1024, std::size_t m = 16, std::size_t ef_construction = 200,
                      std::uint64_t seed = 100)
      : hnsw_index(dim, kind, hnsw_options{.capacity = capacity, .m = m, .ef_construction = ef_construction, .seed = seed}) {}

  //! @brief An empty index with the options of `hnsw_options` (MIPS reduction, max_norm, ...).
  //! @throws recpipe::error on an invalid option (max_norm < 0 or not finite, norm_headroom < 1).
  //! @code
  //! recpipe::cpu::hnsw_index index(64, recpipe::metric::inner_product, {.capacity = 100'000, .m = 32});
  //! @endcode
  hnsw_index(std::size_t dim, recpipe::metric kind, const hnsw_options& options) {
    check_parameters("hnsw_index", dim, kind, options.m, options.ef_construction);
    if (options.capacity > recpipe::detail::hnsw_max_elements)
      recpipe::detail::fail("hnsw_index: capacity ", options.capacity, " exceeds the limit ",
                            recpipe::detail::hnsw_max_elements);
    if (!std::isfinite(options.max_norm) || options.max_norm < 0)
      recpipe::detail::fail("hnsw_index: max_norm must be finite and >= 0 (got ", options.max_norm, ")");
    if (!std::isfinite(options.norm_headroom) || options.norm_headroom < 1)
      recpipe::detail::fail("hnsw_index: norm_headroom must be finite and >= 1 (got ", options.norm_headroom, ")");
    const bool mips = kind == recpipe::metric::inner_product && options.mips_reduction;
    state_ = std::make_unique<state>(dim, kind, options.m, options.ef_construction, options.seed, mips);
    state_->max_norm.store(options.max_norm, std::memory_order_relaxed);
    state_->norm_headroom = options.norm_headroom;
    state_->reject_norm_overflow = options.reject_norm_overflow;
    state_->graph = recpipe::detail::call_hnswlib("hnsw_index: construct", [&] {
      return std::make_unique<graph_type>(&state_->space, std::max<std::size_t>(options.capacity, 1), options.m,
                                          options.ef_construction, static_cast<std::size_t>(options.seed));
    });
    state_->graph->setEf(1);  // the real width is passed per call as k (see search)
  }

  hnsw_index(hnsw_index&&) noexcept = default;
  hnsw_index& operator=(hnsw_index&&) noexcept = default;
  ~hnsw_index() = default;

  //! Vector dimension. @code std::size_t d = index.dim(); @endcode
  std::size_t dim() const { return get("dim").dim; }
  //! The metric. @code if (index.metric() == recpipe::metric::l2) { ... } @endcode
  recpipe::metric metric() const { return get("metric").kind; }
  //! True when inner product is searched through the L2 reduction (`hnsw_options::mips_reduction`).
  //! @code bool reduced = index.mips_reduction(); @endcode
  bool mips_reduction() const { return get("mips_reduction").space.mips(); }
  //! R of the L2 reduction (0 until the first add fixes it, and for l2 or the direct graph).
  //! @code float r = index.max_norm(); @endcode
  float max_norm() const { return get("max_norm").max_norm.load(std::memory_order_acquire); }
  //! Items added with a norm above `max_norm()` since construction or load (see `hnsw_options`);
  //! when this is more than a small fraction of size(), rebuild with a larger max_norm.
  //! @code if (index.norm_overflows() > index.size() / 100) rebuild(); @endcode
  std::size_t norm_overflows() const { return get("norm_overflows").norm_overflows.load(std::memory_order_relaxed); }
  //! HNSW links per node (M). @code std::size_t m = index.m(); @endcode
  std::size_t m() const { return get("m").m; }
  //! Number of live (added and not removed) items. @code std::size_t n = index.size(); @endcode
  std::size_t size() const { return get("size").live.load(std::memory_order_acquire); }
  //! Elements the graph can hold before it grows (removed items still occupy a slot).
  //! @code index.reserve(index.capacity() * 2); @endcode
  std::size_t capacity() const {
    const state& s = get("capacity");
    const auto lock = s.mutex.shared();
    return s.graph->max_elements_;
  }
  //! True if `id` was added and not removed (false for negative ids).
  //! @code if (!index.contains(42)) index.add(42, vector); @endcode
  bool contains(id_type id) const {
    const state& s = get("contains");
    if (id < 0) return false;
    const auto lock = s.mutex.shared();
    graph_type& g = *s.graph;
    // Writers change label_lookup_ only under hnswlib's label map mutex (see add).
    const std::lock_guard guard(label_map_mutex(g));
    const auto found = g.label_lookup_.find(static_cast<hnswlib::labeltype>(id));
    return found != g.label_lookup_.end() && !is_deleted(g, found->second);
  }

  //! The default search width used by `search` without an explicit `ef`.
  //! @code index.set_ef(128); assert(index.ef() == 128); @endcode
  std::size_t ef() const { return get("ef").ef.load(std::memory_order_relaxed); }
  //! Sets the default search width (>= 1); safe while other threads search.
  //! @throws recpipe::error if ef == 0.
  void set_ef(std::size_t ef) {
    state& s = get("set_ef");
    if (ef == 0) recpipe::detail::fail("hnsw_index: set_ef: ef must be at least 1 (got 0)");
    s.ef.store(ef, std::memory_order_relaxed);
  }

  //! Makes room for `capacity` elements in total (never shrinks).
  //! @throws recpipe::error above 2^31 - 1, recpipe::index_error if allocation fails.
  //! @code index.reserve(1'000'000); @endcode
  void reserve(std::size_t capacity) {
    state& s = get("reserve");
    if (capacity > recpipe::detail::hnsw_max_elements)
      recpipe::detail::fail("hnsw_index: reserve: capacity ", capacity, " exceeds the limit ", recpipe::detail::hnsw_max_elements);
    const std::lock_guard writer(s.writer);
    grow_to_locked(s, capacity, "hnsw_index: reserve");
  }

  //! @brief Adds (or replaces) one item.
  //! @throws recpipe::error if id < 0, the vector's size is not dim() or it has NaN/inf.
  //! @code index.add(7, std::span<const float>(vector)); @endcode
  void add(id_type id, std::span<const float> vector) {
    state& s = get("add");
    recpipe::detail::check_index_id("hnsw_index: add", id);
    recpipe::detail::check_index_vector("hnsw_index: add", id, vector, s.dim);
    const std::lock_guard writer(s.writer);
    const float norm = s.space.mips() ? recpipe::detail::mips_norm(vector) : 0.0f;
    prepare_norms_locked(s, norm, "hnsw_index: add", id);
    grow_for_locked(s, 1, "hnsw_index: add");
    retire_label_locked(s, id);
    try {
      recpipe::detail::call_hnswlib("hnsw_index: add", [&] {
        insert_locked(s, stored_vector(s, vector), id, s.published.load(std::memory_order_relaxed));
      });
    } catch (...) {
      publish_locked(s);
      throw;
    }
    publish_locked(s);
  }

  //! @brief Adds (or replaces) many items: `ids[i]` gets row i of `vectors` (rows x dim()).
  //!
  //! Every id and row is checked before anything is added, so a bad batch changes nothing. With
  //! `threads` > 1 (0 = all hardware threads) the graph is built in parallel (recpipe's
  //! insertion, thread-safe like hnswlib's); the graph then depends on scheduling (results stay correct).
  //! If the insertion fails mid-batch (out of memory), the rows before the failure stay added.
  //! `progress(done, total)`, when given, is called after every 1% of the rows (and once at the
  //! end) from the inserting threads, one call at a time; it may print a progress line. An
  //! exception it throws stops the add like an hnswlib failure.
  //! @code
  //! index.add(ids, vectors.view(), 0, [](std::size_t done, std::size_t total) {
  //!   std::fprintf(stderr, "\rindexed %zu / %zu", done, total);
  //! });
  //! @endcode
  void add(std::span<const id_type> ids, matrix_view<const float> vectors, std::size_t threads = 1,
           const std::function<void(std::size_t done, std::size_t total)>& progress = {}) {
    state& s = get("add");
    if (ids.size() != vectors.rows())
      recpipe::detail::fail("hnsw_index: add: ", ids.size(), " ids but ", vectors.rows(), " vectors");
    if (vectors.rows() > 0 && vectors.cols() != s.dim)
      recpipe::detail::fail("hnsw_index: add: vectors have dimension ", vectors.cols(),
                            " but the index has dimension ", s.dim);
    float largest = 0;
    id_type longest = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      recpipe::detail::check_index_id("hnsw_index: add", ids[i]);
      recpipe::detail::check_index_vector("hnsw_index: add", ids[i], vectors.row(i), s.dim);
      if (s.space.mips()) {
        const float norm = recpipe::detail::mips_norm(vectors.row(i));
        if (norm > largest) {
          largest = norm;
          longest = ids[i];
        }
      }
    }
    if (ids.empty()) return;
    const std::lock_guard writer(s.writer);
    prepare_norms_locked(s, largest, "hnsw_index: add", longest);
    grow_for_locked(s, ids.size(), "hnsw_index: add");
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    threads = std::min(threads, ids.size());
    std::atomic<std::size_t> done{0};
    std::mutex progress_mutex;
    const std::size_t step = std::max<std::size_t>(1, ids.size() / 100);
    // `published` is every element whose insertion has finished (one at a time: all earlier ones;
    // in parallel: those from before the batch, as publishing waits for the batch to end).
    const auto insert = [&](std::size_t i) {
      insert_locked(s, stored_vector(s, vectors.row(i)), ids[i], s.published.load(std::memory_order_relaxed));
      if (progress) {
        const std::size_t now = done.fetch_add(1) + 1;
        if (now % step == 0 || now == ids.size()) {
          const std::lock_guard guard(progress_mutex);
          progress(done.load(), ids.size());  // read under the lock: the calls see increasing counts
        }
      }
    };
    if (threads <= 1) {
      // One at a time, each published as soon as it is linked (searches see it right away).
      try {
        recpipe::detail::call_hnswlib("hnsw_index: add", [&] {
          for (std::size_t i = 0; i < ids.size(); ++i) {
            retire_label_locked(s, ids[i]);
            insert(i);
            publish_locked(s);
          }
        });
      } catch (...) {
        publish_locked(s);
        throw;
      }
      return;
    }
    // Parallel: retire every replaced id first (hnswlib's in-place update would rewrite vectors
    // that searches read) and insert only the last row of an id that appears twice.
    std::vector<std::size_t> rows;
    rows.reserve(ids.size());
    {
      std::unordered_set<id_type> seen;
      for (std::size_t i = ids.size(); i-- > 0;)
        if (seen.insert(ids[i]).second) rows.push_back(i);
      std::reverse(rows.begin(), rows.end());
    }
    for (const std::size_t i : rows) retire_label_locked(s, ids[i]);
    threads = std::min(threads, rows.size());
    std::atomic<std::size_t> next{0};
    std::exception_ptr failure;
    std::mutex failure_mutex;
    const auto worker = [&] {
      try {
        recpipe::detail::call_hnswlib("hnsw_index: add", [&] {
          for (std::size_t j = next.fetch_add(1); j < rows.size(); j = next.fetch_add(1)) insert(rows[j]);
        });
      } catch (...) {
        next.store(rows.size());  // stop the other workers early
        std::lock_guard guard(failure_mutex);
        if (!failure) failure = std::current_exception();
      }
    };
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (auto& thread : pool) thread.join();
    publish_locked(s);
    if (failure) std::rethrow_exception(failure);
  }

  //! @brief Removes an item (hnswlib's markDelete): it is never returned again, though it keeps
  //! its slot and its links until the index is rebuilt. Adding the id again revives it.
  //! @return true if the id was present; false if unknown or already removed.
  //! @throws recpipe::error if id < 0.
  //! @code bool was_there = index.remove(7); @endcode
  bool remove(id_type id) {
    state& s = get("remove");
    recpipe::detail::check_index_id("hnsw_index: remove", id);
    const std::lock_guard writer(s.writer);
    graph_type& g = *s.graph;
    const auto found = g.label_lookup_.find(static_cast<hnswlib::labeltype>(id));  // only writers change it
    if (found == g.label_lookup_.end() || is_deleted(g, found->second)) return false;
    mark_deleted_locked(s, found->second);
    publish_locked(s);
    return true;
  }

  //! @brief The (approximately) best `k` items for `query`, best first.
  //!
  //! @param query       dim() finite values.
  //! @param k           results wanted; k == 0 returns 0; k > size() returns size().
  //! @param out_ids     receives the ids; must hold min(k, size()) entries.
  //! @param out_scores  receives the scores (see class comment); same size rule.
  //! @param ef          search width for this call (>= 1); the graph is searched with max(k, ef).
  //! @return exactly min(k, size()): when the graph walk finds fewer live items (possible after
  //!         many removals), the index falls back to scanning every live item.
  //! @throws recpipe::error on a dimension mismatch, a non-finite query value, ef == 0 or
  //!         outputs that are too small.
  //! Complexity: about O(max(k, ef) * M * log(n)) distance evaluations.
  //! @code
  //! std::size_t n = index.search(query, 10, out_ids, out_scores, 200);
  //! @endcode
  std::size_t search(std::span<const float> query, std::size_t k, std::span<id_type> out_ids,
                     std::span<float> out_scores, std::size_t ef) const {
    const state& s = get("search");
    recpipe::detail::check_index_query("hnsw_index: search", query, s.dim);
    if (ef == 0) recpipe::detail::fail("hnsw_index: search: ef must be at least 1 (got 0)");
    const auto lock = s.mutex.shared();
    const std::size_t count = std::min(k, s.live.load(std::memory_order_acquire));
    recpipe::detail::check_index_outputs("hnsw_index: search", out_ids.size(), out_scores.size(), count);
    return search_locked(s, query.data(), count, ef, out_ids, out_scores);
  }
  //! `search` with the index's default width `ef()`.
  //! @code std::size_t n = index.search(query, 10, out_ids, out_scores); @endcode
  std::size_t search(std::span<const float> query, std::size_t k, std::span<id_type> out_ids,
                     std::span<float> out_scores) const {
    return search(query, k, out_ids, out_scores, ef());
  }

  //! @brief The (approximately) best `k` items for `query` among those for which `allowed(id)`
  //! is true, best first.
  //!
  //! The filter runs inside the graph walk (hnswlib 0.8's filter-functor semantics): items that
  //! are not allowed are walked through but never kept, and the walk continues until it holds
  //! max(k, ef) allowed items or has seen the whole graph; if it found fewer than k, every live
  //! item is scanned. So the result has exactly min(k, allowed live items) entries: k whenever k
  //! allowed items exist, all of them otherwise, none (and no error) when nothing is allowed.
  //! `allowed` is called as `allowed(id)` with `id_type` ids, from the calling thread only; a
  //! `hnswlib::BaseFilterFunctor&` (hnswlib 0.8) fits as it is. A filter that rejects most items
  //! makes the search visit most of the graph (at worst a scan of the index).
  //! @param out_ids, out_scores  must hold min(k, size()) entries (the filter is not known up front).
  //! @return the number of results written.
  //! @throws recpipe::error as `search`.
  //! @code
  //! std::unordered_set<recpipe::id_type> seen = {3, 14, 15};
  //! std::size_t n = index.search_filtered(query, 10, [&](recpipe::id_type id) { return !seen.contains(id); },
  //!                                       out_ids, out_scores, 200);
  //! @endcode
  template <class Allowed>
    requires std::predicate<Allowed&, id_type>
  std::size_t search_filtered(std::span<const float> query, std::size_t k, Allowed&& allowed,
                              std::span<id_type> out_ids, std::span<float> out_scores, std::size_t ef) const {
    const state& s = get("search_filtered");
    recpipe::detail::check_index_query("hnsw_index: search_filtered", query, s.dim);
    if (ef == 0) recpipe::detail::fail("hnsw_index: search_filtered: ef must be at least 1 (got 0)");
    const auto lock = s.mutex.shared();
    const std::size_t count = std::min(k, s.live.load(std::memory_order_acquire));
    recpipe::detail::check_index_outputs("hnsw_index: search_filtered", out_ids.size(), out_scores.size(), count);
    return search_locked(s, query.data(), count, ef, out_ids, out_scores, allowed);
  }
  //! `search_filtered` with the index's default width `ef()`.
  //! @code std::size_t n = index.search_filtered(query, 10, allowed, out_ids, out_scores); @endcode
  template <class Allowed>
    requires std::predicate<Allowed&, id_type>
  std::size_t search_filtered(std::span<const float> query, std::size_t k, Allowed&& allowed,
                              std::span<id_type> out_ids, std::span<float> out_scores) const {
    return search_filtered(query, k, allowed, out_ids, out_scores, ef());
  }

  //! @brief `search` for every row of `queries` (rows x dim()), results in the matching rows of
  //! `out_ids`/`out_scores` (at least min(k, size()) columns each).
  //! @return the number of results in each row, min(k, size()).
  //! @code
  //! recpipe::matrix<recpipe::id_type> ids(queries.rows(), 10);
  //! recpipe::matrix<float> scores(queries.rows(), 10);
  //! std::size_t n = index.search_batch(queries.view(), 10, ids.view(), scores.view());
  //! @endcode
  std::size_t search_batch(matrix_view<const float> queries, std::size_t k, matrix_view<id_type> out_ids,
                           matrix_view<float> out_scores, std::size_t ef) const {
    const state& s = get("search_batch");
    if (ef == 0) recpipe::detail::fail("hnsw_index: search_batch: ef must be at least 1 (got 0)");
    for (std::size_t q = 0; q < queries.rows(); ++q)
      recpipe::detail::check_index_query("hnsw_index: search_batch", queries.row(q), s.dim);
    const auto lock = s.mutex.shared();
    const std::size_t count = std::min(k, s.live.load(std::memory_order_acquire));
    recpipe::detail::check_index_batch("hnsw_index: search_batch", queries, s.dim, out_ids, out_scores, count);
    for (std::size_t q = 0; q < queries.rows(); ++q)
      search_locked(s, queries.row(q).data(), count, ef, out_ids.row(q), out_scores.row(q));
    return count;
  }
  //! `search_batch` with the default width `ef()`.
  std::size_t search_batch(matrix_view<const float> queries, std::size_t k, matrix_view<id_type> out_ids,
                           matrix_view<float> out_scores) const {
    return search_batch(queries, k, out_ids, out_scores, ef());
  }

  //! @brief Writes the index to `path` (replacing it atomically via a temporary file next to it).
  //!
  //! Format (little-endian): an 80-byte header {magic "RECPHNSW", u32 version = 1, u32 metric,
  //! u64 dim, count, M, ef_construction, seed, body size, body checksum, header checksum}, then
  //! hnswlib 0.6.2's saveIndex body unchanged. See docs/retrieval.md.
  //! @throws recpipe::io_error if the file cannot be written.
  //! @code index.save("items.hnsw"); @endcode
  void save(const std::filesystem::path& path) const {
    const state& s = get("save");
    constexpr const char* component = "hnsw_index: save";
    const std::filesystem::path directory = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    const std::string stem = path.filename().string();
    std::error_code dir_error;
    if (stem.empty() || !std::filesystem::is_directory(directory, dir_error))
      recpipe::detail::fail<io_error>(component, ": cannot write '", path.string(),
                                      "': not a file name inside an existing directory");
    std::vector<unsigned char> file;
    {
      const std::lock_guard writer(const_cast<state&>(s).writer);  // a consistent graph: no insert in flight
      // hnswlib 0.6.2 only saves to a file name, so the body goes through a temporary file.
      const recpipe::detail::temp_file_guard body_file{recpipe::detail::unique_temp_path(directory, stem + ".body")};
      recpipe::detail::call_hnswlib(component, [&] { s.graph->saveIndex(body_file.path.string()); });
      std::vector<unsigned char> body = recpipe::detail::read_index_file(body_file.path, component);
      recpipe::detail::hnsw_file_header header;
      header.kind = s.space.mips() ? recpipe::detail::hnsw_kind_inner_product_l2 : static_cast<std::uint32_t>(s.kind);
      header.dim = s.dim;
      header.count = s.graph->cur_element_count;
      header.m = s.m;
      header.ef_construction = s.ef_construction;
      header.seed = s.seed;
      header.body_size = body.size();
      header.body_checksum = recpipe::detail::index_checksum(body.data(), body.size());
      // saveIndex does not report write errors: re-validating catches a short or bad write.
      try {
        recpipe::detail::validate_hnsw_body(body.data(), body.size(), header, body_file.path.string());
      } catch (const io_error& e) {
        recpipe::detail::fail<io_error>(component, ": hnswlib wrote an unreadable body for '", path.string(),
                                        "' (", e.what(), ")");
      }
      file.resize(recpipe::detail::hnsw_file_header::size + body.size());
      header.write(file.data());
      std::memcpy(file.data() + recpipe::detail::hnsw_file_header::size, body.data(), body.size());
    }
    const recpipe::detail::temp_file_guard staged{recpipe::detail::unique_temp_path(directory, stem)};
    recpipe::detail::write_index_file(staged.path, file.data(), file.size(), component);
    std::error_code ec;
    std::filesystem::rename(staged.path, path, ec);
    if (ec) recpipe::detail::fail<io_error>(component, ": cannot replace '", path.string(), "': ", ec.message());
  }

  //! @brief Reads an index written by `save`.
  //!
  //! The header (magic, version, header checksum, sizes against the real file size), the body
  //! checksum and the structure of the whole hnswlib body (layout, counts, the entry point and
  //! its level, every element's level, link counts, every link and the level of its target,
  //! finite vectors, unique ids) are validated before hnswlib parses anything, so truncated,
  //! corrupt or hostile files throw instead of crashing, and a file that loads cannot make a
  //! later add, remove or search read out of bounds. Live items that no link path from the entry
  //! point reaches get a link from a close reachable item after loading (or, when no close item
  //! has a free link slot, are re-inserted, leaving a removed tombstone), so the graph reaches
  //! every live item. hnswlib 0.6.2 only loads from a file name, so the validated body goes through
  //! a temporary file in the system temp directory. The default search width of the result is
  //! `default_ef`.
  //! @throws recpipe::io_error naming the file and the problem; recpipe::index_error if hnswlib fails.
  //! @code auto index = recpipe::cpu::hnsw_index::load("items.hnsw"); @endcode
  static hnsw_index load(const std::filesystem::path& path) {
    constexpr const char* component = "hnsw_index: load";
    const std::string name = path.string();
    const std::vector<unsigned char> file = recpipe::detail::read_index_file(path, component);
    if (file.size() < recpipe::detail::hnsw_file_header::size)
      recpipe::detail::fail<io_error>(component, ": '", name, "' is truncated: ", file.size(),
                                      " bytes, but the header alone needs ", recpipe::detail::hnsw_file_header::size);
    const recpipe::detail::hnsw_file_header h = recpipe::detail::hnsw_file_header::read(file.data(), name);
    const std::size_t body_size = file.size() - recpipe::detail::hnsw_file_header::size;
    if (h.body_size != body_size)
      recpipe::detail::fail<io_error>(component, ": '", name, "' is truncated or has extra bytes: the header announces a ",
                                      h.body_size, "-byte body but ", body_size, " bytes follow it");
    const unsigned char* body = file.data() + recpipe::detail::hnsw_file_header::size;
    if (recpipe::detail::index_checksum(body, body_size) != h.body_checksum)
      recpipe::detail::fail<io_error>(component, ": '", name, "': body checksum mismatch (the file is corrupt)");
    const bool mips = h.kind == recpipe::detail::hnsw_kind_inner_product_l2;
    const auto kind = mips ? recpipe::metric::inner_product : static_cast<recpipe::metric>(h.kind);
    try {
      check_parameters(component, h.dim, kind, h.m, h.ef_construction);
    } catch (const io_error&) {
      throw;
    } catch (const recpipe::error& e) {
      recpipe::detail::fail<io_error>(component, ": '", name, "' has an invalid header (", e.what(), ")");
    }
    std::vector<std::uint32_t> unreachable;
    const std::size_t deleted = recpipe::detail::validate_hnsw_body(body, body_size, h, name, &unreachable);

    hnsw_index index(private_tag{});
    index.state_ = std::make_unique<state>(h.dim, kind, h.m, h.ef_construction, h.seed, mips);
    state& s = *index.state_;
    std::error_code temp_error;
    const std::filesystem::path temp_directory = std::filesystem::temp_directory_path(temp_error);
    if (temp_error)
      recpipe::detail::fail<io_error>(component, ": no temporary directory to stage '", name, "': ",
                                      temp_error.message());
    const recpipe::detail::temp_file_guard body_file{
        recpipe::detail::unique_temp_path(temp_directory, "recpipe-hnsw-load")};
    recpipe::detail::write_index_file(body_file.path, body, body_size, component);
    s.graph = recpipe::detail::call_hnswlib(component, [&] { return std::make_unique<graph_type>(&s.space); });
    graph_type& g = *s.graph;
    // The loading constructor leaves these uninitialised; set them so that the destructor is safe
    // even if loadIndex throws, and so num_deleted_ starts from 0 (hnswlib adds to it).
    g.data_level0_memory_ = nullptr;
    g.linkLists_ = nullptr;
    g.visited_list_pool_ = nullptr;
    g.cur_element_count = 0;
    g.num_deleted_ = 0;
    try {
      recpipe::detail::call_hnswlib(component, [&] {
        g.loadIndex(body_file.path.string(), &s.space, std::max<std::size_t>(h.count, 1));
      });
    } catch (...) {
      g.cur_element_count = 0;  // the per-element link lists may be half-built: leak, do not free
      throw;
    }
    g.num_deleted_ = deleted;
    if (mips)  // R is not in the file: every element within R has augmented norm R (hnsw/mips.hpp)
      s.max_norm.store(recpipe::detail::mips_recover_max_norm(
                           [&](std::size_t i) {
                             return reinterpret_cast<const float*>(
                                 g.getDataByInternalId(static_cast<hnswlib::tableint>(i)));
                           },
                           s.space.stored_dim(), g.cur_element_count),
                       std::memory_order_release);
    publish_locked(s);
    g.setEf(1);
    // Live items that no link path from the entry point reaches (a hostile file; also hnswlib's
    // neighbour pruning can leave a few) would be found only by the search's full-scan fallback:
    // link each from a close reachable element (reconnect_locked).
    if (!unreachable.empty()) {
      recpipe::detail::call_hnswlib(component, [&] {
        for (const std::uint32_t element : unreachable) reconnect_locked(s, element);
      });
      publish_locked(s);
    }
    return index;
  }

 private:
  using graph_type = hnswlib::HierarchicalNSW<float>;
  struct private_tag {};

  struct state {
    state(std::size_t d, recpipe::metric k, std::size_t links, std::size_t efc, std::uint64_t s, bool mips)
        : space(d, k, mips), dim(d), kind(k), m(links), ef_construction(efc), seed(s) {}
    recpipe::detail::hnsw_space space;  // declared before graph: the graph points into it
    std::unique_ptr<graph_type> graph;
    std::size_t dim;
    recpipe::metric kind;
    std::size_t m, ef_construction;
    std::uint64_t seed;
    std::atomic<std::size_t> ef{default_ef};
    // The L2 reduction of inner product (hnsw/mips.hpp): R, fixed by the first add when it was not
    // given; written under the writer mutex, read by accessors.
    std::atomic<float> max_norm{0};
    float norm_headroom = 1.25f;
    bool reject_norm_overflow = false;
    std::atomic<std::size_t> norm_overflows{0};
    // Shared by searches; exclusive only for the instant a capacity growth swaps the arrays.
    recpipe::detail::index_mutex mutex;
    // Serialises add, remove, reserve and save (one writer at a time).
    std::mutex writer;
    // What searches read instead of hnswlib's plain fields, which writers change while they run
    // (published by publish_locked after each insertion or removal):
    std::atomic<std::size_t> live{0};       // live items (added, not removed)
    std::atomic<std::size_t> published{0};  // elements whose insertion has finished
    std::atomic<std::uint64_t> entry{no_entry};  // (max level << 32) | entry element
  };
  static constexpr std::uint64_t no_entry = ~std::uint64_t{0};

  explicit hnsw_index(private_tag) {}

  static void check_parameters(const char* component, std::size_t dim, recpipe::metric kind, std::size_t m,
                               std::size_t ef_construction) {
    if (dim == 0 || dim > recpipe::detail::hnsw_max_dim)
      recpipe::detail::fail(component, ": dim must be in [1, ", recpipe::detail::hnsw_max_dim, "] (got ", dim, ")");
    if (!is_valid_metric(kind))
      recpipe::detail::fail(component, ": unknown metric ", static_cast<std::uint32_t>(kind));
    if (m < 2 || m > recpipe::detail::hnsw_max_m)
      recpipe::detail::fail(component, ": M must be in [2, ", recpipe::detail::hnsw_max_m, "] (got ", m, ")");
    if (ef_construction == 0) recpipe::detail::fail(component, ": ef_construction must be at least 1 (got 0)");
  }

  // Before an add under the writer mutex: fixes R from the add's largest norm if it is not fixed
  // yet, then rejects (option) or counts the add's rows that are longer than R. Throws before
  // anything is added.
  static void prepare_norms_locked(state& s, float largest, const char* component, id_type longest) {
    if (!s.space.mips()) return;
    float r = s.max_norm.load(std::memory_order_relaxed);
    if (r == 0 && largest > 0) {
      r = largest * s.norm_headroom;
      s.max_norm.store(r, std::memory_order_release);
    }
    if (largest > r && s.reject_norm_overflow)
      recpipe::detail::fail(component, ": id ", longest, " has norm ", largest, ", above the index's max_norm ", r,
                            " (hnsw_options::reject_norm_overflow); rebuild the index with a larger max_norm");
  }
  // What hnswlib stores for `vector`: the vector itself, or with the L2 reduction the augmented
  // copy in a per-thread buffer (addPoint copies it). Counts overflows.
  static const float* stored_vector(state& s, std::span<const float> vector) {
    if (!s.space.mips()) return vector.data();
    thread_local std::vector<float> augmented;
    augmented.resize(s.space.stored_dim());
    if (!recpipe::detail::mips_augment(vector, s.max_norm.load(std::memory_order_relaxed), augmented.data()))
      s.norm_overflows.fetch_add(1, std::memory_order_relaxed);
    return augmented.data();
  }

  state& get(const char* what) {
    if (!state_) recpipe::detail::fail("hnsw_index: ", what, ": the index was moved from");
    return *state_;
  }
  const state& get(const char* what) const {
    if (!state_) recpipe::detail::fail("hnsw_index: ", what, ": the index was moved from");
    return *state_;
  }

  // The delete mark lives in byte 2 of an element's level-0 link-list header. Searches read it
  // while writers set it, so both sides access it atomically (hnswlib's own accesses happen only
  // inside writers, which are serialised, or before the element is linked).
  static std::atomic_ref<unsigned char> delete_mark(const graph_type& g, hnswlib::tableint i) {
    return std::atomic_ref<unsigned char>(*(reinterpret_cast<unsigned char*>(g.get_linklist0(i)) + 2));
  }
  static bool is_deleted(const graph_type& g, hnswlib::tableint i) {
    return (delete_mark(g, i).load(std::memory_order_acquire) & graph_type::DELETE_MARK) != 0;
  }
  // Caller holds the writer mutex; the element is live.
  static void mark_deleted_locked(state& s, hnswlib::tableint i) {
    delete_mark(*s.graph, i).fetch_or(graph_type::DELETE_MARK, std::memory_order_release);
    ++s.graph->num_deleted_;
  }
  // Before (re-)adding `id`: its current element, if any, becomes a removed tombstone and the id
  // leaves hnswlib's label map, so addPoint gives it a fresh element instead of rewriting the old
  // vector in place (hnswlib's updatePoint) while searches read it. Caller holds the writer mutex.
  // hnswlib 0.6 (Debian 12) guards label_lookup_ with cur_element_count_guard_ and holds the
  // visited-list pool by raw pointer; 0.8 (vcpkg, Conan Center) names the mutex label_lookup_lock
  // and holds the pool in a unique_ptr. These two helpers let the index build against both.
  template <class Graph>
  static std::mutex& label_map_mutex(Graph& g) {
    if constexpr (requires { g.label_lookup_lock; })
      return g.label_lookup_lock;
    else
      return g.cur_element_count_guard_;
  }
  template <class Graph>
  static std::unique_ptr<hnswlib::VisitedListPool> swap_visited_pool(Graph& g,
                                                                     std::unique_ptr<hnswlib::VisitedListPool> pool) {
    if constexpr (requires { g.visited_list_pool_.release(); }) {
      std::swap(g.visited_list_pool_, pool);
      return pool;
    } else {
      return std::unique_ptr<hnswlib::VisitedListPool>(std::exchange(g.visited_list_pool_, pool.release()));
    }
  }
  static void retire_label_locked(state& s, id_type id) {
    graph_type& g = *s.graph;
    const auto found = g.label_lookup_.find(static_cast<hnswlib::labeltype>(id));
    if (found == g.label_lookup_.end()) return;
    if (!is_deleted(g, found->second)) mark_deleted_locked(s, found->second);
    const std::lock_guard guard(label_map_mutex(g));  // contains() reads the map under it
    g.label_lookup_.erase(found);
  }
  // Makes the writer's changes visible to searches. Caller holds the writer mutex (or owns the
  // index). Order matters: `published` before `entry`, which searches read in the other order, so
  // a search never starts from an entry element it considers unfinished.
  static void publish_locked(state& s) {
    const graph_type& g = *s.graph;
    s.published.store(g.cur_element_count, std::memory_order_release);
    s.entry.store(g.cur_element_count == 0 ? no_entry
                                           : (static_cast<std::uint64_t>(g.maxlevel_) << 32) | g.enterpoint_node_,
                  std::memory_order_release);
    s.live.store(g.cur_element_count - g.num_deleted_, std::memory_order_release);
  }

  // The level of element `element`: hnswlib's distribution floor(-ln(u) / ln(M)), with u drawn
  // from (seed, element) by a counter-based generator instead of hnswlib's shared
  // level_generator_, which parallel insertions would race on. A fixed seed and one-at-a-time
  // adds still give the same graph every time, also after save and load.
  static int draw_level(const state& s, std::size_t element) {
    const double u = recpipe::math::uniform_open01(s.seed, element);
    return std::min(static_cast<int>(-std::log(u) * s.graph->mult_), recpipe::detail::hnsw_max_level);
  }

  // Links a new element for `id` (not in the label map: retire_label_locked ran) into the graph.
  // hnswlib's addPoint, rewritten so that no state of the graph can make it fail:
  // - a level search whose reachable part holds only removed elements returns no candidate, and
  //   hnswlib would read the last of zero selected neighbours (heap overflow); here the element
  //   is then linked to the closest live elements on that level found by a scan of the finished
  //   elements, or to the element the search started from when none is live;
  // - the level comes from draw_level, not hnswlib's shared generator (a data race in parallel);
  // - lock order: hnswlib's `global` (held only by an insertion that raises the top level) is
  //   taken before the new element's link lock, never after, so every thread takes `global`, then
  //   its new element's lock, then locks of older elements (hnswlib locks the other way round,
  //   which ThreadSanitizer reports as a lock-order inversion).
  // `finished`: elements below it are complete (their vectors, levels and links are final or
  // only change under their link locks). Caller holds the writer mutex; several threads of one
  // batch may call this at once for distinct ids.
  static void insert_locked(state& s, const float* vector, id_type id, std::size_t finished) {
    graph_type& g = *s.graph;
    using queue = std::priority_queue<std::pair<float, hnswlib::tableint>,
                                      std::vector<std::pair<float, hnswlib::tableint>>, graph_type::CompareByFirst>;
    const auto label = static_cast<hnswlib::labeltype>(id);
    hnswlib::tableint element = 0;
    {
      const std::lock_guard guard(label_map_mutex(g));
      if (g.cur_element_count >= g.max_elements_) throw std::runtime_error("the index is full");
      element = static_cast<hnswlib::tableint>(g.cur_element_count);
      // Vector, label and empty level-0 links first, so that a failure below leaves a complete,
      // unlinked element that only needs its delete mark.
      std::memset(g.data_level0_memory_ + element * g.size_data_per_element_ + g.offsetLevel0_, 0,
                  g.size_data_per_element_);
      std::memcpy(g.getExternalLabeLp(element), &label, sizeof(label));
      std::memcpy(g.getDataByInternalId(element), vector, g.data_size_);
      g.element_levels_[element] = 0;
      g.cur_element_count = element + 1;
      g.label_lookup_[label] = element;
    }
    const int level = draw_level(s, element);
    std::unique_lock top(g.global);
    const int max_level = g.maxlevel_;
    const hnswlib::tableint entry = g.enterpoint_node_;
    if (level <= max_level) top.unlock();
    const std::lock_guard own(g.link_list_locks_[element]);
    try {
      if (level > 0) {
        const std::size_t bytes = g.size_links_per_element_ * static_cast<std::size_t>(level) + 1;
        g.linkLists_[element] = static_cast<char*>(std::malloc(bytes));
        if (g.linkLists_[element] == nullptr) throw std::bad_alloc();
        std::memset(g.linkLists_[element], 0, bytes);
        g.element_levels_[element] = level;
      }
      if (max_level >= 0) {
        hnswlib::tableint current = descend(s, vector, entry, max_level, level);
        const bool entry_deleted = is_deleted(g, entry);
        for (int l = std::min(level, max_level); l >= 0; --l) {
          queue candidates = g.searchBaseLayer(current, vector, l);
          if (entry_deleted) {  // as hnswlib: keep a removed entry point linked
            candidates.emplace(s.space.graph_distance(vector, reinterpret_cast<const float*>(g.getDataByInternalId(entry))), entry);
            if (candidates.size() > g.ef_construction_) candidates.pop();
          }
          if (candidates.empty()) candidates = scan_candidates(s, vector, l, finished, current);
          current = g.mutuallyConnectNewElement(vector, element, candidates, l, false);
        }
      }
    } catch (...) {
      // Unlinked (a neighbour may link back to it: then it stays a valid, removed element).
      if (!is_deleted(g, element)) mark_deleted_locked(s, element);
      throw;
    }
    if (level > max_level) {  // the new top: `top` still holds hnswlib's global lock
      g.enterpoint_node_ = element;
      g.maxlevel_ = level;
    }
  }

  // hnswlib's greedy descent: from `current` on level `from`, the closest element reachable by
  // moving to a closer neighbour on each level above `to`.
  static hnswlib::tableint descend(const state& s, const float* vector, hnswlib::tableint current, int from, int to) {
    graph_type& g = *s.graph;
    float current_distance = s.space.graph_distance(vector, reinterpret_cast<const float*>(g.getDataByInternalId(current)));
    for (int l = from; l > to; --l) {
      for (bool moved = true; moved;) {
        moved = false;
        const std::lock_guard guard(g.link_list_locks_[current]);
        const hnswlib::linklistsizeint* list = g.get_linklist(current, l);
        const hnswlib::tableint* links = reinterpret_cast<const hnswlib::tableint*>(list + 1);
        for (std::size_t j = 0, n = g.getListCount(const_cast<hnswlib::linklistsizeint*>(list)); j < n; ++j) {
          const float d = s.space.graph_distance(vector, reinterpret_cast<const float*>(g.getDataByInternalId(links[j])));
          if (d < current_distance) {
            current_distance = d;
            current = links[j];
            moved = true;
          }
        }
      }
    }
    return current;
  }

  // Makes the live `element`, which no link path from the entry point reaches, reachable: its
  // vector's level-0 search (from the entry point, so over reachable elements only) lists the
  // closest live elements, and the closest with a free level-0 slot gets a link to it. Appending
  // into a free slot prunes nothing, so no other element loses its last in-link (a fresh
  // insertion could cause that) and a graph repaired once needs no repair at the next load.
  // Only when none of them has a free slot is the item re-inserted (the old element becomes a
  // removed tombstone). Caller owns the index (load).
  static void reconnect_locked(state& s, hnswlib::tableint element) {
    graph_type& g = *s.graph;
    const auto* vector = reinterpret_cast<const float*>(g.getDataByInternalId(element));
    auto candidates = g.searchBaseLayer(descend(s, vector, g.enterpoint_node_, g.maxlevel_, 0), vector, 0);
    std::vector<std::pair<float, hnswlib::tableint>> closest;
    for (; !candidates.empty(); candidates.pop()) closest.push_back(candidates.top());
    std::sort(closest.begin(), closest.end());
    for (const auto& [distance, other] : closest) {
      hnswlib::linklistsizeint* list = g.get_linklist0(other);
      const std::size_t n = g.getListCount(list);
      if (other == element || n >= g.maxM0_) continue;
      reinterpret_cast<hnswlib::tableint*>(list + 1)[n] = element;
      g.setListCount(list, static_cast<unsigned short>(n + 1));
      return;
    }
    const auto id = static_cast<id_type>(g.getExternalLabel(element));
    const std::vector<float> copy(vector, vector + s.space.stored_dim());  // augmented with the L2 reduction
    grow_for_locked(s, 1, "hnsw_index: load");
    retire_label_locked(s, id);
    insert_locked(s, copy.data(), id, g.cur_element_count);
  }

  // The insertion's fallback when the graph walk on `level` found no live element: the
  // ef_construction closest live finished elements on that level (a scan, only in this
  // degenerate state), else `start` (on that level, removed).
  template <class Queue = std::priority_queue<std::pair<float, hnswlib::tableint>,
                                              std::vector<std::pair<float, hnswlib::tableint>>,
                                              graph_type::CompareByFirst>>
  static Queue scan_candidates(const state& s, const float* vector, int level, std::size_t finished,
                               hnswlib::tableint start) {
    const graph_type& g = *s.graph;
    Queue best;  // worst on top
    for (hnswlib::tableint i = 0; i < finished; ++i) {
      if (g.element_levels_[i] < level || is_deleted(g, i)) continue;
      const float d = s.space.graph_distance(vector, reinterpret_cast<const float*>(g.getDataByInternalId(i)));
      if (best.size() < g.ef_construction_) {
        best.emplace(d, i);
      } else if (d < best.top().first) {
        best.pop();
        best.emplace(d, i);
      }
    }
    if (best.empty())
      best.emplace(s.space.graph_distance(vector, reinterpret_cast<const float*>(g.getDataByInternalId(start))), start);
    return best;
  }

  // Grows (doubling) so that `extra` new elements fit. Caller holds the writer mutex.
  static void grow_for_locked(state& s, std::size_t extra, const char* component) {
    graph_type& g = *s.graph;
    if (extra > recpipe::detail::hnsw_max_elements - g.cur_element_count)
      recpipe::detail::fail(component, ": ", g.cur_element_count, " + ", extra, " elements exceed the limit ",
                            recpipe::detail::hnsw_max_elements);
    const std::size_t needed = g.cur_element_count + extra;
    if (needed <= g.max_elements_) return;
    const std::size_t doubled = g.max_elements_ > recpipe::detail::hnsw_max_elements / 2 ? recpipe::detail::hnsw_max_elements
                                                                                : 2 * g.max_elements_;
    grow_to_locked(s, std::max(needed, doubled), component);
  }

  // hnswlib's resizeIndex, split so that searches keep running during the copy: the larger
  // arrays are allocated and filled while searches read the old ones (they only read them, and
  // no writer runs: the caller holds the writer mutex), then swapped in under the exclusive lock,
  // which therefore lasts as long as the searches in flight plus a few pointer swaps.
  static void grow_to_locked(state& s, std::size_t capacity, const char* component) {
    graph_type& g = *s.graph;
    if (capacity <= g.max_elements_) return;
    struct free_deleter {
      void operator()(void* p) const noexcept { std::free(p); }
    };
    std::unique_ptr<char, free_deleter> data;
    std::unique_ptr<char*, free_deleter> lists;
    std::unique_ptr<hnswlib::VisitedListPool> pool;
    std::vector<int> levels;
    std::vector<std::mutex> locks;
    recpipe::detail::call_hnswlib(component, [&] {
      data.reset(static_cast<char*>(std::malloc(capacity * g.size_data_per_element_)));
      lists.reset(static_cast<char**>(std::malloc(capacity * sizeof(char*))));
      if (!data || !lists) throw std::bad_alloc();
      pool = std::make_unique<hnswlib::VisitedListPool>(1, static_cast<int>(capacity));
      levels.assign(g.element_levels_.begin(), g.element_levels_.begin() + static_cast<std::ptrdiff_t>(g.cur_element_count));
      levels.resize(capacity, 0);
      std::vector<std::mutex>(capacity).swap(locks);
    });
    std::memcpy(data.get(), g.data_level0_memory_, g.cur_element_count * g.size_data_per_element_);
    if (g.cur_element_count > 0) std::memcpy(lists.get(), g.linkLists_, g.cur_element_count * sizeof(char*));
    char* old_data = nullptr;
    char** old_lists = nullptr;
    std::unique_ptr<hnswlib::VisitedListPool> old_pool;
    {
      const auto lock = s.mutex.exclusive();
      old_data = std::exchange(g.data_level0_memory_, data.release());
      old_lists = std::exchange(g.linkLists_, lists.release());
      old_pool = swap_visited_pool(g, std::move(pool));
      g.element_levels_.swap(levels);
      g.link_list_locks_.swap(locks);
      g.max_elements_ = capacity;
    }
    std::free(old_data);
    std::free(old_lists);
    old_pool.reset();
  }

  // Copies the links of `node` at `level` under its hnswlib link-list lock (the lock writers hold
  // while they change that list), so the search never reads a list being rewritten.
  static std::size_t copy_links(const graph_type& g, hnswlib::tableint node, int level, hnswlib::tableint* out) {
    const std::lock_guard guard(const_cast<graph_type&>(g).link_list_locks_[node]);
    const hnswlib::linklistsizeint* list = level == 0 ? g.get_linklist0(node) : g.get_linklist(node, level);
    const std::size_t n = g.getListCount(const_cast<hnswlib::linklistsizeint*>(list));
    std::memcpy(out, list + 1, n * sizeof(hnswlib::tableint));
    return n;
  }

  // hnswlib's searchKnn, rewritten so that it can run during insertions and removals: links are
  // copied under the per-element locks (copy_links), delete marks are read atomically, the entry
  // point and counts come from the atomics publish_locked writes, and an element whose insertion
  // has not finished (id >= published) is scored but its links are not followed (its own list is
  // being written under a lock its inserter holds for the whole insertion). Without concurrent
  // writers it visits exactly what searchKnn visits. Caller holds the shared lock; count =
  // min(k, live) and the outputs hold count entries.
  //
  // With a filter (`allowed`, not no_filter) an element that is not allowed is walked through but
  // never kept, exactly like a removed one (hnswlib 0.8's isIdAllowed), so the walk goes on until
  // it holds `width` allowed items or runs out of graph; the scan fallback applies the filter too.
  struct no_filter {};
  template <class Allowed = no_filter>
  static std::size_t search_locked(const state& s, const float* query, std::size_t count, std::size_t ef,
                                   std::span<id_type> out_ids, std::span<float> out_scores,
                                   Allowed&& allowed = no_filter{}) {
    constexpr bool filtered = !std::is_same_v<std::remove_cvref_t<Allowed>, no_filter>;
    if (count == 0) return 0;
    const std::uint64_t entry = s.entry.load(std::memory_order_acquire);
    const std::size_t published = s.published.load(std::memory_order_acquire);
    if (entry == no_entry) return 0;
    const bool has_deletions = filtered || s.live.load(std::memory_order_acquire) < published;
    const graph_type& g = *s.graph;
    // Keep element i in the results: live and (with a filter) allowed.
    const auto keep = [&](hnswlib::tableint i) -> bool {
      if (is_deleted(g, i)) return false;
      if constexpr (filtered)
        return static_cast<bool>(allowed(static_cast<id_type>(g.getExternalLabel(i))));
      else
        return true;
    };
    const auto distance = [&](hnswlib::tableint i) {
      return s.space.distance(query, reinterpret_cast<const float*>(g.getDataByInternalId(i)));
    };

    struct scratch {
      std::vector<std::uint32_t> visited;  // visited[i] == tag: seen in this search
      std::uint32_t tag = 0;
      std::vector<hnswlib::tableint> links;
    };
    thread_local scratch sc;
    if (sc.visited.size() < g.max_elements_) {
      sc.visited.assign(g.max_elements_, 0);
      sc.tag = 0;
    }
    if (++sc.tag == 0) {
      std::fill(sc.visited.begin(), sc.visited.end(), 0);
      sc.tag = 1;
    }
    sc.links.resize(std::max(g.maxM0_, g.maxM_));
    hnswlib::tableint* links = sc.links.data();

    // Greedy descent through the upper levels.
    auto current = static_cast<hnswlib::tableint>(entry & 0xffffffffu);
    float current_distance = distance(current);
    for (int level = static_cast<int>(entry >> 32); level > 0; --level) {
      for (bool moved = true; moved;) {
        moved = false;
        const std::size_t n = copy_links(g, current, level, links);
        for (std::size_t j = 0; j < n; ++j) {
          if (links[j] >= published) continue;  // still being inserted: do not walk into it
          const float d = distance(links[j]);
          if (d < current_distance) {
            current_distance = d;
            current = links[j];
            moved = true;
          }
        }
      }
    }

    // Beam search of width max(count, ef) on level 0 (hnswlib's searchBaseLayerST).
    // The heaps compare distances only (hnswlib's CompareByFirst; std::pair's operator< would
    // also compare ids on every tie test) and reuse this thread's storage across calls.
    using pair = std::pair<float, hnswlib::tableint>;
    struct heap {  // a binary max-heap on the first member, over this thread's reused storage
      std::vector<pair>& v;
      bool empty() const { return v.empty(); }
      std::size_t size() const { return v.size(); }
      const pair& top() const { return v.front(); }
      void emplace(float d, hnswlib::tableint i) {
        v.emplace_back(d, i);
        std::push_heap(v.begin(), v.end(), graph_type::CompareByFirst{});
      }
      void pop() {
        std::pop_heap(v.begin(), v.end(), graph_type::CompareByFirst{});
        v.pop_back();
      }
    };
    const std::size_t width = std::max(count, ef);
    thread_local std::vector<pair> top_storage, candidate_storage;
    top_storage.clear();
    candidate_storage.clear();
    heap top{top_storage};                // best `width` live elements, worst on top
    heap candidates{candidate_storage};  // -distance: closest on top
    float lower_bound = std::numeric_limits<float>::max();
    sc.visited[current] = sc.tag;
    if (!has_deletions || keep(current)) {
      top.emplace(current_distance, current);
      lower_bound = current_distance;
      candidates.emplace(-current_distance, current);
    } else {
      candidates.emplace(-lower_bound, current);
    }
    while (!candidates.empty()) {
      const pair closest = candidates.top();
      if (-closest.first > lower_bound && (top.size() == width || !has_deletions)) break;
      candidates.pop();
      if (closest.second >= published) continue;
      const std::size_t n = copy_links(g, closest.second, 0, links);
      // Fetch ahead: the visited marks and vectors of the next neighbours while this one is
      // scored (hnswlib does this only with its SSE path, which recpipe compiles out).
      for (std::size_t j = 0; j < n; ++j) __builtin_prefetch(&sc.visited[links[j]]);
      if (n > 0) __builtin_prefetch(g.getDataByInternalId(links[0]));
      for (std::size_t j = 0; j < n; ++j) {
        const hnswlib::tableint c = links[j];
        if (j + 1 < n) __builtin_prefetch(g.getDataByInternalId(links[j + 1]));
        if (sc.visited[c] == sc.tag) continue;
        sc.visited[c] = sc.tag;
        const float d = distance(c);
        if (top.size() < width || lower_bound > d) {
          candidates.emplace(-d, c);
          // Without removals or a filter every element is kept: do not read its delete mark
          // (another cache line than its vector), as hnswlib's searchBaseLayerST<false>.
          if (!has_deletions || keep(c)) top.emplace(d, c);
          if (top.size() > width) top.pop();
          if (!top.empty()) lower_bound = top.top().first;
        }
      }
    }

    thread_local std::vector<float> scores;
    thread_local std::vector<id_type> ids;
    scores.clear();
    ids.clear();
    for (const pair& p : top.v) {  // in heap order: top_k_at_most sorts
      scores.push_back(-p.first);
      ids.push_back(static_cast<id_type>(g.getExternalLabel(p.second)));
    }
    if (ids.size() < count) {
      // The walk reached fewer live items than asked for (removals can cut the graph; a filter
      // can leave fewer than k allowed items): scan all.
      scores.clear();
      ids.clear();
      for (hnswlib::tableint i = 0; i < published; ++i) {
        if (!keep(i)) continue;
        scores.push_back(-distance(i));
        ids.push_back(static_cast<id_type>(g.getExternalLabel(i)));
      }
    }
    return top_k_at_most(scores, ids, count, out_ids, out_scores);  // removals may leave fewer than count
  }

  std::unique_ptr<state> state_;
};

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
