// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA layer: where each column of a batch lives during one cuda_backend run.
//
// Why this exists: a batch's columns are host containers (what every stage and user code speak).
// A device stage needs them in device memory, and the next device stage should find them there
// instead of copying them again; a host stage in the middle of a run needs the device results on
// the host. column_residency records, per column, whether the host copy and the device copy are
// current, moves a column only when a stage needs it where it is not, and moves every column that
// is stale on the host back once, at the end of the run, with one synchronisation.
//
// This header is plain C++ (no CUDA): the copies go through a `Transfer` policy. The CUDA one
// (cuda/residency.cuh: pinned staging buffers, cudaMemcpyAsync on the backend's stream, a gather
// kernel) is what cuda_backend uses; tests drive the same bookkeeping with a host Transfer that
// counts every copy and synchronisation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <recpipe/core/batch.hpp>
#include <recpipe/core/column.hpp>
#include <recpipe/core/columns.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/detail/meta.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda {

//! @brief A column's copy in device memory during a run: `count` values at `data`; `rows` requests
//! (per-request shapes), candidates (per-candidate shapes) or list rows; `cols` the vector width
//! (1 for scalars and lists); lists also have `rows + 1` device `offsets` (int64).
template <class T>
struct resident_column {
  T* data = nullptr;
  std::size_t count = 0;
  std::size_t rows = 0;
  std::size_t cols = 1;
  const std::int64_t* offsets = nullptr;
};

//! What a run moved: the copies and synchronisations column_residency asked its Transfer for.
struct transfer_counts {
  std::size_t uploads = 0;
  std::size_t upload_bytes = 0;
  std::size_t downloads = 0;
  std::size_t download_bytes = 0;
  std::size_t gathers = 0;
  std::size_t synchronizations = 0;
};

//! @brief True for stages that run on the host inside a cuda_backend run, read col::candidates
//! and never drop or reorder them (scorers, lookups, transforms, unroll). Every other host stage
//! that reads col::candidates is assumed to select candidates (filters, ordering, rules), so the
//! device copies of the candidates and every per-candidate column are dropped after it. Specialise
//! it for your own host stage that keeps the candidates, to save those copies.
template <class Stage>
inline constexpr bool host_stage_keeps_candidates = false;

namespace detail {
template <class C>
inline constexpr char column_key = 0;  // its address identifies column C across translation units

template <class C>
inline constexpr bool device_movable_v = std::is_trivially_copyable_v<typename C::value_type>;

template <class Batch>
struct batch_columns;
template <column... Cs>
struct batch_columns<batch<Cs...>> {
  template <class F>
  static void for_each(F&& f) {
    (f(static_cast<Cs*>(nullptr)), ...);
  }
};
}  // namespace detail

//! @brief The residency table of one run (see the file comment). Owned by cuda_backend, which
//! drives it from the pipeline's run hooks; device stage_impls call read/write/select_candidates,
//! and the host-stage wrapper calls before_host_stage/after_host_stage.
//!
//! `Transfer` provides: `void* allocate(bytes)`, `void release(void*) noexcept`,
//! `upload(device, host, bytes)` (asynchronous; the host memory may change right after it returns),
//! `download(host, device, bytes)` (the host memory is written by the next synchronize()),
//! `gather(dst, src, row_bytes, src_rows, device_picks, count)` (dst row i = src row picks[i], on the
//! device),
//! `synchronize()` (waits; completes downloads; throws on failure) and `end_run() noexcept`
//! (after the last synchronize of a run: staging may be reused).
//!
//! Not thread-safe: one run at a time (a cuda_backend has one stream).
template <class Transfer>
class column_residency {
 public:
  explicit column_residency(Transfer transfer = Transfer{}) : transfer_(std::move(transfer)) {}
  column_residency(const column_residency&) = delete;
  column_residency& operator=(const column_residency&) = delete;
  ~column_residency() { abandon(); }

  Transfer& transfer() noexcept { return transfer_; }
  const transfer_counts& counts() const noexcept { return counts_; }
  void reset_counts() noexcept { counts_ = {}; }

