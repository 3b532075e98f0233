// SPDX-License-Identifier: Apache-2.0
// recpipe CUDA layer: cuda_backend (stream + stream-ordered pool), device_span, device_buffer, copies.
#pragma once

#include <recpipe/cuda/error.cuh>

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <string_view>
#include <type_traits>
#include <typeindex>
#include <typeinfo>
#include <utility>
#include <vector>

#include <recpipe/core/backend.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/cuda/kernels/gather.cuh>
#include <recpipe/cuda/model_cache.hpp>
#include <recpipe/cuda/residency.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cuda {

//! @brief A non-owning view of `size` values of T in device memory. Trivially copyable, so it is
//! passed to kernels by value; a distinct type from std::span so that a host vector is never
//! handed to a kernel by mistake.
//!
//! @code
//! recpipe::cuda::device_buffer<float> scores(backend, 1000);
//! recpipe::cuda::device_span<const float> view = scores.span();
//! @endcode
template <class T>
class device_span {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;

  constexpr device_span() = default;
  RECPIPE_HOST_DEVICE constexpr device_span(T* data, std::size_t size) : data_(data), size_(size) {}
  //! A span of T converts to a span of const T.
  template <class U, std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>, int> = 0>
  RECPIPE_HOST_DEVICE constexpr device_span(const device_span<U>& other) : data_(other.data()), size_(other.size()) {}

  RECPIPE_HOST_DEVICE constexpr T* data() const { return data_; }
  RECPIPE_HOST_DEVICE constexpr std::size_t size() const { return size_; }
  RECPIPE_HOST_DEVICE constexpr std::size_t size_bytes() const { return size_ * sizeof(T); }
  RECPIPE_HOST_DEVICE constexpr bool empty() const { return size_ == 0; }
  //! Element access; only meaningful in device code.
  RECPIPE_HOST_DEVICE constexpr T& operator[](std::size_t i) const { return data_[i]; }
  //! Elements [offset, offset + count); the caller keeps offset + count <= size().
  RECPIPE_HOST_DEVICE constexpr device_span subspan(std::size_t offset, std::size_t count) const {
    return {data_ + offset, count};
  }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};


namespace detail {

//! @brief column_residency's Transfer on a CUDA stream: device memory from the stream-ordered
//! pool, host<->device copies through pinned staging buffers (cudaMemcpyAsync from pageable memory
//! would be synchronous), and the row-gather kernel. Staging grows in chunks that live as long as
//! the backend and are reused from the start after each run's last synchronisation.
class device_transfer {
 public:
  device_transfer(cudaStream_t stream, cudaMemPool_t pool) noexcept : stream_(stream), pool_(pool) {}
  device_transfer(const device_transfer&) = delete;
  device_transfer& operator=(const device_transfer&) = delete;
  device_transfer(device_transfer&& other) noexcept
      : stream_(other.stream_), pool_(other.pool_), chunks_(std::move(other.chunks_)), pending_(std::move(other.pending_)) {
    other.chunks_.clear();
  }
  device_transfer& operator=(device_transfer&&) = delete;
  ~device_transfer() {
    for (chunk& c : chunks_) (void)cudaFreeHost(c.data);
  }

  void* allocate(std::size_t bytes) {
    void* pointer = nullptr;
    RECPIPE_CUDA_TRY(pool_ != nullptr ? cudaMallocFromPoolAsync(&pointer, bytes, pool_, stream_)
                                      : cudaMallocAsync(&pointer, bytes, stream_));
    return pointer;
  }
  void release(void* pointer) noexcept { (void)cudaFreeAsync(pointer, stream_); }

