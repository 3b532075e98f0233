// SPDX-License-Identifier: Apache-2.0
// recpipe session-based recommendation (issue 10): train a session transformer in-process on
// click sessions, compare it with the baselines and with a PyTorch peer on the same split, then
// serve it: encode(session model) >> retrieve(index, k) >> filter_seen >> top_k, and give items
// that appear after training embeddings by continued training on the click stream.
//
//   example_session_based --data ../shared/data/yoochoose-rsc15-100k   the YOOCHOOSE sample
//   example_session_based --data DIR --valid      tune: train_tr -> train_valid, Recall@20 per epoch
//   example_session_based --peer-json peer.json   add the PyTorch peer's rows (bench/session/torch_session.py)
//   example_session_based --smoke                 synthetic sessions, a few seconds (ctest)
// Without --data the example runs on synthetic sessions. See docs/session-based.md.
#include <recpipe/cpu/exact_index.hpp>
#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/cpu/threads.hpp>
#include <recpipe/stages/filter.hpp>
#include <recpipe/stages/order.hpp>
#include <recpipe/stages/retrieve.hpp>
#include <recpipe/stages/score.hpp>
#include <recpipe/stages/session_encoder.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/session_training.hpp>
#include <recpipe/train/session_transformer_model.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using namespace recpipe;
using clock_type = std::chrono::steady_clock;
using raw_session = std::vector<std::int64_t>;  // original item ids in time order

// --- data ---------------------------------------------------------------------------------------

// A session-rec TSV file (header naming SessionId, ItemId, Time): sessions in order of their first
// click, clicks of a session by time (file order among equal times).
std::vector<raw_session> read_session_rec(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  std::string line;
  std::getline(in, line);
  std::vector<std::string> header;
  {
    std::stringstream ss(line);
    for (std::string f; std::getline(ss, f, '\t');) header.push_back(f);
  }
  const auto col = [&](const char* name) {
    const auto it = std::find(header.begin(), header.end(), name);
    if (it == header.end()) throw std::runtime_error(path.string() + ": the header has no " + name + " column");
    return static_cast<std::size_t>(it - header.begin());
  };
  const std::size_t si = col("SessionId"), ii = col("ItemId"), ti = col("Time");
  struct click {
    double time;
    std::size_t line;
    std::int64_t item;
  };
  std::unordered_map<std::string, std::size_t> index;
  std::vector<std::vector<click>> sessions;
  std::vector<std::string> fields;
  for (std::size_t n = 2; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    fields.clear();
    std::stringstream ss(line);
    for (std::string f; std::getline(ss, f, '\t');) fields.push_back(f);
    if (fields.size() < header.size())
      throw std::runtime_error(path.string() + ":" + std::to_string(n) + ": expected " + std::to_string(header.size()) +
                               " tab-separated fields");
    const auto [it, fresh] = index.try_emplace(fields[si], sessions.size());
    if (fresh) sessions.emplace_back();
    sessions[it->second].push_back({std::stod(fields[ti]), n, std::stoll(fields[ii])});
  }
  std::vector<raw_session> out;
  for (auto& s : sessions) {
    std::stable_sort(s.begin(), s.end(), [](const click& a, const click& b) { return a.time < b.time; });
    raw_session r;
    for (const click& c : s) r.push_back(c.item);
    out.push_back(std::move(r));
  }
  return out;
}

std::filesystem::path find_file(const std::filesystem::path& folder, const std::string& suffix) {
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) return entry.path();
  }
  throw std::runtime_error(folder.string() + ": no file ending in " + suffix);
}

