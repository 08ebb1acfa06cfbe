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

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/types/span.h"

namespace regtopk {

// Positions whose score is not |a[j]| * scale. Borrowed; indices strictly increasing.
struct ScoreOverrides {
  absl::Span<const uint32_t> indices;
  absl::Span<const float> scores;
  // a at those positions, for the selected values; may be empty where the caller reads `a`.
  absl::Span<const float> values = {};
};

struct SelectStats {
  size_t candidates = 0;  // candidates that entered the exact selection
  int passes = 0;         // filtering passes over the block maxima (0: candidates came ready)
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

// One position that reached a threshold: its score, the signed value of a there, its index.
struct ScoredEntry {
  float score;
  float value;
  uint32_t index;
};

// A growable array of ScoredEntry that, unlike std::vector, never initialises the room it
// makes: appending candidates is on the hot path of the sparsifier's pass.
class CandidateList {
 public:
  void clear() { size_ = 0; }
  size_t size() const { return size_; }
  const ScoredEntry* data() const { return data_.get(); }
  absl::Span<const ScoredEntry> span() const { return {data_.get(), size_}; }
  absl::Span<ScoredEntry> mutable_span() { return {data_.get(), size_}; }
  // Room for `extra` more entries: write them from the returned pointer, then Grow by the
  // number written.
  ScoredEntry* Reserve(size_t extra) {
    if (size_ + extra > capacity_) Enlarge(size_ + extra);
    return data_.get() + size_;
  }
  void Grow(size_t written) { size_ += written; }
  // Drops the entries whose score is below `threshold`, keeping the others in order.
  void KeepReaching(float threshold) {
    size_t kept = 0;
    for (size_t i = 0; i < size_; ++i) {
      data_[kept] = data_[i];
      kept += static_cast<size_t>(data_[i].score >= threshold);
    }
    size_ = kept;
  }

 private:
  void Enlarge(size_t needed);

