#include "common/sparse/select.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace regtopk {
namespace {

// Below this many entries a sample does not pay: every position is a candidate.
constexpr size_t kSmallDim = 1 << 14;
constexpr size_t kMaxSample = 1 << 16;
// Width of the blocks the filtering pass skips when their largest magnitude is below threshold.
constexpr size_t kBlock = 64;

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

float BlockMaxAbs(const float* p, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(p[i]));
  return m;
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
                          float threshold) {
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
    // |a|*scale is monotone in |a|, so a block whose largest |a| misses the threshold holds no
    // candidate. The per-block max vectorises; the scalar scan runs only on the rare hit.
    for (size_t base = 0; base < d; base += kBlock) {
      const size_t n = std::min(kBlock, d - base);
      if (BlockMaxAbs(p + base, n) * scale < threshold) continue;
      for (size_t j = base; j < base + n; ++j) {
        const float s = std::fabs(p[j]) * scale;
        if (s >= threshold) candidates_.push_back(Candidate{s, static_cast<uint32_t>(j)});
      }
    }
  }
  if (overrides.indices.empty()) return;
  // Candidates are in index order, as are the overrides: drop the overridden positions in one
  // merge walk, then add those whose real score reaches the threshold.
  size_t out = 0, o = 0;
  const size_t no = overrides.indices.size();
  for (size_t c = 0; c < candidates_.size(); ++c) {
    const uint32_t j = candidates_[c].index;
    while (o < no && overrides.indices[o] < j) ++o;
    if (o < no && overrides.indices[o] == j) continue;
    candidates_[out++] = candidates_[c];
  }
  candidates_.resize(out);
  for (size_t i = 0; i < no; ++i) {
    if (overrides.scores[i] >= threshold) {
      candidates_.push_back(Candidate{overrides.scores[i], overrides.indices[i]});
    }
  }
}

void TopKSelector::Select(absl::Span<const float> a, float scale, ScoreOverrides overrides,
                          size_t k, std::vector<uint32_t>* out) {
  assert(k >= 1 && k <= a.size());
  const size_t d = a.size();
  stats_ = SelectStats();
  float threshold = 0.0f;
  if (d >= kSmallDim && k < d / 2) threshold = EstimateThreshold(a, scale, k);
  while (true) {
    Filter(a, scale, overrides, threshold);
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
  auto better = [](const Candidate& x, const Candidate& y) {
    return x.score > y.score || (x.score == y.score && x.index < y.index);
  };
  if (candidates_.size() > k) {
    std::nth_element(candidates_.begin(), candidates_.begin() + (k - 1), candidates_.end(),
                     better);
  }
  out->resize(k);
  for (size_t i = 0; i < k; ++i) (*out)[i] = candidates_[i].index;
  std::sort(out->begin(), out->end());
}

}  // namespace regtopk
