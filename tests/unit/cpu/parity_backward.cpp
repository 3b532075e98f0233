// SPDX-License-Identifier: Apache-2.0
// Parity of the CPU backward passes with PyTorch autograd: reads CASE.safetensors written by
// tools/reference_backward.py (inputs, weights, upstream gradient `dy`, torch's `grad.*`), runs
// recpipe's forward + backward on the same values and compares every gradient.
// Usage: cpu_backward_parity <case> <reference folder>. Exit 0 pass, 1 fail, 77 skipped (no
// complete fixture: python3-torch missing), so a missing torch never reads as passed.
//
// Error measure, per gradient tensor: max|recpipe - torch| / max|torch| (relative to the
// tensor's magnitude: an element-wise ratio is meaningless where a float sum cancels to ~0),
// required <= 1e-5, with max|torch| > 0 (an all-zero reference would prove nothing).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include <recpipe/cpu/cross.hpp>
#include <recpipe/cpu/cross_backward.hpp>
#include <recpipe/cpu/dense.hpp>
#include <recpipe/cpu/dense_backward.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/cpu/embedding_backward.hpp>
#include <recpipe/io/safetensors.hpp>

namespace cpu = recpipe::cpu;
namespace io = recpipe::io;
using recpipe::id_type;
using recpipe::matrix;
using recpipe::matrix_view;

namespace {

constexpr double tolerance = 1e-5;

struct checker {
  const io::safetensors_file& file;
  bool ok = true;

  matrix_view<const float> mat(const std::string& name) const { return file.at(name).as_matrix(); }
  std::span<const float> vec(const std::string& name) const { return file.at(name).data<float>(); }
  std::span<const id_type> ids(const std::string& name) const { return file.at(name).data<id_type>(); }

