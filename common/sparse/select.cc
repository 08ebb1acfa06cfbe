#include "common/sparse/select.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

#include "common/random/splitmix64.h"

namespace regtopk {
namespace {

// Below this many entries a sample does not pay: every position is a candidate.
constexpr size_t kSmallDim = 1 << 14;
constexpr size_t kMaxSample = 1 << 16;
// Width of the blocks the filtering pass skips when their largest magnitude is below threshold.
constexpr size_t kBlock = kSelectBlock;
constexpr size_t kSubBlock = 16;

// True if some MagnitudeBits(p[i]) >= bound (signed compares: both sides are >= 0).
bool BlockMayReach(const float* p, size_t n, int32_t bound_bits) {
  int32_t any = 0;
  for (size_t i = 0; i < n; ++i) any |= static_cast<int32_t>(MagnitudeBits(p[i]) >= bound_bits);
  return any != 0;
}

}  // namespace

TopKSelector::TopKSelector(uint64_t seed) : rng_state_(seed ^ 0x5eedf00dcafe1234ull) {}

float TopKSelector::EstimateThreshold(absl::Span<const float> a, float scale, size_t k) {
  const size_t d = a.size();
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

void TopKSelector::Filter(absl::Span<const float> a, float scale, ScoreOverrides overrides,
                          float threshold, absl::Span<const int32_t> block_max) {
  candidates_.clear();
  const size_t d = a.size();
  const float* p = a.data();
  if (threshold <= 0.0f) {
    // Every score is >= 0: everything is a candidate.
    candidates_.resize(d);
    for (size_t j = 0; j < d; ++j) {
      candidates_[j] = Candidate{std::fabs(p[j]) * scale, static_cast<uint32_t>(j)};
    }
  } else {
    // fl(|a| * scale) >= threshold implies |a| >= threshold / scale / (1 + 2^-24), so a block
    // with no |a| above a slightly lowered bound holds no candidate. That pre-test vectorises;
    // the exact scalar test runs only in the rare blocks that pass it.
    if (scale == 0.0f) {
      candidates_.clear();  // every plain score is 0 < threshold
    } else {
      const float bound = static_cast<float>(static_cast<double>(threshold) / scale * (1.0 - 1e-6));
      const int32_t bound_bits = MagnitudeBits(bound);
      for (size_t base = 0, b = 0; base < d; base += kBlock, ++b) {
        const size_t n = std::min(kBlock, d - base);
        if (block_max.empty() ? !BlockMayReach(p + base, n, bound_bits)
                              : block_max[b] < bound_bits) {
          continue;
        }
        // At 1 % density about half the blocks hit; narrowing to sub-blocks keeps the scalar scan
        // to the few entries near a candidate.
        for (size_t sub = base; sub < base + n; sub += kSubBlock) {
          const size_t sn = std::min(kSubBlock, base + n - sub);
          if (!BlockMayReach(p + sub, sn, bound_bits)) continue;
          // Branch-free append: write every entry, advance only past the hits.
          size_t n_out = candidates_.size();
          candidates_.resize(n_out + sn);
          Candidate* dst = candidates_.data();
          for (size_t j = sub; j < sub + sn; ++j) {
            const float s = std::fabs(p[j]) * scale;
            dst[n_out] = Candidate{s, static_cast<uint32_t>(j)};
            n_out += static_cast<size_t>(s >= threshold);
          }
          candidates_.resize(n_out);
        }
      }
    }
  }
  if (overrides.indices.empty()) return;
  // Candidates are in index order, as are the overrides: one merge walk replaces the overridden
  // positions' plain scores by their real ones (dropping those below the threshold) and keeps
  // the list in index order, which lets Select skip a final sort.
  merged_.clear();
  size_t o = 0;
  const size_t no = overrides.indices.size();
  auto emit_overrides_below = [&](uint64_t limit) {
    for (; o < no && overrides.indices[o] < limit; ++o) {
      if (overrides.scores[o] >= threshold) {
        merged_.push_back(Candidate{overrides.scores[o], overrides.indices[o]});
      }
    }
  };
  for (const Candidate& c : candidates_) {
    emit_overrides_below(c.index);
    if (o < no && overrides.indices[o] == c.index) continue;  // emitted on the next call
    merged_.push_back(c);
  }
  emit_overrides_below(uint64_t{1} << 32);
  candidates_.swap(merged_);
}

void TopKSelector::Select(absl::Span<const float> a, float scale, ScoreOverrides overrides,
                          size_t k, std::vector<uint32_t>* out,
                          absl::Span<const int32_t> block_max) {
  assert(k >= 1 && k <= a.size());
  assert(block_max.empty() || block_max.size() == (a.size() + kBlock - 1) / kBlock);
  const size_t d = a.size();
  stats_ = SelectStats();
  float threshold = 0.0f;
  if (d >= kSmallDim && k < d / 2) threshold = EstimateThreshold(a, scale, k);
  while (true) {
    Filter(a, scale, overrides, threshold, block_max);
    ++stats_.passes;
    // Correctness of the shortcut: if at least k scores reach the threshold, the k-th largest
    // score does too, so the whole top-k (ties included) is among the candidates.
    if (candidates_.size() >= k || threshold <= 0.0f) break;
    // Missed (the sample was unlucky or the scores are heavy-tailed): retry lower. Halving the
    // threshold converges quickly; once it is tiny take everything.
    threshold = threshold * 0.5f;
    if (threshold < 1e-30f) threshold = 0.0f;
  }
  stats_.candidates = candidates_.size();
  out->resize(k);
  if (candidates_.size() == k) {
    for (size_t i = 0; i < k; ++i) (*out)[i] = candidates_[i].index;
    return;
  }
  // Find the k-th best candidate (score desc, index asc: a strict total order) on a copy, then
  // keep everything at least as good from the index-ordered list: sorted output, no sort.
  auto better = [](const Candidate& x, const Candidate& y) {
    return x.score > y.score || (x.score == y.score && x.index < y.index);
  };
  merged_.assign(candidates_.begin(), candidates_.end());
  std::nth_element(merged_.begin(), merged_.begin() + (k - 1), merged_.end(), better);
  const Candidate pivot = merged_[k - 1];
  size_t n = 0;
  for (const Candidate& c : candidates_) {
    if (!better(pivot, c)) (*out)[n++] = c.index;
  }
  assert(n == k);
}

}  // namespace regtopk