  void upload(void* device, const void* host, std::size_t bytes) {
    char* staged = stage(bytes);
    std::memcpy(staged, host, bytes);
    RECPIPE_CUDA_TRY(cudaMemcpyAsync(device, staged, bytes, cudaMemcpyHostToDevice, stream_));
  }
  void download(void* host, const void* device, std::size_t bytes) {
    char* staged = stage(bytes);
    RECPIPE_CUDA_TRY(cudaMemcpyAsync(staged, device, bytes, cudaMemcpyDeviceToHost, stream_));
    pending_.push_back({host, staged, bytes});
  }
  void gather(void* dst, const void* src, std::size_t row_bytes, std::size_t src_rows, const std::int64_t* picks,
              std::size_t rows) {
    constexpr int block = 256;
    const bool words = row_bytes % 4 == 0 && reinterpret_cast<std::uintptr_t>(dst) % 4 == 0 &&
                       reinterpret_cast<std::uintptr_t>(src) % 4 == 0;
    const std::uint64_t row_words = words ? row_bytes / 4 : row_bytes;
    const std::uint64_t total = static_cast<std::uint64_t>(rows) * row_words;
    const auto grid = static_cast<unsigned>((total + block - 1) / block);
    if (words)
      kernels::gather_rows_kernel<std::uint32_t, block><<<grid, block, 0, stream_>>>(
          static_cast<std::uint32_t*>(dst), static_cast<const std::uint32_t*>(src), row_words, picks, rows, src_rows);
    else
      kernels::gather_rows_kernel<unsigned char, block><<<grid, block, 0, stream_>>>(
          static_cast<unsigned char*>(dst), static_cast<const unsigned char*>(src), row_words, picks, rows, src_rows);
    RECPIPE_CUDA_TRY(cudaGetLastError());
  }
  //! Waits for the stream, then copies every finished download from staging to its destination.
  void synchronize() {
    RECPIPE_CUDA_TRY(cudaStreamSynchronize(stream_));
    for (const pending& p : pending_) std::memcpy(p.host, p.staged, p.bytes);
    pending_.clear();
  }
  void end_run() noexcept {
    pending_.clear();
    for (chunk& c : chunks_) c.used = 0;
  }
  //! Pinned bytes held for staging (grows to the largest run's traffic).
  std::size_t staging_bytes() const noexcept {
    std::size_t total = 0;
    for (const chunk& c : chunks_) total += c.size;
    return total;
  }

 private:
  struct chunk {
    char* data = nullptr;
    std::size_t size = 0, used = 0;
  };
  struct pending {
    void* host;
    const char* staged;
    std::size_t bytes;
  };
  // A slice of pinned memory no other copy of this run uses (chunks are only reset by end_run).
  char* stage(std::size_t bytes) {
    const std::size_t aligned = (bytes + 255) / 256 * 256;
    for (chunk& c : chunks_)
      if (c.size - c.used >= aligned) {
        char* out = c.data + c.used;
        c.used += aligned;
        return out;
      }
    std::size_t size = std::size_t{1} << 20;
    while (size < aligned) size *= 2;
    if (!chunks_.empty() && chunks_.back().size * 2 > size) size = chunks_.back().size * 2;
    chunk fresh;
    RECPIPE_CUDA_TRY(cudaMallocHost(reinterpret_cast<void**>(&fresh.data), size));
    fresh.size = size;
    fresh.used = aligned;
    chunks_.push_back(fresh);
    return fresh.data;
  }

  cudaStream_t stream_;
  cudaMemPool_t pool_;
  std::vector<chunk> chunks_;
  std::vector<pending> pending_;
};

}  // namespace detail

//! The residency table a cuda_backend keeps for its current run (see cuda/residency.hpp).
using run_columns = column_residency<detail::device_transfer>;

