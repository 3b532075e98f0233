// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA layer: a cuBLAS + cuBLASLt handle (owned or borrowed) with the cuBLASLt plans
// (descriptors + heuristic algorithm) cached per GEMM shape, and cuBLAS error reporting.
#pragma once

#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/error.cuh>

#include <cublasLt.h>
#include <cublas_v2.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <recpipe/core/errors.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda {

//! A failed cuBLAS call: `cuBLAS ERROR: file:line: CUBLAS_STATUS_...: text`. cuBLAS reports
//! argument and setup problems synchronously (the entries validated the arguments already, so in
//! practice: no device, an unsupported architecture, or out of memory for the handle).
class cublas_error : public error {
 public:
  cublas_error(cublasStatus_t status, const char* file, int line)
      : error(::recpipe::detail::concat("cuBLAS ERROR: ", file, ":", line, ": ", cublasGetStatusName(status), ": ",
                                        cublasGetStatusString(status))),
        status_(status) {}
  //! cuBLAS's status code.
  cublasStatus_t status() const noexcept { return status_; }

 private:
  cublasStatus_t status_;
};

namespace detail {
inline void throw_if_cublas_error(cublasStatus_t status, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) throw cublas_error(status, file, line);
}

// The alignment class of a device pointer as cuBLASLt's heuristic sees it: the largest power of
// two dividing the address, capped at 256 (its default assumption); nullptr counts as 256.
inline std::uint32_t pointer_alignment(const void* p) noexcept {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  if (address == 0) return 256;
  const std::uintptr_t low = address & (~address + 1);  // lowest set bit
  return low >= 256 ? 256u : static_cast<std::uint32_t>(low);
}

// One row-major C[m, n] = epilogue(A[m, k] B[n, k]^T (+ bias)) shape as a cuBLASLt plan is keyed:
// dimensions, strides, the epilogue and the pointers' alignment classes (the heuristic's choice
// depends on all of them, and on nothing else of the call).
struct lt_plan_key {
  std::uint64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  std::uint32_t epilogue = 0;
  std::uint32_t align_a = 0, align_b = 0, align_c = 0, align_bias = 0;
  friend bool operator==(const lt_plan_key&, const lt_plan_key&) = default;
};

// The descriptors and the heuristic's algorithm of one key; `usable` false records that cuBLASLt
// offered no algorithm (or refused to run it), so the entry takes the cuBLAS + kernel path without asking again.
struct lt_plan {
  bool usable = false;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  std::size_t workspace_bytes = 0;
};

inline void destroy_plan(lt_plan& p) noexcept {
  if (p.desc != nullptr) (void)cublasLtMatmulDescDestroy(p.desc);
  if (p.a != nullptr) (void)cublasLtMatrixLayoutDestroy(p.a);
  if (p.b != nullptr) (void)cublasLtMatrixLayoutDestroy(p.b);
  if (p.c != nullptr) (void)cublasLtMatrixLayoutDestroy(p.c);
  p = lt_plan{};
}

// A bounded cache (first in, first out past `capacity` entries: a serving process sees a few
// batch sizes per layer, but nothing bounds them). Not thread-safe, like the handle it lives in.
class lt_plan_cache {
 public:
  static constexpr std::size_t capacity = 256;
  lt_plan_cache() = default;
  lt_plan_cache(const lt_plan_cache&) = delete;
  lt_plan_cache& operator=(const lt_plan_cache&) = delete;
  ~lt_plan_cache() { clear(); }

  //! The plan of `key`, or nullptr.
  lt_plan* find(const lt_plan_key& key) noexcept {
    for (auto& [k, plan] : entries_)
      if (k == key) return &plan;
    return nullptr;
  }
  //! Takes ownership of `plan`'s descriptors; evicts (and destroys) the oldest entry when full.
  lt_plan& insert(const lt_plan_key& key, lt_plan plan) {
    if (entries_.size() == capacity) {
      destroy_plan(entries_.front().second);
      entries_.erase(entries_.begin());
    }
    entries_.emplace_back(key, plan);
    return entries_.back().second;
  }
  std::size_t size() const noexcept { return entries_.size(); }
  void clear() noexcept {
    for (auto& entry : entries_) destroy_plan(entry.second);
    entries_.clear();
  }

 private:
  std::vector<std::pair<lt_plan_key, lt_plan>> entries_;
};
}  // namespace detail

