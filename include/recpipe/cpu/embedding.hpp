// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend: embedding tables (fp32, fp16, int8 row-wise) and pooled bag lookups.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <span>

#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/ragged_view.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/isa.hpp>
#include <recpipe/cpu/parallel.hpp>
#include <recpipe/math/embedding.hpp>
#include <recpipe/math/half.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! How the rows of an embedding table are stored.
enum class storage {
  fp32,          //!< float rows
  fp16,          //!< IEEE binary16 bit patterns (std::uint16_t)
  int8_rowwise   //!< dim uint8 codes then float scale, float bias; value = code * scale + bias
};

//! @brief A non-owning, trivially copyable view of an embedding table in any storage.
//! @code
//! auto table = recpipe::cpu::embedding_table_view::fp32(weights.view());  // [rows, dim]
//! @endcode
class embedding_table_view {
 public:
  embedding_table_view() = default;

  //! A view of fp32 rows (any stride >= dim).
  static embedding_table_view fp32(matrix_view<const float> rows) {
    impl::check_view("cpu::embedding_table_view::fp32", "rows", rows);
    return {storage::fp32, reinterpret_cast<const std::byte*>(rows.data()), rows.rows(), rows.cols(),
            (rows.rows() > 1 ? rows.stride() : rows.cols()) * sizeof(float)};
  }
  //! A view of `rows` contiguous fp16 rows of `dim` values.
  static embedding_table_view fp16(const std::uint16_t* data, std::size_t rows, std::size_t dim) {
    check_data("fp16", data, rows, dim);
    return {storage::fp16, reinterpret_cast<const std::byte*>(data), rows, dim, dim * sizeof(std::uint16_t)};
  }
  //! A view of `rows` contiguous int8 row-wise rows (dim + 8 bytes each).
  static embedding_table_view int8_rowwise(const std::uint8_t* data, std::size_t rows, std::size_t dim) {
    check_data("int8_rowwise", data, rows, dim);
    return {storage::int8_rowwise, reinterpret_cast<const std::byte*>(data), rows, dim,
            dim + math::int8_row_tail_bytes};
  }

  storage type() const { return type_; }
  std::size_t rows() const { return rows_; }
  std::size_t dim() const { return dim_; }
  //! Bytes from one row to the next.
  std::size_t row_bytes() const { return row_bytes_; }
  const std::byte* data() const { return data_; }
  const std::byte* row(std::size_t id) const { return data_ + id * row_bytes_; }

  //! @brief Decodes row `id` into `out` (dim floats).
  //! @throws recpipe::error if id is out of range or out has the wrong size.
  void dequantize_row(id_type id, std::span<float> out) const {
    if (id < 0 || static_cast<std::uint64_t>(id) >= rows_)
      detail::fail("cpu::embedding_table_view::dequantize_row: id ", id, " is outside [0, ", rows_, ")");
    if (out.size() != dim_) detail::fail("cpu::embedding_table_view::dequantize_row: out holds ", out.size(), " floats, dim is ", dim_);
    for (float& v : out) v = 0.0f;
    accumulate(static_cast<std::size_t>(id), 1.0f, out.data());
  }

  //! acc[0..dim) += weight * row(id), no checks (the kernels validate ids first).
  void accumulate(std::size_t id, float weight, float* acc) const;

 private:
  embedding_table_view(storage type, const std::byte* data, std::size_t rows, std::size_t dim, std::size_t row_bytes)
      : data_(data), rows_(rows), dim_(dim), row_bytes_(row_bytes), type_(type) {}
  static void check_data(const char* what, const void* data, std::size_t rows, std::size_t dim) {
    if (data == nullptr && rows * dim != 0)
      detail::fail("cpu::embedding_table_view::", what, ": data is null for a ", rows, " x ", dim, " table");
  }

  const std::byte* data_ = nullptr;
  std::size_t rows_ = 0, dim_ = 0, row_bytes_ = 0;
  storage type_ = storage::fp32;
};

namespace impl {
// fp16 rows: F16C converts 8 halves per instruction where the build allows it.
inline void accumulate_fp16(const std::uint16_t* RECPIPE_RESTRICT row, float weight, float* RECPIPE_RESTRICT acc,
                            std::size_t dim) {
  std::size_t c = 0;
#if defined(__F16C__) && defined(__AVX__)
  const __m256 w = _mm256_set1_ps(weight);
  for (; c + 8 <= dim; c += 8) {
    const __m256 v = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c)));
    _mm256_storeu_ps(acc + c, _mm256_add_ps(_mm256_loadu_ps(acc + c), _mm256_mul_ps(w, v)));
  }
