// SPDX-License-Identifier: Apache-2.0
// Parity with PyTorch autograd: loads a case written by tools/reference_attention_backward.py
// (nn.MultiheadAttention or nn.TransformerEncoderLayer with key-padding and causal masks), runs
// recpipe's training forward and backward on the same weights, input and output gradient, and
// checks max |recpipe - torch| / max |torch| <= 1e-5 for the output, dx and every weight gradient
// (tests/common/parity.hpp: relative to the tensor's magnitude, since element-wise ratios are
// meaningless where a sum cancels to nearly 0; a NaN or an all-zero reference fails).
// Usage: cpu_attention_backward_parity <case> <reference folder>. Exit 0 pass, 1 fail, 77 skipped
// (no complete fixture: python3-torch missing).
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <recpipe/cpu/attention_backward.hpp>
#include <recpipe/io/safetensors.hpp>

#include "common/parity.hpp"

namespace cpu = recpipe::cpu;
namespace io = recpipe::io;
namespace parity = recpipe::testing::parity;
using parity::floats;
using recpipe::matrix_view;

namespace {

void run(const std::string& name, const parity::fixture& fx, parity::report& r) {
  const io::safetensors_file f = fx.open(name);
  const std::string kind = *f.metadata_value("kind");
  const std::size_t heads = std::stoul(*f.metadata_value("num_heads"));
  const std::size_t max_len = std::stoul(*f.metadata_value("max_len"));
  const bool causal = *f.metadata_value("causal") == "1";
  const bool layer = kind == "layer";
  const std::string prefix = layer ? "self_attn." : "";
  std::vector<std::size_t> lengths;
  for (const std::int64_t len : f.at("lengths").data<std::int64_t>()) lengths.push_back(static_cast<std::size_t>(len));
  const matrix_view<const float> x = f.at("x").as_matrix();
  const std::size_t rows = x.rows(), e = x.cols();
  std::vector<float> y(rows * e), dx(rows * e);
  const auto in_w = f.at(prefix + "in_proj_weight").as_matrix();
  const auto out_w = f.at(prefix + "out_proj.weight").as_matrix();
  const cpu::mha_weights attention{in_w, f.at(prefix + "in_proj_bias").data<float>(), out_w,
                                   f.at(prefix + "out_proj.bias").data<float>(), heads};
  std::vector<float> d_in_w(3 * e * e), d_in_b(3 * e), d_out_w(e * e), d_out_b(e);
  const cpu::mha_gradients attention_grads{{d_in_w.data(), 3 * e, e}, d_in_b, {d_out_w.data(), e, e}, d_out_b};
  std::printf("%s (%s, %zu heads, causal %d)\n", name.c_str(), kind.c_str(), heads, causal ? 1 : 0);
  if (!layer) {
    cpu::mha_trace trace;
    cpu::multi_head_attention(x, lengths, max_len, attention, causal, {y.data(), rows, e}, trace);
    cpu::multi_head_attention_backward(f.at("dy").as_matrix(), attention, trace, {dx.data(), rows, e}, attention_grads);
  } else {
    const auto w1 = f.at("linear1.weight").as_matrix(), w2 = f.at("linear2.weight").as_matrix();
    const std::size_t ff = w1.rows();
    cpu::transformer_layer_weights w{attention,
                                     w1,
                                     f.at("linear1.bias").data<float>(),
                                     w2,
                                     f.at("linear2.bias").data<float>(),
                                     f.at("norm1.weight").data<float>(),
                                     f.at("norm1.bias").data<float>(),
                                     f.at("norm2.weight").data<float>(),
                                     f.at("norm2.bias").data<float>(),
                                     1e-5f,
                                     *f.metadata_value("activation") == "gelu" ? cpu::activation::gelu
                                                                               : cpu::activation::relu,
                                     *f.metadata_value("norm_first") == "1"};
    std::vector<float> d_w1(ff * e), d_b1(ff), d_w2(e * ff), d_b2(e), d_g1(e), d_be1(e), d_g2(e), d_be2(e);
    const cpu::transformer_layer_gradients grads{attention_grads, {d_w1.data(), ff, e}, d_b1, {d_w2.data(), e, ff},
                                                 d_b2, d_g1, d_be1, d_g2, d_be2};
    cpu::transformer_layer_trace trace;
    cpu::transformer_encoder_layer(x, lengths, max_len, w, causal, {y.data(), rows, e}, trace);
    cpu::transformer_encoder_layer_backward(f.at("dy").as_matrix(), w, trace, {dx.data(), rows, e}, grads);
    r.check("grad linear1.weight", d_w1, floats(f, "grad.linear1.weight"));
    r.check("grad linear1.bias", d_b1, floats(f, "grad.linear1.bias"));
    r.check("grad linear2.weight", d_w2, floats(f, "grad.linear2.weight"));
    r.check("grad linear2.bias", d_b2, floats(f, "grad.linear2.bias"));
    r.check("grad norm1.weight", d_g1, floats(f, "grad.norm1.weight"));
    r.check("grad norm1.bias", d_be1, floats(f, "grad.norm1.bias"));
    r.check("grad norm2.weight", d_g2, floats(f, "grad.norm2.weight"));
    r.check("grad norm2.bias", d_be2, floats(f, "grad.norm2.bias"));
  }
  r.check("forward y", y, floats(f, "y"));
  r.check("dx", dx, floats(f, "dx"));
  r.check("grad " + prefix + "in_proj_weight", d_in_w, floats(f, "grad." + prefix + "in_proj_weight"));
  r.check("grad " + prefix + "in_proj_bias", d_in_b, floats(f, "grad." + prefix + "in_proj_bias"));
  r.check("grad " + prefix + "out_proj.weight", d_out_w, floats(f, "grad." + prefix + "out_proj.weight"));
  r.check("grad " + prefix + "out_proj.bias", d_out_b, floats(f, "grad." + prefix + "out_proj.bias"));
}

}  // namespace

int main(int argc, char** argv) {
  return parity::main(argc, argv, "tools/reference_attention_backward.py", parity::error_measure::relative(1e-5), run);
}
