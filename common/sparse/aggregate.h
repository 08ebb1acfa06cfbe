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
// Cost: O(N * k) with O(N * k) scratch kept between calls and no O(d) buffer. The index range is
// cut into parts of about 32 K entries (so that each part's sort stays in cache); each part's
// entries are gathered push by push, sorted by a stable radix sort of the bits the part's range
// needs (11 bits a pass), and folded. With threads > 1 each thread takes a contiguous run of
// parts. Up to 4 pushes, a pairwise merge of the sorted lists is cheaper and is used instead
// (the same sums in the same order).
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
  struct Worker {  // one per thread: scratch and the thread's run of parts, folded
    std::vector<Entry> entries, scratch;
    std::vector<size_t> cursor;  // per push: the next entry to gather
    SparseVector out;
  };
  // Aggregates the parts [cuts[0], cuts[1]), [cuts[1], cuts[2]), ... into worker->out.
  void AggregateParts(absl::Span<const SparseView> pushes, absl::Span<const float> weights,
                      absl::Span<const uint64_t> cuts, Worker* worker);

  const int threads_;
  std::vector<Worker> workers_;
};

// The same sum by folding the pushes in one at a time, each a linear merge of sorted lists:
// O(N^2 k), but with no passes over index bits, so the cheaper choice for a few pushes
// (SparseAggregator uses it up to 4) and the baseline its benchmark measures against.
// `merged` is scratch. Preconditions as for SparseAggregator::Aggregate.
void AggregateByPairwiseMerge(absl::Span<const SparseView> pushes,
                              absl::Span<const float> weights, SparseVector* out,
                              SparseVector* merged);

// One-shot form of SparseAggregator(1).Aggregate (allocates its scratch on every call).
void AggregateSparse(absl::Span<const SparseView> pushes, absl::Span<const float> weights,
                     SparseVector* out);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_SPARSE_AGGREGATE_H_
