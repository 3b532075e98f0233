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

//! @brief The random stream of one request when sampling: the seed (of the stage or the call)
//! mixed with the request's key (its request_seed, user id or row). Every item of the request
//! then draws its noise from this stream by its id, so a draw does not depend on where the item
//! sits in the candidate list, nor on which backend or thread computes it.
RECPIPE_HOST_DEVICE inline std::uint64_t sampling_stream(std::uint64_t seed, std::uint64_t request_key) {
  return mix64(seed ^ mix64(request_key));
}

//! @brief Standard Gumbel noise -log(-log(u)) for item `item` of a request stream, in double
//! precision from 53 random bits (u never 0 or 1).
RECPIPE_HOST_DEVICE inline double item_gumbel(std::uint64_t stream, std::int64_t item) {
  const std::uint64_t hash = mix64(stream ^ mix64(static_cast<std::uint64_t>(item)));
  const double u = (static_cast<double>(hash >> 11) + 0.5) * (1.0 / 9007199254740992.0);  // * 2^-53
  return -std::log(-std::log(u));
}

//! @brief The Gumbel-top-k key of one candidate: score / temperature + item_gumbel(stream, item).
//! The k largest keys (ties by smaller id, math::ranks_before) are a draw without replacement from
//! softmax(scores / temperature) (Plackett-Luce). temperature 0 gives the score itself (a plain
//! top-k). NaN stays NaN (ranked last), +-inf stay infinite. The one rule of
//! cpu::sample_without_replacement, the CPU softmax_sample stage and cuda::softmax_sample.
//! @code
//! double key = recpipe::math::sampling_key(2.5f, 0.7f, recpipe::math::sampling_stream(42, user), item_id);
//! @endcode
RECPIPE_HOST_DEVICE inline double sampling_key(float score, float temperature, std::uint64_t stream, std::int64_t item) {
  if (temperature == 0.0f) return static_cast<double>(score);
  return static_cast<double>(score) * (1.0 / static_cast<double>(temperature)) + item_gumbel(stream, item);
}

}  // namespace math
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
