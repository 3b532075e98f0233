// SPDX-License-Identifier: Apache-2.0
// cuda::model_cache, the backend's device copies of host models: one upload per model version,
// keyed by the loaded weights (models::*::storage()), which the cache keeps alive.
#include <doctest/doctest.h>

#include <memory>
#include <stdexcept>
#include <string>

#include <recpipe/cuda/model_cache.hpp>
#include <recpipe/models/session_transformer.hpp>

#include "common/tiny_models.hpp"

using namespace recpipe;

namespace {

// Stands in for a device model: remembers which weights it was made from.
struct fake_device_model {
  const void* weights;
};
struct other_device_model {
  int value;
};

std::shared_ptr<const void> weights(int tag) { return std::make_shared<const int>(tag); }

}  // namespace

TEST_CASE("cuda::model_cache makes a device copy once per weights and reuses it") {
  cuda::model_cache cache(4);
  const auto a = weights(1), b = weights(2);
  int made = 0;
  const auto make = [&](const std::shared_ptr<const void>& w) {
    return [&made, w] {
      ++made;
      return fake_device_model{w.get()};
    };
  };
  const auto first = cache.get<fake_device_model>(a, make(a));
  const auto again = cache.get<fake_device_model>(a, make(a));
  CHECK(first.get() == again.get());
  CHECK(first->weights == a.get());
  CHECK(made == 1);
  const auto second = cache.get<fake_device_model>(b, make(b));
  CHECK(second->weights == b.get());
  CHECK(made == 2);
  CHECK(cache.size() == 2);
  CHECK(cache.uploads() == 2);
  CHECK(cache.hits() == 1);

  SUBCASE("the same weights under another device type are another entry") {
    const auto other = cache.get<other_device_model>(a, [] { return other_device_model{7}; });
    CHECK(other->value == 7);
    CHECK(cache.size() == 3);
  }
}

TEST_CASE("cuda::model_cache keeps the weights alive, so a new version never aliases an old entry") {
  cuda::model_cache cache;
  std::weak_ptr<const void> watched;
  {
    auto w = weights(1);
    watched = w;
    cache.get<fake_device_model>(w, [&] { return fake_device_model{w.get()}; });
  }
  // The caller dropped the model; the cache still holds its weights, so their address cannot be
  // handed to a new model version while the entry exists.
  CHECK_FALSE(watched.expired());
  cache.clear();
  CHECK(watched.expired());
  CHECK(cache.size() == 0);
}

TEST_CASE("cuda::model_cache evicts the least recently used entry at capacity") {
  cuda::model_cache cache(2);
  const auto a = weights(1), b = weights(2), c = weights(3);
  int made = 0;
  const auto get = [&](const std::shared_ptr<const void>& w) {
    return cache.get<fake_device_model>(w, [&] {
      ++made;
      return fake_device_model{w.get()};
    });
  };
  get(a);
  get(b);
  get(a);  // a is now newer than b
  get(c);  // evicts b
  CHECK(cache.size() == 2);
  CHECK(made == 3);
  get(a);
  CHECK(made == 3);
  get(b);  // b was evicted: made again (evicting c)
  CHECK(made == 4);

  SUBCASE("shrinking the capacity evicts, and 0 caches nothing") {
    cache.set_capacity(1);
    CHECK(cache.size() == 1);
    cache.set_capacity(0);
    CHECK(cache.size() == 0);
    get(a);
    get(a);
    CHECK(made == 6);
    CHECK(cache.size() == 0);
  }
}

TEST_CASE("cuda::model_cache: a model without weights storage gets a fresh copy every time") {
  cuda::model_cache cache;
  int made = 0;
  const auto make = [&] {
    ++made;
    return fake_device_model{nullptr};
  };
  const auto x = cache.get<fake_device_model>(nullptr, make);
  const auto y = cache.get<fake_device_model>(nullptr, make);
  CHECK(x.get() != y.get());
  CHECK(made == 2);
  CHECK(cache.size() == 0);
}

TEST_CASE("cuda::model_cache: a failing factory caches nothing; a null shared_ptr is an error") {
  cuda::model_cache cache;
  const auto a = weights(1);
  CHECK_THROWS_AS(cache.get<fake_device_model>(a, []() -> fake_device_model { throw std::runtime_error("no memory"); }),
                  std::runtime_error);
  CHECK(cache.size() == 0);
  CHECK_THROWS_WITH(cache.get<fake_device_model>(a, [] { return std::shared_ptr<fake_device_model>(); }),
                    doctest::Contains("factory returned no device model"));
  CHECK(cache.size() == 0);
  const auto made = cache.get<fake_device_model>(a, [&] { return std::make_shared<fake_device_model>(a.get()); });
  CHECK(made->weights == a.get());
  CHECK(cache.size() == 1);
}

TEST_CASE("models expose the storage the cache keys by: copies share it, reloads do not") {
  const auto file = testing::as_file(testing::tiny_session_weights());
  const auto loaded = models::session_transformer::load(file, testing::tiny_session_config());
  const models::session_transformer copy = loaded;
  REQUIRE(loaded.storage() != nullptr);
  CHECK(copy.storage() == loaded.storage());
  const auto reloaded = models::session_transformer::load(file, testing::tiny_session_config());
  CHECK(reloaded.storage() != loaded.storage());
}