// Synthetic click sessions with sequential structure: items in topics; the next click follows one
// of the previous item's few successors (mostly), else a popular item. The last `fresh` items
// appear only in the later (test) part: new items for the incremental-training demo.
struct synthetic_split {
  std::vector<raw_session> train, test;
};
synthetic_split synthetic_sessions(std::size_t items, std::size_t train_sessions, std::size_t test_sessions,
                                   std::size_t fresh, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::size_t successors = 3;
  std::vector<std::vector<std::int64_t>> next(items);
  std::uniform_int_distribution<std::size_t> any(0, items - 1);
  for (std::size_t i = 0; i < items; ++i)
    for (std::size_t k = 0; k < successors; ++k) next[i].push_back(static_cast<std::int64_t>(any(rng)));
  std::geometric_distribution<int> extra(0.25);
  std::uniform_real_distribution<double> u(0, 1);
  const auto make = [&](std::size_t count, bool allow_fresh) {
    std::vector<raw_session> out;
    const std::size_t visible = allow_fresh ? items : items - fresh;
    std::uniform_int_distribution<std::size_t> start(0, visible - 1);
    for (std::size_t s = 0; s < count; ++s) {
      raw_session r{static_cast<std::int64_t>(start(rng))};
      const int length = 2 + extra(rng);
      while (static_cast<int>(r.size()) < length) {
        const auto& succ = next[static_cast<std::size_t>(r.back())];
        std::int64_t item = u(rng) < 0.8 ? succ[static_cast<std::size_t>(u(rng) < 0.6 ? 0 : (u(rng) < 0.6 ? 1 : 2))]
                                         : static_cast<std::int64_t>(start(rng));
        if (static_cast<std::size_t>(item) >= visible) item = static_cast<std::int64_t>(start(rng));
        r.push_back(item);
      }
      out.push_back(std::move(r));
    }
    return out;
  };
  synthetic_split split;
  split.train = make(train_sessions, false);
  split.test = make(test_sessions, true);
  return split;
}

// Dense item ids: the training vocabulary in order of first appearance.
struct vocabulary {
  std::unordered_map<std::int64_t, id_type> ids;
  std::vector<std::int64_t> originals;
  id_type add(std::int64_t item) {
    const auto [it, fresh] = ids.try_emplace(item, static_cast<id_type>(originals.size()));
    if (fresh) originals.push_back(item);
    return it->second;
  }
  id_type find(std::int64_t item) const {
    const auto it = ids.find(item);
    return it == ids.end() ? -1 : it->second;
  }
  std::size_t size() const { return originals.size(); }
};

// Sessions on the vocabulary: clicks on unknown items dropped, then sessions shorter than
// min_length dropped (the session-rec protocol for test data).
train::session_list encode_sessions(const std::vector<raw_session>& raw, const vocabulary& vocab, std::size_t min_length) {
  train::session_list out;
  std::vector<id_type> s;
  for (const raw_session& r : raw) {
    s.clear();
    for (std::int64_t item : r)
      if (const id_type id = vocab.find(item); id >= 0) s.push_back(id);
    if (s.size() >= min_length) out.add(s);
  }
  return out;
}

// --- options ------------------------------------------------------------------------------------

struct options {
  std::string data, peer_json;
  bool smoke = false, valid = false, speed = true;
  std::size_t epochs = 8, threads = 2, dim = 64, layers = 2, heads = 2, ffn = 128, max_length = 50, batch = 128;
  std::size_t negatives = 0;  // 0: full softmax
  double lr = 1e-3;
  std::uint64_t seed = 42;
};

int usage(const char* self) {
  std::fprintf(stderr,
               "usage: %s [--data DIR] [--valid] [--smoke] [--peer-json FILE] [--epochs N] [--threads N]\n"
               "          [--dim N] [--layers N] [--heads N] [--ffn N] [--max-length N] [--batch N] [--lr X]\n"
               "          [--negatives K (sampled softmax; 0 = full)] [--no-speed] [--seed N]\n",
               self);
  return 2;
}

struct table_row {
  std::string model, hyper;
  double recall = 0, mrr = 0, train_seconds = -1, epoch_1t = -1, epoch_2t = -1;
};

