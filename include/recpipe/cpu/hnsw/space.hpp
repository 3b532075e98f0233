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
class hnsw_space final : public hnswlib::SpaceInterface<float> {
 public:
  hnsw_space(std::size_t dim, metric kind) : dim_(dim), kind_(kind) {}
  std::size_t get_data_size() override { return dim_ * sizeof(float); }
  hnswlib::DISTFUNC<float> get_dist_func() override {
    return kind_ == metric::l2 ? &l2_distance : &ip_distance;
  }
  // hnswlib reads this as a size_t* holding the dimension (getDataByLabel).
  void* get_dist_func_param() override { return &dim_; }

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
  float distance(const float* a, const float* b) const {
    return kind_ == metric::l2 ? l2_distance(a, b, &dim_) : ip_distance(a, b, &dim_);
  }

 private:
  std::size_t dim_;
  metric kind_;
};

}  // namespace detail
RECPIPE_NAMESPACE_END

#include <recpipe/detail/epilogue.hpp>