  // ----- run nesting: a pipeline run begins once, and each stage begins again inside it -----

  void begin() { ++depth_; }
  //! Ends one level; the outermost level moves every column that is stale on the host into
  //! `batch`, synchronises once and releases the run's device copies.
  template <class Batch>
  void finish(Batch& batch) {
    if (depth_ == 0) ::recpipe::detail::fail("cuda run: finish without begin");
    if (depth_ > 1) {
      --depth_;
      return;
    }
    try {
      download_stale(batch, [](auto*) { return true; });
      if (!entries_.empty() || !scratch_.empty() || pending_work_) sync();
    } catch (...) {
      abandon();
      depth_ = 0;
      throw;
    }
    release_all();
    transfer_.end_run();
    depth_ = 0;
  }
  //! Ends one level after an exception: the outermost level waits for queued work (ignoring its
  //! errors) and forgets every device copy; the batch being unwound is not touched.
  void abort() noexcept {
    if (depth_ > 1) {
      --depth_;
      return;
    }
    abandon();
    depth_ = 0;
  }
  std::size_t depth() const noexcept { return depth_; }

  // ----- for device stages -----

  //! The device copy of column C of `batch`, uploaded (once per run) if the device has none.
  template <column C, class Batch>
  resident_column<const typename C::value_type> read(const Batch& batch) {
    static_assert(detail::device_movable_v<C>, "recpipe: COLUMN_NOT_DEVICE_MOVABLE - a device stage reads a column whose values are not trivially copyable");
    entry& e = find_or_add<C>();
    const auto& storage = batch.template get<C>();
    ensure_on_device<C>(e, storage);
    return view<const typename C::value_type, C>(e, storage);
  }

  //! Device storage for column C, which the calling stage fills on the device. The host storage of
  //! C in `batch` must already have its final shape (its contents become stale until the run ends
  //! or a host stage reads it). For lists the host offsets are final and are uploaded here.
  template <column C, class Batch>
  resident_column<typename C::value_type> write(Batch& batch) {
    static_assert(detail::device_movable_v<C>, "recpipe: COLUMN_NOT_DEVICE_MOVABLE - a device stage writes a column whose values are not trivially copyable");
    entry& e = find_or_add<C>();
    const auto& storage = batch.template get<C>();
    drop_device(e);
    const std::size_t bytes = value_count(storage) * sizeof(typename C::value_type);
    e.values = allocate(bytes);
    e.value_bytes = bytes;
    if constexpr (C::shape == column_shape::per_request_list) upload_offsets(e, storage.offsets());
    e.device_valid = true;
    e.host_valid = false;
    remember_host(e, storage);
    pending_work_ = true;
    return view<typename C::value_type, C>(e, storage);
  }

  //! Device-side batch::select_candidates: candidate i of the result is old candidate
  //! `device_picks[i]` (flat positions; `offsets` is the new host row partition, whose last entry is
  //! the pick count). Every per-candidate column and the candidate ids move on the device (columns
  //! only on the host are uploaded first); their host copies are resized and stale. Columns whose
  //! values cannot move to the device are selected on the host from downloaded picks.
  template <class Batch>
  void select_candidates(Batch& batch, std::vector<std::size_t> offsets, const std::int64_t* device_picks) {
    static_assert(Batch::template contains<col::candidates>, "recpipe: STAGE_READS_MISSING_COLUMN - select_candidates needs col::candidates");
    const std::size_t picked = offsets.back();
    bool host_only = false;
    detail::batch_columns<Batch>::for_each([&]<class C>(C*) {
      if constexpr (is_per_candidate_v<C> && !detail::device_movable_v<C>) host_only = true;
    });
    std::vector<std::int64_t> host_picks;
    if (host_only) {  // rare: a per-candidate column of non-trivial values; costs one synchronisation
      host_picks.resize(picked);
      download_raw(host_picks.data(), device_picks, picked * sizeof(std::int64_t));
      sync();
    }
    detail::batch_columns<Batch>::for_each([&]<class C>(C*) {
      if constexpr (is_per_candidate_v<C> || std::is_same_v<C, col::candidates>) {
        if constexpr (detail::device_movable_v<C>) {
          gather_column<C>(batch, device_picks, picked);
        } else {
          auto& storage = batch.template get<C>();
          std::vector<typename C::value_type> fresh(picked);
          for (std::size_t i = 0; i < picked; ++i) fresh[i] = storage[static_cast<std::size_t>(host_picks[i])];
          storage = std::move(fresh);
        }
      }
    });
    auto& candidates = batch.template get<col::candidates>();
    std::vector<id_type> stale(picked);  // contents arrive with the device copy
    entry& ids = find_or_add<col::candidates>();
    // Keep the gathered device ids: assign() replaces the host vectors, so re-remember them.
    candidates.assign(std::move(offsets), std::move(stale), "select_candidates");
    release(ids.offsets);
    ids.offsets = nullptr;
    upload_offsets(ids, candidates.offsets());
    remember_host(ids, candidates);
  }

