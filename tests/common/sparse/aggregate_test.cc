#include "common/sparse/aggregate.h"

#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "absl/base/casts.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace regtopk {
namespace {

using ::testing::ElementsAre;

TEST(AggregateSparse, WeightsAndUnitesSupports) {
  SparseVector a{{0, 2, 5}, {1, 2, 3}}, b{{2, 3}, {4, 8}};
  SparseVector out;
  std::vector<SparseView> pushes{a, b};
  AggregateSparse(pushes, std::vector<float>{0.5f, 0.25f}, &out);
  EXPECT_THAT(out.indices, ElementsAre(0u, 2u, 3u, 5u));
  EXPECT_THAT(out.values, ElementsAre(0.5f, 2.0f, 2.0f, 1.5f));
}

TEST(AggregateSparse, KeepsCancelledEntries) {
  SparseVector a{{1}, {2}}, b{{1}, {-2}};
  SparseVector out;
  std::vector<SparseView> pushes{a, b};
  AggregateSparse(pushes, std::vector<float>{0.5f, 0.5f}, &out);
  EXPECT_THAT(out.indices, ElementsAre(1u));
  EXPECT_THAT(out.values, ElementsAre(0.0f));
}

TEST(AggregateSparse, EqualsLeftToRightSumBitForBit) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<uint32_t> index(0, 999);
  const int n = 7;
  std::vector<SparseVector> pushes(n);
  std::vector<float> weights(n, 1.0f / n);
  for (auto& p : pushes) {
    std::map<uint32_t, float> m;
    while (m.size() < 200) m[index(rng)] = normal(rng);
    for (auto& [i, v] : m) {
      p.indices.push_back(i);
      p.values.push_back(v);
    }
  }
  std::map<uint32_t, float> expected;
  for (int w = 0; w < n; ++w) {
    for (size_t i = 0; i < pushes[w].nnz(); ++i) {
      const uint32_t j = pushes[w].indices[i];
      const float term = weights[w] * pushes[w].values[i];
      auto it = expected.find(j);
      if (it == expected.end())
        expected[j] = term;
      else
        it->second = it->second + term;
    }
  }
  std::vector<SparseView> views(pushes.begin(), pushes.end());
  SparseVector out;
  AggregateSparse(views, weights, &out);
  ASSERT_EQ(out.nnz(), expected.size());
  size_t i = 0;
  for (auto& [j, v] : expected) {
    EXPECT_EQ(out.indices[i], j);
    EXPECT_EQ(out.values[i], v) << j;  // bit for bit
    ++i;
  }
}

// The contract's sum, written the plain way: per index, the first term as it is, then each
// later worker's term added, in worker order.
std::map<uint32_t, float> LeftToRight(const std::vector<SparseVector>& pushes,
                                      const std::vector<float>& weights) {
  std::map<uint32_t, float> sum;
  for (size_t w = 0; w < pushes.size(); ++w) {
    for (size_t i = 0; i < pushes[w].nnz(); ++i) {
      const float term = weights[w] * pushes[w].values[i];
      auto [it, fresh] = sum.emplace(pushes[w].indices[i], term);
      if (!fresh) it->second = it->second + term;
    }
  }
  return sum;
}

// Every thread count, every shape of support (random over a small or the full 32-bit range,
// all pushes on the same indices, disjoint ones, one empty push), N from 1 to 33: the same
// indices and the same float bits as the plain left-to-right sum. One aggregator is reused
// across all calls, so stale scratch would show.
TEST(SparseAggregator, EqualsLeftToRightSumBitForBitForAnyThreadCount) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (int threads : {1, 2, 3, 8}) {
    SparseAggregator aggregator(threads);
    for (int n : {1, 2, 5, 16, 33}) {
      for (int shape = 0; shape < 5; ++shape) {
        std::vector<SparseVector> pushes(n);
        std::vector<float> weights(n);
        for (int w = 0; w < n; ++w) {
          weights[w] = (w + 1.0f) / (n * (n + 1) / 2.0f);
          std::map<uint32_t, float> m;
          const size_t k = shape == 4 && w == 1 ? 0 : 6000;
          std::uniform_int_distribution<uint32_t> small(0, 99999);
          std::uniform_int_distribution<uint32_t> full(0, 0xFFFFFFFFu);
          for (size_t i = 0; m.size() < k; ++i) {
            uint32_t j = 0;
            switch (shape) {
              case 0: case 4: j = small(rng); break;
              case 1: j = full(rng); break;
              case 2: j = static_cast<uint32_t>(i * 7); break;           // the same on every push
              case 3: j = static_cast<uint32_t>(i * n + w); break;       // disjoint
            }
            m[j] = normal(rng);
          }
          for (auto& [j, v] : m) {
            pushes[w].indices.push_back(j);
            pushes[w].values.push_back(v);
          }
        }
        const auto expected = LeftToRight(pushes, weights);
        std::vector<SparseView> views(pushes.begin(), pushes.end());
        SparseVector out, merged, scratch;
        aggregator.Aggregate(views, weights, &out);
        AggregateByPairwiseMerge(views, weights, &merged, &scratch);
        ASSERT_EQ(merged.indices, out.indices);
        ASSERT_EQ(0, std::memcmp(merged.values.data(), out.values.data(), 4 * out.nnz()))
            << "the pairwise merge and the radix parts differ";
        ASSERT_EQ(out.nnz(), expected.size()) << threads << " threads, n " << n << ", shape " << shape;
        size_t i = 0;
        for (auto& [j, v] : expected) {
          ASSERT_EQ(out.indices[i], j);
          ASSERT_EQ(absl::bit_cast<uint32_t>(out.values[i]), absl::bit_cast<uint32_t>(v))
              << "index " << j << ", " << threads << " threads, n " << n << ", shape " << shape;
          ++i;
        }
      }
    }
  }
}

TEST(SparseAggregator, NoPushesOrOnlyEmptyPushesGiveAnEmptyAggregate) {
  SparseAggregator aggregator(4);
  SparseVector out;
  out.indices = {1};
  out.values = {1.0f};
  aggregator.Aggregate({}, {}, &out);
  EXPECT_EQ(out.nnz(), 0u);
  std::vector<SparseView> empty(3);
  aggregator.Aggregate(empty, std::vector<float>(3, 1.0f), &out);
  EXPECT_EQ(out.nnz(), 0u);
}

}  // namespace
}  // namespace regtopk
