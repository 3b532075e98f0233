// SPDX-License-Identifier: Apache-2.0
// Parity with PyTorch: loads a model written by tools/reference_models.py, runs every stored case
// and checks max |recpipe - torch| <= 1e-5 per output (tests/common/parity.hpp: absolute error;
// a NaN or an all-zero reference fails). Usage: models_parity <model name> <reference folder>.
// Exit 0 pass, 1 fail, 77 skipped (no reference files: python3-torch missing).
#include <cstdio>
#include <string>
#include <vector>

#include <recpipe/io/safetensors.hpp>
#include <recpipe/models/dcn_v2.hpp>
#include <recpipe/models/dlrm.hpp>
#include <recpipe/models/mlp.hpp>
#include <recpipe/models/session_transformer.hpp>
#include <recpipe/models/two_tower.hpp>

#include "common/parity.hpp"

namespace io = recpipe::io;
namespace models = recpipe::models;
namespace parity = recpipe::testing::parity;
using recpipe::matrix;
using recpipe::matrix_view;

namespace {

// A stored output as a matrix: a rank-1 tensor as one column.
matrix_view<const float> expected(const io::safetensors_file& c, const std::string& name) {
  const io::tensor_view& want = c.at(name);
  return want.rank() == 1 ? matrix_view<const float>(want.data<float>().data(), want.shape[0], 1) : want.as_matrix();
}

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

void run(const std::string& name, const parity::fixture& f, parity::report& r) {
  auto weights = models::open_weights(f.path(name));
  const std::string kind = weights->metadata().at("recpipe.model");
  const bool session = kind == "session_transformer";
  const std::vector<std::string> cases =
      session ? std::vector<std::string>{"len1", "len7", "len200", "b64"} : std::vector<std::string>{"b1", "b64"};
  std::printf("%s (%s)\n", name.c_str(), kind.c_str());
  for (const std::string& case_name : cases) {
    const auto c = f.open(name + "." + case_name);
    const std::size_t batch = c.at("expected").shape[0];
    const std::string tag = case_name + ": ";
    if (kind == "mlp") {
      const auto model = models::mlp::load(weights);
      matrix<float> y(batch, model.output_dim());
      model.forward(c.at("dense").as_matrix(), y.view());
      r.check(tag + "forward", y.view(), expected(c, "expected"));
    } else if (kind == "dlrm") {
      const auto model = models::dlrm::load(weights);
      matrix<float> y(batch, model.output_dim());
      model.forward(c.at("dense").as_matrix(), bags(c, "", model.num_sparse_features()), y.view());
      r.check(tag + "forward", y.view(), expected(c, "expected"));
    } else if (kind == "dcn_v2") {
      const auto model = models::dcn_v2::load(weights);
      matrix<float> y(batch, 1);
      model.forward(dense_of(c, "dense"), bags(c, "", model.num_sparse_features()), y.view());
      r.check(tag + "forward", y.view(), expected(c, "expected"));
    } else if (kind == "two_tower") {
      const auto model = models::two_tower::load(weights);
      const auto user_bags = bags(c, "user.", model.user_tower().num_sparse_features());
      const auto item_bags = bags(c, "item.", model.item_tower().num_sparse_features());
      matrix<float> users(batch, model.output_dim()), items(batch, model.output_dim()), scores(batch, 1);
      model.encode_users(dense_of(c, "user.dense"), user_bags, users.view());
      model.encode_items(dense_of(c, "item.dense"), item_bags, items.view());
      model.forward(dense_of(c, "user.dense"), user_bags, dense_of(c, "item.dense"), item_bags, scores.view());
      r.check(tag + "encode_users", users.view(), expected(c, "expected_user"));
      r.check(tag + "encode_items", items.view(), expected(c, "expected_item"));
      r.check(tag + "forward (scores)", scores.view(), expected(c, "expected"));
    } else if (kind == "session_transformer") {
      const auto model = models::session_transformer::load(weights);
      matrix<float> encoded(batch, model.embedding_dim()), scores(batch, model.num_items());
      model.encode(c.at("offsets").data<recpipe::id_type>(), c.at("items").data<recpipe::id_type>(), encoded.view());
      model.score_all_items(encoded.view(), scores.view());
      r.check(tag + "encode", encoded.view(), expected(c, "expected"));
      r.check(tag + "score_all_items", scores.view(), expected(c, "expected_scores"));
    } else {
      r.fail("unknown model kind '" + kind + "'");
      return;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return parity::main(argc, argv, "tools/reference_models.py", parity::error_measure::absolute(1e-5), run);
}
