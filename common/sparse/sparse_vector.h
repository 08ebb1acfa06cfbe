// SparseVector: a sparse float vector as sorted unique uint32 indices plus float32 values, and
// SparseView, a borrowed read-only view of one. Plain values; thread-compatible.
#ifndef REGTOPK_COMMON_SPARSE_SPARSE_VECTOR_H_
#define REGTOPK_COMMON_SPARSE_SPARSE_VECTOR_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace regtopk {

// Owns its storage. Invariant expected by every consumer (checked by ValidateSparse, not by the
// type): indices strictly increasing, indices.size() == values.size().
struct SparseVector {
  std::vector<uint32_t> indices;
  std::vector<float> values;

  size_t nnz() const { return indices.size(); }
  void clear() {
    indices.clear();
    values.clear();
  }
};

// Borrows; the viewed storage must outlive the view.
struct SparseView {
  absl::Span<const uint32_t> indices;
  absl::Span<const float> values;

  SparseView() = default;
  SparseView(absl::Span<const uint32_t> i, absl::Span<const float> v) : indices(i), values(v) {}
  SparseView(const SparseVector& s)  // NOLINT: implicit by design, a view of an owner.
      : indices(s.indices), values(s.values) {}
  size_t nnz() const { return indices.size(); }
};

// Checks everything a receiver must check before a sparse vector touches state: equal lengths,
// at most `max_nnz` entries, indices < `dim`, strictly increasing (sorted and unique), values
// finite. Returns InvalidArgument naming the first problem and its position.
absl::Status ValidateSparse(SparseView v, size_t dim, size_t max_nnz);

// Returns the position of the first non-finite value in `values`, or values.size() if all are
// finite. Compiled without -ffast-math so that the check is reliable.
size_t FindNonFinite(absl::Span<const float> values);

// Writes the dense form of `v` (length `dim`, zeros elsewhere) into `out`.
// Precondition: ValidateSparse(v, dim, ...) is OK.
void ScatterToDense(SparseView v, absl::Span<float> out);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_SPARSE_SPARSE_VECTOR_H_
