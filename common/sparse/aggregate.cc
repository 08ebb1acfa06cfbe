#include "common/sparse/aggregate.h"

#include <cassert>
#include <utility>

namespace regtopk {

void AggregateSparse(absl::Span<const SparseView> pushes, absl::Span<const float> weights,
                     SparseVector* out) {
  assert(pushes.size() == weights.size());
  out->clear();
  if (pushes.empty()) return;
  // Fold the pushes in one at a time with a linear merge of sorted lists. This keeps the
  // left-to-right summation order per index that the contract promises, costs O(N * nnz) per
  // push and needs no dense buffer (d may be 100 M while N * k is small).
  SparseVector merged;
  {
    const SparseView& p = pushes[0];
    out->indices.assign(p.indices.begin(), p.indices.end());
    out->values.resize(p.nnz());
    for (size_t i = 0; i < p.nnz(); ++i) out->values[i] = weights[0] * p.values[i];
  }
  for (size_t n = 1; n < pushes.size(); ++n) {
    const SparseView& p = pushes[n];
    const float w = weights[n];
    merged.indices.resize(out->nnz() + p.nnz());
    merged.values.resize(out->nnz() + p.nnz());
    size_t a = 0, b = 0, m = 0;
    const size_t na = out->nnz(), nb = p.nnz();
    while (a < na && b < nb) {
      const uint32_t ia = out->indices[a], ib = p.indices[b];
      if (ia < ib) {
        merged.indices[m] = ia;
        merged.values[m++] = out->values[a++];
      } else if (ib < ia) {
        merged.indices[m] = ib;
        merged.values[m++] = w * p.values[b++];
      } else {
        merged.indices[m] = ia;
        merged.values[m++] = out->values[a++] + w * p.values[b++];
      }
    }
    for (; a < na; ++a, ++m) {
      merged.indices[m] = out->indices[a];
      merged.values[m] = out->values[a];
    }
    for (; b < nb; ++b, ++m) {
      merged.indices[m] = p.indices[b];
      merged.values[m] = w * p.values[b];
    }
    merged.indices.resize(m);
    merged.values.resize(m);
    std::swap(*out, merged);
  }
}

}  // namespace regtopk
