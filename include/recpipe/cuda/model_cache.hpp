// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA backend: device copies of immutable host models, made once and reused by every run.
//
// Plain C++ (no CUDA types), so the bookkeeping is tested without nvcc or a device
// (tests/unit/cuda/test_model_cache.cpp); cuda_backend owns one (cuda/backend.cuh).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda {

//! @brief Device copies of host models, keyed by the model's immutable weights.
//!
//! A device stage that scores or encodes with a host model (models::mlp, models::dcn_v2,
//! models::session_transformer...) asks the cache for the model's device copy; the first run
//! makes it (one upload), later runs reuse it. The key is the shared pointer a loaded model
//! keeps to its weights (`model.storage()`: the safetensors image and the converted tensors),
//! plus the device type. Loaded weights never change, and the cache holds that pointer, so no
//! other model can reuse the address while the entry lives: a new model version (a new frozen
//! snapshot, a reload) has new storage and gets its own upload; there is no stale copy.
//! A model without storage (an empty `identity`: built by hand, not loaded) gets a fresh device
//! copy that is not cached, i.e. one upload per run.
//!
//! At most `capacity()` entries stay (default 8), least recently used evicted first. Eviction
//! during a run is safe on cuda_backend: device buffers are freed in stream order, after the
//! work already queued that reads them. Not thread-safe (one run at a time per backend).
//! @code
//! recpipe::cuda::model_cache cache(4);
//! std::shared_ptr<device_mlp> gpu = cache.get<device_mlp>(model.storage(), [&] { return device_mlp(backend, model); });
//! @endcode
class model_cache {
 public:
  explicit model_cache(std::size_t capacity = 8) : capacity_(capacity) {}
  model_cache(const model_cache&) = delete;
  model_cache& operator=(const model_cache&) = delete;
  model_cache(model_cache&&) noexcept = default;
  model_cache& operator=(model_cache&&) noexcept = default;

  //! @brief The cached `Device` for `identity`, or `make()`'s result (a Device, or a
  //! std::shared_ptr<Device>), cached when `identity` is not null.
  //! If make() throws, nothing is cached and the exception propagates.
  template <class Device, class Make>
  std::shared_ptr<Device> get(const std::shared_ptr<const void>& identity, Make&& make) {
    const std::type_index type(typeid(Device));
    ++tick_;
    for (entry& e : entries_) {
      if (e.identity.get() == identity.get() && e.type == type && identity) {
        e.used = tick_;
        ++hits_;
        return std::static_pointer_cast<Device>(e.device);
      }
    }
    std::shared_ptr<Device> made = wrap<Device>(std::forward<Make>(make)());
    ++uploads_;
    if (!identity || capacity_ == 0) return made;
    if (entries_.size() >= capacity_) evict_oldest();
    entries_.push_back(entry{identity, type, made, tick_});
    return made;
  }

  //! Entries held now.
  std::size_t size() const noexcept { return entries_.size(); }
  std::size_t capacity() const noexcept { return capacity_; }
  //! Keeps at most `capacity` entries from now on (0 caches nothing), evicting the oldest.
  void set_capacity(std::size_t capacity) {
    capacity_ = capacity;
    while (entries_.size() > capacity_) evict_oldest();
  }
  //! Drops every device copy (the next run uploads again).
  void clear() noexcept { entries_.clear(); }
  //! Device copies made so far (each is one upload of the model's weights), and cache hits.
  std::uint64_t uploads() const noexcept { return uploads_; }
  std::uint64_t hits() const noexcept { return hits_; }

 private:
  struct entry {
    std::shared_ptr<const void> identity;  // keeps the host weights alive: the address stays unique
    std::type_index type;
    std::shared_ptr<void> device;
    std::uint64_t used;
  };

  template <class Device, class Made>
  static std::shared_ptr<Device> wrap(Made&& made) {
    if constexpr (std::is_convertible_v<Made, std::shared_ptr<Device>>) {
      std::shared_ptr<Device> p = std::forward<Made>(made);
      if (!p) ::recpipe::detail::fail("cuda::model_cache: the factory returned no device model");
      return p;
    } else {
      return std::make_shared<Device>(std::forward<Made>(made));
    }
  }

  void evict_oldest() {
    std::size_t oldest = 0;
    for (std::size_t i = 1; i < entries_.size(); ++i)
      if (entries_[i].used < entries_[oldest].used) oldest = i;
    entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(oldest));
  }

  std::vector<entry> entries_;
  std::size_t capacity_;
  std::uint64_t tick_ = 0, uploads_ = 0, hits_ = 0;
};

}  // namespace cuda
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