#endif
  math::accumulate_row(row + c, weight, acc + c, dim - c);
}
}  // namespace impl

inline void embedding_table_view::accumulate(std::size_t id, float weight, float* acc) const {
  const std::byte* r = row(id);
  switch (type_) {
    case storage::fp32:
      return math::accumulate_row(reinterpret_cast<const float*>(r), weight, acc, dim_);
    case storage::fp16:
      return impl::accumulate_fp16(reinterpret_cast<const std::uint16_t*>(r), weight, acc, dim_);
    case storage::int8_rowwise:
      return math::accumulate_row_int8(reinterpret_cast<const std::uint8_t*>(r), weight, acc, dim_);
  }
}

//! @brief An owning embedding table: 64-byte aligned rows; tables of 2 MiB or more are 2 MiB
//! aligned and advised to use transparent huge pages (fewer TLB misses on random gathers).
//! Move-only (a copy of a multi-GB table should never be silent).
//! @code
//! auto table = recpipe::cpu::embedding_table::from_fp32(weights.view(), recpipe::cpu::storage::int8_rowwise);
//! recpipe::cpu::embedding_bag(table.view(), ids, offsets, {}, recpipe::cpu::pooling::sum, out.view());
//! @endcode
class embedding_table {
 public:
  //! A zero-filled table. @throws recpipe::error if rows * row bytes overflows.
  embedding_table(storage type, std::size_t rows, std::size_t dim) : rows_(rows), dim_(dim), type_(type) {
    row_bytes_ = type == storage::fp32 ? dim * sizeof(float)
                 : type == storage::fp16 ? dim * sizeof(std::uint16_t)
                                         : dim + math::int8_row_tail_bytes;
    if (row_bytes_ != 0 && rows > (std::size_t{1} << 46) / row_bytes_)
      detail::fail("cpu::embedding_table: ", rows, " rows of ", row_bytes_, " bytes is too large");
    bytes_ = rows * row_bytes_;
    constexpr std::size_t huge = std::size_t{2} << 20;
    const std::size_t alignment = bytes_ >= huge ? huge : 64;
    const std::size_t padded = (bytes_ + alignment - 1) / alignment * alignment;
    if (padded != 0) {
      data_.reset(static_cast<std::byte*>(std::aligned_alloc(alignment, padded)));
      if (!data_) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      if (alignment == huge) (void)::madvise(data_.get(), padded, MADV_HUGEPAGE);  // advisory: ignore refusal
#endif
      std::memset(data_.get(), 0, padded);
    }
  }

  //! @brief Converts fp32 rows into a new table of `type` (rounds to fp16 or quantizes row-wise).
  //! @throws recpipe::error for a non-finite value when quantizing to int8.
  static embedding_table from_fp32(matrix_view<const float> rows, storage type) {
    impl::check_view("cpu::embedding_table::from_fp32", "rows", rows);
    embedding_table table(type, rows.rows(), rows.cols());
    for (std::size_t r = 0; r < rows.rows(); ++r) table.set_row(static_cast<id_type>(r), rows.row(r));
    return table;
  }

  //! @brief Stores `values` (dim floats) as row `id`, converting to the table's storage.
  //! fp16 rounds to nearest even (beyond +-65504 gives inf); int8 row-wise needs finite values.
  //! @throws recpipe::error on a bad id, a wrong size, or a non-finite value for int8.
  void set_row(id_type id, std::span<const float> values) {
    if (id < 0 || static_cast<std::uint64_t>(id) >= rows_)
      detail::fail("cpu::embedding_table::set_row: id ", id, " is outside [0, ", rows_, ")");
    if (values.size() != dim_) detail::fail("cpu::embedding_table::set_row: values holds ", values.size(), " floats, dim is ", dim_);
    std::byte* row = data_.get() + static_cast<std::size_t>(id) * row_bytes_;
    switch (type_) {
      case storage::fp32:
        if (dim_) std::memcpy(row, values.data(), dim_ * sizeof(float));
        return;
      case storage::fp16:
        for (std::size_t c = 0; c < dim_; ++c) {
          const std::uint16_t h = math::float_to_half(values[c]);
          std::memcpy(row + 2 * c, &h, sizeof h);
        }
        return;
      case storage::int8_rowwise:
        for (std::size_t c = 0; c < dim_; ++c)
          if (!std::isfinite(values[c]))
            detail::fail("cpu::embedding_table::set_row: values[", c, "] = ", values[c], " cannot be quantized to int8");
        math::quantize_row_int8(values.data(), dim_, reinterpret_cast<std::uint8_t*>(row));
        return;
    }
  }

