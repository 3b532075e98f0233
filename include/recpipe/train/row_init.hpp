// SPDX-License-Identifier: Apache-2.0
// recpipe train: deterministic initial values of an embedding row, a pure function of (seed, id).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/types.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief How a table initialises a new row: a pure function of (seed, id, column).
//!
//! Value c of row `id` comes from a counter-based hash (splitmix64 finaliser) of (seed, id, c),
//! never from a shared random stream, so a row's initial values do not depend on the order in
//! which rows are created, on which other ids exist, on eviction and re-admission, or on the
//! thread count. `uniform` draws from U(-scale, scale) (24-bit resolution), `normal` from
//! N(0, scale^2) (Box-Muller on two hashed uniforms), `zeros` gives 0.
//! @code
//! recpipe::train::row_init init{recpipe::train::row_init::distribution::normal, 0.01f, 42};
//! init.fill(7, row);   // row 7's initial values, the same in every table with this init
//! @endcode
struct row_init {
  enum class distribution { uniform, normal, zeros };
  distribution kind = distribution::uniform;
  float scale = 0.01f;     //!< half-width of the uniform, or standard deviation of the normal
  std::uint64_t seed = 0;  //!< tables with different seeds get independent rows

  //! @brief Writes row `id`'s initial values into `row` (any length; value c depends only on
  //! seed, id and c). @throws recpipe::error if scale is negative or not finite.
  void fill(id_type id, std::span<float> row) const {
    if (!(scale >= 0.0f) || !std::isfinite(scale)) detail::fail("train::row_init: scale must be finite and >= 0 (got ", scale, ")");
    const std::uint64_t key = mix(mix(seed ^ 0x9e3779b97f4a7c15ull) ^ static_cast<std::uint64_t>(id));
    for (std::size_t c = 0; c < row.size(); ++c) {
      switch (kind) {
        case distribution::zeros:
          row[c] = 0.0f;
          break;
        case distribution::uniform:
          row[c] = (2.0f * unit(key, 2 * c) - 1.0f) * scale;
          break;
        case distribution::normal: {
          // u1 in (0, 1] keeps the log finite.
          const double u1 = 1.0 - static_cast<double>(unit(key, 2 * c));
          const double u2 = static_cast<double>(unit(key, 2 * c + 1));
          constexpr double two_pi = 6.283185307179586476925;
          row[c] = static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(two_pi * u2) * scale);
          break;
        }
      }
    }
  }

  //! splitmix64's finaliser: a bijective 64-bit mix (also the tables' shard and map hash).
  static constexpr std::uint64_t mix(std::uint64_t x) noexcept {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
  }

 private:
  // A uniform in [0, 1) with 24 bits (exact in float) from counter `n` of the row's stream.
  static float unit(std::uint64_t key, std::size_t n) noexcept {
    const std::uint64_t h = mix(key + 0x9e3779b97f4a7c15ull * (static_cast<std::uint64_t>(n) + 1));
    return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
  }
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