  void check(const std::string& what, std::span<const float> got) {
    const std::string key = "grad." + what;
    const std::span<const float> want = vec(key);
    double peak = 0.0, err = got.size() == want.size() ? 0.0 : INFINITY;
    for (std::size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
      peak = std::max(peak, std::fabs(static_cast<double>(want[i])));
      const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
      err = std::isnan(d) ? INFINITY : std::max(err, d);
    }
    const double rel = err / std::max(peak, 1e-30);
    const bool pass = rel <= tolerance && peak > 0.0;
    std::printf("  %-28s %6zu values  max|torch| %-9.4g max rel error %.3g  %s\n", key.c_str(), want.size(), peak, rel,
                pass ? "ok" : "FAIL");
    ok = ok && pass;
  }
  void check(const std::string& what, const matrix<float>& got) { check(what, std::span<const float>(got.values())); }
};

matrix<float> zeros_like(matrix_view<const float> m) { return matrix<float>(m.rows(), m.cols(), 0.0f); }

cpu::activation activation_named(const std::string& name) {
  if (name == "relu") return cpu::activation::relu;
  if (name == "gelu") return cpu::activation::gelu;
  if (name == "gelu_tanh") return cpu::activation::gelu_tanh;
  if (name == "sigmoid") return cpu::activation::sigmoid;
  return cpu::activation::none;
}

void run(const std::string& name, checker& c) {
  if (name.rfind("linear_", 0) == 0) {
    const auto x = c.mat("x"), w = c.mat("weight"), dy = c.mat("dy");
    matrix<float> z(x.rows(), w.rows()), dz(x.rows(), w.rows()), dx = zeros_like(x), dw = zeros_like(w);
    std::vector<float> db(w.rows(), 0.0f);
    cpu::linear(x, w, c.vec("bias"), z.view());
    cpu::activation_backward(activation_named(name.substr(7)), z.view(), dy, dz.view());
    cpu::linear_backward(x, w, dz.view(), dx.view(), dw.view(), db);
    c.check("x", dx);
    c.check("weight", dw);
    c.check("bias", db);
  } else if (name == "mlp") {
    const cpu::activation acts[] = {cpu::activation::relu, cpu::activation::gelu, cpu::activation::none};
    std::vector<cpu::linear_layer> layers;
    std::vector<matrix<float>> dw;
    std::vector<std::vector<float>> db;
    for (std::size_t i = 0; i < 3; ++i) {
      const std::string p = "layers." + std::to_string(i) + ".";
      layers.push_back({c.mat(p + "weight"), c.vec(p + "bias"), acts[i]});
      dw.push_back(zeros_like(c.mat(p + "weight")));
      db.emplace_back(c.vec(p + "bias").size(), 0.0f);
    }
    std::vector<cpu::linear_gradient> grads;
    for (std::size_t i = 0; i < 3; ++i) grads.push_back({dw[i].view(), db[i]});
    const auto x = c.mat("x"), dy = c.mat("dy");
    cpu::mlp_trace trace;
    matrix<float> y(dy.rows(), dy.cols()), dx = zeros_like(x);
    cpu::mlp_forward_train(x, layers, trace, y.view());
    cpu::mlp_backward(layers, trace, dy, dx.view(), grads);
    c.check("x", dx);
    for (std::size_t i = 0; i < 3; ++i) {
      c.check("layers." + std::to_string(i) + ".weight", dw[i]);
      c.check("layers." + std::to_string(i) + ".bias", db[i]);
    }
  } else if (name == "layer_norm") {
    const auto x = c.mat("x");
    matrix<float> dx = zeros_like(x);
    std::vector<float> dg(x.cols(), 0.0f), dbeta(x.cols(), 0.0f);
    cpu::layer_norm_backward(x, c.vec("gamma"), c.mat("dy"), dx.view(), dg, dbeta, 1e-5f);
    c.check("x", dx);
    c.check("gamma", dg);
    c.check("beta", dbeta);
  } else if (name == "softmax") {
    const auto x = c.mat("x");
    matrix<float> y = zeros_like(x), dx = zeros_like(x);
    cpu::softmax(x, y.view());
    cpu::softmax_backward(y.view(), c.mat("dy"), dx.view());
    c.check("x", dx);
  } else if (name.rfind("embedding_bag_", 0) == 0) {
    const bool mean = name == "embedding_bag_mean", weighted = name == "embedding_bag_weighted";
    const auto table = c.mat("weight"), dy = c.mat("dy");
    const auto psw = weighted ? c.vec("per_sample_weights") : std::span<const float>();
    cpu::sparse_gradient grad;
    const auto mode = mean ? cpu::pooling::mean : cpu::pooling::sum;
    cpu::embedding_bag_backward(c.ids("ids"), c.ids("offsets"), psw, mode, dy, grad);
    matrix<float> dense = zeros_like(table);
    for (std::size_t i = 0; i < grad.size(); ++i)
      std::copy_n(grad.rows.row(i).data(), table.cols(), dense.row(static_cast<std::size_t>(grad.ids[i])).data());
    c.check("weight", dense);
    if (weighted) {
      std::vector<float> dw(psw.size());
      cpu::embedding_bag_weights_backward(cpu::embedding_table_view::fp32(table), c.ids("ids"), c.ids("offsets"),
                                          mode, dy, dw);
      c.check("per_sample_weights", dw);
    }
  } else if (name == "cross_full") {
    const auto x0 = c.mat("x0"), xl = c.mat("xl"), w = c.mat("weight");
    matrix<float> u = zeros_like(x0), dx0 = zeros_like(x0), dxl = zeros_like(x0), dw = zeros_like(w);
    std::vector<float> db(x0.cols(), 0.0f);
    cpu::linear(xl, w, c.vec("bias"), u.view());
    cpu::cross_layer_backward(x0, xl, w, u.view(), c.mat("dy"), dx0.view(), dxl.view(), dw.view(), db);
    c.check("x0", dx0);
    c.check("xl", dxl);
    c.check("weight", dw);
    c.check("bias", db);
  } else if (name == "cross_low_rank") {
    const auto x0 = c.mat("x0"), xl = c.mat("xl"), down = c.mat("down"), up = c.mat("up");
    matrix<float> v(x0.rows(), down.rows()), u = zeros_like(x0), dx0 = zeros_like(x0), dxl = zeros_like(x0);
    matrix<float> ddown = zeros_like(down), dup = zeros_like(up);
    std::vector<float> db(x0.cols(), 0.0f);
    cpu::linear(xl, down, {}, v.view());
    cpu::linear(v.view(), up, c.vec("bias"), u.view());
    cpu::cross_layer_low_rank_backward(x0, xl, down, up, v.view(), u.view(), c.mat("dy"), dx0.view(), dxl.view(),
                                       ddown.view(), dup.view(), db);
    c.check("x0", dx0);
    c.check("xl", dxl);
    c.check("down", ddown);
    c.check("up", dup);
    c.check("bias", db);
  } else if (name == "cross_network") {
    std::vector<cpu::cross_params> layers(3);
    std::vector<matrix<float>> dw(3), ddown(3), dup(3);
    std::vector<std::vector<float>> db(3);
    std::vector<cpu::cross_gradient> grads(3);
    for (std::size_t l = 0; l < 3; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      layers[l].bias = c.vec(p + "bias");
      db[l].assign(layers[l].bias.size(), 0.0f);
      if (l == 1) {
        layers[l].down = c.mat(p + "down");
        layers[l].up = c.mat(p + "up");
        ddown[l] = zeros_like(layers[l].down);
        dup[l] = zeros_like(layers[l].up);
      } else {
        layers[l].weight = c.mat(p + "weight");
        dw[l] = zeros_like(layers[l].weight);
      }
      grads[l] = {dw[l].view(), ddown[l].view(), dup[l].view(), db[l]};
    }
    const auto x0 = c.mat("x0");
    cpu::cross_trace trace;
    matrix<float> out = zeros_like(x0), dx0 = zeros_like(x0);
    cpu::cross_network_forward_train(x0, layers, trace, out.view());
    cpu::cross_network_backward(layers, trace, c.mat("dy"), dx0.view(), grads);
    c.check("x0", dx0);
    for (std::size_t l = 0; l < 3; ++l) {
      const std::string p = "layers." + std::to_string(l) + ".";
      if (l == 1) {
        c.check(p + "down", ddown[l]);
        c.check(p + "up", dup[l]);
      } else {
        c.check(p + "weight", dw[l]);
      }
      c.check(p + "bias", db[l]);
    }
  } else if (name == "dot_interaction" || name == "dot_interaction_self") {
    const auto features = c.mat("features");
    matrix<float> df = zeros_like(features);
    cpu::dot_interaction_backward(features, 5, name == "dot_interaction_self", c.mat("dy"), df.view());
    c.check("features", df);
  } else if (name == "fm_second_order") {
    const auto features = c.mat("features");
    matrix<float> df = zeros_like(features);
    cpu::fm_second_order_backward(features, 6, c.vec("dy"), df.view());
    c.check("features", df);
  } else if (name == "dot_rows") {
    const auto q = c.mat("query"), it = c.mat("item");
    matrix<float> dq = zeros_like(q), di = zeros_like(it);
    cpu::dot_rows_backward(q, it, c.vec("dy"), dq.view(), di.view());
    c.check("query", dq);
    c.check("item", di);
  } else {
    std::printf("FAIL: unknown case '%s'\n", name.c_str());
    c.ok = false;
  }
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
    std::printf("SKIPPED: %s has no complete reference fixture (tools/reference_backward.py needs python3-torch)\n",
                folder.string().c_str());
    return 77;
  }
  try {
    const auto file = io::safetensors_file::open(folder / (name + ".safetensors"));
    checker c{file};
    std::printf("%s, tolerance %g (max abs error / max |torch| per tensor)\n", name.c_str(), tolerance);
    run(name, c);
    std::printf("%s\n", c.ok ? "PASSED" : "FAILED");
    return c.ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