//! @brief Where recpipe's CUDA work runs: one stream and one stream-ordered memory pool.
//!
//! Every temporary buffer (CUB temp storage, sort keys) comes from the pool with
//! cudaMallocFromPoolAsync and goes back with cudaFreeAsync on the same stream, so a warm backend
//! runs a batch without a device-wide synchronisation or a cudaMalloc. The owned pool keeps freed
//! memory (release threshold = unlimited) for the next batch.
//!
//! The default constructor owns a new non-blocking stream and a new pool on the current device;
//! the other constructor borrows a stream (and optionally a pool) that must outlive the backend.
//! Without a pool it allocates from the device's current pool (cudaMallocAsync).
//! Not thread-safe: give each thread its own backend (streams are cheap).
//!
//! @code
//! recpipe::cuda::cuda_backend backend;                 // owns stream and pool
//! recpipe::cuda::cuda_backend on_torch(torch_stream);  // borrows a stream
//! ...enqueue work...
//! backend.synchronize();                               // throws cuda_error on failure
//! @endcode
class cuda_backend {
 public:
  static constexpr std::string_view name = "cuda";

  // READ THIS IF YOUR COMPILE BREAKS HERE: the stage named in this diagnostic has no CUDA
  // implementation; run it on cpu_backend, or specialise stage_impl<Stage, cuda::cuda_backend>.
  template <class Stage>
  struct missing_stage_impl {
    static_assert(sizeof(Stage) == 0, "recpipe: RECPIPE_STAGE_HAS_NO_CUDA_IMPL - this stage has no stage_impl<Stage, "
                                      "cuda_backend>; run it on cpu_backend");
  };

  //! Creates a non-blocking stream and a memory pool on the current device.
  //! @throws cuda_error when no device is usable or a resource cannot be created.
  cuda_backend() {
    int device = 0;
    RECPIPE_CUDA_TRY(cudaGetDevice(&device));
    RECPIPE_CUDA_TRY(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    owns_stream_ = true;
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.handleTypes = cudaMemHandleTypeNone;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    const cudaError_t status = cudaMemPoolCreate(&pool_, &props);
    if (status != cudaSuccess) {
      release();
      RECPIPE_CUDA_TRY(status);
    }
    owns_pool_ = true;
    // Keep freed blocks cached across batches instead of returning them at every sync.
    std::uint64_t threshold = std::numeric_limits<std::uint64_t>::max();
    const cudaError_t attr = cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &threshold);
    if (attr != cudaSuccess) {
      release();
      RECPIPE_CUDA_TRY(attr);
    }
  }

  //! Borrows `stream` (0 = the legacy default stream) and `pool` (nullptr = the device's current
  //! pool). Makes no CUDA call, so it never throws.
  explicit cuda_backend(cudaStream_t stream, cudaMemPool_t pool = nullptr) noexcept : stream_(stream), pool_(pool) {}

  cuda_backend(const cuda_backend&) = delete;
  cuda_backend& operator=(const cuda_backend&) = delete;
  // Cached device models hold the address of the backend that allocated them: they are freed
  // (in stream order, on the stream they were made on) rather than moved.
  cuda_backend(cuda_backend&& other) noexcept {
    other.models_.clear();
    swap(other);
  }
  cuda_backend& operator=(cuda_backend&& other) noexcept {
    if (this != &other) {
      release();
      other.models_.clear();
      swap(other);
    }
    return *this;
  }
  //! Releases owned resources. Work already queued still completes (cudaStreamDestroy and
  //! cudaMemPoolDestroy defer the release until it has).
  ~cuda_backend() { release(); }

  cudaStream_t stream() const noexcept { return stream_; }
  //! The pool temporary buffers come from; nullptr means the device's current pool.
  cudaMemPool_t pool() const noexcept { return pool_; }

  //! Stream-ordered allocation of `bytes` (0 bytes gives nullptr). Never throws.
  cudaError_t allocate_async(void** pointer, std::size_t bytes) const noexcept {
    *pointer = nullptr;
    if (bytes == 0) return cudaSuccess;
    return pool_ != nullptr ? cudaMallocFromPoolAsync(pointer, bytes, pool_, stream_)
                            : cudaMallocAsync(pointer, bytes, stream_);
  }
  //! Stream-ordered release of a pointer from allocate_async (nullptr is ignored). Never throws.
  cudaError_t deallocate_async(void* pointer) const noexcept {
    return pointer == nullptr ? cudaSuccess : cudaFreeAsync(pointer, stream_);
  }

