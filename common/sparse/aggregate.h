// Weighted sparse aggregation, shared by the server and the simulator: agg = sum_n w_n * sent_n
// over the union of the supports. SparseAggregator is thread-compatible (one call at a time per
// object; it keeps scratch buffers between calls); AggregateSparse is stateless and thread-safe.
#ifndef REGTOPK_COMMON_SPARSE_AGGREGATE_H_
#define REGTOPK_COMMON_SPARSE_AGGREGATE_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "common/sparse/sparse_vector.h"

namespace regtopk {

// Computes the exact weighted sum of sparse pushes over the union of their supports (sorted).
// The value at index j is the float32 sum, left to right in the order of `pushes`, of
// weights[n] * values_n[j] over the pushes n that hold j (the first such term as it is, not
// added to 0); so the result is bit-for-bit reproducible for a given order (callers use
// worker-id order, never arrival order), and the same for every thread count. Entries that
// cancel to 0 stay in the support: the aggregate is never re-sparsified.
//
// Cost: O(N * k) for N pushes of k entries (a stable radix sort of the concatenated entries by
// index, 11 bits a pass, as many passes as the largest index needs, then one fold), with
// O(N * k) scratch kept between calls; no O(d) buffer. With threads > 1 the index range is cut
// into `threads` parts of about equal entry counts, each sorted and folded by its own thread.
class SparseAggregator {
 public:
  // threads >= 1 (values below 1 are taken as 1).
  explicit SparseAggregator(int threads = 1);

  // Preconditions: pushes.size() == weights.size(); every push passed ValidateSparse.
  void Aggregate(absl::Span<const SparseView> pushes, absl::Span<const float> weights,
                 SparseVector* out);

  int threads() const { return threads_; }

  struct Entry {
    uint32_t index;
    float value;
  };

 private:
  struct Part {
    std::vector<Entry> entries, scratch;
    SparseVector out;
  };
  void AggregatePart(absl::Span<const SparseView> pushes, absl::Span<const float> weights,
                     uint32_t lo, uint64_t hi, uint32_t max_index, Part* part);

  const int threads_;
  std::vector<Part> parts_;
};

// One-shot form of SparseAggregator(1).Aggregate (allocates its scratch on every call).
void AggregateSparse(absl::Span<const SparseView> pushes, absl::Span<const float> weights,
                     SparseVector* out);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_SPARSE_AGGREGATE_H_
