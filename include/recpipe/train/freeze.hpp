// SPDX-License-Identifier: Apache-2.0
// recpipe train: frozen serving snapshots of trainable models (weights, table rows, id maps).
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>
#include <string>
#include <optional>
#include <type_traits>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include <recpipe/config.hpp>
#include <recpipe/core/errors.hpp>
#include <recpipe/core/matrix.hpp>
#include <recpipe/core/types.hpp>
#include <recpipe/cpu/embedding.hpp>
#include <recpipe/io/safetensors.hpp>
#include <recpipe/models/mlp.hpp>
#include <recpipe/models/two_tower.hpp>
#include <recpipe/train/dynamic_table.hpp>
#include <recpipe/train/fixed_table.hpp>
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/table.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief The ids of a frozen dynamic table: the serving row of each id the table held (rows in
//! ascending id order, as dynamic_table::serving_copy). Every other id reads row `unknown`, the
//! all-zero last row the export appends, exactly as the trainable table reads ids it does not
//! hold (not admitted yet, evicted) as zero rows.
struct id_map {
  std::unordered_map<id_type, id_type> rows;
  id_type unknown = 0;
  id_type operator()(id_type id) const {
    const auto it = rows.find(id);
    return it == rows.end() ? unknown : it->second;
  }
};

//! A table's rows as a serving model loads them ([rows, dim] fp32), and for a dynamic table the
//! id map (std::nullopt for a fixed table: id i is row i).
struct table_export {
  matrix<float> rows;
  std::optional<id_map> ids;
};

//! @brief A table freeze() can export besides train::fixed_table and train::dynamic_table (a
//! user's own trainable_table implements this to be frozen).
class exportable_table {
 public:
  virtual ~exportable_table() = default;
  virtual table_export export_rows() const = 0;
};

//! @brief The rows of a trainable table as a serving model loads them, and its id map if it is
//! dynamic. Copies every row (freeze between steps: trainer::with_model).
//!
//! fixed_table: its [rows, dim] weights, no id map (id i is row i). dynamic_table: the rows it
//! holds in ascending id order plus a zero row, and the id map (a table holding no row exports
//! the zero row alone). exportable_table: whatever it returns.
//! @throws recpipe::error for a table type it cannot read.
inline table_export export_table(const trainable_table& table) {
  if (const auto* e = dynamic_cast<const exportable_table*>(&table)) return e->export_rows();
  if (const auto* f = dynamic_cast<const fixed_table*>(&table)) {
    table_export out;
    const matrix_view<const float> w = f->weights();
    out.rows = matrix<float>(w.rows(), w.cols());
    for (std::size_t r = 0; r < w.rows(); ++r) std::copy(w.row(r).begin(), w.row(r).end(), out.rows.row(r).begin());
    return out;
  }
  if (const auto* d = dynamic_cast<const dynamic_table*>(&table)) {
    std::vector<std::pair<id_type, std::vector<float>>> rows;
    d->for_each_row([&](id_type id, std::span<const float> row, std::span<const float>) {
      rows.emplace_back(id, std::vector<float>(row.begin(), row.end()));
    });
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    table_export out;
    out.rows = matrix<float>(rows.size() + 1, d->dim());  // the last row stays zero
    id_map ids;
    ids.rows.reserve(rows.size());
    for (std::size_t r = 0; r < rows.size(); ++r) {
      std::copy(rows[r].second.begin(), rows[r].second.end(), out.rows.row(r).begin());
      ids.rows.emplace(rows[r].first, static_cast<id_type>(r));
    }
    ids.unknown = static_cast<id_type>(rows.size());
    out.ids = std::move(ids);
    return out;
  }
  detail::fail("train::export_table: the table is neither a train::fixed_table, a train::dynamic_table nor a "
               "train::exportable_table");
}

//! @brief An immutable serving snapshot of a trainable model: the serving model (e.g.
//! models::dcn_v2) loaded from an in-memory safetensors image of the weights, plus one id map per
//! sparse feature whose table is dynamic.
//!
//! forward() maps the ids of dynamic-table features through their id map and runs the serving
//! model's own forward, so serving and training share the forward code. `weights` is the
//! safetensors image (write it out with io::safetensors_file's bytes, or keep it for a reload).
//! Thread safety: forward is const and may run on many threads at once.
//! @code
//! auto snapshot = model.freeze();                 // between training steps
//! snapshot.forward(batch.inputs(), scores.view());
//! @endcode
template <class Serving>
struct frozen {
  Serving model;
  std::vector<std::optional<id_map>> id_maps;  //!< per sparse feature; nullopt: ids pass through
  std::shared_ptr<const io::safetensors_file> weights;

  //! out = serving model(inputs), with dynamic tables' ids mapped to their rows.
  void forward(const model_inputs& in, matrix_view<float> out) const {
    if (in.sparse.size() != id_maps.size())
      detail::fail("train::frozen: forward: the model has ", id_maps.size(), " sparse features but ", in.sparse.size(),
                   " bag inputs were given");
    std::vector<cpu::bag_input> bags(in.sparse.begin(), in.sparse.end());
    std::vector<std::vector<id_type>> mapped(bags.size());
    for (std::size_t t = 0; t < bags.size(); ++t) {
      if (!id_maps[t]) continue;
      mapped[t] = map_ids(t, bags[t].ids);
      bags[t].ids = mapped[t];
    }
    if constexpr (std::is_same_v<Serving, models::mlp>) {
      model.forward(in.dense, out);  // dense only (no sparse features: checked above)
    } else if constexpr (std::is_same_v<Serving, models::two_tower>) {
      // Combined inputs: user dense columns, then item; user bags, then item bags.
      const models::two_tower_config& c = model.config();
      const std::size_t nu = c.user.tables.size();
      if (bags.size() != nu + c.item.tables.size())
        detail::fail("train::frozen<two_tower>: forward: ", bags.size(), " bag inputs for ", nu, " + ",
                     c.item.tables.size(), " tower features");
      const std::size_t du = c.user.dense_dim;
      // The towers' views below split the dense columns; a narrower matrix would be read past
      // its rows' ends, so the width is checked here (the towers see only their own views).
      if (in.batch > 0 && in.dense.cols() != du + c.item.dense_dim)
        detail::fail("train::frozen<two_tower>: forward: dense has ", in.dense.cols(), " columns but the towers take ",
                     du, " (user) + ", c.item.dense_dim, " (item)");
      const matrix_view<const float> user_dense(in.dense.data(), in.batch, du, in.dense.stride());
      const matrix_view<const float> item_dense(in.dense.data() == nullptr ? nullptr : in.dense.data() + du, in.batch,
                                                c.item.dense_dim, in.dense.stride());
      const std::span<const cpu::bag_input> all = bags;
      model.forward(user_dense, all.first(nu), item_dense, all.subspan(nu), out);
    } else {
      model.forward(in.dense, bags, out);
    }
  }
  //! The serving model's config: a version_registry slot refuses a new frozen version whose config
  //! (shapes) differs from the serving one.
  decltype(auto) config() const { return model.config(); }
  //! The serving rows of `ids` for sparse feature t (ids themselves for a fixed table).
  std::vector<id_type> map_ids(std::size_t feature, std::span<const id_type> ids) const {
    std::vector<id_type> out(ids.begin(), ids.end());
    if (feature < id_maps.size() && id_maps[feature])
      for (id_type& id : out) id = (*id_maps[feature])(id);
    return out;
  }
};

}  // namespace train
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
