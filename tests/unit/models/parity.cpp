// SPDX-License-Identifier: Apache-2.0
// Parity with PyTorch: loads a model written by tools/reference_models.py, runs every stored case
// and checks max |recpipe - torch| <= 1e-5. Usage: models_parity <model name> <reference folder>.
// Exit 0 pass, 1 fail, 77 skipped (no reference files: python3-torch missing).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <recpipe/io/safetensors.hpp>
#include <recpipe/models/dcn_v2.hpp>
#include <recpipe/models/dlrm.hpp>
#include <recpipe/models/mlp.hpp>
#include <recpipe/models/session_transformer.hpp>
#include <recpipe/models/two_tower.hpp>

namespace io = recpipe::io;
namespace models = recpipe::models;
using recpipe::matrix;
using recpipe::matrix_view;

namespace {

constexpr float tolerance = 1e-5f;

// max |a - b|; a NaN anywhere counts as an infinite error.
float max_abs_error(matrix_view<const float> got, matrix_view<const float> want) {
  if (got.rows() != want.rows() || got.cols() != want.cols()) return INFINITY;
  float worst = 0.0f;
  for (std::size_t r = 0; r < got.rows(); ++r)
    for (std::size_t c = 0; c < got.cols(); ++c) {
      const float d = std::fabs(got(r, c) - want(r, c));
      worst = std::isnan(d) ? INFINITY : std::max(worst, d);
    }
  return worst;
}

struct report {
  bool ok = true;
  void check(const std::string& what, matrix_view<const float> got, const io::tensor_view& want) {
    const auto expected = want.rank() == 1 ? matrix_view<const float>(want.data<float>().data(), want.shape[0], 1)
                                           : want.as_matrix();
    const float error = max_abs_error(got, expected);
    // An all-zero output would make "close to a zero reference" meaningless: require signal.
    float magnitude = 0.0f;
    for (std::size_t r = 0; r < expected.rows(); ++r)
      for (std::size_t c = 0; c < expected.cols(); ++c) magnitude = std::max(magnitude, std::fabs(expected(r, c)));
    const bool pass = error <= tolerance && magnitude > 0.0f;
    std::printf("  %-44s %4zu x %-5zu max|ref| %-10.4g max abs error %.3g  %s\n", what.c_str(), expected.rows(),
                expected.cols(), static_cast<double>(magnitude), static_cast<double>(error), pass ? "ok" : "FAIL");
    ok = ok && pass;
  }
};

std::vector<recpipe::cpu::bag_input> bags(const io::safetensors_file& c, const std::string& prefix, std::size_t tables) {
  std::vector<recpipe::cpu::bag_input> out;
  for (std::size_t t = 0; t < tables; ++t) {
    const std::string base = prefix + "sparse." + std::to_string(t);
    out.push_back({c.at(base + ".ids").data<recpipe::id_type>(), c.at(base + ".offsets").data<recpipe::id_type>()});
  }
  return out;
}

matrix_view<const float> dense_of(const io::safetensors_file& c, const std::string& name) {
  const io::tensor_view& t = c.at(name);
  return t.numel() == 0 ? matrix_view<const float>(nullptr, t.shape[0], 0) : t.as_matrix();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <model> <reference folder>\n", argv[0]);
    return 2;
  }
  const std::string name = argv[1];
  const std::filesystem::path folder = argv[2];
  if (!std::filesystem::exists(folder / "COMPLETE")) {
    std::printf("SKIPPED: %s has no complete reference fixture (tools/reference_models.py needs python3-torch)\n",
                folder.string().c_str());
    return 77;
  }
  try {
    auto weights = models::open_weights(folder / (name + ".safetensors"));
    const std::string kind = weights->metadata().at("recpipe.model");
    const bool session = kind == "session_transformer";
    const std::vector<std::string> cases =
        session ? std::vector<std::string>{"len1", "len7", "len200", "b64"} : std::vector<std::string>{"b1", "b64"};
    report r;
    std::printf("%s (%s), tolerance %g\n", name.c_str(), kind.c_str(), static_cast<double>(tolerance));
    for (const std::string& case_name : cases) {
      const auto c = io::safetensors_file::open(folder / (name + "." + case_name + ".safetensors"));
      const std::size_t batch = c.at("expected").shape[0];
      const std::string tag = case_name + ": ";
      if (kind == "mlp") {
        const auto model = models::mlp::load(weights);
        matrix<float> y(batch, model.output_dim());
        model.forward(c.at("dense").as_matrix(), y.view());
        r.check(tag + "forward", y.view(), c.at("expected"));
      } else if (kind == "dlrm") {
        const auto model = models::dlrm::load(weights);
        matrix<float> y(batch, model.output_dim());
        model.forward(c.at("dense").as_matrix(), bags(c, "", model.num_sparse_features()), y.view());
        r.check(tag + "forward", y.view(), c.at("expected"));
      } else if (kind == "dcn_v2") {
        const auto model = models::dcn_v2::load(weights);
        matrix<float> y(batch, 1);
        model.forward(dense_of(c, "dense"), bags(c, "", model.num_sparse_features()), y.view());
        r.check(tag + "forward", y.view(), c.at("expected"));
      } else if (kind == "two_tower") {
        const auto model = models::two_tower::load(weights);
        const auto user_bags = bags(c, "user.", model.user_tower().num_sparse_features());
        const auto item_bags = bags(c, "item.", model.item_tower().num_sparse_features());
        matrix<float> users(batch, model.output_dim()), items(batch, model.output_dim()), scores(batch, 1);
        model.encode_users(dense_of(c, "user.dense"), user_bags, users.view());
        model.encode_items(dense_of(c, "item.dense"), item_bags, items.view());
        model.forward(dense_of(c, "user.dense"), user_bags, dense_of(c, "item.dense"), item_bags, scores.view());
        r.check(tag + "encode_users", users.view(), c.at("expected_user"));
        r.check(tag + "encode_items", items.view(), c.at("expected_item"));
        r.check(tag + "forward (scores)", scores.view(), c.at("expected"));
      } else if (kind == "session_transformer") {
        const auto model = models::session_transformer::load(weights);
        matrix<float> encoded(batch, model.embedding_dim()), scores(batch, model.num_items());
        model.encode(c.at("offsets").data<recpipe::id_type>(), c.at("items").data<recpipe::id_type>(), encoded.view());
        model.score_all_items(encoded.view(), scores.view());
        r.check(tag + "encode", encoded.view(), c.at("expected"));
        r.check(tag + "score_all_items", scores.view(), c.at("expected_scores"));
      } else {
        std::printf("FAIL: unknown model kind '%s'\n", kind.c_str());
        return 1;
      }
    }
    std::printf("%s\n", r.ok ? "PASSED" : "FAILED");
    return r.ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
