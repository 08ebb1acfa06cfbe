// Weighted sparse aggregation, shared by the server and the simulator: agg = sum_n w_n * sent_n
// over the union of the supports. Stateless functions; thread-safe.
#ifndef REGTOPK_COMMON_SPARSE_AGGREGATE_H_
#define REGTOPK_COMMON_SPARSE_AGGREGATE_H_

#include "absl/types/span.h"
#include "common/sparse/sparse_vector.h"

namespace regtopk {

// Writes into `out` the exact weighted sum of `pushes` over the union of their supports (sorted).
// The value at index j is the float32 sum, left to right in the order of `pushes`, of
// weights[n] * values_n[j] over the pushes n that hold j; so the result is bit-for-bit
// reproducible for a given order (callers use worker-id order, never arrival order). Entries
// that cancel to 0 stay in the support: the aggregate is never re-sparsified.
// Preconditions: pushes.size() == weights.size(); every push passed ValidateSparse.
void AggregateSparse(absl::Span<const SparseView> pushes, absl::Span<const float> weights,
                     SparseVector* out);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_SPARSE_AGGREGATE_H_