  //! Device memory for `count` values of T that lives until the run ends (freed in stream order).
  template <class T>
  T* scratch(std::size_t count) {
    void* pointer = allocate(count * sizeof(T));
    if (pointer != nullptr) scratch_.push_back(pointer);
    return static_cast<T*>(pointer);
  }
  //! A device copy of `values` that lives until the run ends (staged: no synchronisation).
  template <class T>
  const T* upload_scratch(std::span<const T> values) {
    T* device = scratch<T>(values.size());
    upload_raw(device, values.data(), values.size_bytes());
    return device;
  }
  //! Queues a copy of `host.size()` device values into `host`, written by the next synchronize().
  template <class T>
  void download(std::span<T> host, const T* device) {
    download_raw(host.data(), device, host.size_bytes());
  }
  //! Waits for the run's queued work and completes queued downloads. Device stages call it only
  //! when the host needs a size the device computed (filter_seen's kept counts).
  void synchronize() { sync(); }
  //! dst row i = src row picks[i] (device memory; `rows` picks).
  void gather(void* dst, const void* src, std::size_t row_bytes, std::size_t src_rows, const std::int64_t* picks,
              std::size_t rows) {
    if (rows == 0 || row_bytes == 0) return;
    transfer_.gather(dst, src, row_bytes, src_rows, picks, rows);
    ++counts_.gathers;
    pending_work_ = true;
  }

  // ----- for host stages inside a cuda_backend run -----

  //! Before a host stage: brings back every column it reads that is stale on the host; when it may
  //! select candidates (it reads col::candidates and is not host_stage_keeps_candidates), every
  //! per-candidate column too. One synchronisation when anything moved.
  template <class Stage, class Batch>
  void before_host_stage(Batch& batch) {
    const bool downloaded = download_stale(batch, [](auto* tag) {
      using C = std::remove_pointer_t<decltype(tag)>;
      return reads_v<Stage, C> || (selects_v<Stage> && (is_per_candidate_v<C> || std::is_same_v<C, col::candidates>));
    });
    if (downloaded) sync();
  }
  //! After a host stage: drops the device copies of what it wrote, and of the candidates and every
  //! per-candidate column when it may have selected candidates.
  template <class Stage, class Batch>
  void after_host_stage(const Batch&) {
    for (entry& e : entries_) {
      bool changed = false;
      detail::batch_columns<Batch>::for_each([&]<class C>(C*) {
        if (e.key != &detail::column_key<C>) return;
        changed = writes_v<Stage, C> ||
                  (selects_v<Stage> && (is_per_candidate_v<C> || std::is_same_v<C, col::candidates>));
      });
      if (changed) {
        drop_device(e);
        e.host_valid = true;
      }
    }
  }

  // ----- inspection (tests, docs) -----

  template <column C>
  bool on_device() const noexcept {
    const entry* e = find<C>();
    return e != nullptr && e->device_valid;
  }
  template <column C>
  bool current_on_host() const noexcept {
    const entry* e = find<C>();
    return e == nullptr || e->host_valid;
  }

