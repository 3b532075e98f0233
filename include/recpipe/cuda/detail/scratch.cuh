// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA layer: a handful of stream-ordered temporaries freed together (CUB temp storage).
#pragma once

#include <recpipe/cuda/backend.cuh>
#include <recpipe/cuda/detail/config.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda::detail {

//! Stream-ordered temporaries of one dispatch call, returned to the backend's pool (in stream
//! order, so without waiting) when the call returns, on success and on error alike. Fixed
//! capacity and noexcept: dispatch code never throws.
class scratch {
 public:
  static constexpr int capacity = 12;

  explicit scratch(const cuda_backend& backend) noexcept : backend_(backend) {}
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  ~scratch() {
    for (int i = used_; i-- > 0;) (void)backend_.deallocate_async(pointers_[i]);
  }

  //! `count` values of T (uninitialised); count == 0 gives nullptr.
  template <class T>
  cudaError_t allocate(T** out, std::size_t count) noexcept {
    *out = nullptr;
    if (used_ == capacity) return cudaErrorMemoryAllocation;  // a recpipe bug, not a user error
    void* pointer = nullptr;
    const cudaError_t status = backend_.allocate_async(&pointer, count * sizeof(T));
    if (status != cudaSuccess) return status;
    if (pointer != nullptr) pointers_[used_++] = pointer;
    *out = static_cast<T*>(pointer);
    return cudaSuccess;
  }

  //! CUB's two-phase idiom: `run(nullptr, bytes)` sizes the temp storage, then
  //! `run(storage, bytes)` does the work with storage from the pool.
  template <class Algorithm>
  cudaError_t cub_call(Algorithm&& run) noexcept {
    std::size_t bytes = 0;
    cudaError_t status = run(static_cast<void*>(nullptr), bytes);
    if (status != cudaSuccess) return status;
    unsigned char* storage = nullptr;
    // CUB asks for a non-zero size even for empty inputs; allocate at least one byte so the
    // second call never mistakes the real run for a size query.
    status = allocate(&storage, bytes == 0 ? 1 : bytes);
    if (status != cudaSuccess) return status;
    return run(static_cast<void*>(storage), bytes);
  }

 private:
  const cuda_backend& backend_;
  void* pointers_[capacity] = {};
  int used_ = 0;
};

}  // namespace cuda::detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
