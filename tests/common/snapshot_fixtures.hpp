// SPDX-License-Identifier: Apache-2.0
// A small training state for the snapshot tests: dense parameters with Adam, a fixed table with
// lazy Adam, a dynamic table with row-wise Adagrad and an HNSW index, plus a deterministic step
// that touches all of them, so a restored state can be compared bit for bit and trained on.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include <recpipe/core/matrix.hpp>
#include <recpipe/cpu/hnsw_index.hpp>
#include <recpipe/train/dynamic_table.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/optimizers.hpp>
#include <recpipe/train/parameter.hpp>
#include <recpipe/train/snapshot.hpp>

namespace recpipe::testing {

struct snapshot_state {
  train::parameter w{"layer.weight", {4, 3}}, b{"layer.bias", {4}};
  train::adam adam{{.lr = 0.01}};
  train::fixed_table items;
  train::dynamic_table users;
  cpu::hnsw_index index;
  std::uint64_t seed;

  explicit snapshot_state(std::uint64_t seed_ = 1, std::size_t item_rows = 64, std::size_t dim = 4)
      : items({.rows = item_rows, .dim = dim, .init = {train::row_init::distribution::uniform, 0.1f, seed_}, .name = "items"},
              std::make_shared<train::lazy_adam>(train::lazy_adam_options{.lr = 0.05})),
        users({.dim = dim, .init = {train::row_init::distribution::normal, 0.1f, seed_ + 1}, .name = "users"},
              std::make_shared<train::rowwise_adagrad>(train::rowwise_adagrad_options{.lr = 0.1})),
        index(dim, metric::inner_product, 256, 8, 40, 7),
        seed(seed_) {
    for (std::size_t i = 0; i < w.size(); ++i) w.value[i] = std::sin(float(i + seed));
    for (std::size_t i = 0; i < b.size(); ++i) b.value[i] = 0.1f * float(i);
  }
  std::vector<train::parameter*> params() { return {&w, &b}; }

  train::snapshot_parts parts() {
    train::snapshot_parts p;
    p.add_parameters("model", params()).add_optimizer("adam", adam, params()).add_table("items", items)
        .add_table("users", users).add_index("items", index);
    return p;
  }

  // One deterministic step: dense grads from the values, table rows of (step)-dependent ids, and
  // one item added to the index.
  void step(int t) {
    for (std::size_t i = 0; i < w.size(); ++i) w.grad[i] = w.value[i] * 0.5f + 0.01f * float(t);
    for (std::size_t i = 0; i < b.size(); ++i) b.grad[i] = b.value[i] - 0.2f;
    auto ps = params();
    adam.step(ps);
    const std::vector<id_type> ids = {id_type(t % 7), id_type((t * 5 + 3) % static_cast<int>(items.rows())), 40};
    matrix<float> g(ids.size(), items.dim());
    for (std::size_t r = 0; r < ids.size(); ++r)
      for (std::size_t c = 0; c < items.dim(); ++c) g.row(r)[c] = items.weights().row(static_cast<std::size_t>(ids[r]))[c] + 0.1f * float(c);
    items.optimizer().begin_step();
    items.apply(ids, g.view());
    const std::vector<id_type> user_ids = {1000 + t % 3, 77777777777 + t % 2};
    for (id_type u : user_ids)
      if (!users.contains(u)) {
        std::vector<float> row(users.dim(), 0.01f * float(u % 13));
        users.load_row(u, row);
      }
    matrix<float> ug(user_ids.size(), users.dim());
    for (std::size_t r = 0; r < user_ids.size(); ++r)
      for (std::size_t c = 0; c < users.dim(); ++c) ug.row(r)[c] = 0.3f - 0.05f * float(c) + 0.01f * float(t);
    users.optimizer().begin_step();
    users.apply(user_ids, ug.view());
    std::vector<float> v(index.dim());
    for (std::size_t c = 0; c < v.size(); ++c) v[c] = std::cos(float(t * 3 + static_cast<int>(c)));
    index.add(1000 + t, v);
  }
};

// Everything restorable, as bytes, for bit-identical comparisons.
inline std::vector<float> flatten(snapshot_state& s) {
  std::vector<float> out;
  out.insert(out.end(), s.w.value.begin(), s.w.value.end());
  out.insert(out.end(), s.b.value.begin(), s.b.value.end());
  s.adam.for_each_state([&](const std::string&, std::span<float> v) { out.insert(out.end(), v.begin(), v.end()); });
  out.push_back(float(s.adam.steps()));
  for (std::size_t r = 0; r < s.items.rows(); ++r) {
    out.insert(out.end(), s.items.weights().row(r).begin(), s.items.weights().row(r).end());
    out.insert(out.end(), s.items.state().row(r).begin(), s.items.state().row(r).end());
  }
  out.push_back(float(dynamic_cast<train::basic_row_optimizer&>(s.items.optimizer()).steps()));
  std::vector<std::pair<id_type, std::vector<float>>> rows;
  s.users.for_each_row([&](id_type id, std::span<const float> row, std::span<const float> st) {
    std::vector<float> all(row.begin(), row.end());
    all.insert(all.end(), st.begin(), st.end());
    rows.emplace_back(id, std::move(all));
  });
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [id, v] : rows) {
    out.push_back(float(id % 100000));
    out.insert(out.end(), v.begin(), v.end());
  }
  out.push_back(float(dynamic_cast<train::basic_row_optimizer&>(s.users.optimizer()).steps()));
  out.push_back(float(s.index.size()));
  std::vector<float> q(s.index.dim(), 0.5f);
  std::vector<id_type> ids(5);
  std::vector<float> scores(5);
  const std::size_t n = s.index.size() == 0 ? 0 : s.index.search(q, 5, ids, scores);
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(float(ids[i]));
    out.push_back(scores[i]);
  }
  return out;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// A fresh directory under the temp dir, removed by the destructor.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(const std::string& tag) {
    path = std::filesystem::temp_directory_path() /
           ("recpipe-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(reinterpret_cast<std::uintptr_t>(this)));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace recpipe::testing