//! @brief The BLAS context of the dense, cross-layer and attention entries: a cuBLAS handle, a
//! cuBLASLt handle and the cuBLASLt plans (matmul descriptor, layouts and the heuristic's
//! algorithm) cached per GEMM shape. Those entries need CUDA::cublas and CUDA::cublasLt at link
//! time (the rest of recpipe::cuda does not).
//!
//! The default constructor creates and owns a cuBLAS handle (on the current device); the other
//! borrows the caller's cuBLAS handle (and optionally a cuBLASLt handle), which must outlive this
//! object. The cuBLASLt handle, when not borrowed, is created on first use (so a handle used only
//! with fused epilogues off, or only for validation failures, never creates one). Each entry binds
//! the cuBLAS handle to its backend's stream before its GEMMs (cuBLASLt takes the stream per
//! call), so one blas_handle serves several backends used from one host thread. Not for
//! concurrent host threads: like a cuBLAS handle, and the plan cache is unsynchronised.
//! @throws cublas_error when cublasCreate fails (e.g. no device).
//! @code
//! recpipe::cuda::cuda_backend backend;
//! recpipe::cuda::blas_handle blas;
//! recpipe::cuda::linear(backend, blas, x, w, b, y, recpipe::math::activation::relu);
//! @endcode
class blas_handle {
 public:
  blas_handle() {
    detail::throw_if_cublas_error(cublasCreate(&handle_), __FILE__, __LINE__);
    owns_ = true;
  }
  //! Borrows `borrowed` and, when not null, `borrowed_lt` (else one is created on first use).
  explicit blas_handle(cublasHandle_t borrowed, cublasLtHandle_t borrowed_lt = nullptr) noexcept
      : handle_(borrowed), lt_(borrowed_lt) {}
  blas_handle(const blas_handle&) = delete;
  blas_handle& operator=(const blas_handle&) = delete;
  blas_handle(blas_handle&& other) noexcept
      : handle_(std::exchange(other.handle_, nullptr)),
        owns_(std::exchange(other.owns_, false)),
        lt_(std::exchange(other.lt_, nullptr)),
        owns_lt_(std::exchange(other.owns_lt_, false)),
        fused_(other.fused_),
        plans_(std::move(other.plans_)) {}
  blas_handle& operator=(blas_handle&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, nullptr);
      owns_ = std::exchange(other.owns_, false);
      lt_ = std::exchange(other.lt_, nullptr);
      owns_lt_ = std::exchange(other.owns_lt_, false);
      fused_ = other.fused_;
      plans_ = std::move(other.plans_);
    }
    return *this;
  }
  ~blas_handle() { reset(); }

  //! The raw cuBLAS handle.
  cublasHandle_t get() const noexcept { return handle_; }

  //! The cuBLASLt handle: the borrowed one, else one created (and owned) on the first call.
  //! @throws cublas_error when cublasLtCreate fails.
  cublasLtHandle_t lt() const {
    if (lt_ == nullptr) {
      detail::throw_if_cublas_error(cublasLtCreate(&lt_), __FILE__, __LINE__);
      owns_lt_ = true;
    }
    return lt_;
  }

  //! @brief Whether GEMMs with a bias and/or ReLU run as one cuBLASLt matmul with a fused
  //! epilogue (default true). false: every GEMM takes the cublasSgemm + separate epilogue kernel
  //! path, the one a shape falls back to when cuBLASLt has no algorithm for it (a comparison
  //! baseline and the way the tests cover that path). Both give the same values up to the GEMM's
  //! summation order.
  void set_fused_epilogues(bool on) noexcept { fused_ = on; }
  bool fused_epilogues() const noexcept { return fused_; }

  //! The cuBLASLt plans cached so far (for the dispatch layer and tests).
  detail::lt_plan_cache& plans() const {
    if (!plans_) plans_ = std::make_unique<detail::lt_plan_cache>();
    return *plans_;
  }

 private:
  void reset() noexcept {
    plans_.reset();  // descriptors first: they do not reference the handles, but keep the order obvious
    if (owns_lt_ && lt_ != nullptr) (void)cublasLtDestroy(lt_);
    lt_ = nullptr;
    owns_lt_ = false;
    if (owns_ && handle_ != nullptr) (void)cublasDestroy(handle_);
    handle_ = nullptr;
    owns_ = false;
  }
  cublasHandle_t handle_ = nullptr;
  bool owns_ = false;
  mutable cublasLtHandle_t lt_ = nullptr;
  mutable bool owns_lt_ = false;
  bool fused_ = true;
  mutable std::unique_ptr<detail::lt_plan_cache> plans_;
};

}  // namespace cuda
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
