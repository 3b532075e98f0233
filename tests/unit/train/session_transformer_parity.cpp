// SPDX-License-Identifier: Apache-2.0
// Parity with PyTorch autograd for train::session_transformer_model: loads a case written by
// tools/reference_attention_backward.py (reference_models.py's SessionTransformer, its weights,
// ragged sessions, the full-softmax next-item loss and torch's gradients), copies the weights in
// by name, runs next_item_loss and checks the loss and every parameter gradient to
// max |recpipe - torch| / max |torch| <= 1e-5. Usage: train_session_transformer_parity <case>
// <reference folder>. Exit 0 pass, 1 fail, 77 skipped (no complete fixture: python3-torch missing).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <recpipe/io/safetensors.hpp>
#include <recpipe/train/session_transformer_model.hpp>

namespace io = recpipe::io;
namespace train = recpipe::train;

namespace {
constexpr double tolerance = 1e-5;

bool check(const std::string& what, std::span<const float> got, std::span<const float> want) {
  double peak = 0.0, error = got.size() == want.size() ? 0.0 : INFINITY;
  for (std::size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    peak = std::max(peak, std::fabs(static_cast<double>(want[i])));
    const double d = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    error = std::isnan(d) ? INFINITY : std::max(error, d);
  }
  const double relative = error / std::max(peak, 1e-30);
  const bool pass = relative <= tolerance && peak > 0.0;  // an all-zero reference proves nothing
  std::printf("  %-44s %6zu values  max|ref| %-10.4g max rel error %.3g  %s\n", what.c_str(), want.size(), peak,
              relative, pass ? "ok" : "FAIL");
  return pass;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <case> <reference folder>\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  const std::filesystem::path folder = argv[2];
  if (!std::filesystem::exists(folder / "COMPLETE")) {
    std::printf("SKIPPED: %s has no complete reference fixture (tools/reference_attention_backward.py needs "
                "python3-torch)\n",
                folder.string().c_str());
    return 77;
  }
  try {
    const auto f = io::safetensors_file::open(folder / (name + ".safetensors"));
    const auto config = recpipe::models::session_transformer_config::from_json(
        nlohmann::json::parse(*f.metadata_value("recpipe.config")));
    train::session_transformer_model model(config, 0);
    model.for_each_parameter([&](train::parameter& p) {
      const std::vector<float> value = f.at(p.name).to_float();
      if (value.size() != p.size()) throw recpipe::error("parameter " + p.name + " has the wrong size in the fixture");
      p.value = value;
    });
    const auto offsets = f.at("offsets").data<recpipe::id_type>();
    const auto items = f.at("items").data<recpipe::id_type>();
    model.zero_grad();
    const float loss = model.next_item_loss(offsets, items, train::session_transformer_model::next_item_targets(offsets, items));
    std::printf("%s, tolerance %g\n", name.c_str(), tolerance);
    bool ok = check("loss", std::span<const float>(&loss, 1), f.at("loss").data<float>());
    model.for_each_parameter([&](train::parameter& p) { ok = check("grad " + p.name, p.grad, f.at("grad." + p.name).to_float()) && ok; });
    std::printf("%s\n", ok ? "PASSED" : "FAILED");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
