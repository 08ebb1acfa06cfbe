// RandomSparse: a random sparse vector with `nnz` distinct sorted indices below `dim` and
// normal values, drawn from `rng`. For tests and benchmarks only.
#ifndef REGTOPK_TESTS_TESTING_RANDOM_SPARSE_H_
#define REGTOPK_TESTS_TESTING_RANDOM_SPARSE_H_

#include <random>
#include <set>

#include "common/sparse/sparse_vector.h"

namespace regtopk {

inline SparseVector RandomSparse(size_t dim, size_t nnz, std::mt19937& rng) {
  std::set<uint32_t> idx;
  std::uniform_int_distribution<uint32_t> pick(0, static_cast<uint32_t>(dim - 1));
  while (idx.size() < nnz) idx.insert(pick(rng));
  std::normal_distribution<float> normal;
  SparseVector v;
  for (uint32_t i : idx) {
    v.indices.push_back(i);
    v.values.push_back(normal(rng));
  }
  return v;
}

}  // namespace regtopk

#endif  // REGTOPK_TESTS_TESTING_RANDOM_SPARSE_H_
