#include "common/sparse/select.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common/random/splitmix64.h"

namespace regtopk {
namespace {

// Below this many entries a sample does not pay: every position is a candidate.
constexpr size_t kSmallDim = 1 << 14;
constexpr size_t kMaxSample = 1 << 16;
constexpr size_t kBlock = kSelectBlock;
// Buckets of the score histograms (Finish's and KthBestBracket's).
constexpr size_t kBuckets = 4096;

// The histogram bucket of a score at or above the score whose bits are `lo`: buckets of
// 2^shift ulps (the bits are monotone in the score), the scores above them all in the top one.
size_t ScoreBucket(float score, int32_t lo, int shift) {
  return std::min<size_t>(kBuckets - 1, static_cast<size_t>((MagnitudeBits(score) - lo) >> shift));
}

// The score at the lower edge of bucket b of that histogram.
float BucketEdge(int32_t lo, size_t b, int shift) {
  const int32_t bits = lo + static_cast<int32_t>(b << shift);
  float score;
  __builtin_memcpy(&score, &bits, sizeof(score));
  return score;
}

// The strict total order of the selection: score descending, then index ascending.
struct Better {
  bool operator()(const ScoredEntry& x, const ScoredEntry& y) const {
    return x.score > y.score || (x.score == y.score && x.index < y.index);
  }
};

// The i-th bit of the result is set iff MagnitudeBits(p[i]) >= bound, for i < n <= 64; four
// lanes at a time where SSE2 is there.
uint64_t BoundMaskOf(const float* p, size_t n, int32_t bound) {
  uint64_t mask = 0;
  size_t i = 0;
#if defined(__SSE2__)
  const __m128i magnitude = _mm_set1_epi32(0x7fffffff);
  const __m128i below_bound = _mm_set1_epi32(bound - 1);
  for (; i + 4 <= n; i += 4) {
    const __m128i bits = _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)),
                                       magnitude);
    const int hits = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(bits, below_bound)));
    mask |= static_cast<uint64_t>(static_cast<uint32_t>(hits)) << i;
  }
#endif
  for (; i < n; ++i) mask |= static_cast<uint64_t>(MagnitudeBits(p[i]) >= bound) << i;
  return mask;
}

}  // namespace

void CandidateList::Enlarge(size_t needed) {
  const size_t capacity = std::max(needed, 2 * capacity_ + 1024);
  std::unique_ptr<ScoredEntry[]> grown(new ScoredEntry[capacity]);  // left uninitialised
  if (size_ > 0) std::memcpy(grown.get(), data_.get(), size_ * sizeof(ScoredEntry));
  data_ = std::move(grown);
  capacity_ = capacity;
}

int32_t ReachBound(float scale, float threshold) {
  return MagnitudeBits(
      static_cast<float>(static_cast<double>(threshold) / scale * (1.0 - 1e-6)));
}

uint64_t BoundMask(const float* p, size_t n, int32_t bound) { return BoundMaskOf(p, n, bound); }

void AppendMasked(const float* a, size_t begin, const uint64_t* masks, size_t blocks, float scale,
                  float threshold, CandidateList* out) {
  AppendMaskedBy([a](size_t j) { return a[j]; }, begin, masks, blocks, scale, threshold, out);
}

void AppendReaching(const float* a, size_t begin, size_t end, const int32_t* block_max,
                    float scale, float threshold, CandidateList* out) {
  const int32_t bound = ReachBound(scale, threshold);
  for (size_t base = begin; base < end; base += kBlock) {
    const size_t n = std::min(kBlock, end - base);
    if (block_max != nullptr && block_max[base / kBlock] < bound) continue;
    const uint64_t mask = BoundMaskOf(a + base, n, bound);
    if (mask != 0) AppendMasked(a, base, &mask, 1, scale, threshold, out);
  }
}

