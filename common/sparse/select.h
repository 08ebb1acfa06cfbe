// TopKSelector: exact top-k selection over magnitude scores without a full sort.
// Thread-compatible: one instance per caller (it owns scratch buffers and a sampling generator).
//
// The score of position j is |a[j]| * scale, except at a short sorted list of "override"
// positions whose scores are given explicitly (RegTop-k's regularised entries). The selection
// is exact: the k positions with the largest score, ties broken by the lower index, exactly as
// a full stable sort would give. Speed comes from a threshold estimated on a random sample, one
// blocked filtering pass over `a`, and std::nth_element over the surviving candidates only; if
// the estimate leaves fewer than k candidates, a lower threshold is tried (finally: all of them).
#ifndef REGTOPK_COMMON_SPARSE_SELECT_H_
#define REGTOPK_COMMON_SPARSE_SELECT_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace regtopk {

// Positions whose score is not |a[j]| * scale. Borrowed; indices strictly increasing.
struct ScoreOverrides {
  absl::Span<const uint32_t> indices;
  absl::Span<const float> scores;
};

struct SelectStats {
  size_t candidates = 0;  // candidates that entered the exact selection
  int passes = 0;         // filtering passes (1 unless the estimate missed)
};

// Width of the blocks whose largest magnitude a caller may precompute (see Select).
inline constexpr size_t kSelectBlock = 64;

// The bit pattern of |x| as an integer: for non-negative floats the integer order is the float
// order, which lets magnitude maxima vectorise without -ffast-math.
inline int32_t MagnitudeBits(float x) {
  int32_t bits;
  static_assert(sizeof(bits) == sizeof(x));
  __builtin_memcpy(&bits, &x, sizeof(bits));
  return bits & 0x7fffffff;
}

class TopKSelector {
 public:
  // `seed` only drives where the sample is drawn; the result never depends on it.
  explicit TopKSelector(uint64_t seed = 0);

  // Writes into `out` (resized to k) the k selected positions in increasing order.
  // Preconditions (checked with DCHECK only; callers validate their input): 1 <= k <= a.size();
  // every a[j] finite; scale >= 0 and finite; override indices < a.size(), strictly increasing,
  // their scores finite and >= 0.
  //
  // `block_max` is optional: if not empty it must hold, for every block b of kSelectBlock
  // entries, max_j MagnitudeBits(a[j]) over the block (the last block may be short). A caller
  // that computes it while writing `a` spares the selector its own pass over all of `a`.
  void Select(absl::Span<const float> a, float scale, ScoreOverrides overrides, size_t k,
              std::vector<uint32_t>* out, absl::Span<const int32_t> block_max = {});

  // Statistics of the last Select call.
  const SelectStats& last_stats() const { return stats_; }

 private:
  struct Candidate {
    float score;
    uint32_t index;
  };

  // Appends every non-override position with |a|*scale >= threshold and every override position
  // with score >= threshold to candidates_.
  void Filter(absl::Span<const float> a, float scale, ScoreOverrides overrides, float threshold,
              absl::Span<const int32_t> block_max);
  // The sampled score of rank `rank` (0 = largest) used as the next threshold.
  float EstimateThreshold(absl::Span<const float> a, float scale, size_t k);

  uint64_t rng_state_;
  std::vector<float> sample_;
  std::vector<Candidate> candidates_;  // in index order after Filter
  std::vector<Candidate> merged_;      // scratch
  SelectStats stats_;
};

}  // namespace regtopk

#endif  // REGTOPK_COMMON_SPARSE_SELECT_H_
