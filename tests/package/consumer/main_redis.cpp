// SPDX-License-Identifier: Apache-2.0
// recpipe package test: the installed Redis store links against hiredis through recpipe::redis.
// No server is needed: a store pointed at a closed port serves defaults and counts the fallback.
#include <recpipe/recpipe.hpp>
#include <recpipe/io/redis_store.hpp>

#include <cstdio>
#include <vector>

int main() {
  recpipe::redis_store_options options;
  options.port = 1;  // nothing listens there
  recpipe::redis_feature_store<recpipe::col::user_id, recpipe::col::user_embedding> users(2, options);
  recpipe::matrix<float> out;
  users.lookup_batch(std::vector<recpipe::id_type>{1}, out);
  const auto metrics = users.metrics();
  std::printf("recpipe consumer: Redis store fallbacks %llu, errors %llu\n",
              static_cast<unsigned long long>(metrics.fallbacks), static_cast<unsigned long long>(metrics.errors));
  return out.rows() == 1 && out(0, 0) == 0.f && metrics.fallbacks == 1 ? 0 : 1;
}
