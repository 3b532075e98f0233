// SPDX-License-Identifier: Apache-2.0
// The serving end of examples/session_based: the trained transformer's item vectors in an HNSW
// index, the session pipeline encode(session model) >> retrieve(index, k) >> filter_seen >> top_k
// with its latency per request and ANN recall against exact retrieval, and new items (first
// clicked after training) getting embeddings by continued training on the click stream.
#pragma once

#include "trained.hpp"

#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/io/sessions.hpp>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/score.hpp>
#include <recpipe/stages/session_encoder.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <vector>

namespace session_example {

//! The item vectors of the trainable transformer, for ids `ids`, into both indexes.
inline void index_items(recpipe::train::session_transformer_model& model, recpipe::cpu::hnsw_index& ann,
                        recpipe::cpu::exact_index& exact, std::span<const id_type> ids) {
  const std::size_t dim = model.config().embedding_dim;
  const recpipe::train::parameter& table = *model.find("item_embedding.weight");
  recpipe::matrix<float> vectors(ids.size(), dim);
  for (std::size_t i = 0; i < ids.size(); ++i)
    std::copy_n(table.value.data() + static_cast<std::size_t>(ids[i]) * dim, dim, vectors.row(i).begin());
  ann.add(ids, vectors.view(), 2);
  exact.add(ids, vectors.view());
}

inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

struct serving_report {
  std::size_t requests = 0;
  double p50_us = 0, p99_us = 0, ann_recall = 0;
};

//! Serves test-session prefixes one request at a time through the session pipeline.
inline serving_report serve_sessions(const recpipe::models::session_transformer& serving, recpipe::cpu::hnsw_index& ann,
                                     const recpipe::cpu::exact_index& exact, const recpipe::io::session_log& test,
                                     std::size_t max_requests, std::size_t fetch = 100, std::size_t k = 20) {
  using namespace recpipe;
  const std::size_t dim = serving.embedding_dim();
  std::vector<std::vector<id_type>> requests;
  for (std::size_t s = 0; s < test.num_sessions() && requests.size() < max_requests; ++s) {
    const auto session = test.session(s);
    for (std::size_t t = 1; t < session.size() && requests.size() < max_requests; ++t)
      requests.emplace_back(session.begin(), session.begin() + static_cast<std::ptrdiff_t>(t));
  }
  const auto next_items = encode(session_encoder(serving)) >> retrieve(ann, fetch) >> filter_seen<col::session_items>() >>
                          top_k<col::retrieval_score>(k);
  serving_report report;
  report.requests = requests.size();
  std::vector<double> latency;
  for (const auto& r : requests) {
    batch<col::session_items> b(1);
    b.get<col::session_items>().assign(std::vector<std::size_t>{0, r.size()}, r);
    const auto start = std::chrono::steady_clock::now();
    const auto out = next_items.run(b);
    latency.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
    if (out.get<col::candidates>().row(0).empty()) std::fprintf(stderr, "serving: a request got no recommendation\n");
  }
  report.p50_us = percentile(latency, 0.5);
  report.p99_us = percentile(latency, 0.99);
  matrix<float> queries(requests.size(), dim);
  for (std::size_t r = 0; r < requests.size(); ++r) {
    const std::size_t keep = std::min(requests[r].size(), serving.config().max_length);
    const id_type offsets[2] = {0, static_cast<id_type>(keep)};
    serving.encode(offsets, std::span<const id_type>(requests[r]).subspan(requests[r].size() - keep),
                   matrix_view<float>(queries.row(r).data(), 1, dim));
  }
  report.ann_recall = requests.empty() ? 1.0 : cpu::recall_at_k(ann, exact, queries.view(), k);
  return report;
}

struct new_items_report {
  std::size_t fresh = 0, stream_sessions = 0, targets = 0, index_size = 0;
  double seconds = 0, recall_before = 0, recall_after = 0;
};

//! @brief Items first clicked after training (in `stream`, the later click log with original ids)
//! join the vocabulary; the model grows rows for them; training continues on the first half of
//! the stream's sessions (`passes` passes, fresh Adam); their vectors go into the index. Returns
//! Recall@k, through the index, of the second half's next clicks on a new item, before and after.
inline new_items_report learn_new_items(recpipe::train::session_transformer_model& model, const trained_options& o,
                                        const recpipe::io::session_log& train_log,
                                        std::span<const recpipe::io::session_click> stream, recpipe::cpu::hnsw_index& ann,
                                        recpipe::cpu::exact_index& exact, std::size_t passes = 3, std::size_t k = 20) {
  using namespace recpipe;
  new_items_report report;
  const std::size_t known = train_log.num_items();
  io::item_vocabulary grown = train_log.vocabulary;
  {
    std::vector<io::session_click> ordered(stream.begin(), stream.end());
    std::stable_sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) { return a.time < b.time; });
    for (const auto& c : ordered) grown.add(c.item);
  }
  report.fresh = grown.size() - known;
  if (report.fresh == 0) return report;
  const io::session_log log = io::make_session_log(stream, grown, 2);
  const std::size_t half = log.num_sessions() / 2;
  train::session_list first, second;
  for (std::size_t s = 0; s < log.num_sessions(); ++s) (s < half ? first : second).add(log.session(s));
  report.stream_sessions = first.size();
  const auto recall = [&](const models::session_transformer& m) {
    std::size_t hits = 0, total = 0;
    std::vector<id_type> ids(k), prefix;
    std::vector<float> scores(k);
    matrix<float> q(1, m.embedding_dim());
    for (std::size_t s = 0; s < second.size(); ++s) {
      const auto session = second.session(s);
      for (std::size_t t = 1; t < session.size(); ++t) {
        if (static_cast<std::size_t>(session[t]) < known) continue;
        prefix.clear();  // the served encoder skips ids the model does not know; so do we
        for (std::size_t j = 0; j < t; ++j)
          if (static_cast<std::size_t>(session[j]) < m.config().num_items) prefix.push_back(session[j]);
        const std::size_t keep = std::min(prefix.size(), m.config().max_length);
        const id_type offsets[2] = {0, static_cast<id_type>(keep)};
        m.encode(offsets, std::span<const id_type>(prefix).subspan(prefix.size() - keep), q.view());
        const std::size_t found = ann.search(q.row(0), k, ids, scores);
        hits += std::find(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(found), session[t]) !=
                ids.begin() + static_cast<std::ptrdiff_t>(found);
        ++total;
      }
    }
    report.targets = total;
    return total == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(total);
  };
  report.recall_before = recall(model.freeze());
  model.add_items(report.fresh, o.seed + 1);
  train::adam optimizer({.lr = o.lr});
  auto options = transformer_training(o, o.threads, 1);
  options.progress = nullptr;
  train::session_trainer trainer(model, optimizer, options);
  std::vector<std::size_t> counts(grown.size(), 0);
  for (id_type i : train_log.items) ++counts[static_cast<std::size_t>(i)];
  for (id_type i : first.items) ++counts[static_cast<std::size_t>(i)];
  trainer.set_item_counts(counts);
  const auto start = std::chrono::steady_clock::now();
  // The stream in arrival order, mini-batch after mini-batch, as a trainer following the clicks.
  for (std::size_t pass = 0; pass < passes; ++pass)
    for (std::size_t b = 0; b < first.size(); b += o.batch) {
      train::session_list batch;
      for (std::size_t s = b; s < std::min(first.size(), b + o.batch); ++s) batch.add(first.session(s));
      trainer.step(batch);
    }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  // Publish: every item's vector again (the old ones moved with training), the new ones added.
  std::vector<id_type> all_ids(grown.size());
  std::iota(all_ids.begin(), all_ids.end(), id_type{0});
  index_items(model, ann, exact, all_ids);
  report.index_size = ann.size();
  report.recall_after = recall(model.freeze());
  return report;
}

}  // namespace session_example
