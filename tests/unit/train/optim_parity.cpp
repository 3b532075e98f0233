// SPDX-License-Identifier: Apache-2.0
// Parity with PyTorch for train/optimizers.hpp and train/losses.hpp: replays the gradients that
// tools/reference_optimizers.py fed torch.optim and compares the weights after each of 20 steps,
// and the losses/gradients of torch's loss functions on the same inputs.
// Usage: train_optim_parity <case> <reference folder>. Exit 0 pass, 1 fail, 77 skipped (no
// complete reference: python3-torch missing). The hyper-parameters repeat the script's CASES.
#include <algorithm>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <recpipe/io/safetensors.hpp>
#include <recpipe/train/losses.hpp>
#include <recpipe/train/optimizers.hpp>

#include "common/parity.hpp"

namespace io = recpipe::io;
namespace parity = recpipe::testing::parity;
namespace train = recpipe::train;
using parity::floats;
using recpipe::id_type;
using recpipe::matrix;
using recpipe::matrix_view;

namespace {

// Error measures (tests/common/parity.hpp), per tensor:
// optimizers: max |recpipe - torch| <= 1e-6 max(1, max |torch|) after every step (the task's bar);
constexpr auto optimizer_measure = parity::error_measure::relative(1e-6, 1.0);
// losses and their gradients, often much smaller than 1: recpipe sums in double, torch in fp32;
// 1e-6 of the largest value (not floored at 1).
constexpr auto loss_measure = parity::error_measure::relative(1e-6, 0.0);

// Steps 1 and 20 are printed; the others only when they fail.
parity::show shown(int step) { return step == 0 || step == 19 ? parity::show::always : parity::show::failures; }

// Returns false when `name` is not a dense-optimizer case.
bool dense_case(const std::string& name, const io::safetensors_file& f, parity::report& r) {
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
  else return false;

  std::vector<train::parameter> storage;
  for (const char* p : {"weight", "bias"}) {
    const io::tensor_view& init = f.at(std::string("init.") + p);
    storage.emplace_back(p, std::vector<std::size_t>(init.shape.begin(), init.shape.end()));
    storage.back().value = init.to_float();
  }
  std::vector<train::parameter*> params{&storage[0], &storage[1]};
  for (int t = 0; t < 20; ++t) {
    for (auto& p : storage) p.grad = floats(f, "grad." + std::to_string(t) + "." + p.name);
    opt->step(params);
    for (auto& p : storage)
      r.check("step " + std::to_string(t + 1) + " " + p.name, p.value,
              floats(f, "value." + std::to_string(t) + "." + p.name), shown(t));
  }
  return true;
}

// Returns false when `name` is not a row-optimizer case.
bool row_case(const std::string& name, const io::safetensors_file& f, parity::report& r) {
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
  else return false;

  const io::tensor_view& init = f.at("init");
  const std::size_t rows = init.shape[0], dim = init.shape[1], s = opt->state_size(dim);
  std::vector<float> table = init.to_float(), state(rows * s);
  for (std::size_t row = 0; row < rows; ++row) opt->init_state(std::span<float>(state).subspan(row * s, s));
  for (int t = 0; t < 20; ++t) {
    const std::string step = std::to_string(t);
    const auto ids = f.at("rows." + step).data<id_type>();
    const std::vector<float> grads = floats(f, "grad." + step);
    const std::vector<float> before = table;
    opt->begin_step();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const auto id = static_cast<std::size_t>(ids[i]);
      opt->update_row(std::span<float>(table).subspan(id * dim, dim), std::span<float>(state).subspan(id * s, s),
                      std::span<const float>(grads).subspan(i * dim, dim));
    }
    r.check("step " + std::to_string(t + 1) + " table", table, floats(f, "value." + step), shown(t));
    // lazy: rows outside the batch are bit for bit unchanged
    for (std::size_t row = 0; row < rows; ++row)
      if (std::find(ids.begin(), ids.end(), static_cast<id_type>(row)) == ids.end())
        for (std::size_t k = 0; k < dim; ++k)
          if (table[row * dim + k] != before[row * dim + k])
            r.fail("step " + std::to_string(t + 1) + " changed row " + std::to_string(row) + ", which is not in the batch");
  }
  return true;
}