  std::unique_ptr<ScoredEntry[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// The block-maximum bound below which no entry can reach `threshold` (> 0) at `scale` (> 0):
// fl(|a| * scale) >= threshold implies |a| >= threshold / scale / (1 + 2^-24), so a block whose
// largest magnitude is below the slightly lowered bound holds no candidate.
int32_t ReachBound(float scale, float threshold);

// Bit i set iff MagnitudeBits(p[i]) >= bound, for i < n <= 64: with bound = ReachBound(...),
// a superset of the block's candidates.
uint64_t BoundMask(const float* p, size_t n, int32_t bound);

// Appends to `out`, in index order, every position j = begin + 64 b + i (b < blocks) whose bit
// i is set in masks[b] and whose score fl(|a_j| * scale) reaches `threshold`, where a_j =
// value_at(j): the exact test, on the few positions a superset mask flags.
//
// One flat loop over the set bits, with no branch that depends on where they fall: at 1 %
// density about half the blocks hold a candidate, at random, and a loop per block (or a test
// per block) mispredicted about once per candidate.
template <typename ValueAt>
void AppendMaskedBy(ValueAt value_at, size_t begin, const uint64_t* masks, size_t blocks,
                    float scale, float threshold, CandidateList* out) {
  constexpr size_t kGroup = 64;  // blocks per group: the compacted words fit on the stack
  uint64_t word[kGroup + 1];
  uint32_t block_of[kGroup + 1];
  for (size_t group = 0; group < blocks; group += kGroup) {
    const size_t n_blocks = std::min(kGroup, blocks - group);
    // The non-empty words, compacted without a branch; a zero word after the last.
    size_t words = 0;
    for (size_t b = 0; b < n_blocks; ++b) {
      const uint64_t m = masks[group + b];
      word[words] = m;
      block_of[words] = static_cast<uint32_t>(group + b);
      words += static_cast<size_t>(m != 0);
    }
    if (words == 0) continue;
    word[words] = 0;
    block_of[words] = 0;
    ScoredEntry* dst = out->Reserve(n_blocks * kSelectBlock);
    size_t written = 0, c = 0;
    uint64_t m = word[0];
    while (c < words) {  // one iteration per set bit
      const size_t j = begin + size_t{block_of[c]} * kSelectBlock +
                       static_cast<size_t>(__builtin_ctzll(m));
      const float value = value_at(j);
      const float score = std::fabs(value) * scale;
      dst[written] = ScoredEntry{score, value, static_cast<uint32_t>(j)};
      written += static_cast<size_t>(score >= threshold);
      m &= m - 1;
      // The word is spent: move to the next one (a no-op while bits remain).
      const uint64_t spent = static_cast<uint64_t>(m == 0);
      c += spent;
      m |= word[c] & (0 - spent);
    }
    out->Grow(written);
  }
}
// The same with a_j = a[j].
void AppendMasked(const float* a, size_t begin, const uint64_t* masks, size_t blocks, float scale,
                  float threshold, CandidateList* out);

// Appends to `out`, in index order, every j in [begin, end) with fl(|a[j]| * scale) >= threshold
// (> 0, with scale > 0), scanning only the kSelectBlock blocks whose maximum reaches
// ReachBound(scale, threshold). `begin` is a multiple of kSelectBlock; `block_max` covers the
// whole of `a` from index 0 (or is null: then every block is scanned).
void AppendReaching(const float* a, size_t begin, size_t end, const int32_t* block_max,
                    float scale, float threshold, CandidateList* out);
// Appends every j in [begin, end) with its plain score: the candidates at threshold 0.
void AppendAll(const float* a, size_t begin, size_t end, float scale, CandidateList* out);

// A threshold as high as it can go while at least k of `entries` (all scoring at least
// `threshold`) still reach it, bracketed by a histogram of their scores' bits (monotone in the
// score): the lower edge of the bucket that holds the k-th best, among 4096 buckets of 2^14 ulps
// (eight binades) above `threshold`; where the k-th best lies above them all, the histogram is
// taken again from the top bucket's edge. `threshold` if k exceed the entries. `histogram` is
// scratch.
float KthBestBracket(absl::Span<const ScoredEntry> entries, float threshold, size_t k,
                     std::vector<uint32_t>* histogram);

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

  // The pieces Select is made of, for a caller that gathers candidates itself (the sparsifier,
  // while it writes a, on several threads).
  //
  // The candidates at a threshold: every position whose plain score |a| * scale reaches it
  // (all positions at 0), in index order, in one or more parts.
  using Gather = absl::FunctionRef<absl::Span<const absl::Span<ScoredEntry>>(float threshold)>;
  // The overrides for a selection at threshold t: one whose score is below t may carry any
  // score below t (so a caller can skip computing it). `values` must be set.
  using OverridesAt = absl::FunctionRef<ScoreOverrides(float threshold)>;
  // The exact top k from a threshold sampled from `a` (aimed to leave a little over k
  // candidates; 0, i.e. everything, where sampling does not pay), halved until Finish succeeds.
  void SelectFromSample(absl::Span<const float> a, float scale, size_t k, Gather gather,
                        OverridesAt overrides_at, std::vector<uint32_t>* indices,
                        std::vector<float>* values);
  // `parts`, concatenated, must hold (in index order) every position whose plain score
  // |a| * scale reaches `threshold` (all positions if threshold is 0), and may hold others
  // below it, with their plain scores (they are passed over). Applies
  // the overrides (their own scores decide; `overrides.values` must be set), and if at least k
  // candidates reach the threshold writes the exact top k (indices increasing, and the values
  // of a there) and returns true; otherwise returns false and writes nothing. May rewrite the
  // scores in `parts`. Also updates suggested_threshold() and pivot_score().
  bool Finish(absl::Span<const absl::Span<ScoredEntry>> parts, float scale,
              ScoreOverrides overrides, float threshold, size_t k,
              std::vector<uint32_t>* indices, std::vector<float>* values);
  // After a Finish that returned true: a threshold that would have left about
  // k + k/8 + 4 sqrt(k) candidates in that round (a good guess for a similar next round), or
  // 0 if there is none.
  float suggested_threshold() const { return suggested_; }
  // After a Finish that returned true: the k-th best score (at least the threshold).
  float pivot_score() const { return pivot_score_; }

  // Statistics of the last Select, SelectFromSample or Finish call.
  const SelectStats& last_stats() const { return stats_; }

 private:
  float EstimateThreshold(absl::Span<const float> a, float scale, size_t k);

  // The score that marks a candidate dropped by an override below the threshold.
  static constexpr float kDropped = -1.0f;
  // Rewrites in place the scores of the candidates at override positions. False (and nothing
  // is settled) if an override would have to be inserted, or so many apply that a merge is
  // cheaper: then MergeOverrides builds merged_.
  bool ApplyOverrides(absl::Span<const absl::Span<ScoredEntry>> parts, float scale,
                      ScoreOverrides overrides, float threshold);
  void MergeOverrides(absl::Span<const absl::Span<ScoredEntry>> parts, ScoreOverrides overrides,
                      float threshold);

  uint64_t rng_state_;
  std::vector<float> sample_;
  CandidateList candidates_;             // Select's own, in index order
  absl::Span<ScoredEntry> candidates_part_;
  std::vector<ScoredEntry> merged_;      // Finish: candidates with the overrides merged in
  absl::Span<ScoredEntry> merged_part_;
  std::vector<size_t> live_;             // ApplyOverrides: the overrides that matter
  std::vector<ScoredEntry> ranked_;      // Finish: the best few, for nth_element
  std::vector<uint32_t> histogram_;      // Finish: candidates per score bucket
  std::vector<float> override_values_;   // Select: a at the overrides
  std::vector<float> select_values_;     // Select: the values Finish writes
  float suggested_ = 0.0f;
  float pivot_score_ = 0.0f;
  SelectStats stats_;
};

}  // namespace regtopk

#endif  // REGTOPK_COMMON_SPARSE_SELECT_H_