 private:
  struct entry {
    const void* key = nullptr;
    std::string_view name;
    void* values = nullptr;
    std::size_t value_bytes = 0;
    void* offsets = nullptr;  // lists: rows + 1 int64
    bool host_valid = true;
    bool device_valid = false;
    const void* host_data = nullptr;  // the host storage the device copy mirrors
    std::size_t host_count = 0;
  };

  template <class Stage, class C>
  static constexpr bool reads_v = ::recpipe::detail::list_contains_v<C, typename Stage::reads>;
  template <class Stage, class C>
  static constexpr bool writes_v = ::recpipe::detail::list_contains_v<C, typename Stage::writes>;
  template <class Stage>
  static constexpr bool selects_v =
      (::recpipe::detail::list_contains_v<col::candidates, typename Stage::reads> ||
       ::recpipe::detail::list_contains_v<col::candidates, typename Stage::writes>) &&
      !host_stage_keeps_candidates<Stage>;

  template <class Storage>
  static std::size_t value_count(const Storage& storage) {
    if constexpr (requires { storage.total(); })
      return storage.total();  // ragged
    else
      return storage.size();  // vector or matrix
  }
  template <class Storage>
  static const void* host_data(const Storage& storage) {
    if constexpr (requires { storage.total(); })
      return storage.values().data();
    else
      return storage.data();
  }
  template <class Storage>
  static bool same_host(const entry& e, const Storage& storage) {
    return e.host_data == host_data(storage) && e.host_count == value_count(storage);
  }
  template <class Storage>
  static void remember_host(entry& e, const Storage& storage) {
    e.host_data = host_data(storage);
    e.host_count = value_count(storage);
  }

  template <class T, class C, class Storage>
  resident_column<T> view(const entry& e, const Storage& storage) const {
    resident_column<T> out;
    out.data = static_cast<T*>(e.values);
    out.count = value_count(storage);
    if constexpr (C::shape == column_shape::per_request_vector || C::shape == column_shape::per_candidate_vector) {
      out.rows = storage.rows();
      out.cols = storage.cols();
    } else if constexpr (C::shape == column_shape::per_request_list) {
      out.rows = storage.rows();
      out.offsets = static_cast<const std::int64_t*>(e.offsets);
    } else {
      out.rows = storage.size();
    }
    return out;
  }

  template <class C>
  entry* find() noexcept {
    for (entry& e : entries_)
      if (e.key == &detail::column_key<C>) return &e;
    return nullptr;
  }
  template <class C>
  const entry* find() const noexcept {
    for (const entry& e : entries_)
      if (e.key == &detail::column_key<C>) return &e;
    return nullptr;
  }
  template <class C>
  entry& find_or_add() {
    if (entry* e = find<C>()) return *e;
    entry fresh;
    fresh.key = &detail::column_key<C>;
    fresh.name = C::name;
    entries_.push_back(fresh);
    return entries_.back();
  }

  void* allocate(std::size_t bytes) { return bytes == 0 ? nullptr : transfer_.allocate(bytes); }
  void release(void* pointer) noexcept {
    if (pointer != nullptr) transfer_.release(pointer);
  }
  void drop_device(entry& e) noexcept {
    release(e.values);
    release(e.offsets);
    e.values = e.offsets = nullptr;
    e.value_bytes = 0;
    e.device_valid = false;
  }
  void release_all() noexcept {
    for (entry& e : entries_) drop_device(e);
    entries_.clear();
    for (void* pointer : scratch_) release(pointer);
    scratch_.clear();
  }
  void abandon() noexcept {
    if (!entries_.empty() || !scratch_.empty() || pending_work_) {
      try {
        sync();
      } catch (...) {  // the run failed already; its error is the one the caller sees
      }
    }
    release_all();
    pending_work_ = false;
    transfer_.end_run();
  }
  void sync() {
    transfer_.synchronize();
    ++counts_.synchronizations;
    pending_work_ = false;
  }

