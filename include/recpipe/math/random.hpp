// SPDX-License-Identifier: Apache-2.0
// recpipe math: counter-based random numbers (splitmix64) and Gumbel noise, identical on host and device.
#pragma once

#include <cmath>
#include <cstdint>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace math {

//! @brief splitmix64 finaliser: a bijective 64-bit mix. Counter-based (no state), so the value for
//! (seed, position) is the same whichever thread, block or backend computes it.
RECPIPE_HOST_DEVICE inline std::uint64_t mix64(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

//! @brief A uniform float in the open interval (0, 1) for (seed, counter).
RECPIPE_HOST_DEVICE inline float uniform_open01(std::uint64_t seed, std::uint64_t counter) {
  const std::uint64_t bits = mix64(mix64(seed) ^ (counter * 0xd1342543de82ef95ull));
  // 24 random bits centred in their cell: never 0, never 1.
  return (static_cast<float>(bits >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

//! @brief Standard Gumbel noise -log(-log(u)) for (seed, counter).
//! @code
//! float g = recpipe::math::gumbel(42, 7);
//! @endcode
RECPIPE_HOST_DEVICE inline float gumbel(std::uint64_t seed, std::uint64_t counter) {
  const double u = uniform_open01(seed, counter);
  return static_cast<float>(-std::log(-std::log(u)));
}

}  // namespace math
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