  embedding_table_view view() const {
    switch (type_) {
      case storage::fp32:
        return embedding_table_view::fp32({reinterpret_cast<const float*>(data_.get()), rows_, dim_});
      case storage::fp16:
        return embedding_table_view::fp16(reinterpret_cast<const std::uint16_t*>(data_.get()), rows_, dim_);
      case storage::int8_rowwise:
      default:
        return embedding_table_view::int8_rowwise(reinterpret_cast<const std::uint8_t*>(data_.get()), rows_, dim_);
    }
  }
  std::byte* data() { return data_.get(); }
  const std::byte* data() const { return data_.get(); }
  std::size_t rows() const { return rows_; }
  std::size_t dim() const { return dim_; }
  std::size_t row_bytes() const { return row_bytes_; }
  std::size_t size_bytes() const { return bytes_; }
  storage type() const { return type_; }

 private:
  struct free_deleter {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::unique_ptr<std::byte, free_deleter> data_;
  std::size_t rows_ = 0, dim_ = 0, row_bytes_ = 0, bytes_ = 0;
  storage type_ = storage::fp32;
};

//! How a bag's rows are combined.
enum class pooling {
  sum,  //!< sum of (weighted) rows
  mean  //!< sum divided by the number of ids in the bag (an empty bag gives zeros)
};

namespace impl {
// Rows prefetched ahead in the id stream: enough in flight to cover DRAM latency (~100 ns) at
// ~30 M rows/s per core, measured best at 16 on the reference machine.
#ifdef RECPIPE_EMBEDDING_PREFETCH_DISTANCE  // tuning knob for other hosts; 8 and 32 measured no better here
inline constexpr std::size_t prefetch_distance = RECPIPE_EMBEDDING_PREFETCH_DISTANCE;
#else
inline constexpr std::size_t prefetch_distance = 16;
#endif

// The AVX-512 body prefetches into L2 (prefetcht1) a fixed number of cache lines ahead rather
// than a fixed number of rows: an L2 prefetch does not hold one of the ~16 L1 fill buffers for
// the whole DRAM latency, so far more lines can be in flight (the L2 tracks ~48). Measured on the
// reference host (4e6 x 64 table, bag 20, one thread): cold fp32 1.49 -> 1.03-1.05 ms for
// 48..128 rows ahead (32: 1.15, 16: 1.27, prefetcht0 at 16: 1.49); int8 flat from 32 to 192
// rows; fp16 best from 64. 192 lines = 48 fp32 rows of 256 bytes, 96 int8 or fp16 rows.
inline constexpr std::size_t prefetch_lines = 192;
inline std::size_t prefetch_ids(std::size_t row_bytes) {
  const std::size_t lines = (row_bytes + 63) / 64;
  const std::size_t ids = lines ? prefetch_lines / lines : 0;
  return ids < 4 ? 4 : ids;
}

inline void prefetch_row(const embedding_table_view& table, id_type id) {
  if (static_cast<std::uint64_t>(id) >= table.rows()) return;  // never form an out-of-range address
  // Exactly the cache lines the row touches (a 72-byte int8 row may straddle three): a redundant
  // prefetch is not free when the line-fill buffers are the bottleneck.
  const auto first = reinterpret_cast<std::uintptr_t>(table.row(static_cast<std::size_t>(id)));
  const std::uintptr_t end = first + table.row_bytes();
  for (std::uintptr_t line = first & ~std::uintptr_t{63}; line < end; line += 64)
    RECPIPE_PREFETCH(reinterpret_cast<const void*>(line));
}

[[noreturn]] inline void bad_id(const char* where, std::size_t position, id_type id, std::size_t rows) {
  detail::fail(where, ": ids[", position, "] = ", id, " is outside [0, ", rows, ")");
}

inline void check_offsets(const char* where, std::span<const id_type> offsets, std::size_t ids, std::size_t batch) {
  if (offsets.size() != batch && offsets.size() != batch + 1)
    detail::fail(where, ": offsets has ", offsets.size(), " entries for ", batch, " bags (need ", batch, " or ",
                 batch + 1, ")");
  // PyTorch's layouts: batch offsets (the last bag runs to the end) or batch + 1 whose last entry
  // need not be ids.size() (include_last_offset ignores what follows it).
  recpipe::check_offsets<id_type>(where, offsets, ids, last_offset::may_be_implicit);
}

template <storage Type>
void bag_kernel(const embedding_table_view& table, std::span<const id_type> ids, std::span<const id_type> offsets,
                const float* weights, pooling mode, matrix_view<float> out, std::size_t first_bag, std::size_t last_bag) {
  const std::size_t dim = table.dim(), rows = table.rows(), n = ids.size();
  for (std::size_t b = first_bag; b < last_bag; ++b) {
    const auto begin = static_cast<std::size_t>(offsets[b]);
    const std::size_t end = b + 1 < offsets.size() ? static_cast<std::size_t>(offsets[b + 1]) : n;
    float* RECPIPE_RESTRICT acc = out.data() + b * out.stride();
    for (std::size_t c = 0; c < dim; ++c) acc[c] = 0.0f;
    for (std::size_t i = begin; i < end; ++i) {
      if (i + prefetch_distance < n) prefetch_row(table, ids[i + prefetch_distance]);
      const id_type id = ids[i];
      if (RECPIPE_UNLIKELY(static_cast<std::uint64_t>(id) >= rows)) bad_id("cpu::embedding_bag", i, id, rows);
      const float w = weights ? weights[i] : 1.0f;
      const std::byte* row = table.row(static_cast<std::size_t>(id));
      if constexpr (Type == storage::fp32)
        math::accumulate_row(reinterpret_cast<const float*>(row), w, acc, dim);
      else if constexpr (Type == storage::fp16)
        accumulate_fp16(reinterpret_cast<const std::uint16_t*>(row), w, acc, dim);
      else
        math::accumulate_row_int8(reinterpret_cast<const std::uint8_t*>(row), w, acc, dim);
    }
    if (mode == pooling::mean && end > begin) {
      const float inverse = 1.0f / static_cast<float>(end - begin);
      for (std::size_t c = 0; c < dim; ++c) acc[c] *= inverse;
    }
  }
}
}  // namespace impl
}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/cpu/detail/embedding_avx512.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace cpu {

//! @brief out[i] = row ids[i] of the table, decoded to float.
//! @param out  [ids.size(), dim]
//! @throws recpipe::error naming the position of an id outside [0, rows), or a wrong out shape.
//! @code
//! recpipe::cpu::embedding_lookup(table.view(), ids, out.view());
//! @endcode
inline void embedding_lookup(const embedding_table_view& table, std::span<const id_type> ids, matrix_view<float> out) {
  impl::check_shape("cpu::embedding_lookup", "out", out, ids.size(), table.dim());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i + impl::prefetch_distance < ids.size()) impl::prefetch_row(table, ids[i + impl::prefetch_distance]);
    if (static_cast<std::uint64_t>(ids[i]) >= table.rows()) impl::bad_id("cpu::embedding_lookup", i, ids[i], table.rows());
    float* row = out.data() + i * out.stride();
    for (std::size_t c = 0; c < table.dim(); ++c) row[c] = 0.0f;
    table.accumulate(static_cast<std::size_t>(ids[i]), 1.0f, row);
  }
}