  void upload_raw(void* device, const void* host, std::size_t bytes) {
    if (bytes == 0) return;
    transfer_.upload(device, host, bytes);
    ++counts_.uploads;
    counts_.upload_bytes += bytes;
    pending_work_ = true;
  }
  void download_raw(void* host, const void* device, std::size_t bytes) {
    if (bytes == 0) return;
    transfer_.download(host, device, bytes);
    ++counts_.downloads;
    counts_.download_bytes += bytes;
    pending_work_ = true;
  }

  void upload_offsets(entry& e, const std::vector<std::size_t>& offsets) {
    std::vector<std::int64_t> signed_offsets(offsets.begin(), offsets.end());
    e.offsets = allocate(signed_offsets.size() * sizeof(std::int64_t));
    upload_raw(e.offsets, signed_offsets.data(), signed_offsets.size() * sizeof(std::int64_t));
  }

  template <class C, class Storage>
  void upload(entry& e, const Storage& storage) {
    drop_device(e);
    const std::size_t bytes = value_count(storage) * sizeof(typename C::value_type);
    e.values = allocate(bytes);
    e.value_bytes = bytes;
    upload_raw(e.values, host_data(storage), bytes);
    if constexpr (C::shape == column_shape::per_request_list) upload_offsets(e, storage.offsets());
    e.device_valid = true;
    e.host_valid = true;
    remember_host(e, storage);
  }

  // Uploads column C unless the device holds a copy of the current host storage (a host copy
  // replaced behind the table's back, new buffer or new size, is uploaded again).
  template <class C, class Storage>
  void ensure_on_device(entry& e, const Storage& storage) {
    if (e.device_valid && e.host_valid && !same_host(e, storage)) e.device_valid = false;
    if (!e.device_valid) upload<C>(e, storage);
  }

  // Queues downloads of the stale columns `wanted` selects; true when anything was queued.
  template <class Batch, class Wanted>
  bool download_stale(Batch& batch, Wanted&& wanted) {
    bool any = false;
    detail::batch_columns<Batch>::for_each([&]<class C>(C* tag) {
      if constexpr (detail::device_movable_v<C>) {
        entry* e = find<C>();
        if (e == nullptr || e->host_valid || !e->device_valid || !wanted(tag)) return;
        auto& storage = batch.template get<C>();
        void* host = nullptr;
        if constexpr (requires { storage.total(); })
          host = storage.values().data();
        else
          host = storage.data();
        download_raw(host, e->values, value_count(storage) * sizeof(typename C::value_type));
        e->host_valid = true;
        remember_host(*e, storage);
        any = true;
      }
    });
    return any;
  }

  // Replaces the device copy of column C by its rows at `picks`, and resizes the host storage.
  template <class C, class Batch>
  void gather_column(Batch& batch, const std::int64_t* picks, std::size_t picked) {
    auto& storage = batch.template get<C>();
    entry& e = find_or_add<C>();
    ensure_on_device<C>(e, storage);
    std::size_t row_values = 1;
    if constexpr (C::shape == column_shape::per_candidate_vector) row_values = storage.cols();
    const std::size_t row_bytes = row_values * sizeof(typename C::value_type);
    void* fresh = allocate(picked * row_bytes);
    if (picked > 0 && row_bytes > 0) {
      transfer_.gather(fresh, e.values, row_bytes, e.value_bytes / row_bytes, picks, picked);
      ++counts_.gathers;
      pending_work_ = true;
    }
    release(e.values);
    e.values = fresh;
    e.value_bytes = picked * row_bytes;
    if constexpr (C::shape == column_shape::per_candidate_vector)
      storage.resize(picked, storage.cols());
    else if constexpr (!std::is_same_v<C, col::candidates>)
      storage.resize(picked);
    e.device_valid = true;
    e.host_valid = false;
    remember_host(e, storage);
  }

  Transfer transfer_;
  std::deque<entry> entries_;  // a deque: references to entries stay valid as columns are added
  std::vector<void*> scratch_;
  transfer_counts counts_;
  std::size_t depth_ = 0;
  bool pending_work_ = false;
};

}  // namespace cuda
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
