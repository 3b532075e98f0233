// SPDX-License-Identifier: Apache-2.0
// Parity with two public PyTorch SASRec implementations: tools/reference_sasrec.py builds randomly
// initialised modules that follow SASRec.pytorch and RecBole's SASRec, saves their checkpoints,
// converts them with tools/convert_sasrec.py and stores their outputs; this program loads the
// converted file into models::session_transformer and checks the last-position features and the
// scores of every item: max |recpipe - torch| <= 1e-5, for sessions of 1 item, shorter than the
// window, exactly the window, longer (the last max_length items are kept) and a mixed batch.
// Usage: models_sasrec_parity <model name> <reference folder>. Exit 0 pass, 1 fail, 77 skipped.
#include <cstdio>
#include <string>

#include <recpipe/io/safetensors.hpp>
#include <recpipe/models/session_transformer.hpp>

#include "common/parity.hpp"

namespace io = recpipe::io;
namespace models = recpipe::models;
namespace parity = recpipe::testing::parity;
using recpipe::matrix;

namespace {

void run(const std::string& name, const parity::fixture& f, parity::report& r) {
  const auto model = models::session_transformer::load(f.path(name));
  std::printf("%s: %s\n", name.c_str(), model.config().to_json().dump().c_str());
  for (const std::string case_name : {"len1", "short", "maxlen", "longer", "batch"}) {
    const auto c = f.open(name + "." + case_name);
    const std::size_t batch = c.at("expected").shape[0];
    matrix<float> encoded(batch, model.embedding_dim()), scores(batch, model.num_items());
    model.encode(c.at("offsets").data<recpipe::id_type>(), c.at("items").data<recpipe::id_type>(), encoded.view());
    model.score_all_items(encoded.view(), scores.view());
    r.check(case_name + ": last-position features", encoded.view(), c.at("expected").as_matrix());
    r.check(case_name + ": item scores", scores.view(), c.at("expected_scores").as_matrix());
  }
}

}  // namespace

int main(int argc, char** argv) {
  return parity::main(argc, argv, "tools/reference_sasrec.py", parity::error_measure::absolute(1e-5), run);
}
