// SPDX-License-Identifier: Apache-2.0
// recpipe example: serve a DCN-v2 trained in PyTorch inside a recpipe pipeline, and print the
// same scores PyTorch printed.
//
//   /usr/bin/python3 tools/reference_models.py --train-example --out DIR   # trains, saves, prints scores
//   example_pytorch_to_recpipe DIR                                          # loads, scores, compares
//
// DIR/dcn_example.safetensors holds the weights (state_dict names) and the config (metadata);
// DIR/dcn_example.inputs.safetensors one request: a user, 5 candidates, the items' dense
// features and the scores PyTorch computed. Exit 77 when DIR was not produced (no python3-torch).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <span>
#include <vector>

#include <recpipe/io/safetensors.hpp>
#include <recpipe/models/dcn_v2.hpp>
#include <recpipe/recpipe.hpp>

namespace {

//! A scoring model for recpipe::score(): the DCN-v2 ranker over each candidate's dense
//! features, with sparse feature 0 = the candidate's item id and 1 = the request's user id.
struct dcn_ranker {
  const recpipe::models::dcn_v2& model;
  using reads = recpipe::columns<recpipe::col::candidates, recpipe::col::user_id, recpipe::col::item_features>;

  template <class Batch>
  void score(const Batch& batch, std::span<float> out) const {
    using namespace recpipe;
    const auto& candidates = batch.template get<col::candidates>();
    const auto& users = batch.template get<col::user_id>();
    const std::size_t n = candidates.total();
    // One id per bag for both features; thread_local so a warm pipeline does not allocate.
    thread_local std::vector<id_type> offsets, user_ids;
    offsets.resize(n + 1);
    user_ids.resize(n);
    for (std::size_t i = 0; i <= n; ++i) offsets[i] = static_cast<id_type>(i);
    for (std::size_t r = 0; r < batch.size(); ++r)
      for (std::size_t i = candidates.offsets()[r]; i < candidates.offsets()[r + 1]; ++i) user_ids[i] = users[r];
    const std::vector<cpu::bag_input> sparse = {{candidates.values(), offsets}, {user_ids, offsets}};
    model.forward(batch.template get<col::item_features>().view(), sparse, matrix_view<float>(out.data(), n, 1));
  }
};

}  // namespace

int main(int argc, char** argv) {
  using namespace recpipe;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR (written by tools/reference_models.py --train-example --out DIR)\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  if (!std::filesystem::exists(dir / "COMPLETE")) {
    std::printf("SKIPPED: %s has no trained example (tools/reference_models.py needs python3-torch)\n", argv[1]);
    return 77;
  }
  try {
    // 1. The model: config from the file's metadata, weights memory-mapped.
    const auto ranker = models::dcn_v2::load(dir / "dcn_example.safetensors");
    const auto inputs = io::safetensors_file::open(dir / "dcn_example.inputs.safetensors");

    // 2. A feature store with every item's dense features.
    const auto features = inputs.at("item_features").as_matrix();
    feature_store<col::candidates, col::item_features> item_features(features.cols());
    for (std::size_t i = 0; i < features.rows(); ++i) item_features.insert(static_cast<id_type>(i), features.row(i));

    // 3. The pipeline: candidates -> item features -> DCN-v2 score.
    const auto pipeline = lookup(item_features) >> score(dcn_ranker{ranker});
    const auto candidate_ids = inputs.at("candidates").data<id_type>();
    batch<col::user_id, col::candidates> request(1);
    request.get<col::user_id>() = {inputs.at("user_id").data<id_type>()[0]};
    request.get<col::candidates>().assign({0, candidate_ids.size()}, {candidate_ids.begin(), candidate_ids.end()});
    const auto result = pipeline.run(request);

    // 4. The same scores PyTorch printed.
    const auto& scores = result.get<col::score>();
    const auto expected = inputs.at("expected").data<float>();
    float worst = 0.0f;
    std::printf("recpipe scores:");
    for (std::size_t i = 0; i < scores.size(); ++i) {
      std::printf(" %.6f", static_cast<double>(scores[i]));
      worst = std::max(worst, std::fabs(scores[i] - expected[i]));
    }
    std::printf("\npytorch scores:");
    for (float v : expected) std::printf(" %.6f", static_cast<double>(v));
    std::printf("\nmax abs difference %.2e (%s)\n", static_cast<double>(worst), worst <= 1e-5f ? "same" : "DIFFERENT");
    return worst <= 1e-5f ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "example_pytorch_to_recpipe: %s\n", e.what());
    return 1;
  }
}
