// SPDX-License-Identifier: Apache-2.0
// Parity with PyTorch for train/optimizers.hpp and train/losses.hpp: replays the gradients that
// tools/reference_optimizers.py fed torch.optim and compares the weights after each of 20 steps,
// and the losses/gradients of torch's loss functions on the same inputs.
// Usage: train_optim_parity <case> <reference folder>. Exit 0 pass, 1 fail, 77 skipped (no
// complete reference: python3-torch missing). The hyper-parameters repeat the script's CASES.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <recpipe/io/safetensors.hpp>
#include <recpipe/train/losses.hpp>
#include <recpipe/train/optimizers.hpp>

namespace io = recpipe::io;
namespace train = recpipe::train;
using recpipe::id_type;
using recpipe::matrix;
using recpipe::matrix_view;

namespace {

// Optimizers: max |recpipe - torch| <= 1e-6 max(1, max |torch|) after every step (the task's bar).
constexpr double optimizer_tolerance = 1e-6;
// Losses: recpipe sums in double, torch in fp32; 1e-6 of the largest value (not floored at 1).
constexpr double loss_tolerance = 1e-6;

struct report {
  bool ok = true;
  double worst = 0.0;  // worst relative error seen
  // relative to max(1, max |ref|) for weights; to max |ref| alone for losses and gradients
  // (`floor` 0), which are often much smaller than 1.
  void check(const std::string& what, std::span<const float> got, std::span<const float> want, double tolerance,
             bool verbose = true, double floor = 1.0) {
    double error = got.size() == want.size() ? 0.0 : INFINITY, magnitude = 0.0;
    for (std::size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
      const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
      error = std::isnan(d) ? INFINITY : std::max(error, d);
      magnitude = std::max(magnitude, std::fabs(static_cast<double>(want[i])));
    }
    const double relative = error / std::max(floor, magnitude);
    worst = std::max(worst, relative);
    // a reference that is all zero would make the comparison meaningless
    const bool pass = relative <= tolerance && magnitude > 0.0;
    if (verbose || !pass)
      std::printf("  %-36s %5zu values  max|ref| %-9.4g max abs error %.3g  %s\n", what.c_str(), want.size(), magnitude,
                  error, pass ? "ok" : "FAIL");
    ok = ok && pass;
  }
};

std::vector<float> floats(const io::tensor_view& t) { return t.to_float(); }

int dense_case(const std::string& name, const io::safetensors_file& f) {
  std::unique_ptr<train::dense_optimizer> opt;
  if (name == "sgd") opt = std::make_unique<train::sgd>(train::sgd_options{.lr = 0.1});
  else if (name == "sgd_momentum")
    opt = std::make_unique<train::sgd>(train::sgd_options{.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
  else if (name == "sgd_nesterov")
    opt = std::make_unique<train::sgd>(train::sgd_options{.lr = 0.05, .momentum = 0.9, .weight_decay = 0.001, .nesterov = true});
  else if (name == "adagrad")
    opt = std::make_unique<train::adagrad>(train::adagrad_options{
        .lr = 0.1, .lr_decay = 0.01, .weight_decay = 0.01, .initial_accumulator_value = 0.1, .eps = 1e-10});
  else if (name == "adam") opt = std::make_unique<train::adam>(train::adam_options{.lr = 0.01});
  else if (name == "adam_l2_amsgrad")
    opt = std::make_unique<train::adam>(
        train::adam_options{.lr = 0.01, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-6, .weight_decay = 0.05, .amsgrad = true});
  else if (name == "adamw") opt = std::make_unique<train::adamw>(train::adamw_options{.lr = 0.01, .weight_decay = 0.1});
  else if (name == "adamw_amsgrad")
    opt = std::make_unique<train::adamw>(
        train::adamw_options{.lr = 0.02, .beta1 = 0.85, .beta2 = 0.995, .weight_decay = 0.02, .amsgrad = true});
  else return -1;

  std::vector<train::parameter> storage;
  for (const char* p : {"weight", "bias"}) {
    const io::tensor_view& init = f.at(std::string("init.") + p);
    storage.emplace_back(p, std::vector<std::size_t>(init.shape.begin(), init.shape.end()));
    storage.back().value = floats(init);
  }
  std::vector<train::parameter*> params{&storage[0], &storage[1]};
  report r;
  for (int t = 0; t < 20; ++t) {
    for (auto& p : storage) p.grad = floats(f.at("grad." + std::to_string(t) + "." + p.name));
    opt->step(params);
    for (auto& p : storage)
      r.check("step " + std::to_string(t + 1) + " " + p.name, p.value, floats(f.at("value." + std::to_string(t) + "." + p.name)),
              optimizer_tolerance, t == 0 || t == 19);
  }
  std::printf("%s: worst relative error over 20 steps %.3g (tolerance %g)\n", name.c_str(), r.worst, optimizer_tolerance);
  return r.ok ? 0 : 1;
}

int row_case(const std::string& name, const io::safetensors_file& f) {
  std::unique_ptr<train::basic_row_optimizer> opt;
  if (name == "row_sgd") opt = std::make_unique<train::row_sgd>(0.1);
  else if (name == "rowwise_adagrad")
    opt = std::make_unique<train::rowwise_adagrad>(
        train::rowwise_adagrad_options{.lr = 0.1, .eps = 1e-8, .initial_accumulator_value = 0.05});
  else if (name == "adagrad_rows")
    opt = std::make_unique<train::adagrad_rows>(
        train::adagrad_rows_options{.lr = 0.1, .lr_decay = 0.01, .initial_accumulator_value = 0.1, .eps = 1e-10});
  else if (name == "lazy_adam")
    opt = std::make_unique<train::lazy_adam>(train::lazy_adam_options{.lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8});
  else return -1;

  const io::tensor_view& init = f.at("init");
  const std::size_t rows = init.shape[0], dim = init.shape[1], s = opt->state_size(dim);
  std::vector<float> table = floats(init), state(rows * s);
  for (std::size_t r = 0; r < rows; ++r) opt->init_state(std::span<float>(state).subspan(r * s, s));
  report r;
  for (int t = 0; t < 20; ++t) {
    const std::string step = std::to_string(t);
    const auto ids = f.at("rows." + step).data<id_type>();
    const std::vector<float> grads = floats(f.at("grad." + step));
    const std::vector<float> before = table;
    opt->begin_step();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const auto id = static_cast<std::size_t>(ids[i]);
      opt->update_row(std::span<float>(table).subspan(id * dim, dim), std::span<float>(state).subspan(id * s, s),
                      std::span<const float>(grads).subspan(i * dim, dim));
    }
    r.check("step " + std::to_string(t + 1) + " table", table, floats(f.at("value." + step)), optimizer_tolerance,
            t == 0 || t == 19);
    // lazy: rows outside the batch are bit for bit unchanged
    for (std::size_t row = 0; row < rows; ++row)
      if (std::find(ids.begin(), ids.end(), static_cast<id_type>(row)) == ids.end())
        for (std::size_t k = 0; k < dim; ++k)
          if (table[row * dim + k] != before[row * dim + k]) {
            std::printf("  FAIL: step %d changed row %zu, which is not in the batch\n", t + 1, row);
            r.ok = false;
          }
  }
  std::printf("%s: worst relative error over 20 steps %.3g (tolerance %g)\n", name.c_str(), r.worst, optimizer_tolerance);
  return r.ok ? 0 : 1;
}

int losses(const io::safetensors_file& f) {
  report r;
  const auto one = [](float v) { return std::vector<float>{v}; };
  const auto logits = floats(f.at("bce.logits")), labels = floats(f.at("bce.labels")), weights = floats(f.at("bce.weights"));
  std::vector<float> dx(logits.size());
  float loss = train::bce_with_logits(logits, labels, dx);
  r.check("bce loss", one(loss), floats(f.at("bce.loss")), loss_tolerance, true, 0.0);
  r.check("bce dlogits", dx, floats(f.at("bce.grad")), loss_tolerance, true, 0.0);
  loss = train::bce_with_logits(logits, labels, dx, weights);
  r.check("bce weighted loss", one(loss), floats(f.at("bce_weighted.loss")), loss_tolerance, true, 0.0);
  r.check("bce weighted dlogits", dx, floats(f.at("bce_weighted.grad")), loss_tolerance, true, 0.0);

  const matrix_view<const float> scores = f.at("ce.logits").as_matrix();
  matrix<float> dscores(scores.rows(), scores.cols());
  loss = train::softmax_cross_entropy(scores, f.at("ce.targets").data<id_type>(), dscores.view());
  r.check("softmax ce loss", one(loss), floats(f.at("ce.loss")), loss_tolerance, true, 0.0);
  r.check("softmax ce dlogits", dscores.values(), floats(f.at("ce.grad")), loss_tolerance, true, 0.0);
  loss = train::softmax_cross_entropy(scores, f.at("ce_ignore.targets").data<id_type>(), dscores.view(), -1);
  r.check("softmax ce ignore_index loss", one(loss), floats(f.at("ce_ignore.loss")), loss_tolerance, true, 0.0);
  r.check("softmax ce ignore_index dlogits", dscores.values(), floats(f.at("ce_ignore.grad")), loss_tolerance, true, 0.0);

  const float temperature = 0.5f;
  const matrix_view<const float> q = f.at("sampled.q").as_matrix(), p = f.at("sampled.p").as_matrix(),
                                 neg = f.at("sampled.neg").as_matrix();
  const auto ids = f.at("sampled.ids").data<id_type>();
  const auto log_q = f.at("sampled.log_q").data<float>();
  matrix<float> dq(q.rows(), q.cols()), dp(p.rows(), p.cols()), dneg(neg.rows(), neg.cols());
  loss = train::sampled_softmax(q, p, ids, log_q, dq.view(), dp.view(), temperature);
  r.check("sampled softmax (in-batch) loss", one(loss), floats(f.at("sampled_inbatch.loss")), loss_tolerance, true, 0.0);
  r.check("sampled softmax (in-batch) dqueries", dq.values(), floats(f.at("sampled_inbatch.dq")), loss_tolerance, true, 0.0);
  r.check("sampled softmax (in-batch) ditems", dp.values(), floats(f.at("sampled_inbatch.dp")), loss_tolerance, true, 0.0);
  const train::sampled_negatives extra{neg, f.at("sampled.neg_ids").data<id_type>(),
                                       f.at("sampled.neg_log_q").data<float>(), dneg.view()};
  loss = train::sampled_softmax(q, p, ids, log_q, dq.view(), dp.view(), extra, temperature);
  r.check("sampled softmax (+negatives) loss", one(loss), floats(f.at("sampled.loss")), loss_tolerance, true, 0.0);
  r.check("sampled softmax (+negatives) dqueries", dq.values(), floats(f.at("sampled.dq")), loss_tolerance, true, 0.0);
  r.check("sampled softmax (+negatives) ditems", dp.values(), floats(f.at("sampled.dp")), loss_tolerance, true, 0.0);
  r.check("sampled softmax (+negatives) dnegatives", dneg.values(), floats(f.at("sampled.dneg")), loss_tolerance, true, 0.0);
  std::printf("losses: worst relative error %.3g (tolerance %g)\n", r.worst, loss_tolerance);
  return r.ok ? 0 : 1;
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
    std::printf("SKIPPED: %s has no complete reference fixture (tools/reference_optimizers.py needs python3-torch)\n",
                folder.string().c_str());
    return 77;
  }
  try {
    const auto f = io::safetensors_file::open(folder / (name + ".safetensors"));
    int rc = name == "losses" ? losses(f) : dense_case(name, f);
    if (rc < 0) rc = row_case(name, f);
    if (rc < 0) {
      std::printf("FAIL: unknown case '%s'\n", name.c_str());
      return 1;
    }
    std::printf("%s\n", rc == 0 ? "PASSED" : "FAILED");
    return rc;
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
