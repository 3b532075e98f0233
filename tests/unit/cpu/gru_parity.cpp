// SPDX-License-Identifier: Apache-2.0
// Parity with PyTorch: loads a case written by tools/reference_gru.py (nn.GRU over
// pack_padded_sequence, autograd of sum(out * dy) + sum(h_n * dh_n)), runs cpu::gru_sequence and
// cpu::gru_sequence_backward on the same weights, inputs and upstream gradients, and checks
// max |recpipe - torch| / max |torch| <= 1e-5 for out, h_n, dx, dh0 and every weight gradient.
// Usage: cpu_gru_parity <case> <reference folder>. Exit 0 pass, 1 fail, 77 skipped (no complete
// fixture: python3-torch missing).
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <recpipe/cpu/gru.hpp>
#include <recpipe/io/safetensors.hpp>

#include "common/parity.hpp"

namespace cpu = recpipe::cpu;
namespace io = recpipe::io;
namespace parity = recpipe::testing::parity;
using parity::floats;

namespace {

void run(const std::string& name, const parity::fixture& fx, parity::report& r) {
  const io::safetensors_file f = fx.open(name);
  const bool bias = *f.metadata_value("bias") == "1";
  const std::size_t max_len = std::stoul(*f.metadata_value("max_len"));
  std::vector<std::size_t> lengths;
  for (const std::int64_t len : f.at("lengths").data<std::int64_t>()) lengths.push_back(static_cast<std::size_t>(len));
  const auto w_ih = f.at("weight_ih_l0").as_matrix(), w_hh = f.at("weight_hh_l0").as_matrix();
  const std::size_t hs = w_hh.cols(), in = w_ih.cols(), batch = lengths.size(), rows = batch * max_len;
  const std::vector<float> b_ih = bias ? floats(f, "bias_ih_l0") : std::vector<float>{};
  const std::vector<float> b_hh = bias ? floats(f, "bias_hh_l0") : std::vector<float>{};
  const cpu::gru_weights w{w_ih, w_hh, b_ih, b_hh};
  std::printf("%s (I %zu, H %zu, batch %zu, max_len %zu, bias %d)\n", name.c_str(), in, hs, batch, max_len, bias ? 1 : 0);
  std::vector<float> out(rows * hs), last(batch * hs), dx(rows * in), dh0(batch * hs);
  std::vector<float> dw_ih(3 * hs * in, 0.0f), dw_hh(3 * hs * hs, 0.0f), db_ih(bias ? 3 * hs : 0, 0.0f),
      db_hh(bias ? 3 * hs : 0, 0.0f);
  cpu::gru_sequence_trace trace;
  cpu::gru_sequence(f.at("x").as_matrix(), lengths, max_len, w, f.at("h0").as_matrix(), {out.data(), rows, hs},
                    {last.data(), batch, hs}, &trace);
  const cpu::gru_gradients g{{dw_ih.data(), 3 * hs, in}, {dw_hh.data(), 3 * hs, hs}, db_ih, db_hh};
  cpu::gru_sequence_backward(f.at("dy").as_matrix(), f.at("dh_n").as_matrix(), w, trace, {dx.data(), rows, in},
                             {dh0.data(), batch, hs}, g);
  r.check("out", out, floats(f, "out"));
  r.check("h_n", last, floats(f, "h_n"));
  r.check("grad x", dx, floats(f, "grad.x"));
  r.check("grad h0", dh0, floats(f, "grad.h0"));
  r.check("grad weight_ih_l0", dw_ih, floats(f, "grad.weight_ih_l0"));
  r.check("grad weight_hh_l0", dw_hh, floats(f, "grad.weight_hh_l0"));
  if (bias) {
    r.check("grad bias_ih_l0", db_ih, floats(f, "grad.bias_ih_l0"));
    r.check("grad bias_hh_l0", db_hh, floats(f, "grad.bias_hh_l0"));
  }
}

}  // namespace

int main(int argc, char** argv) {
  return parity::main(argc, argv, "tools/reference_gru.py", parity::error_measure::relative(1e-5), run);
}
