// SPDX-License-Identifier: Apache-2.0
// Does composing stages with >> cost anything? A pipeline's run() against the same stages called
// by hand, one after another, on the same batches; interleaved A B A B, median of 30 repetitions.
//   ./scripts/bench pipeline
#include <recpipe/io/synthetic_catalog.hpp>
#include <recpipe/recpipe.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <vector>

using namespace recpipe;
using clock_type = std::chrono::steady_clock;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class RunA, class RunB>
void compare(const char* name, int iterations, RunA&& pipeline_run, RunB&& hand_run) {
  for (int i = 0; i < 3; ++i) {  // warm caches and thread-local scratch
    pipeline_run();
    hand_run();
  }
  std::vector<double> ours, peer;
  for (int rep = 0; rep < 30; ++rep) {
    auto start = clock_type::now();
    for (int i = 0; i < iterations; ++i) pipeline_run();
    ours.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - start).count() / iterations);
    start = clock_type::now();
    for (int i = 0; i < iterations; ++i) hand_run();
    peer.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - start).count() / iterations);
  }
  std::sort(ours.begin(), ours.end());
  std::sort(peer.begin(), peer.end());
  std::printf("%-44s | %9.2f us [%7.2f-%7.2f] | %9.2f us [%7.2f-%7.2f] | %5.3f | %s\n", name, median(ours), ours[3], ours[26],
              median(peer), peer[3], peer[26], median(peer) / median(ours), median(peer) / median(ours) >= 0.95 ? "within 5%" : "MISSED 5%");
}
}  // namespace

int main() {
  const auto catalog = io::synthetic_catalog::generate({.items = 20'000, .users = 1'000, .dim = 32});
  feature_store<col::user_id, col::user_embedding> users(32);
  feature_store<col::user_id, col::history> histories;
  feature_store<col::candidates, col::item_embedding> items(32);
  cpu::exact_index index(32);
  for (std::size_t u = 0; u < 1'000; ++u) {
    users.insert(static_cast<id_type>(u), catalog.user_vectors.row(u));
    histories.insert(static_cast<id_type>(u), catalog.histories.row(u));
  }
  std::vector<id_type> ids(20'000);
  std::iota(ids.begin(), ids.end(), id_type{0});
  for (std::size_t i = 0; i < ids.size(); ++i) items.insert(ids[i], catalog.item_vectors.row(i));
  index.add(ids, catalog.item_vectors.view());

  const auto s1 = lookup(users);
  const auto s2 = lookup(histories);
  const auto s3 = retrieve<col::user_embedding>(index, 200);
  const auto s4 = filter_seen();
  const auto s5 = lookup(items);
  const auto s6 = score(dot_product_scorer<>{});
  const auto s7 = softmax_sample(10, 0.5f);
  const auto composed = s1 >> s2 >> s3 >> s4 >> s5 >> s6 >> s7;
  const auto by_hand = [&](auto requests) { return s7(s6(s5(s4(s3(s2(s1(std::move(requests)))))))); };

  auto light = s1 >> s2 >> s7;  // cheap stages, so any fixed overhead would show
  std::printf("case                                         | pipeline.run (ours)          | hand-written calls (peer)    | ratio | target\n");
  for (std::size_t batch_size : {std::size_t{1}, std::size_t{64}}) {
    std::vector<id_type> who(batch_size);
    for (std::size_t i = 0; i < batch_size; ++i) who[i] = static_cast<id_type>((i * 37) % 1'000);
    const auto requests = make_batch<col::user_id>(who);
    // Check before timing: both paths give the same recommendations.
    const auto a = composed.run(requests);
    const auto b = by_hand(requests);
    if (a.get<col::candidates>().values() != b.get<col::candidates>().values() || a.get<col::candidates>().total() == 0) {
      std::fprintf(stderr, "pipeline and hand-written results differ\n");
      return 1;
    }
    char name[96];
    std::snprintf(name, sizeof name, "7 stages, exact retrieval of 200, batch %zu", batch_size);
    compare(name, batch_size == 1 ? 200 : 10, [&] { return composed.run(requests); }, [&] { return by_hand(requests); });

    batch<col::user_id, col::candidates, col::score> scored(batch_size);
    scored.get<col::user_id>() = who;
    scored.get<col::candidates>() = a.get<col::candidates>();
    scored.get<col::score>() = a.get<col::score>();
    std::snprintf(name, sizeof name, "3 light stages (2 lookups, sample), batch %zu", batch_size);
    compare(name, batch_size == 1 ? 5000 : 500, [&] { return light.run(scored); }, [&] { return s7(s2(s1(scored))); });
    std::snprintf(name, sizeof name, "  the same, statistics off, batch %zu", batch_size);
    light.enable_stats(false);
    compare(name, batch_size == 1 ? 5000 : 500, [&] { return light.run(scored); }, [&] { return s7(s2(s1(scored))); });
    light.enable_stats(true);
  }
  return 0;
}
