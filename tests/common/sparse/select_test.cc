#include "common/sparse/select.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace regtopk {
namespace {

// The specification: a full sort by (score desc, index asc), first k, in index order.
std::vector<uint32_t> ReferenceTopK(const std::vector<float>& a, float scale,
                                    const std::vector<uint32_t>& oi, const std::vector<float>& os,
                                    size_t k) {
  std::vector<float> score(a.size());
  for (size_t j = 0; j < a.size(); ++j) score[j] = std::fabs(a[j]) * scale;
  for (size_t i = 0; i < oi.size(); ++i) score[oi[i]] = os[i];
  std::vector<uint32_t> order(a.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t x, uint32_t y) { return score[x] > score[y]; });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<uint32_t> SelectWith(TopKSelector& sel, const std::vector<float>& a, float scale,
                                 const std::vector<uint32_t>& oi, const std::vector<float>& os,
                                 size_t k) {
  std::vector<uint32_t> out;
  sel.Select(a, scale, ScoreOverrides{oi, os}, k, &out);
  return out;
}

// The sparsifier's raise inside the pass: the bracket never passes the k-th best score (at
// least k entries still reach it), and lies within one bucket (2^14 ulps) below it, also when
// the k-th best is far above the first histogram's eight binades.
TEST(KthBestBracket, StaysAtMostOneBucketBelowTheKthBest) {
  std::mt19937 rng(9);
  std::exponential_distribution<float> tail;
  std::vector<uint32_t> histogram;
  for (float spread : {1.0f, 1e6f}) {  // 1e6: the k-th best lies ~20 binades above the floor
    std::vector<ScoredEntry> entries(20000);
    for (uint32_t i = 0; i < entries.size(); ++i) {
      entries[i] = ScoredEntry{1.0f + spread * tail(rng), 0.0f, i};
    }
    std::vector<float> sorted;
    for (const ScoredEntry& e : entries) sorted.push_back(e.score);
    std::sort(sorted.begin(), sorted.end(), std::greater<float>());
    for (size_t k : {size_t{1}, size_t{37}, size_t{5000}, size_t{20000}}) {
      const float bracket = KthBestBracket(entries, 1.0f, k, &histogram);
      const float kth = sorted[k - 1];
      EXPECT_LE(bracket, kth) << "k " << k;
      EXPECT_LT(MagnitudeBits(kth) - MagnitudeBits(bracket), 1 << 14) << "k " << k;
    }
    // More than there are: no raise.
    EXPECT_EQ(KthBestBracket(entries, 1.0f, entries.size() + 1, &histogram), 1.0f);
  }
}

TEST(TopKSelector, MatchesFullSortOnRandomInputs) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  TopKSelector sel(1);
  for (size_t d : {1u, 2u, 17u, 1000u, 20000u, 300000u}) {
    std::vector<float> a(d);
    for (float& x : a) x = normal(rng);
    for (double density : {0.0001, 0.001, 0.01, 0.3, 0.5, 0.9, 1.0}) {
      const size_t k = std::max<size_t>(1, std::min<size_t>(d, std::ceil(density * d)));
      EXPECT_EQ(SelectWith(sel, a, 1.0f, {}, {}, k), ReferenceTopK(a, 1.0f, {}, {}, k))
          << "d=" << d << " k=" << k;
    }
  }
}

TEST(TopKSelector, MatchesFullSortWithOverridesAndScale) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> unit(0.0f, 3.0f);
  TopKSelector sel(2);
  const size_t d = 100000;
  std::vector<float> a(d);
  for (float& x : a) x = normal(rng);
  for (size_t k : {1u, 100u, 1000u, 30000u}) {
    std::vector<uint32_t> oi;
    std::vector<float> os;
    for (uint32_t j = 0; j < d; j += 37) {
      oi.push_back(j);
      os.push_back(unit(rng));
    }
    EXPECT_EQ(SelectWith(sel, a, 0.75f, oi, os, k), ReferenceTopK(a, 0.75f, oi, os, k)) << k;
  }
}

