// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: the scratch memory of the kernels and models, one stack per caller that
// is passed down the call chain (CUB's temp-storage idiom), so nested calls cannot clobber each
// other's buffers and no call needs a hand-picked slot number.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <new>
#include <span>
#include <type_traits>
#include <vector>

#include <recpipe/core/errors.hpp>

#if defined(__SANITIZE_ADDRESS__)
#define RECPIPE_WORKSPACE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RECPIPE_WORKSPACE_ASAN 1
#endif
#endif
#ifdef RECPIPE_WORKSPACE_ASAN
#include <sanitizer/asan_interface.h>
#endif

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! @brief A stack (bump) allocator for scratch memory: take() hands out 64-byte-aligned spans
//! that stay valid until the enclosing workspace::frame ends; a frame's destructor gives back
//! everything taken since it began.
//!
//! Memory comes in blocks that never move, so a span stays valid while later take() calls grow
//! the workspace. A take that does not fit the current block moves to the next one (allocating
//! it, or replacing it when it is too small: nothing after the top is ever in use). When the
//! last frame ends and the stack is empty, several blocks are merged into one as large as all of
//! them, so once a workload has run once its next run allocates nothing.
//!
//! Every kernel or model that needs scratch takes a trailing `cpu::workspace& ws =
//! cpu::workspace::for_this_thread()`, opens a frame on it and passes it to its callees. A
//! workspace belongs to one thread at a time (no locking); inside cpu::impl::parallel_for each
//! worker takes from its own thread's workspace. Contents of a take are uninitialised; T must be
//! trivially copyable and destructible (floats, indices). Under AddressSanitizer the memory above
//! the top is poisoned, so a span used after its frame ended is reported.
//! @code
//! void my_kernel(recpipe::matrix_view<const float> x, recpipe::cpu::workspace& ws =
//!                recpipe::cpu::workspace::for_this_thread()) {
//!   const recpipe::cpu::workspace::frame frame(ws);   // gives back what this call takes
//!   std::span<float> tmp = ws.take<float>(x.rows() * x.cols());  // 64-byte aligned
//!   recpipe::cpu::layer_norm(x, {}, {}, {tmp.data(), x.rows(), x.cols()});
//!   callee(tmp, ws);  // the callee opens its own frame above tmp: it cannot clobber it
//! }                   // frame ends: tmp is given back (no free; the next call reuses it)
//! @endcode
class workspace {
 public:
  //! Alignment of every span take() returns (a cache line, and enough for AVX-512 loads).
  static constexpr std::size_t alignment = 64;

  //! RAII scope of a workspace: everything taken while it lives is given back when it ends.
  //! Frames nest; they must end in reverse order of their start (automatic for locals).
  class frame {
   public:
    explicit frame(workspace& ws) noexcept
        : ws_(ws), block_(ws.current_), used_(ws.blocks_.empty() ? 0 : ws.blocks_[ws.current_].used) {}
    frame(const frame&) = delete;
    frame& operator=(const frame&) = delete;
    ~frame() { ws_.release(block_, used_); }

   private:
    workspace& ws_;
    std::size_t block_, used_;
  };

  workspace() = default;
  workspace(const workspace&) = delete;  // frames and spans point into it
  workspace& operator=(const workspace&) = delete;
  ~workspace() {
    for (block& b : blocks_) free_block(b);
  }