//! @brief Pooled lookups over ragged bags, as `torch.nn.functional.embedding_bag`.
//!
//! Bag b holds ids[offsets[b] .. end_b), where end_b = offsets[b+1], or ids.size() for the last
//! bag when offsets has out.rows() entries (PyTorch's default); offsets may also have
//! out.rows() + 1 entries (include_last_offset). offsets[0] must be 0 and offsets non-decreasing.
//! @param weights  empty, or one weight per id, multiplied into its row before pooling.
//! @param mode     sum, or mean (divides by the id count; an empty bag gives zeros).
//! @param out      [batch, dim].
//! Rows are prefetched ahead across bag boundaries; bags are split over cpu::set_num_threads
//! threads. On AVX-512 CPUs (cpu::active_isa()) an AVX-512 body runs whatever the caller's -march.
//! @throws recpipe::error for bad offsets, an id outside [0, rows) (naming its position), a
//! weights size other than 0 or ids.size(), or a wrong out shape. On a throw `out` is partly written.
//! @code
//! std::vector<recpipe::id_type> ids = {3, 1, 4, 1, 5}, offsets = {0, 2};    // bags {3,1} {4,1,5}
//! recpipe::cpu::embedding_bag(table.view(), ids, offsets, {}, recpipe::cpu::pooling::mean, out.view());
//! @endcode
inline void embedding_bag(const embedding_table_view& table, std::span<const id_type> ids,
                          std::span<const id_type> offsets, std::span<const float> weights, pooling mode,
                          matrix_view<float> out) {
  impl::check_view("cpu::embedding_bag", "out", out);
  if (out.cols() != table.dim())
    detail::fail("cpu::embedding_bag: out has ", out.cols(), " columns but the table's dim is ", table.dim());
  impl::check_offsets("cpu::embedding_bag", offsets, ids.size(), out.rows());
  if (!weights.empty() && weights.size() != ids.size())
    detail::fail("cpu::embedding_bag: weights has ", weights.size(), " entries for ", ids.size(), " ids (need 0 or ",
                 ids.size(), ")");
  const float* w = weights.empty() ? nullptr : weights.data();
  // Bags are split over the pool (cpu::set_num_threads); each chunk prefetches its own stream.
  // The views are captured by value: copies in the lambda let the compiler keep them in registers.
#if RECPIPE_HAS_AVX512_KERNELS
  const bool avx512 = active_isa() == isa::avx512 && table.dim() != 0;  // dim 0: portable (still checks ids)
  const impl::avx512::bag_args args{table.data(), table.rows(), table.dim(), table.row_bytes(), ids.data(), ids.size(),
                                    offsets.data(), offsets.size(), w, mode == pooling::mean, out.data(),
                                    out.stride(), impl::prefetch_ids(table.row_bytes())};
#endif
  const auto run = [=]<storage Type>(std::size_t first, std::size_t last) {
#if RECPIPE_HAS_AVX512_KERNELS
    if (avx512) return impl::avx512::bags<Type>(args, first, last);
#endif
    impl::bag_kernel<Type>(table, ids, offsets, w, mode, out, first, last);
  };
  const std::size_t work = ids.size() * (table.dim() + 16);
  switch (table.type()) {
    case storage::fp32:
      return impl::parallel_for(out.rows(), work, [&](std::size_t a, std::size_t b) { run.template operator()<storage::fp32>(a, b); });
    case storage::fp16:
      return impl::parallel_for(out.rows(), work, [&](std::size_t a, std::size_t b) { run.template operator()<storage::fp16>(a, b); });
    case storage::int8_rowwise:
      return impl::parallel_for(out.rows(), work, [&](std::size_t a, std::size_t b) { run.template operator()<storage::int8_rowwise>(a, b); });
  }
}

