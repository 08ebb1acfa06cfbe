#include "common/sparse/aggregate.h"

#include <map>
#include <random>

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

}  // namespace
}  // namespace regtopk