  //! Waits for everything queued on the stream. This is where asynchronous failures surface.
  //! @throws cuda_error
  void synchronize() const { RECPIPE_CUDA_TRY(cudaStreamSynchronize(stream_)); }

  //! @brief Where each column of the current run lives (device stages read and write columns
  //! through it; see cuda/residency.hpp). Created on first use.
  run_columns& columns() {
    if (!columns_) columns_ = std::make_unique<run_columns>(detail::device_transfer(stream_, pool_));
    return *columns_;
  }
  //! Run hooks (core/backend.hpp): a pipeline run on this backend moves each column between host
  //! and device at most once each way and synchronises once, at its end (plus once before a host
  //! stage that reads a column the device produced).
  void begin_run() { columns().begin(); }
  template <class Batch>
  void finish_run(Batch& batch) {
    columns().finish(batch);
  }
  void abort_run() noexcept {
    if (columns_) columns_->abort();
  }

  //! @brief Device copies of the host models this backend's stages score and encode with
  //! (cuda/model_cache.hpp): each model's weights are uploaded by the first run that uses it and
  //! reused after. `models().set_capacity(n)` bounds how many stay; `models().clear()` frees them.
  model_cache& models() noexcept { return models_; }

  //! @brief This backend's object of type T, default-constructed on first use and kept until the
  //! backend goes: state its stages share, such as the cuBLAS handle of the device score and
  //! encode stages (a handle is not thread-safe; a backend serves one thread at a time). T must
  //! not hold the backend's address (resources move with the backend).
  template <class T>
  T& resource() {
    const std::type_index type(typeid(T));
    for (const auto& [key, value] : resources_)
      if (key == type) return *static_cast<T*>(value.get());
    std::shared_ptr<T> made = std::make_shared<T>();
    resources_.emplace_back(type, made);
    return *made;
  }

 private:
  void swap(cuda_backend& other) noexcept {
    std::swap(stream_, other.stream_);
    std::swap(pool_, other.pool_);
    std::swap(owns_stream_, other.owns_stream_);
    std::swap(owns_pool_, other.owns_pool_);
    std::swap(columns_, other.columns_);
    std::swap(resources_, other.resources_);
  }
  void release() noexcept {
    models_.clear();  // frees in stream order: before the stream and the pool go
    resources_.clear();
    columns_.reset();  // waits for its run's work on the stream, which must still exist
    if (owns_stream_ && stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    if (owns_pool_ && pool_ != nullptr) (void)cudaMemPoolDestroy(pool_);
    stream_ = nullptr;
    pool_ = nullptr;
    owns_stream_ = owns_pool_ = false;
  }

  cudaStream_t stream_ = nullptr;
  cudaMemPool_t pool_ = nullptr;
  bool owns_stream_ = false;
  bool owns_pool_ = false;
  std::unique_ptr<run_columns> columns_;
  model_cache models_;
  std::vector<std::pair<std::type_index, std::shared_ptr<void>>> resources_;
};

//! @brief An owning, uninitialised array of `size` values of T in device memory, allocated from a
//! backend's pool in stream order and freed in stream order on the same stream.
//!
//! The buffer may be used by work queued on its stream right away; other streams must wait for
//! it (an event) first. Move-only. T must be trivially copyable.
//!
//! @code
//! recpipe::cuda::device_buffer<float> d(backend, 256);     // throws cuda_error when out of memory
//! recpipe::cuda::copy_to_device(backend, host_span, d.span());
//! @endcode
template <class T>
class device_buffer {
  static_assert(std::is_trivially_copyable_v<T>,
                "recpipe: DEVICE_BUFFER_NEEDS_TRIVIALLY_COPYABLE_T - device memory is copied bytewise");

