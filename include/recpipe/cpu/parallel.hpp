// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: a small fork-join pool for the memory-bound kernels (bags, interaction, attention).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {
namespace impl {

// One pool per process. A call runs its chunks on the caller plus the workers; a second caller
// that finds the pool busy (another thread's kernel, or a nested call) simply runs its chunks
// itself, so kernels stay safe to call from many threads and never deadlock.
class thread_pool {
 public:
  static thread_pool& instance() {
    static thread_pool pool;
    return pool;
  }
  thread_pool() = default;
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  ~thread_pool() { resize(1); }

  //! Total threads taking part in a call, the caller included.
  std::size_t size() const { return workers_.size() + 1; }

  void resize(std::size_t threads) {
    std::lock_guard<std::mutex> submit(submit_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    stop_ = false;
    for (std::size_t i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }

  //! Calls body(chunk) for every chunk in [0, chunks); rethrows the first exception.
  template <class Body>
  void run(std::size_t chunks, Body&& body) {
    std::unique_lock<std::mutex> submit(submit_, std::try_to_lock);
    if (!submit.owns_lock() || workers_.empty() || chunks < 2) {
      for (std::size_t c = 0; c < chunks; ++c) body(c);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &body;
      call_ = [](void* job, std::size_t chunk) { (*static_cast<Body*>(job))(chunk); };
      chunks_ = chunks;
      next_.store(0);
      busy_ = workers_.size();
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    drain();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return busy_ == 0; });
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void drain() {
    for (std::size_t c = next_.fetch_add(1); c < chunks_; c = next_.fetch_add(1)) {
      try {
        call_(job_, c);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }
  void work() {
    std::size_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      drain();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--busy_ == 0) done_.notify_one();
    }
  }

  std::mutex submit_, mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  void* job_ = nullptr;
  void (*call_)(void*, std::size_t) = nullptr;
  std::size_t chunks_ = 0, busy_ = 0, generation_ = 0;
  std::atomic<std::size_t> next_{0};
  std::exception_ptr error_;
  bool stop_ = false;
};

//! Splits [0, n) into contiguous ranges when `work` (a rough count of operations) is large enough
//! to pay for waking the pool, and calls body(begin, end) for each.
//!
//! Up to 4 ranges per thread, claimed dynamically: the caller starts on its first range at once,
//! while a worker must first be woken and scheduled, which takes longer than a whole 1 ms kernel
//! when its CPU is busy (another process, or another library's OpenMP threads spin-waiting after
//! their own call). With one range per thread the caller would then run the late worker's range
//! too and the call would be serial; with several, the late worker still takes what is left.
template <class Body>
void parallel_for(std::size_t n, std::size_t work, Body&& body) {
  auto& pool = thread_pool::instance();
  constexpr std::size_t min_work_per_thread = std::size_t{1} << 16;
  const std::size_t threads = std::min({pool.size(), n, std::max<std::size_t>(1, work / min_work_per_thread)});
  if (threads <= 1) {
    if (n) body(std::size_t{0}, n);
    return;
  }
  const std::size_t chunks = std::min({threads * 4, n, std::max(threads, work / (min_work_per_thread / 4))});
  const std::size_t step = (n + chunks - 1) / chunks;
  pool.run((n + step - 1) / step, [&](std::size_t chunk) {
    const std::size_t begin = chunk * step, end = std::min(n, begin + step);
    if (begin < end) body(begin, end);
  });
}

}  // namespace impl
}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
