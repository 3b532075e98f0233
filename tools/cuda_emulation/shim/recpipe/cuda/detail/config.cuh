// SPDX-License-Identifier: Apache-2.0
// Host emulation shim of recpipe/cuda/detail/config.cuh for tools/cuda_emulation (development
// only): kernels run with one std::thread per CUDA thread, blocks one after another; barriers
// stand in for __syncthreads / __syncwarp and a per-warp array for __shfl_xor_sync. Kernels must
// reach these at warp-uniform (block-uniform for __syncthreads) points, as on the GPU.
#pragma once
#include <recpipe/config.hpp>
#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#define RECPIPE_CUDA_NAMESPACE_BEGIN RECPIPE_NAMESPACE_BEGIN namespace cuda { inline namespace arch_emu {
#define RECPIPE_CUDA_NAMESPACE_END } } RECPIPE_NAMESPACE_END
#define __global__
#define __device__
#define __shared__
#define __launch_bounds__(x)
struct emu_dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local emu_dim3 threadIdx, blockIdx;
inline emu_dim3 gridDim, blockDim;
inline std::barrier<>* emu_block_barrier = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> emu_warp_barriers;
inline float emu_shfl[32][32];
inline void __syncthreads() { emu_block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu_warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int offset) {
  const unsigned w = threadIdx.x / 32, l = threadIdx.x % 32;
  emu_shfl[w][l] = v;
  __syncwarp();
  const float r = emu_shfl[w][l ^ static_cast<unsigned>(offset)];
  __syncwarp();
  return r;
}
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
template <class Kernel, class... Args>
void emu_launch(unsigned gx, unsigned gy, unsigned threads, Kernel kernel, Args... args) {
  gridDim = {gx, gy, 1};
  blockDim = {threads, 1, 1};
  for (unsigned by = 0; by < gy; ++by)
    for (unsigned bx = 0; bx < gx; ++bx) {
      std::barrier<> block(threads);
      emu_block_barrier = &block;
      emu_warp_barriers.clear();
      for (unsigned w = 0; w < threads / 32; ++w) emu_warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
      std::vector<std::thread> pool;
      for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([=] { threadIdx = {t, 0, 0}; blockIdx = {bx, by, 0}; kernel(args...); });
      for (auto& th : pool) th.join();
    }
}