 public:
  device_buffer() = default;
  //! @throws cuda_error when the allocation fails.
  device_buffer(const cuda_backend& backend, std::size_t size) : backend_(&backend), size_(size) {
    if (size > std::numeric_limits<std::size_t>::max() / sizeof(T))
      ::recpipe::detail::fail("cuda::device_buffer: size ", size, " overflows a byte count");
    void* pointer = nullptr;
    RECPIPE_CUDA_TRY(backend.allocate_async(&pointer, size * sizeof(T)));
    data_ = static_cast<T*>(pointer);
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& other) noexcept
      : backend_(std::exchange(other.backend_, nullptr)),
        data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)) {}
  device_buffer& operator=(device_buffer&& other) noexcept {
    if (this != &other) {
      reset();
      backend_ = std::exchange(other.backend_, nullptr);
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~device_buffer() { reset(); }

  T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  device_span<T> span() const noexcept { return {data_, size_}; }
  device_span<const T> const_span() const noexcept { return {data_, size_}; }

 private:
  void reset() noexcept {
    // A destructor cannot report; a failed cudaFreeAsync only means the pool keeps the block.
    if (backend_ != nullptr && data_ != nullptr) (void)backend_->deallocate_async(data_);
    data_ = nullptr;
    size_ = 0;
  }

  const cuda_backend* backend_ = nullptr;
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

//! @brief Queues a copy of `host` into `device` on the backend's stream.
//! `host` must stay alive and unchanged until the stream reaches the copy (pageable memory is
//! staged by the driver before the call returns; pinned memory is read later).
//! @return the cudaError_t of cudaMemcpyAsync; never throws for CUDA failures.
//! @throws recpipe::error if `device` is smaller than `host`.
template <class T>
cudaError_t copy_to_device(const cuda_backend& backend, std::span<const T> host, device_span<T> device) {
  if (device.size() < host.size())
    ::recpipe::detail::fail("cuda::copy_to_device: device span holds ", device.size(), " values but host has ",
                            host.size());
  if (host.empty()) return cudaSuccess;
  return cudaMemcpyAsync(device.data(), host.data(), host.size_bytes(), cudaMemcpyHostToDevice, backend.stream());
}

//! @brief Queues a copy of `device` into `host` on the backend's stream; read `host` only after
//! synchronising.
//! @throws recpipe::error if `host` is smaller than `device`.
template <class T>
cudaError_t copy_to_host(const cuda_backend& backend, device_span<const T> device, std::span<T> host) {
  if (host.size() < device.size())
    ::recpipe::detail::fail("cuda::copy_to_host: host span holds ", host.size(), " values but device has ",
                            device.size());
  if (device.empty()) return cudaSuccess;
  return cudaMemcpyAsync(host.data(), device.data(), device.size_bytes(), cudaMemcpyDeviceToHost, backend.stream());
}

//! @brief Allocates a device buffer and queues a copy of `host` into it (no synchronisation).
//! @code
//! auto d_scores = recpipe::cuda::to_device(backend, std::span<const float>(scores));
//! @endcode
//! @throws cuda_error when allocation or the copy fails.
template <class T>
device_buffer<T> to_device(const cuda_backend& backend, std::span<const T> host) {
  device_buffer<T> buffer(backend, host.size());
  RECPIPE_CUDA_TRY(copy_to_device(backend, host, buffer.span()));
  return buffer;
}

//! @brief Copies `device` to a new host vector and synchronises the stream (a host sync point).
//! @code
//! std::vector<float> scores = recpipe::cuda::to_host(backend, d_scores.const_span());
//! @endcode
//! @throws cuda_error for the copy or for any earlier asynchronous failure on the stream.
template <class T>
std::vector<std::remove_cv_t<T>> to_host(const cuda_backend& backend, device_span<T> device) {
  std::vector<std::remove_cv_t<T>> host(device.size());
  RECPIPE_CUDA_TRY(copy_to_host(backend, device_span<const T>(device), std::span<std::remove_cv_t<T>>(host)));
  backend.synchronize();
  return host;
}

}  // namespace cuda
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