  //! @brief n uninitialised objects of T, aligned to 64 bytes, valid until the innermost frame
  //! open on this workspace ends. n = 0 gives an empty span and takes nothing.
  //! @throws recpipe::error when n * sizeof(T) overflows; std::bad_alloc when memory runs out.
  template <class T>
  std::span<T> take(std::size_t n) {
    static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                  "cpu::workspace::take: T must be trivially copyable and destructible (no constructor runs)");
    static_assert(alignof(T) <= alignment, "cpu::workspace::take: T needs more than 64-byte alignment");
    if (n == 0) return {};
    if (n > (std::numeric_limits<std::size_t>::max() - alignment) / sizeof(T))
      detail::fail("cpu::workspace::take: ", n, " objects of ", sizeof(T), " bytes overflow the address space");
    const std::size_t bytes = (n * sizeof(T) + alignment - 1) / alignment * alignment;
    // Storage from operator new implicitly creates objects of implicit-lifetime types (T is trivial).
    return {reinterpret_cast<T*>(allocate(bytes, n * sizeof(T))), n};
  }

  //! @brief The calling thread's workspace (thread_local, created on first use, freed when the
  //! thread ends): the default of every `ws` parameter.
  static workspace& for_this_thread() noexcept {
    thread_local workspace ws;
    return ws;
  }

  //! Blocks held now (1 once a workload has warmed up and its outermost frame has ended).
  std::size_t blocks() const noexcept { return blocks_.size(); }
  //! Bytes held over all blocks.
  std::size_t capacity() const noexcept {
    std::size_t total = 0;
    for (const block& b : blocks_) total += b.size;
    return total;
  }
  //! Bytes taken and not yet given back (each take rounded up to 64 bytes).
  std::size_t in_use() const noexcept {
    std::size_t total = 0;
    for (std::size_t k = 0; k < blocks_.size() && k <= current_; ++k) total += blocks_[k].used;
    return total;
  }
  //! Blocks allocated over the workspace's life (a warm workload leaves it unchanged).
  std::size_t allocations() const noexcept { return allocations_; }

 private:
  struct block {
    std::byte* data = nullptr;
    std::size_t size = 0;  // bytes
    std::size_t used = 0;  // bytes in use from the start (0 for every block after current_)
  };
  static constexpr std::size_t min_block = std::size_t{16} << 10;

  static void poison([[maybe_unused]] const std::byte* p, [[maybe_unused]] std::size_t bytes) noexcept {
#ifdef RECPIPE_WORKSPACE_ASAN
    if (bytes) ASAN_POISON_MEMORY_REGION(p, bytes);
#endif
  }
  static void unpoison([[maybe_unused]] const std::byte* p, [[maybe_unused]] std::size_t bytes) noexcept {
#ifdef RECPIPE_WORKSPACE_ASAN
    if (bytes) ASAN_UNPOISON_MEMORY_REGION(p, bytes);
#endif
  }
  static std::byte* new_block(std::size_t size) {
    auto* p = static_cast<std::byte*>(::operator new(size, std::align_val_t{alignment}));
    poison(p, size);
    return p;
  }
  static void free_block(block& b) noexcept {
    if (b.data == nullptr) return;
    unpoison(b.data, b.size);
    ::operator delete(b.data, std::align_val_t{alignment});
    b.data = nullptr;
  }

  // A new block's size: at least the request and as much as everything held so far, so the
  // capacity grows geometrically and the number of blocks stays small.
  std::size_t grown_size(std::size_t bytes) const noexcept {
    std::size_t size = std::max(bytes, min_block);
    const std::size_t held = capacity();
    return held > size ? held : size;
  }

  // `bytes` is the request rounded up to the alignment; `exact` what the caller may touch
  // (the rest stays poisoned under ASan, so an overrun is caught too).
  std::byte* allocate(std::size_t bytes, std::size_t exact) {
    if (!blocks_.empty()) {
      block& top = blocks_[current_];
      if (top.size - top.used >= bytes) {
        std::byte* p = top.data + top.used;
        top.used += bytes;
        unpoison(p, exact);
        return p;
      }
    }
    // The block the take goes to: the current one when nothing in it is in use, else the next.
    const std::size_t target = blocks_.empty() || blocks_[current_].used == 0 ? current_ : current_ + 1;
    if (target == blocks_.size()) {
      blocks_.reserve(blocks_.size() + 1);  // may throw before anything changes
      const std::size_t size = grown_size(bytes);
      blocks_.push_back({new_block(size), size, 0});
      ++allocations_;
    } else if (blocks_[target].size < bytes) {
      // Nothing in or after `target` is in use, so it can be replaced by a larger block.
      const std::size_t size = grown_size(bytes);
      std::byte* fresh = new_block(size);
      free_block(blocks_[target]);
      blocks_[target] = {fresh, size, 0};
      ++allocations_;
    }
    current_ = target;
    block& b = blocks_[target];
    b.used = bytes;
    unpoison(b.data, exact);
    return b.data;
  }

  // Back to the state a frame saw at its start: (block, used) of the top.
  void release(std::size_t block_index, std::size_t used) noexcept {
    if (blocks_.empty()) return;
    for (std::size_t k = current_; k > block_index; --k) {
      poison(blocks_[k].data, blocks_[k].used);
      blocks_[k].used = 0;
    }
    block& b = blocks_[block_index];
    poison(b.data + used, b.used - used);
    b.used = used;
    current_ = block_index;
    if (block_index == 0 && used == 0 && blocks_.size() > 1) merge();
  }

  // Empty stack and several blocks: one block as large as all of them, so the same workload
  // fits it next time. Skipped (the blocks stay) when that allocation fails: this runs in a
  // frame's destructor and must not throw.
  void merge() noexcept {
    const std::size_t size = capacity();
    auto* fresh = static_cast<std::byte*>(::operator new(size, std::align_val_t{alignment}, std::nothrow));
    if (fresh == nullptr) return;
    poison(fresh, size);
    for (block& b : blocks_) free_block(b);
    blocks_.resize(1);
    blocks_[0] = {fresh, size, 0};
    ++allocations_;
  }

  std::vector<block> blocks_;
  std::size_t current_ = 0;  // the block holding the top of the stack (0 while blocks_ is empty)
  std::size_t allocations_ = 0;
};

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