void AppendAll(const float* a, size_t begin, size_t end, float scale, CandidateList* out) {
  ScoredEntry* dst = out->Reserve(end - begin);
  for (size_t j = begin; j < end; ++j) {
    dst[j - begin] = ScoredEntry{std::fabs(a[j]) * scale, a[j], static_cast<uint32_t>(j)};
  }
  out->Grow(end - begin);
}

float KthBestBracket(absl::Span<const ScoredEntry> entries, float threshold, size_t k,
                     std::vector<uint32_t>* histogram) {
  constexpr int kShift = 14;  // 4096 buckets of 2^14 ulps: eight binades
  histogram->resize(kBuckets);
  for (;;) {
    const int32_t lo = MagnitudeBits(threshold);
    std::fill(histogram->begin(), histogram->end(), 0u);
    for (const ScoredEntry& c : entries) {
      if (c.score >= threshold) ++(*histogram)[ScoreBucket(c.score, lo, kShift)];
    }
    size_t b = kBuckets - 1, above = (*histogram)[b];
    while (above < k && b > 0) above += (*histogram)[--b];
    if (b == 0) return threshold;  // the k-th best is in the lowest bucket (or there is none)
    threshold = BucketEdge(lo, b, kShift);
    if (b < kBuckets - 1) return threshold;  // else the k-th best may lie far above: again
  }
}

TopKSelector::TopKSelector(uint64_t seed) : rng_state_(seed ^ 0x5eedf00dcafe1234ull) {}

float TopKSelector::EstimateThreshold(absl::Span<const float> a, float scale, size_t k) {
  const size_t d = a.size();
  if (d < kSmallDim || k >= d / 2) return 0.0f;
  const size_t m = std::min(kMaxSample, d / 4);
  const size_t stride = d / m;
  sample_.resize(m);
  // Stratified sample: one random position in each stride, so no structure in the gradient's
  // layout (layer after layer) can bias it.
  for (size_t i = 0; i < m; ++i) {
    sample_[i] = std::fabs(a[i * stride + SplitMix64(rng_state_) % stride]) * scale;
  }
  // Aim the threshold at the sampled rank expected to leave about k candidates, plus four
  // standard deviations of the binomial count so that a miss (and a second pass) is rare.
  const double expected = static_cast<double>(m) * static_cast<double>(k) / static_cast<double>(d);
  const size_t rank = static_cast<size_t>(std::ceil(expected + 4.0 * std::sqrt(expected) + 2.0));
  if (rank >= m) return 0.0f;  // Would keep nearly everything anyway.
  std::nth_element(sample_.begin(), sample_.begin() + rank, sample_.end(), std::greater<float>());
  return sample_[rank];
}

