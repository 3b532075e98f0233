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
//   options: --models pop,iknn,vsknn  --threads N  --max-sessions N  --ties optimistic|expected|pessimistic
//            --test-days D (raw logs)  --neighbors N --lambda L --alpha A (item-kNN)
//            --k N --sample-size N --weighting linear|same|div|quadratic (V-SKNN)
#include "models.hpp"

#include <recpipe/io/sessions.hpp>
#include <recpipe/train/next_item_eval.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
namespace io = recpipe::io;
namespace train = recpipe::train;

namespace {

struct options {
  std::string data;        // folder (session-rec) or file (--rsc15 / --diginetica)
  enum class source { synthetic, session_rec, rsc15, diginetica } kind = source::synthetic;
  bool smoke = false;
  bool tuning = false;
  std::vector<std::string> models = {"pop", "iknn", "vsknn"};
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

std::vector<session_example::model_spec> make_specs(const options& o) {
  std::vector<session_example::model_spec> specs;
  session_example::add_baselines(specs, o.baselines);
  // Trained session models add their rows here, e.g. session_example::add_transformer(specs, o.transformer);
  return specs;
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
    switch (o.kind) {
      case options::source::session_rec:
        split = io::read_session_rec_folder(o.data, o.tuning ? io::session_rec_pair::tuning : io::session_rec_pair::full);
        described = o.data + (o.tuning ? " (train_tr -> train_valid)" : " (train_full -> test)");
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
        split = io::preprocess_sessions(io::synthetic_sessions(cfg), {.min_item_support = 1, .test_days = 1.0});
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
    for (const auto& spec : make_specs(o)) {
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
      std::fprintf(stderr, "no model selected (--models takes a list of pop, iknn, vsknn)\n");
      return 2;
    }
    train::print_next_item_table(std::cout, rows, 20);
    if (o.smoke) {
      // The synthetic sessions have structure: kNN must beat popularity clearly.
      const auto find = [&](const std::string& name) -> const train::next_item_result* {
        for (const auto& r : rows)
          if (r.model == name) return &r.result;
        return nullptr;
      };
      const auto* pop = find("popularity");
      const auto* knn = find("item-kNN");
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
