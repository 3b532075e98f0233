// SPDX-License-Identifier: Apache-2.0
// recpipe train: frozen serving snapshots of trainable models (weights, table rows, id maps).
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
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
#include <recpipe/train/inputs.hpp>
#include <recpipe/train/table.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace train {

//! @brief The ids of a frozen dynamic table: the serving row of each id the table held. Every
//! other id reads row `unknown`, an all-zero row the export appends, exactly as the trainable
//! table reads ids it does not hold (not admitted yet, evicted) as zero rows.
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
//! dynamic. Copies every row: freeze between steps (trainer::with_model).
//! @throws recpipe::error for a table type it cannot read.
inline table_export export_table(const trainable_table& table) {
  if (const auto* e = dynamic_cast<const exportable_table*>(&table)) return e->export_rows();
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
    model.forward(in.dense, bags, out);
  }
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