bool TopKSelector::Finish(absl::Span<const absl::Span<ScoredEntry>> parts, float scale,
                          ScoreOverrides overrides, float threshold, size_t k,
                          std::vector<uint32_t>* indices, std::vector<float>* values) {
  assert(k >= 1);
  assert(overrides.values.size() == overrides.indices.size());
  if (!overrides.indices.empty() && !ApplyOverrides(parts, scale, overrides, threshold)) {
    // Some override reaches the threshold where no plain score does: one merge walk (both
    // lists are in index order) builds the list with every override in place.
    MergeOverrides(parts, overrides, threshold);
    merged_part_ = absl::MakeSpan(merged_);
    parts = absl::MakeConstSpan(&merged_part_, 1);
  }
  // Entries whose score was overridden below the threshold are marked kDropped and skipped.
  auto for_each = [&](auto&& fn) {
    for (const auto& part : parts) {
      for (const ScoredEntry& c : part) {
        if (c.score >= threshold) fn(c);
      }
    }
  };
  // A histogram of the candidates' score bits (monotone in the score) over two binades above
  // the threshold (higher scores share the top bucket) narrows them to the bucket that holds
  // the k-th best: only that bucket is ranked, however generous the threshold was. The same
  // histogram gives next round's guess.
  const int32_t lo = MagnitudeBits(threshold);
  constexpr int kShift = 12;  // 4096 buckets of 2^12 ulps: 2^24 ulps are two binades
  auto bucket_of = [&](const ScoredEntry& c) { return ScoreBucket(c.score, lo, kShift); };
  histogram_.assign(kBuckets, 0);
  size_t n = 0;
  for_each([&](const ScoredEntry& c) {
    ++histogram_[bucket_of(c)];
    ++n;
  });
  stats_ = SelectStats{n, 0};
  // Correctness of the shortcut: if at least k scores reach the threshold, the k-th largest
  // score does too, so the whole top k (ties included) is among the candidates.
  if (n < k) return false;
  const size_t margin = k + k / 8 + static_cast<size_t>(4.0 * std::sqrt(static_cast<double>(k)));
  size_t keep_bucket = 0, better = 0, above = 0;
  bool kept = false;
  suggested_ = 0.0f;
  for (size_t b = kBuckets; b-- > 0;) {
    if (!kept && above + histogram_[b] >= k) {
      keep_bucket = b;
      better = above;
      kept = true;
    }
    above += histogram_[b];
    if (above >= margin) {
      suggested_ = BucketEdge(lo, b, kShift);
      break;
    }
  }
  // Everything above the kept bucket is in the top k; the k-th best is the (k - better)-th
  // best of the kept bucket alone.
  ranked_.clear();
  for_each([&](const ScoredEntry& c) {
    if (bucket_of(c) == keep_bucket) ranked_.push_back(c);
  });
  assert(better < k && better + ranked_.size() >= k);
  const size_t rank = k - 1 - better;
  std::nth_element(ranked_.begin(), ranked_.begin() + rank, ranked_.end(), Better());
  const ScoredEntry pivot = ranked_[rank];
  pivot_score_ = pivot.score;
  if (suggested_ == 0.0f && threshold > 0.0f) {
    // Fewer than `margin` reached the threshold: extend the tail's count below it as a power
    // law through (threshold, n) and (pivot, k), within [threshold / 2, threshold].
    suggested_ = 0.8f * threshold;
    const double ratio = static_cast<double>(pivot.score) / threshold;
    if (n > k && ratio > 1.0) {
      const double alpha = std::log(static_cast<double>(n) / k) / std::log(ratio);
      const double guess = threshold * std::pow(static_cast<double>(n) / margin, 1.0 / alpha);
      suggested_ = static_cast<float>(std::clamp(guess, 0.5 * threshold, 1.0 * threshold));
    }
  }
  // Keep everything at least as good as the pivot from the index-ordered list: sorted output,
  // no sort.
  indices->resize(k);
  values->resize(k);
  size_t out = 0;
  for (const auto& part : parts) {
    for (const ScoredEntry& c : part) {
      if (!Better()(pivot, c)) {
        (*indices)[out] = c.index;
        (*values)[out++] = c.value;
      }
    }
  }
  assert(out == k);
  return true;
}

bool TopKSelector::ApplyOverrides(absl::Span<const absl::Span<ScoredEntry>> parts, float scale,
                                  ScoreOverrides overrides, float threshold) {
  // An override matters only where its position is a candidate (its plain score reached the
  // threshold; its entry then takes the override's score, or is dropped below the threshold)
  // or where its own score reaches the threshold. Usually that is a few of the k: a sent
  // entry's error is zeroed, so its next a is one round's gradient.
  live_.clear();
  for (size_t o = 0; o < overrides.indices.size(); ++o) {
    if (overrides.scores[o] >= threshold ||
        std::fabs(overrides.values[o]) * scale >= threshold) {
      live_.push_back(o);
    }
  }
  if (live_.size() > 64 + overrides.indices.size() / 16) return false;  // the merge is cheaper
  for (size_t o : live_) {
    const uint32_t j = overrides.indices[o];
    ScoredEntry* found = nullptr;
    for (const auto& part : parts) {
      if (part.empty() || part.back().index < j) continue;
      auto it = std::lower_bound(part.begin(), part.end(), j,
                                 [](const ScoredEntry& c, uint32_t x) { return c.index < x; });
      if (it != part.end() && it->index == j) found = &*it;
      break;
    }
    if (found == nullptr) {
      if (overrides.scores[o] >= threshold) return false;  // would need inserting
      continue;
    }
    found->score = overrides.scores[o] >= threshold ? overrides.scores[o] : kDropped;
  }
  return true;
}

