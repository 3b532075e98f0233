// SPDX-License-Identifier: Apache-2.0
// recpipe session-based recommendation: next-item prediction on click sessions. Loads a split
// (the YOOCHOOSE sample of session-rec, a raw RecSys 2015 or Diginetica log, or synthetic
// sessions), fits every model on train, and evaluates each with the next-item protocol
// (train/next_item_eval.hpp: every prefix of every test session, Recall@20 and MRR@20 over items
// seen in training). Prints `model | Recall@20 | MRR@20 | fit s | eval s` and the hyperparameters.
//
//   example_session_based ../shared/data/yoochoose-rsc15-100k     train_full -> test (session-rec format)
//   example_session_based ../shared/data                          the same (finds yoochoose-rsc15-100k/)
//   RECPIPE_DATA_DIR=../shared/data example_session_based          the same, from the environment
//   example_session_based --tuning DIR                            train_tr -> train_valid (for tuning)
//   example_session_based --rsc15 yoochoose-clicks.dat            raw RecSys 2015 clicks, preprocessed
//   example_session_based --diginetica train-item-views.csv       raw Diginetica views, preprocessed
//   example_session_based                                         synthetic sessions (says so)
//   example_session_based --smoke                                 small synthetic sessions (ctest)
//   example_session_based DIR --peer-json a.json,b.json           add the PyTorch peer's rows (bench/session/torch_session.py)
//   example_session_based DIR --speed                             also time one epoch at 1 and 2 threads
//   options: --models pop,iknn,vsknn,transformer,gru4rec  --threads N (evaluation)  --max-sessions N  --ties optimistic|expected|pessimistic
//            --test-days D (raw logs)  --neighbors N --lambda L --alpha A (item-kNN)
//            --k N --sample-size N --weighting linear|same|div|quadratic (V-SKNN)
//            --train-threads N --epochs N --dim N --layers N --heads N --ffn N --max-length N --batch N --lr X
//            --negatives K (transformer: sampled softmax) --gru-epochs N --gru-hidden N --gru-batch N --gru-lr X
#include "serving.hpp"

#include <nlohmann/json.hpp>

#include <recpipe/io/sessions.hpp>
#include <recpipe/train/next_item_eval.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <unordered_map>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
namespace io = recpipe::io;
namespace train = recpipe::train;
using recpipe::id_type;

namespace {

struct options {
  std::string data;        // folder (session-rec) or file (--rsc15 / --diginetica)
  enum class source { synthetic, session_rec, rsc15, diginetica } kind = source::synthetic;
  bool smoke = false;
  bool tuning = false;
  std::vector<std::string> models = {"pop", "iknn", "vsknn", "transformer", "gru4rec"};
  std::vector<std::string> peer_json;
  bool speed = false;
  session_example::trained_options trained;
  std::size_t threads = 0;
  std::size_t max_sessions = 0;
  double test_days = 1.0;
  train::rank_ties ties = train::rank_ties::optimistic;
  session_example::baseline_options baselines;
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [DATA_DIR | --rsc15 FILE | --diginetica FILE] [--smoke] [--tuning] [--models pop,iknn,vsknn]\n"
               "          [--threads N] [--max-sessions N] [--ties optimistic|expected|pessimistic] [--test-days D]\n"
               "          [--neighbors N] [--lambda L] [--alpha A] [--k N] [--sample-size N] [--weighting linear|same|div|quadratic]\n"
               "          [--peer-json FILES] [--speed] [--train-threads N] [--epochs N] [--dim N] [--layers N] [--heads N] [--ffn N]\n"
               "          [--max-length N] [--batch N] [--lr X] [--negatives K] [--gru-epochs N] [--gru-hidden N] [--gru-batch N] [--gru-lr X]\n"
               "DATA_DIR: a session-rec folder (yoochoose-rsc15-100k) or a folder holding one; default $RECPIPE_DATA_DIR,\n"
               "else synthetic sessions.\n",
               argv0);
  return 2;
}

