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
  std::size_t fresh = 0, stream_sessions = 0, targets = 0, index_size = 0, base_sessions = 0;
  double seconds = 0, recall_before = 0, recall_after = 0;
  bool held_back = false;  //!< the stream was the last part of the training log (base model trained here)
};

//! @brief The core: `model` knows items [0, known); `first` and `second` (later sessions, in
//! time order) use ids up to total - 1, the ones >= known being new. The model grows rows for
//! the new items, training continues on `first` (`passes` passes, fresh Adam), and every vector
//! is republished to the index. Recall@k through the index of `second`'s next clicks on a new
//! item, before and after.
inline new_items_report continue_with_new_items(recpipe::train::session_transformer_model& model, const trained_options& o,
                                                std::size_t known, std::size_t total, const recpipe::train::session_list& first,
                                                const recpipe::train::session_list& second, std::vector<std::size_t> counts,
                                                recpipe::cpu::hnsw_index& ann, recpipe::cpu::exact_index& exact,
                                                std::size_t passes = 3, std::size_t k = 20) {
  using namespace recpipe;
  new_items_report report;
  report.fresh = total - known;
  report.stream_sessions = first.size();
  const auto recall = [&](const models::session_transformer& m) {
    std::size_t hits = 0, count = 0;
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
        ++count;
      }
    }
    report.targets = count;
    return count == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(count);
  };
  report.recall_before = recall(model.freeze());
  model.add_items(total - known, o.seed + 1);
  train::adam optimizer({.lr = o.lr});
  auto options = transformer_training(o, o.threads, 1);
  options.progress = nullptr;
  train::session_trainer trainer(model, optimizer, options);
  counts.resize(total, 0);
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
  std::vector<id_type> all_ids(total);
  std::iota(all_ids.begin(), all_ids.end(), id_type{0});
  index_items(model, ann, exact, all_ids);
  report.index_size = ann.size();
  report.recall_after = recall(model.freeze());
  return report;
}

//! @brief New items from a later click stream with original ids (`stream`): the ones unseen in
//! `train_log` are new. The trained `model` and its index continue.
inline new_items_report learn_new_items(recpipe::train::session_transformer_model& model, const trained_options& o,
                                        const recpipe::io::session_log& train_log,
                                        std::span<const recpipe::io::session_click> stream, recpipe::cpu::hnsw_index& ann,
                                        recpipe::cpu::exact_index& exact) {
  using namespace recpipe;
  const std::size_t known = train_log.num_items();
  io::item_vocabulary grown = train_log.vocabulary;
  std::vector<io::session_click> ordered(stream.begin(), stream.end());
  std::stable_sort(ordered.begin(), ordered.end(), [](const auto& a, const auto& b) { return a.time < b.time; });
  for (const auto& c : ordered) grown.add(c.item);
  if (grown.size() == known) return {};
  const io::session_log log = io::make_session_log(stream, grown, 2);
  train::session_list first, second;
  for (std::size_t s = 0; s < log.num_sessions(); ++s) (s < log.num_sessions() / 2 ? first : second).add(log.session(s));
  return continue_with_new_items(model, o, known, grown.size(), first, second, train_log.item_counts(), ann, exact);
}

//! @brief When the later clicks hold no unseen item (a prepared split such as session-rec's
//! filters them out): hold back the last `held_fraction` of the training sessions (by start
//! time) as the click stream, train a base transformer on the rest (its catalog = the items seen
//! there), index its items, and continue with the stream (half for training, half to measure).
inline new_items_report learn_new_items_held_back(const trained_options& o, const recpipe::io::session_log& train_log,
                                                  double held_fraction = 0.2) {
  using namespace recpipe;
  const std::size_t sessions = train_log.num_sessions();
  const std::size_t cut = sessions - static_cast<std::size_t>(held_fraction * static_cast<double>(sessions));
  std::vector<id_type> remap(train_log.num_items(), -1);
  std::size_t next = 0;
  train::session_list base, held;
  std::vector<id_type> buffer;
  for (std::size_t s = 0; s < sessions; ++s) {
    buffer.clear();
    for (id_type i : train_log.session(s)) {
      id_type& r = remap[static_cast<std::size_t>(i)];
      if (r < 0 && s < cut) r = static_cast<id_type>(next++);
      buffer.push_back(r);
    }
    if (s < cut) base.add(buffer);
  }
  const std::size_t known = next;
  for (std::size_t s = cut; s < sessions; ++s) {
    buffer.clear();
    for (id_type i : train_log.session(s)) {
      id_type& r = remap[static_cast<std::size_t>(i)];
      if (r < 0) r = static_cast<id_type>(next++);
      buffer.push_back(r);
    }
    held.add(buffer);
  }
  new_items_report report;
  report.held_back = true;
  report.base_sessions = base.size();
  if (next == known) return report;
  train::session_transformer_model model(transformer_config(o, known), o.seed);
  train::adam optimizer({.lr = o.lr});
  auto options = transformer_training(o, o.threads, o.epochs);
  options.progress = nullptr;
  train::session_trainer trainer(model, optimizer, options);
  trainer.fit(base);
  const std::size_t dim = o.dim;
  cpu::hnsw_index ann(dim, metric::inner_product, next + 64, 16, 200, 7);
  cpu::exact_index exact(dim, metric::inner_product, next + 64);
  std::vector<id_type> ids(known);
  std::iota(ids.begin(), ids.end(), id_type{0});
  index_items(model, ann, exact, ids);
  ann.set_ef(200);
  train::session_list first, second;
  for (std::size_t s = 0; s < held.size(); ++s) (s < held.size() / 2 ? first : second).add(held.session(s));
  std::vector<std::size_t> counts(known, 0);
  for (id_type i : base.items) ++counts[static_cast<std::size_t>(i)];
  const std::size_t base_sessions = report.base_sessions;
  report = continue_with_new_items(model, o, known, next, first, second, counts, ann, exact);
  report.held_back = true;
  report.base_sessions = base_sessions;
  return report;
}

}  // namespace session_example
