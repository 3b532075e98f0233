// SPDX-License-Identifier: Apache-2.0
// recpipe CPU backend, HNSW index: the distance space hnswlib calls (Eigen-vectorised inner product and L2).
#pragma once

#include <cstddef>

#include <Eigen/Core>

#include <recpipe/cpu/hnsw/hnswlib.hpp>
#include <recpipe/cpu/metric.hpp>

#include <recpipe/detail/prologue.hpp>

RECPIPE_NAMESPACE_BEGIN
namespace detail {

// Distances for hnswlib: smaller is closer. Inner product uses -dot (hnswlib's own space uses
// 1 - dot; the constant cancels in every comparison hnswlib makes), so the public score is exactly
// -distance for both metrics and needs no recomputation.
//
// With `mips` (inner product reduced to L2, hnsw/mips.hpp) the graph stores dim + 1 values per
// element and hnswlib builds it with the L2 distance over all of them, while `distance` (what the
// search scores a query with) stays -dot over the first dim values: the query's extra coordinate
// is 0, so that is the augmented L2 order and also the score returned.
class hnsw_space final : public hnswlib::SpaceInterface<float> {
 public:
  hnsw_space(std::size_t dim, metric kind, bool mips = false)
      : dim_(dim), stored_dim_(dim + (mips ? 1 : 0)), kind_(kind), mips_(mips) {}
  std::size_t get_data_size() override { return stored_dim_ * sizeof(float); }
  hnswlib::DISTFUNC<float> get_dist_func() override {
    return kind_ == metric::l2 || mips_ ? &l2_distance : &ip_distance;
  }
  // hnswlib reads this as a size_t* holding the stored dimension (getDataByLabel, distances).
  void* get_dist_func_param() override { return &stored_dim_; }
  //! Values stored per element: dim, or dim + 1 with the MIPS reduction.
  std::size_t stored_dim() const { return stored_dim_; }
  bool mips() const { return mips_; }

  static float ip_distance(const void* a, const void* b, const void* param) {
    const auto n = static_cast<Eigen::Index>(*static_cast<const std::size_t*>(param));
    return -Eigen::Map<const Eigen::VectorXf>(static_cast<const float*>(a), n)
                .dot(Eigen::Map<const Eigen::VectorXf>(static_cast<const float*>(b), n));
  }
  static float l2_distance(const void* a, const void* b, const void* param) {
    const auto n = static_cast<Eigen::Index>(*static_cast<const std::size_t*>(param));
    return (Eigen::Map<const Eigen::VectorXf>(static_cast<const float*>(a), n) -
            Eigen::Map<const Eigen::VectorXf>(static_cast<const float*>(b), n))
        .squaredNorm();
  }
  // A query (dim values) against a stored element: what searches rank and score by.
  float distance(const float* a, const float* b) const {
    return kind_ == metric::l2 ? l2_distance(a, b, &dim_) : ip_distance(a, b, &dim_);
  }
  // Two stored elements (stored_dim values each): what the graph is built with (hnswlib's own
  // distance function, the L2 over augmented vectors with the reduction).
  float graph_distance(const float* a, const float* b) const {
    return kind_ == metric::l2 || mips_ ? l2_distance(a, b, &stored_dim_) : ip_distance(a, b, &stored_dim_);
  }

 private:
  std::size_t dim_, stored_dim_;
  metric kind_;
  bool mips_;
};

}  // namespace detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