//! The ids, offsets and optional per-id weights of one sparse feature (one table) for a batch.
struct bag_input {
  std::span<const id_type> ids;
  std::span<const id_type> offsets;
  std::span<const float> weights = {};
};

//! @brief Pools a model's whole set of sparse features in one call: table t's bags go to columns
//! [dim_0 + ... + dim_{t-1}, + dim_t) of out [batch, sum of dims]. With equal dims this is the
//! [batch, T, dim] layout that dot_interaction() reads.
//! @throws recpipe::error if tables and inputs differ in count, the dims do not add up to
//! out.cols(), or any bag_input is invalid (the message names its index).
//! @code
//! std::vector<recpipe::cpu::bag_input> inputs = {{ids0, offsets0}, {ids1, offsets1}};
//! recpipe::cpu::embedding_bags(tables, inputs, recpipe::cpu::pooling::sum, out.view());
//! @endcode
inline void embedding_bags(std::span<const embedding_table_view> tables, std::span<const bag_input> inputs,
                           pooling mode, matrix_view<float> out) {
  if (tables.size() != inputs.size())
    detail::fail("cpu::embedding_bags: ", tables.size(), " tables but ", inputs.size(), " inputs");
  impl::check_view("cpu::embedding_bags", "out", out);
  std::size_t total = 0;
  for (const auto& t : tables) total += t.dim();
  if (total != out.cols())
    detail::fail("cpu::embedding_bags: the tables' dims add up to ", total, " but out has ", out.cols(), " columns");
  std::size_t column = 0;
  for (std::size_t t = 0; t < tables.size(); ++t) {
    try {
      embedding_bag(tables[t], inputs[t].ids, inputs[t].offsets, inputs[t].weights, mode,
                    {out.data() + column, out.rows(), tables[t].dim(), out.stride()});
    } catch (const error& e) {
      detail::fail("cpu::embedding_bags: inputs[", t, "]: ", e.what() + std::strlen("recpipe: "));
    }
    column += tables[t].dim();
  }
}

}  // namespace cpu
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