void TopKSelector::MergeOverrides(absl::Span<const absl::Span<ScoredEntry>> parts,
                                  ScoreOverrides overrides, float threshold) {
  size_t total = overrides.indices.size();
  for (const auto& part : parts) total += part.size();
  merged_.resize(total);
  ScoredEntry* dst = merged_.data();
  size_t m = 0;
  size_t o = 0;
  const size_t no = overrides.indices.size();
  auto emit_overrides_below = [&](uint64_t limit) {
    for (; o < no && overrides.indices[o] < limit; ++o) {
      dst[m] = ScoredEntry{overrides.scores[o], overrides.values[o], overrides.indices[o]};
      m += static_cast<size_t>(overrides.scores[o] >= threshold);
    }
  };
  for (const auto& part : parts) {
    for (const ScoredEntry& c : part) {
      if (c.score < threshold) continue;  // dropped by an earlier ApplyOverrides
      if (o < no && overrides.indices[o] <= c.index) {
        emit_overrides_below(c.index);
        if (o < no && overrides.indices[o] == c.index) continue;  // emitted on the next call
      }
      dst[m++] = c;
    }
  }
  emit_overrides_below(uint64_t{1} << 32);
  merged_.resize(m);
}

void TopKSelector::SelectFromSample(absl::Span<const float> a, float scale, size_t k,
                                    Gather gather, OverridesAt overrides_at,
                                    std::vector<uint32_t>* indices, std::vector<float>* values) {
  float threshold = EstimateThreshold(a, scale, k);
  int passes = 1;
  while (!Finish(gather(threshold), scale, overrides_at(threshold), threshold, k, indices,
                 values)) {
    // Missed (the sample was unlucky or the scores are heavy-tailed): retry lower. Halving the
    // threshold converges quickly; once it is tiny take everything.
    threshold = threshold * 0.5f;
    if (threshold < 1e-30f) threshold = 0.0f;
    ++passes;
  }
  stats_.passes = passes;
}

void TopKSelector::Select(absl::Span<const float> a, float scale, ScoreOverrides overrides,
                          size_t k, std::vector<uint32_t>* out,
                          absl::Span<const int32_t> block_max) {
  assert(k >= 1 && k <= a.size());
  assert(block_max.empty() || block_max.size() == (a.size() + kBlock - 1) / kBlock);
  if (overrides.values.empty() && !overrides.indices.empty()) {
    override_values_.resize(overrides.indices.size());
    for (size_t i = 0; i < overrides.indices.size(); ++i) {
      override_values_[i] = a[overrides.indices[i]];
    }
    overrides.values = override_values_;
  }
  auto gather = [&](float threshold) {
    candidates_.clear();
    if (threshold <= 0.0f) {
      AppendAll(a.data(), 0, a.size(), scale, &candidates_);  // every score is >= 0
    } else if (scale > 0.0f) {  // else every plain score is 0 < threshold
      AppendReaching(a.data(), 0, a.size(), block_max.empty() ? nullptr : block_max.data(),
                     scale, threshold, &candidates_);
    }
    candidates_part_ = candidates_.mutable_span();
    return absl::MakeConstSpan(&candidates_part_, 1);
  };
  SelectFromSample(a, scale, k, gather, [&](float) { return overrides; }, out, &select_values_);
}

}  // namespace regtopk