// A session-rec folder: the folder itself, or yoochoose-rsc15-100k/ inside it.
fs::path find_session_rec_folder(const fs::path& dir) {
  for (const fs::path& candidate : {dir, dir / "yoochoose-rsc15-100k"}) {
    std::error_code ec;
    if (!fs::is_directory(candidate, ec)) continue;
    for (const auto& entry : fs::directory_iterator(candidate)) {
      const std::string name = entry.path().filename().string();
      if (name.size() > 15 && name.ends_with("_train_full.txt")) return candidate;
    }
  }
  return {};
}

std::vector<session_example::model_spec> make_specs(const options& o, std::shared_ptr<session_example::trained_runs> runs) {
  std::vector<session_example::model_spec> specs;
  session_example::add_baselines(specs, o.baselines);
  session_example::add_transformer(specs, o.trained, runs);
  session_example::add_gru4rec(specs, o.trained, runs);
  return specs;
}

// The test-side click stream with original ids (items unseen in training included), for the
// new-items section: the test file of a session-rec folder.
std::vector<io::session_click> read_test_stream(const std::string& folder, bool tuning) {
  const std::string suffix = tuning ? "_train_valid.txt" : "_test.txt";
  for (const auto& entry : fs::directory_iterator(folder)) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(suffix)) return io::read_session_rec_clicks(entry.path());
  }
  return {};
}

// One row of the speed table: seconds per epoch (wall and processor) at 1 and 2 threads.
struct speed_row {
  std::string model;
  double recall = -1, mrr = -1;
  double wall[3] = {-1, -1, -1}, cpu[3] = {-1, -1, -1};  // by thread count 1, 2
  std::string note;
};