void print_table(const std::vector<table_row>& rows, std::size_t predictions) {
  std::printf("\nnext-item prediction, %zu predictions (every prefix of every test session)\n", predictions);
  std::printf("| model | Recall@20 | MRR@20 | train s | s/epoch 1 thread | s/epoch 2 threads | hyperparameters |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  const auto num = [](double v, const char* fmt) {
    if (v < 0) return std::string("-");
    char buf[32];
    std::snprintf(buf, sizeof buf, fmt, v);
    return std::string(buf);
  };
  for (const table_row& r : rows)
    std::printf("| %s | %.4f | %.4f | %s | %s | %s | %s |\n", r.model.c_str(), r.recall, r.mrr,
                num(r.train_seconds, "%.1f").c_str(), num(r.epoch_1t, "%.2f").c_str(), num(r.epoch_2t, "%.2f").c_str(),
                r.hyper.c_str());
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--data") o.data = value();
    else if (a == "--peer-json") o.peer_json = value();
    else if (a == "--smoke") o.smoke = true;
    else if (a == "--valid") o.valid = true;
    else if (a == "--no-speed") o.speed = false;
    else if (a == "--epochs") o.epochs = std::stoul(value());
    else if (a == "--threads") o.threads = std::stoul(value());
    else if (a == "--dim") o.dim = std::stoul(value());
    else if (a == "--layers") o.layers = std::stoul(value());
    else if (a == "--heads") o.heads = std::stoul(value());
    else if (a == "--ffn") o.ffn = std::stoul(value());
    else if (a == "--max-length") o.max_length = std::stoul(value());
    else if (a == "--batch") o.batch = std::stoul(value());
    else if (a == "--lr") o.lr = std::stod(value());
    else if (a == "--negatives") o.negatives = std::stoul(value());
    else if (a == "--seed") o.seed = std::stoull(value());
    else return usage(argv[0]);
  }
  if (o.data.empty())
    if (const char* env = std::getenv("RECPIPE_SESSION_DATA"); env != nullptr && !o.smoke) o.data = env;
  if (o.smoke) {
    o.epochs = std::min<std::size_t>(o.epochs, 3);
    o.dim = 32;
    o.ffn = 64;
    o.layers = 1;
    o.max_length = 20;
    o.batch = 64;
    o.lr = 5e-3;
  }

  // 1. Data: train / test sessions (original ids), the training vocabulary.
  std::vector<raw_session> train_raw, test_raw;
  std::string source;
  if (!o.data.empty()) {
    const std::string tr = o.valid ? "_train_tr.txt" : "_train_full.txt", te = o.valid ? "_train_valid.txt" : "_test.txt";
    train_raw = read_session_rec(find_file(o.data, tr));
    test_raw = read_session_rec(find_file(o.data, te));
    source = o.data + (o.valid ? " (train_tr -> train_valid)" : " (train_full -> test)");
  } else {
    auto split = o.smoke ? synthetic_sessions(300, 1500, 300, 20, o.seed) : synthetic_sessions(3000, 20000, 4000, 150, o.seed);
    train_raw = std::move(split.train);
    test_raw = std::move(split.test);
    source = "synthetic sessions";
  }
  vocabulary vocab;
  for (const raw_session& s : train_raw)
    for (std::int64_t item : s) vocab.add(item);
  const train::session_list train_sessions = encode_sessions(train_raw, vocab, 2);
  const train::session_list test_sessions = encode_sessions(test_raw, vocab, 2);
  std::printf("data: %s\n  train %zu sessions, %zu clicks, %zu items; test %zu sessions, %zu clicks (items seen in training)\n",
              source.c_str(), train_sessions.size(), train_sessions.clicks(), vocab.size(), test_sessions.size(),
              test_sessions.clicks());

  std::vector<table_row> rows;

  // 2. The session transformer, trained in-process.
  models::session_transformer_config config;
  config.num_items = vocab.size();
  config.embedding_dim = o.dim;
  config.max_length = o.max_length;
  config.num_heads = o.heads;
  config.ffn_dim = o.ffn;
  config.num_layers = o.layers;
  const train::next_item_objective objective =
      o.negatives == 0 ? train::next_item_objective::full_softmax : train::next_item_objective::sampled_softmax;
  // Two threads: the batch split over two model replicas (measured faster than two BLAS threads
  // on these small matrices, see docs/session-based.md); the BLAS then runs single-threaded.
  cpu::set_num_threads(1);
  const auto train_options = [&](std::size_t threads, std::size_t epochs) {
    return train::session_training_options{.batch_size = o.batch,
                                           .epochs = epochs,
                                           .objective = objective,
                                           .num_negatives = std::max<std::size_t>(o.negatives, 1),
                                           .threads = threads,
                                           .seed = o.seed,
                                           .progress = &std::cout};
  };
  char hyper[256];
  std::snprintf(hyper, sizeof hyper, "E %zu, %zu layers, %zu heads, ffn %zu, max len %zu, batch %zu sessions, Adam lr %g, %zu epochs, %s",
                o.dim, o.layers, o.heads, o.ffn, o.max_length, o.batch, o.lr, o.epochs,
                o.negatives == 0 ? "full softmax" : ("sampled softmax " + std::to_string(o.negatives) + " log-Q").c_str());
  std::printf("\nsession transformer: %s, %zu threads\n", hyper, o.threads);
  train::session_transformer_model model(config, o.seed);
  train::adam optimizer({.lr = o.lr});
  train::session_trainer trainer(model, optimizer, train_options(o.threads, o.epochs));
  auto start = clock_type::now();
  const auto stats = trainer.fit(train_sessions, o.valid || o.smoke ? &test_sessions : nullptr);
  const double train_seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  start = clock_type::now();
  const train::next_item_metrics transformer = train::evaluate_next_item(model, test_sessions, 20);
  std::printf("  evaluated %zu predictions in %.2f s\n", transformer.predictions,
              std::chrono::duration<double>(clock_type::now() - start).count());
  table_row row{"session transformer (recpipe)", hyper, transformer.recall, transformer.mrr, train_seconds};
  double epoch_seconds = 0;
  for (const auto& s : stats) epoch_seconds += s.seconds;
  epoch_seconds /= static_cast<double>(std::max<std::size_t>(stats.size(), 1));
  (o.threads == 1 ? row.epoch_1t : row.epoch_2t) = o.threads <= 2 ? epoch_seconds : -1;

  // Speed at the other thread count (and two BLAS threads instead of the split), one epoch each
  // from a copy of the trained model: seconds per epoch do not depend on the weights.
  if (o.speed && !o.smoke) {
    const auto one_epoch = [&](std::size_t split, int blas) {
      train::session_transformer_model copy = model;
      train::adam opt({.lr = o.lr});
      auto opts = train_options(split, 1);
      opts.progress = nullptr;
      train::session_trainer t(copy, opt, opts);
      cpu::set_num_threads(blas);
      const double s = t.fit(train_sessions).front().seconds;
      cpu::set_num_threads(1);
      return s;
    };
    if (o.threads != 1) row.epoch_1t = one_epoch(1, 1);
    if (o.threads != 2) row.epoch_2t = one_epoch(2, 1);
    const double blas2 = one_epoch(1, 2);
    std::printf("  speed: 1 thread %.2f s/epoch; 2 threads: batch split %.2f s/epoch, 2 BLAS threads %.2f s/epoch\n",
                row.epoch_1t, row.epoch_2t, blas2);
  }
  rows.push_back(row);

  // 3. The peer's rows (PyTorch on the same split), from the JSON bench/session/torch_session.py wrote.
  std::vector<std::string> peer_files;
  if (!o.peer_json.empty()) {
    std::stringstream ss(o.peer_json);
    for (std::string f; std::getline(ss, f, ',');) peer_files.push_back(f);
  }
  std::map<std::string, table_row> peer_rows;
  for (const std::string& file : peer_files) {
    std::ifstream in(file);
    if (!in) {
      std::printf("peer: %s not found, its rows are left out\n", file.c_str());
      continue;
    }
    const nlohmann::json j = nlohmann::json::parse(in);
    const int threads = j.at("threads").get<int>();
    for (const auto& [name, m] : j.at("models").items()) {
      table_row& r = peer_rows[name];
      r.model = name + " (" + j.at("peer").get<std::string>() + ")";
      r.recall = m.at("recall").get<double>();
      r.mrr = m.at("mrr").get<double>();
      std::string h;
      for (const auto& [k, v] : m.at("hyperparameters").items()) h += (h.empty() ? "" : ", ") + k + " " + v.dump();
      r.hyper = h;
      (threads == 1 ? r.epoch_1t : r.epoch_2t) = m.at("seconds_per_epoch").get<double>();
      if (threads == 2 || r.train_seconds < 0) {
        double total = 0;
        for (const auto& e : m.at("epochs")) total += e.at("seconds").get<double>();
        r.train_seconds = total;
      }
    }
  }
  for (auto& [name, r] : peer_rows) rows.push_back(r);
  print_table(rows, transformer.predictions);
  for (const auto& [name, r] : peer_rows)
    if (name == "transformer" && r.epoch_1t > 0 && rows[0].epoch_1t > 0)
      std::printf("transformer training speed vs the peer: %.1fx at 1 thread, %.1fx at 2 threads\n", r.epoch_1t / rows[0].epoch_1t,
                  r.epoch_2t > 0 && rows[0].epoch_2t > 0 ? r.epoch_2t / rows[0].epoch_2t : 0.0);

  // 4. Serving: encode(session model) >> retrieve(index, k) >> filter_seen >> top_k over the
  //    trained item vectors, one request at a time.
  const std::size_t dim = config.embedding_dim, fetch = 100, k = 20;
  std::vector<id_type> item_ids(vocab.size());
  std::iota(item_ids.begin(), item_ids.end(), id_type{0});
  const auto index_items = [&](const train::session_transformer_model& m, cpu::hnsw_index& ann, cpu::exact_index& exact,
                               std::span<const id_type> ids) {
    const train::parameter& table = *const_cast<train::session_transformer_model&>(m).find("item_embedding.weight");
    matrix<float> vectors(ids.size(), dim);
    for (std::size_t i = 0; i < ids.size(); ++i)
      std::copy_n(table.value.data() + static_cast<std::size_t>(ids[i]) * dim, dim, vectors.row(i).begin());
    ann.add(ids, vectors.view(), 2);
    exact.add(ids, vectors.view());
  };
  cpu::hnsw_index ann(dim, metric::inner_product, vocab.size() + 1024, 16, 200, 7);
  cpu::exact_index exact(dim, metric::inner_product, vocab.size() + 1024);
  start = clock_type::now();
  index_items(model, ann, exact, item_ids);
  ann.set_ef(200);
  std::printf("\nserving: hnsw index of %zu item vectors (M 16, ef_construction 200, ef 200) built in %.2f s\n", vocab.size(),
              std::chrono::duration<double>(clock_type::now() - start).count());
  models::session_transformer serving = model.freeze();
  // Requests: test prefixes (each request is one session so far).
  std::vector<std::vector<id_type>> requests;
  for (std::size_t s = 0; s < test_sessions.size() && requests.size() < (o.smoke ? 200u : 2000u); ++s) {
    const auto session = test_sessions.session(s);
    for (std::size_t t = 1; t < session.size(); ++t) requests.emplace_back(session.begin(), session.begin() + t);
  }
  {
    const auto next_items = encode(session_encoder(serving)) >> retrieve(ann, fetch) >>
                            filter_seen<col::session_items>() >> top_k<col::retrieval_score>(k);
    std::vector<double> latency;
    for (const auto& r : requests) {
      batch<col::session_items> b(1);
      b.get<col::session_items>().assign(std::vector<std::size_t>{0, r.size()}, r);
      const auto t0 = clock_type::now();
      const auto out = next_items.run(b);
      latency.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
      if (out.get<col::candidates>().row(0).empty()) std::printf("  (a request got no recommendation)\n");
    }
    matrix<float> queries(requests.size(), dim);
    for (std::size_t r = 0; r < requests.size(); ++r) {
      const id_type offsets[2] = {0, static_cast<id_type>(requests[r].size())};
      serving.encode(offsets, requests[r], matrix_view<float>(queries.row(r).data(), 1, dim));
    }
    std::printf("  %zu requests, one session each: p50 %.1f us, p99 %.1f us per request; ANN recall@%zu vs exact %.4f\n",
                requests.size(), percentile(latency, 0.5), percentile(latency, 0.99), k,
                cpu::recall_at_k(ann, exact, queries.view(), k));
  }

  // 5. New items: items absent from training appear in the later click stream (the test clicks).
  //    They join the vocabulary, the model grows rows for them, training continues on the first
  //    half of the stream (fresh Adam), and their vectors are added to the index; the second half
  //    measures how often a new item is recommended when it is the next click.
  vocabulary grown = vocab;
  for (const raw_session& s : test_raw)
    for (std::int64_t item : s) grown.add(item);
  const std::size_t fresh = grown.size() - vocab.size();
  if (fresh == 0) {
    std::printf("\nnew items: none in the test stream\n");
    return 0;
  }
  const std::size_t half = test_raw.size() / 2;
  const std::vector<raw_session> stream(test_raw.begin(), test_raw.begin() + static_cast<std::ptrdiff_t>(half));
  const std::vector<raw_session> later(test_raw.begin() + static_cast<std::ptrdiff_t>(half), test_raw.end());
  const train::session_list stream_sessions = encode_sessions(stream, grown, 2);
  const train::session_list later_sessions = encode_sessions(later, grown, 2);
  // Recall@20 of next clicks that are new items, through the served pipeline's index.
  const auto fresh_recall = [&](const models::session_transformer& m, cpu::hnsw_index& index) {
    std::size_t hits = 0, total = 0;
    std::vector<id_type> ids(k);
    std::vector<float> scores(k);
    matrix<float> q(1, dim);
    for (std::size_t s = 0; s < later_sessions.size(); ++s) {
      const auto session = later_sessions.session(s);
      for (std::size_t t = 1; t < session.size(); ++t) {
        if (static_cast<std::size_t>(session[t]) < vocab.size()) continue;
        std::vector<id_type> known;  // the served encoder skips ids it does not know
        for (std::size_t j = 0; j < t; ++j)
          if (static_cast<std::size_t>(session[j]) < m.config().num_items) known.push_back(session[j]);
        const id_type offsets[2] = {0, static_cast<id_type>(known.size())};
        m.encode(offsets, known, q.view());
        const std::size_t found = index.search(q.row(0), k, ids, scores);
        hits += std::find(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(found), session[t]) !=
                ids.begin() + static_cast<std::ptrdiff_t>(found);
        ++total;
      }
    }
    return std::pair<double, std::size_t>(total == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(total), total);
  };
  const auto [before, targets] = fresh_recall(serving, ann);
  model.add_items(fresh, o.seed + 1);
  train::adam incremental_optimizer({.lr = o.lr});
  auto incremental_options = train_options(o.threads, 1);
  incremental_options.progress = nullptr;
  train::session_trainer incremental(model, incremental_optimizer, incremental_options);
  std::vector<std::size_t> counts(grown.size(), 0);
  for (id_type i : train_sessions.items) ++counts[static_cast<std::size_t>(i)];
  for (id_type i : stream_sessions.items) ++counts[static_cast<std::size_t>(i)];
  incremental.set_item_counts(counts);
  // The stream in arrival order, mini-batch by mini-batch (a few passes: it is short).
  start = clock_type::now();
  const std::size_t passes = 3;
  for (std::size_t pass = 0; pass < passes; ++pass)
    for (std::size_t first = 0; first < stream_sessions.size(); first += o.batch) {
      train::session_list b;
      for (std::size_t s = first; s < std::min(stream_sessions.size(), first + o.batch); ++s) b.add(stream_sessions.session(s));
      incremental.step(b);
    }
  const double incremental_seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  std::vector<id_type> fresh_ids(fresh);
  std::iota(fresh_ids.begin(), fresh_ids.end(), static_cast<id_type>(vocab.size()));
  index_items(model, ann, exact, fresh_ids);
  const models::session_transformer updated = model.freeze();
  const auto [after, targets_after] = fresh_recall(updated, ann);
  std::printf("\nnew items: %zu items first seen after training; %zu stream sessions trained on in %.2f s (%zu passes),\n"
              "  their vectors added to the index (now %zu items). Recall@20 of the %zu later clicks on a new item:\n"
              "  %.4f before (not in the index), %.4f after\n",
              fresh, stream_sessions.size(), incremental_seconds, passes, ann.size(), targets, before, after);
  (void)targets_after;
  return 0;
}
