// SPDX-License-Identifier: Apache-2.0
// recpipe package test: a CUDA program built against recpipe::cuda from an installed prefix.
#if !defined(__CUDACC__)
#error "recpipe package test: main_cuda.cu must be compiled by nvcc"
#endif

#if __has_include(<recpipe/cuda.cuh>)
#include <recpipe/cuda.cuh>
#elif defined(RECPIPE_CONSUMER_REQUIRE_CUDA_UMBRELLA)
#error "recpipe package test: <recpipe/cuda.cuh> is in the source tree but missing from the installed prefix"
#endif
#include <recpipe/core/matrix.hpp>
#include <recpipe/version.hpp>

#include <cub/version.cuh>  // CCCL must reach the consumer through recpipe::cuda
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdio>
#include <type_traits>
#include <vector>

static_assert(CUB_VERSION >= 200000, "recpipe::cuda needs CCCL 2 or newer");
static_assert(std::is_trivially_copyable_v<recpipe::matrix_view<float>>, "kernel arguments are copied bitwise");

namespace {

// One block per row, one thread per column: enough to prove RECPIPE_HOST_DEVICE members work on the device.
__global__ void scale_rows(recpipe::matrix_view<float> m, float factor) {
  const std::size_t r = blockIdx.x, c = threadIdx.x;
  if (r < m.rows() && c < m.cols()) m(r, c) *= factor;
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("recpipe %s cuda consumer: no CUDA device, skipped\n", RECPIPE_VERSION_STRING);
    return 77;
  }
  constexpr std::size_t rows = 4, cols = 3;
  recpipe::matrix<float> host(rows, cols, 1.5f);
  float* device = nullptr;
  const std::size_t bytes = host.size() * sizeof(float);
  if (cudaMalloc(&device, bytes) != cudaSuccess) return 1;
  cudaMemcpy(device, host.data(), bytes, cudaMemcpyHostToDevice);
  scale_rows<<<rows, cols>>>(recpipe::matrix_view<float>(device, rows, cols), 2.0f);
  const cudaError_t status = cudaMemcpy(host.data(), device, bytes, cudaMemcpyDeviceToHost);
  cudaFree(device);
  if (status != cudaSuccess) {
    std::fprintf(stderr, "recpipe cuda consumer: %s\n", cudaGetErrorString(status));
    return 1;
  }
  for (const float value : host.values())
    if (value != 3.0f) {
      std::fprintf(stderr, "recpipe cuda consumer: FAILED: expected 3, got %g\n", static_cast<double>(value));
      return 1;
    }
  std::printf("recpipe %s cuda consumer: all checks passed\n", RECPIPE_VERSION_STRING);
  return 0;
}