TEST(TopKSelector, HeavyTiesBreakTowardsLowerIndex) {
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> level(-3, 3);
  TopKSelector sel(3);
  for (size_t d : {50u, 70000u}) {
    std::vector<float> a(d);
    for (float& x : a) x = static_cast<float>(level(rng));  // -3..3: seven values, many ties
    for (size_t k : {size_t{1}, size_t{5}, d / 10, d / 3, d - 1, d}) {
      EXPECT_EQ(SelectWith(sel, a, 1.0f, {}, {}, k), ReferenceTopK(a, 1.0f, {}, {}, k))
          << d << " " << k;
    }
  }
}

TEST(TopKSelector, AllEqualInputsGiveTheFirstK) {
  TopKSelector sel(4);
  for (float v : {0.0f, 1.5f, -2.0f}) {
    std::vector<float> a(40000, v);
    std::vector<uint32_t> first(123);
    std::iota(first.begin(), first.end(), 0u);
    EXPECT_EQ(SelectWith(sel, a, 1.0f, {}, {}, 123), first);
  }
}

TEST(TopKSelector, FallsBackWhenTheSampledThresholdMisses) {
  // The largest magnitudes are all overridden to score 0: the sample (which sees |a|) sets a
  // threshold that leaves too few candidates, so the selector must lower it and stay exact.
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  const size_t d = 200000, k = 2000;
  std::vector<float> a(d);
  for (float& x : a) x = normal(rng);
  std::vector<uint32_t> by_magnitude(d);
  std::iota(by_magnitude.begin(), by_magnitude.end(), 0u);
  std::sort(by_magnitude.begin(), by_magnitude.end(),
            [&](uint32_t x, uint32_t y) { return std::fabs(a[x]) > std::fabs(a[y]); });
  std::vector<uint32_t> oi(by_magnitude.begin(), by_magnitude.begin() + 20000);
  std::sort(oi.begin(), oi.end());
  std::vector<float> os(oi.size(), 0.0f);
  TopKSelector sel(6);
  EXPECT_EQ(SelectWith(sel, a, 1.0f, oi, os, k), ReferenceTopK(a, 1.0f, oi, os, k));
  EXPECT_GT(sel.last_stats().passes, 1);
}

TEST(TopKSelector, PrecomputedBlockMaximaGiveTheSameResult) {
  std::mt19937 rng(12);
  std::normal_distribution<float> normal;
  const size_t d = 100003;  // a short last block
  std::vector<float> a(d);
  for (float& x : a) x = normal(rng);
  std::vector<int32_t> block_max((d + kSelectBlock - 1) / kSelectBlock, 0);
  for (size_t j = 0; j < d; ++j) {
    block_max[j / kSelectBlock] = std::max(block_max[j / kSelectBlock], MagnitudeBits(a[j]));
  }
  std::vector<uint32_t> oi{5, 700, 99999};
  std::vector<float> os{10.0f, 0.0f, 0.5f};
  TopKSelector sel(13);
  for (size_t k : {size_t{1}, size_t{100}, size_t{5000}}) {
    std::vector<uint32_t> out;
    sel.Select(a, 1.0f, ScoreOverrides{oi, os}, k, &out, block_max);
    EXPECT_EQ(out, ReferenceTopK(a, 1.0f, oi, os, k)) << k;
  }
}

TEST(TopKSelector, SampledPathFiltersMostEntries) {
  std::mt19937 rng(8);
  std::normal_distribution<float> normal;
  const size_t d = 1000000, k = 1000;
  std::vector<float> a(d);
  for (float& x : a) x = normal(rng);
  TopKSelector sel(9);
  std::vector<uint32_t> out;
  sel.Select(a, 1.0f, {}, k, &out);
  EXPECT_EQ(sel.last_stats().passes, 1);
  EXPECT_GE(sel.last_stats().candidates, k);
  EXPECT_LT(sel.last_stats().candidates, 4 * k);
}

}  // namespace
}  // namespace regtopk
