// SPDX-License-Identifier: Apache-2.0
// Fixtures shared by the CUDA tests (tests/cuda/): the skip without a device, and host matrices
// with their device copies.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <span>
#include <vector>

#include <recpipe/core/matrix.hpp>
#include <recpipe/cuda/backend.cuh>

namespace recpipe_test {

//! The shared doctest main cannot be told to skip, so a GPU test decides before it runs: without
//! a device the binary reports why and exits with ctest's skip code (77), never "passed".
inline void exit_unless_device() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    std::printf("SKIPPED: no CUDA device (%s)\n",
                status != cudaSuccess ? cudaGetErrorString(status) : "cudaGetDeviceCount reports 0 devices");
    std::fflush(stdout);
    std::exit(77);
  }
}

inline std::vector<float> random_vector(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

//! A host matrix and its device copy, row-major with `stride` >= cols.
struct twin {
  std::size_t rows = 0, cols = 0, stride = 0;
  std::vector<float> host;
  recpipe::cuda::device_buffer<float> device;
  twin(recpipe::cuda::cuda_backend& backend, std::size_t r, std::size_t c, std::mt19937& rng, std::size_t pad = 0,
       float scale = 1.0f)
      : rows(r), cols(c), stride(c + pad), host(random_vector(r * (c + pad), rng, scale)),
        device(recpipe::cuda::to_device(backend, std::span<const float>(host))) {}
  recpipe::matrix_view<const float> cview() const { return {host.data(), rows, cols, stride}; }
  recpipe::matrix_view<float> view() { return {host.data(), rows, cols, stride}; }
  recpipe::matrix_view<const float> dcview() const { return {device.data(), rows, cols, stride}; }
  recpipe::matrix_view<float> dview() { return {device.data(), rows, cols, stride}; }
  void fetch(recpipe::cuda::cuda_backend& backend) { host = recpipe::cuda::to_host(backend, device.const_span()); }
};

}  // namespace recpipe_test