void losses(const io::safetensors_file& f, parity::report& r) {
  const auto one = [](float v) { return std::vector<float>{v}; };
  const auto logits = floats(f, "bce.logits"), labels = floats(f, "bce.labels"), weights = floats(f, "bce.weights");
  std::vector<float> dx(logits.size());
  float loss = train::bce_with_logits(logits, labels, dx);
  r.check("bce loss", one(loss), floats(f, "bce.loss"));
  r.check("bce dlogits", dx, floats(f, "bce.grad"));
  loss = train::bce_with_logits(logits, labels, dx, weights);
  r.check("bce weighted loss", one(loss), floats(f, "bce_weighted.loss"));
  r.check("bce weighted dlogits", dx, floats(f, "bce_weighted.grad"));

  const matrix_view<const float> scores = f.at("ce.logits").as_matrix();
  matrix<float> dscores(scores.rows(), scores.cols());
  loss = train::softmax_cross_entropy(scores, f.at("ce.targets").data<id_type>(), dscores.view());
  r.check("softmax ce loss", one(loss), floats(f, "ce.loss"));
  r.check("softmax ce dlogits", dscores.values(), floats(f, "ce.grad"));
  loss = train::softmax_cross_entropy(scores, f.at("ce_ignore.targets").data<id_type>(), dscores.view(), -1);
  r.check("softmax ce ignore_index loss", one(loss), floats(f, "ce_ignore.loss"));
  r.check("softmax ce ignore_index dlogits", dscores.values(), floats(f, "ce_ignore.grad"));

  const float temperature = 0.5f;
  const matrix_view<const float> q = f.at("sampled.q").as_matrix(), p = f.at("sampled.p").as_matrix(),
                                 neg = f.at("sampled.neg").as_matrix();
  const auto ids = f.at("sampled.ids").data<id_type>();
  const auto log_q = f.at("sampled.log_q").data<float>();
  matrix<float> dq(q.rows(), q.cols()), dp(p.rows(), p.cols()), dneg(neg.rows(), neg.cols());
  loss = train::sampled_softmax(q, p, ids, log_q, dq.view(), dp.view(), temperature);
  r.check("sampled softmax (in-batch) loss", one(loss), floats(f, "sampled_inbatch.loss"));
  r.check("sampled softmax (in-batch) dqueries", dq.values(), floats(f, "sampled_inbatch.dq"));
  r.check("sampled softmax (in-batch) ditems", dp.values(), floats(f, "sampled_inbatch.dp"));
  const train::sampled_negatives extra{neg, f.at("sampled.neg_ids").data<id_type>(),
                                       f.at("sampled.neg_log_q").data<float>(), dneg.view()};
  loss = train::sampled_softmax(q, p, ids, log_q, dq.view(), dp.view(), extra, temperature);
  r.check("sampled softmax (+negatives) loss", one(loss), floats(f, "sampled.loss"));
  r.check("sampled softmax (+negatives) dqueries", dq.values(), floats(f, "sampled.dq"));
  r.check("sampled softmax (+negatives) ditems", dp.values(), floats(f, "sampled.dp"));
  r.check("sampled softmax (+negatives) dnegatives", dneg.values(), floats(f, "sampled.dneg"));
}

}  // namespace

int main(int argc, char** argv) {
  const bool loss_case = argc > 1 && std::string(argv[1]) == "losses";
  return parity::main(argc, argv, "tools/reference_optimizers.py", loss_case ? loss_measure : optimizer_measure,
                      [](const std::string& name, const parity::fixture& fx, parity::report& r) {
                        const io::safetensors_file f = fx.open(name);
                        if (name == "losses") losses(f, r);
                        else if (!dense_case(name, f, r) && !row_case(name, f, r)) r.fail("unknown case '" + name + "'");
                      });
}
