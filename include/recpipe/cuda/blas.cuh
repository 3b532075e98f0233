// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA layer: a cuBLAS handle (owned or borrowed) and cuBLAS error reporting.
#pragma once

#include <recpipe/cuda/detail/config.cuh>
#include <recpipe/cuda/error.cuh>

#include <cublas_v2.h>

#include <utility>

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
}  // namespace detail

//! @brief A cuBLAS handle for the dense and cross-layer entries (which link CUDA::cublas; the
//! rest of recpipe::cuda does not need it). The default constructor creates and owns one (on the
//! current device); the other borrows the caller's handle, which must outlive this object. Each
//! entry binds the handle to its backend's stream before its GEMMs, so one handle serves several
//! backends used from one host thread (cuBLAS handles are not for concurrent host threads).
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
  explicit blas_handle(cublasHandle_t borrowed) noexcept : handle_(borrowed) {}
  blas_handle(const blas_handle&) = delete;
  blas_handle& operator=(const blas_handle&) = delete;
  blas_handle(blas_handle&& other) noexcept
      : handle_(std::exchange(other.handle_, nullptr)), owns_(std::exchange(other.owns_, false)) {}
  blas_handle& operator=(blas_handle&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, nullptr);
      owns_ = std::exchange(other.owns_, false);
    }
    return *this;
  }
  ~blas_handle() { reset(); }

  //! The raw handle.
  cublasHandle_t get() const noexcept { return handle_; }

 private:
  void reset() noexcept {
    if (owns_ && handle_ != nullptr) (void)cublasDestroy(handle_);
    handle_ = nullptr;
    owns_ = false;
  }
  cublasHandle_t handle_ = nullptr;
  bool owns_ = false;
};

}  // namespace cuda
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