std::string cell(double v, const char* fmt) {
  if (v < 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

const char* ties_name(train::rank_ties t) {
  switch (t) {
    case train::rank_ties::expected: return "expected (random order of tied items)";
    case train::rank_ties::pessimistic: return "pessimistic (ties rank above the target)";
    default: return "optimistic (rank = 1 + items scoring strictly higher)";
  }
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  try {
    std::string positional;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      const auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::runtime_error("missing value after " + a);
        return argv[++i];
      };
      if (a == "--smoke") o.smoke = true;
      else if (a == "--tuning") o.tuning = true;
      else if (a == "--rsc15") o.data = value(), o.kind = options::source::rsc15;
      else if (a == "--diginetica") o.data = value(), o.kind = options::source::diginetica;
      else if (a == "--models") o.models = split_list(value());
      else if (a == "--threads") o.threads = std::stoul(value());
      else if (a == "--peer-json") o.peer_json = split_list(value());
      else if (a == "--speed") o.speed = true;
      else if (a == "--train-threads") o.trained.threads = std::stoul(value());
      else if (a == "--epochs") o.trained.epochs = std::stoul(value());
      else if (a == "--dim") o.trained.dim = std::stoul(value());
      else if (a == "--layers") o.trained.layers = std::stoul(value());
      else if (a == "--heads") o.trained.heads = std::stoul(value());
      else if (a == "--ffn") o.trained.ffn = std::stoul(value());
      else if (a == "--max-length") o.trained.max_length = std::stoul(value());
      else if (a == "--batch") o.trained.batch = std::stoul(value());
      else if (a == "--lr") o.trained.lr = std::stod(value());
      else if (a == "--negatives") o.trained.negatives = std::stoul(value());
      else if (a == "--gru-epochs") o.trained.gru_epochs = std::stoul(value());
      else if (a == "--gru-hidden") o.trained.gru_hidden = std::stoul(value());
      else if (a == "--gru-batch") o.trained.gru_batch = std::stoul(value());
      else if (a == "--gru-lr") o.trained.gru_lr = std::stod(value());
      else if (a == "--max-sessions") o.max_sessions = std::stoul(value());
      else if (a == "--test-days") o.test_days = std::stod(value());
      else if (a == "--neighbors") o.baselines.item_knn.neighbors = std::stoul(value());
      else if (a == "--lambda") o.baselines.item_knn.lambda = std::stod(value());
      else if (a == "--alpha") o.baselines.item_knn.alpha = std::stod(value());
      else if (a == "--k") o.baselines.vsknn.k = std::stoul(value());
      else if (a == "--sample-size") o.baselines.vsknn.sample_size = std::stoul(value());
      else if (a == "--weighting") {
        const std::string w = value();
        using recpipe::models::vsknn_weighting;
        if (w == "linear") o.baselines.vsknn.weighting = vsknn_weighting::linear;
        else if (w == "same") o.baselines.vsknn.weighting = vsknn_weighting::same;
        else if (w == "div") o.baselines.vsknn.weighting = vsknn_weighting::div;
        else if (w == "quadratic") o.baselines.vsknn.weighting = vsknn_weighting::quadratic;
        else return usage(argv[0]);
      } else if (a == "--ties") {
        const std::string t = value();
        if (t == "optimistic") o.ties = train::rank_ties::optimistic;
        else if (t == "expected") o.ties = train::rank_ties::expected;
        else if (t == "pessimistic") o.ties = train::rank_ties::pessimistic;
        else return usage(argv[0]);
      } else if (a == "-h" || a == "--help") return usage(argv[0]);
      else if (!a.empty() && a[0] == '-') return usage(argv[0]);
      else positional = a;
    }
    if (o.kind == options::source::synthetic && !o.smoke) {
      if (positional.empty())
        if (const char* env = std::getenv("RECPIPE_DATA_DIR"); env && *env) positional = env;
      if (!positional.empty()) {
        const fs::path folder = find_session_rec_folder(positional);
        if (folder.empty()) {
          std::fprintf(stderr, "no session-rec split (*_train_full.txt) in %s or %s/yoochoose-rsc15-100k\n", positional.c_str(),
                       positional.c_str());
          return 1;
        }
        o.data = folder.string();
        o.kind = options::source::session_rec;
      }
    }

    // ---- data
    const auto load_start = std::chrono::steady_clock::now();
    io::session_split split;
    std::string described;
    std::vector<io::session_click> stream;  // later clicks with original ids (new-items section)
    if (o.smoke) {
      auto& t = o.trained;
      t.dim = 32, t.ffn = 64, t.layers = 1, t.max_length = 20, t.batch = 64, t.epochs = 4, t.lr = 5e-3;
      t.gru_hidden = 32, t.gru_embedding = 32, t.gru_epochs = 3, t.gru_lr = 5e-3;
    }
    switch (o.kind) {
      case options::source::session_rec:
        split = io::read_session_rec_folder(o.data, o.tuning ? io::session_rec_pair::tuning : io::session_rec_pair::full);
        described = o.data + (o.tuning ? " (train_tr -> train_valid)" : " (train_full -> test)");
        stream = read_test_stream(o.data, o.tuning);
        break;
      case options::source::rsc15:
      case options::source::diginetica: {
        const auto clicks = o.kind == options::source::rsc15 ? io::read_rsc15_clicks(o.data) : io::read_diginetica_views(o.data);
        io::session_preprocessing pre;
        pre.test_days = o.test_days;
        split = io::preprocess_sessions(clicks, pre);
        std::ostringstream d;
        d << o.data << " (sessions >= 2 clicks, items >= 5 clicks, test = last " << o.test_days << " day(s))";
        described = d.str();
        break;
      }
      default: {
        io::synthetic_sessions_config cfg;
        if (o.smoke) cfg.sessions = 1'500, cfg.items = 300;
        else cfg.sessions = 20'000, cfg.items = 2'000;
        // New items for the last section: the last 5% of item ids are never clicked before the
        // test day (sessions starting earlier that click one are left out of the log).
        auto clicks = io::synthetic_sessions(cfg);
        double last = 0;
        for (const auto& c : clicks) last = std::max(last, c.time);
        const id_type first_fresh = static_cast<id_type>(cfg.items - cfg.items / 20);
        std::unordered_map<id_type, double> start;
        std::unordered_map<id_type, bool> has_fresh;
        for (const auto& c : clicks) {
          auto [it, fresh] = start.try_emplace(c.session, c.time);
          if (!fresh) it->second = std::min(it->second, c.time);
          if (c.item >= first_fresh) has_fresh[c.session] = true;
        }
        std::erase_if(clicks, [&](const io::session_click& c) { return has_fresh.count(c.session) && start[c.session] < last - 86400.0; });
        split = io::preprocess_sessions(clicks, {.min_item_support = 1, .test_days = 1.0});
        for (const auto& c : clicks)
          if (start[c.session] >= last - 86400.0) stream.push_back(c);
        std::ostringstream d;
        d << "SYNTHETIC sessions (no data folder given: pass one or set RECPIPE_DATA_DIR): " << cfg.sessions << " sessions over "
          << cfg.items << " items, " << cfg.successors << " successors per item, noise " << cfg.noise << ", test = last day";
        described = d.str();
      }
    }
    const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
    std::size_t targets = 0;
    for (std::size_t s = 0; s < split.test.num_sessions(); ++s) targets += split.test.session_length(s) - 1;
    std::printf("data: %s\n", described.c_str());
    std::printf("train: %zu sessions, %zu clicks, %zu items; test: %zu sessions, %zu clicks, %zu next-item targets", split.train.num_sessions(),
                split.train.num_clicks(), split.num_items(), split.test.num_sessions(), split.test.num_clicks(), targets);
    std::printf(" (removed from test: %zu clicks on items not in train, %zu sessions then shorter than 2); loaded in %.2f s\n",
                split.report.test.unknown_clicks, split.report.test.short_sessions, load_seconds);
    const std::size_t threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
    std::printf("protocol: every prefix of every test session%s, Recall@20 and MRR@20, ties %s, %zu threads\n\n",
                o.max_sessions ? (" (first " + std::to_string(o.max_sessions) + " sessions)").c_str() : "", ties_name(o.ties),
                threads);

    // ---- models
    std::vector<train::next_item_row> rows;
    auto runs = std::make_shared<session_example::trained_runs>();
    for (const auto& spec : make_specs(o, runs)) {
      if (std::find(o.models.begin(), o.models.end(), spec.key) == o.models.end()) continue;
      const auto fit_start = std::chrono::steady_clock::now();
      const auto model = spec.fit(split);
      const double fit_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - fit_start).count();
      train::next_item_eval_options eval;
      eval.cutoffs = {20};
      eval.max_sessions = o.max_sessions;
      eval.threads = spec.thread_safe ? threads : 1;
      eval.ties = o.ties;
      auto result = train::evaluate_next_item(*model, split.test, split.num_items(), eval);
      std::fprintf(stderr, "  %s: Recall@20 %.4f MRR@20 %.4f (%zu predictions)\n", spec.name.c_str(), result.recall(20), result.mrr(20),
                   result.predictions);
      rows.push_back({spec.name, spec.params, fit_seconds, std::move(result)});
    }
    if (rows.empty()) {
      std::fprintf(stderr, "no model selected (--models takes a list of pop, iknn, vsknn, transformer, gru4rec)\n");
      return 2;
    }
    train::print_next_item_table(std::cout, rows, 20);

    // ---- training speed, ours and the peer's (PyTorch on the same split, from its JSON files)
    std::vector<speed_row> speed;
    const auto result_of = [&](const std::string& name) -> const train::next_item_result* {
      for (const auto& r : rows)
        if (r.model == name) return &r.result;
      return nullptr;
    };
    for (const auto& [key, run] : runs->runs) {
      speed_row r;
      r.model = key == "transformer" ? "session transformer" : "GRU4Rec";
      if (const auto* res = result_of(r.model)) r.recall = res->recall(20), r.mrr = res->mrr(20);
      if (run.threads <= 2) {
        r.wall[run.threads] = run.seconds_per_epoch();
        r.cpu[run.threads] = run.cpu_seconds_per_epoch();
      }
      r.note = "recpipe, " + std::to_string(run.seconds.size()) + " epochs at " + std::to_string(run.threads) + " threads";
      speed.push_back(r);
    }
    if (o.speed) {
      // One more epoch at each thread count from the trained weights (time per epoch does not
      // depend on them): 1 thread; 2 threads as the batch split (transformer) or 2 BLAS threads.
      for (auto& r : speed) {
        for (std::size_t count : {1, 2}) {
          if (r.wall[count] >= 0) continue;
          double wall = 0, cpu = 0;
          if (r.model == "session transformer" && runs->transformer) {
            train::session_transformer_model copy = *runs->transformer;
            train::adam opt({.lr = o.trained.lr});
            auto opts = session_example::transformer_training(o.trained, count, 1);
            opts.progress = nullptr;
            recpipe::cpu::set_num_threads(1);
            train::session_trainer t(copy, opt, opts);
            const auto st = t.fit(train::session_list(split.train)).front();
            wall = st.seconds, cpu = st.cpu_seconds;
          } else if (r.model == "GRU4Rec") {
            auto again = o.trained;
            again.threads = count, again.gru_epochs = 1, again.progress = false;
            auto scratch = std::make_shared<session_example::trained_runs>();
            std::vector<session_example::model_spec> one;
            session_example::add_gru4rec(one, again, scratch);
            one.front().fit(split);
            wall = scratch->runs["gru4rec"].seconds.front(), cpu = scratch->runs["gru4rec"].cpu_seconds.front();
          }
          r.wall[count] = wall, r.cpu[count] = cpu;
        }
      }
    }
    for (const std::string& file : o.peer_json) {
      std::ifstream in(file);
      if (!in) {
        std::printf("peer: %s not found; its rows are left out\n", file.c_str());
        continue;
      }
      const nlohmann::json j = nlohmann::json::parse(in);
      const auto peer_threads = j.at("threads").get<std::size_t>();
      for (const auto& [name, m] : j.at("models").items()) {
        const std::string model = (name == "transformer" ? "session transformer" : "GRU4Rec");
        const std::string label = model + " (" + j.at("peer").get<std::string>() + ")";
        auto it = std::find_if(speed.begin(), speed.end(), [&](const speed_row& r) { return r.model == label; });
        if (it == speed.end()) {
          speed.push_back(speed_row{label, -1, -1, {-1, -1, -1}, {-1, -1, -1}, ""});
          it = speed.end() - 1;
          it->recall = m.at("recall").get<double>(), it->mrr = m.at("mrr").get<double>();
          it->note = "PyTorch, " + std::to_string(m.at("epochs").size()) + " epochs at " + std::to_string(peer_threads) + " threads";
        }
        if (peer_threads <= 2) {
          it->wall[peer_threads] = m.at("seconds_per_epoch").get<double>();
          it->cpu[peer_threads] = m.value("cpu_seconds_per_epoch", -1.0);
        }
      }
    }
    if (!speed.empty()) {
      std::printf("\ntraining speed: seconds per epoch over split.train (wall clock; processor seconds in brackets)\n");
      std::printf("| model | Recall@20 | MRR@20 | s/epoch, 1 thread | s/epoch, 2 threads | metrics from |\n|---|---|---|---|---|---|\n");
      for (const auto& r : speed)
        std::printf("| %s | %s | %s | %s (%s) | %s (%s) | %s |\n", r.model.c_str(), cell(r.recall, "%.4f").c_str(),
                    cell(r.mrr, "%.4f").c_str(), cell(r.wall[1], "%.2f").c_str(), cell(r.cpu[1], "%.2f").c_str(),
                    cell(r.wall[2], "%.2f").c_str(), cell(r.cpu[2], "%.2f").c_str(), r.note.c_str());
      for (const auto& ours : speed) {
        if (ours.note.rfind("recpipe", 0) != 0) continue;
        for (const auto& peer : speed) {
          if (peer.model.rfind(ours.model + " (", 0) != 0) continue;
          for (std::size_t t : {1, 2})
            if (ours.wall[t] > 0 && peer.wall[t] > 0)
              std::printf("%s: recpipe trains %.1fx as fast per epoch as %s at %zu thread%s (processor time: %.1fx)\n",
                          ours.model.c_str(), peer.wall[t] / ours.wall[t], peer.model.c_str(), t, t == 1 ? "" : "s",
                          ours.cpu[t] > 0 && peer.cpu[t] > 0 ? peer.cpu[t] / ours.cpu[t] : 0.0);
        }
      }
    }

    // ---- serving the trained transformer, and new items
    if (runs->transformer) {
      auto& model = *runs->transformer;
      const std::size_t n = split.num_items(), dim = model.config().embedding_dim;
      recpipe::cpu::hnsw_index ann(dim, recpipe::metric::inner_product, n + n / 2 + 64, 16, 200, 7);
      recpipe::cpu::exact_index exact(dim, recpipe::metric::inner_product, n + n / 2 + 64);
      std::vector<id_type> ids(n);
      std::iota(ids.begin(), ids.end(), id_type{0});
      auto start = std::chrono::steady_clock::now();
      session_example::index_items(model, ann, exact, ids);
      ann.set_ef(200);
      std::printf("\nserving: hnsw index (M 16, ef_construction 200, ef 200) of the %zu trained item vectors built in %.2f s\n", n,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      const auto served = model.freeze();
      const auto rep = session_example::serve_sessions(served, ann, exact, split.test, o.smoke ? 300 : 3000);
      std::printf("encode(session_encoder) >> retrieve(hnsw, 100) >> filter_seen >> top_k(20), one session per request:\n"
                  "  %zu requests (test prefixes), p50 %.1f us, p99 %.1f us per request; ANN recall@20 against exact retrieval %.4f\n",
                  rep.requests, rep.p50_us, rep.p99_us, rep.ann_recall);
      auto fresh = session_example::learn_new_items(model, o.trained, split.train, stream, ann, exact);
      if (fresh.fresh == 0) fresh = session_example::learn_new_items_held_back(o.trained, split.train);
      if (fresh.held_back)
        std::printf("new items: the later clicks hold no item unseen in training (the split filtered them), so the last 20%%\n"
                    "  of the training sessions are held back as the click stream: a base transformer trained on the first\n"
                    "  %zu sessions (same hyperparameters), its items indexed;\n",
                    fresh.base_sessions);
      if (fresh.fresh == 0)
        std::printf("new items: none in the click stream\n");
      else
        std::printf("new items: %zu items first clicked in the stream; training continued on its first %zu sessions\n"
                    "  (3 passes, %.2f s), every vector republished to the index (%zu items). Recall@20 through the index of\n"
                    "  the %zu next clicks on a new item in the rest of the stream: %.4f before, %.4f after\n",
                    fresh.fresh, fresh.stream_sessions, fresh.seconds, fresh.index_size, fresh.targets, fresh.recall_before,
                    fresh.recall_after);
      if (o.smoke && fresh.fresh != 0 && !(fresh.recall_after > fresh.recall_before)) {
        std::fprintf(stderr, "smoke: continued training did not make the new items retrievable\n");
        return 1;
      }
    }
    if (o.smoke) {
      // The synthetic sessions have structure: kNN must beat popularity clearly.
      const auto find = [&](const std::string& name) -> const train::next_item_result* {
        for (const auto& r : rows)
          if (r.model == name) return &r.result;
        return nullptr;
      };
      const auto* pop = find("popularity");
      const auto* knn = find("item-kNN");
      const auto* transformer = find("session transformer");
      if (pop && transformer && !(transformer->recall(20) > pop->recall(20) + 0.2)) {
        std::fprintf(stderr, "smoke: the session transformer (%.4f) does not beat popularity (%.4f) on synthetic sessions\n",
                     transformer->recall(20), pop->recall(20));
        return 1;
      }
      if (pop && knn && !(knn->recall(20) > pop->recall(20) + 0.2)) {
        std::fprintf(stderr, "smoke: item-kNN (%.4f) does not beat popularity (%.4f) on synthetic sessions\n", knn->recall(20),
                     pop->recall(20));
        return 1;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
