// SPDX-License-Identifier: Apache-2.0
// Parity with PyTorch autograd for train::session_transformer_model: loads a case written by
// tools/reference_attention_backward.py (reference_models.py's SessionTransformer, its weights,
// ragged sessions, the full-softmax next-item loss and torch's gradients), copies the weights in
// by name, runs next_item_loss and checks the loss and every parameter gradient to
// max |recpipe - torch| / max |torch| <= 1e-5 (tests/common/parity.hpp; a NaN or an all-zero
// reference fails). Usage: train_session_transformer_parity <case> <reference folder>.
// Exit 0 pass, 1 fail, 77 skipped (no complete fixture: python3-torch missing).
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <recpipe/io/safetensors.hpp>
#include <recpipe/train/session_transformer_model.hpp>

#include "common/parity.hpp"

namespace io = recpipe::io;
namespace parity = recpipe::testing::parity;
namespace train = recpipe::train;

namespace {

void run(const std::string& name, const parity::fixture& fx, parity::report& r) {
  const io::safetensors_file f = fx.open(name);
  const auto config = recpipe::models::session_transformer_config::from_json(
      nlohmann::json::parse(*f.metadata_value("recpipe.config")));
  train::session_transformer_model model(config, 0);
  model.for_each_parameter([&](train::parameter& p) {
    const std::vector<float> value = parity::floats(f, p.name);
    if (value.size() != p.size()) throw recpipe::error("parameter " + p.name + " has the wrong size in the fixture");
    p.value = value;
  });
  const auto offsets = f.at("offsets").data<recpipe::id_type>();
  const auto items = f.at("items").data<recpipe::id_type>();
  model.zero_grad();
  const float loss = model.next_item_loss(offsets, items, train::session_transformer_model::next_item_targets(offsets, items));
  r.check("loss", std::span<const float>(&loss, 1), f.at("loss").data<float>());
  model.for_each_parameter([&](train::parameter& p) { r.check("grad " + p.name, p.grad, parity::floats(f, "grad." + p.name)); });
}

}  // namespace

int main(int argc, char** argv) {
  return parity::main(argc, argv, "tools/reference_attention_backward.py", parity::error_measure::relative(1e-5), run);
}
