#include "worker/data/partition.h"

#include <algorithm>
#include <random>
#include <set>

#include "gtest/gtest.h"

namespace regtopk {
namespace {

std::vector<int64_t> BalancedLabels(size_t n) {
  std::vector<int64_t> labels(n);
  for (size_t i = 0; i < n; ++i) labels[i] = i % 10;
  return labels;
}

void ExpectDisjointCover(const std::vector<std::vector<size_t>>& parts, size_t n) {
  std::set<size_t> seen;
  for (const auto& p : parts) {
    EXPECT_FALSE(p.empty());
    for (size_t i : p) EXPECT_TRUE(seen.insert(i).second) << "example " << i << " twice";
  }
  EXPECT_EQ(seen.size(), n);
}

TEST(Partition, IidSplitsEvenlyAndDisjointly) {
  auto parts = *Partition(BalancedLabels(1003), 10, PartitionSpec{}, 4, 1);
  ExpectDisjointCover(parts, 1003);
  for (const auto& p : parts) EXPECT_NEAR(p.size(), 1003 / 4.0, 1.0);
}

TEST(Partition, IsTheSameOnEveryWorkerForASeed) {
  PartitionSpec spec = *ParsePartition("dirichlet:0.3");
  EXPECT_EQ(*Partition(BalancedLabels(5000), 10, spec, 8, 42),
            *Partition(BalancedLabels(5000), 10, spec, 8, 42));
  EXPECT_NE(*Partition(BalancedLabels(5000), 10, spec, 8, 42),
            *Partition(BalancedLabels(5000), 10, spec, 8, 43));
}

TEST(Partition, DirichletSkewsLabels) {
  const auto labels = BalancedLabels(20000);
  auto skewed = *Partition(labels, 10, *ParsePartition("dirichlet:0.1"), 8, 3);
  ExpectDisjointCover(skewed, labels.size());
  // Under alpha = 0.1 a worker's most common label dominates; under iid it is ~10 %.
  auto top_share = [&](const std::vector<size_t>& part) {
    std::vector<int> counts(10, 0);
    for (size_t i : part) ++counts[labels[i]];
    return *std::max_element(counts.begin(), counts.end()) / double(part.size());
  };
  double mean_skewed = 0, mean_iid = 0;
  auto iid = *Partition(labels, 10, PartitionSpec{}, 8, 3);
  for (int w = 0; w < 8; ++w) {
    mean_skewed += top_share(skewed[w]) / 8;
    mean_iid += top_share(iid[w]) / 8;
  }
  EXPECT_GT(mean_skewed, 0.4);
  EXPECT_LT(mean_iid, 0.15);
}

TEST(Partition, QuantitySkewIsAtLeastFive) {
  auto parts = *Partition(BalancedLabels(60000), 10, *ParsePartition("quantity"), 8, 5);
  ExpectDisjointCover(parts, 60000);
  size_t lo = SIZE_MAX, hi = 0;
  for (const auto& p : parts) {
    lo = std::min(lo, p.size());
    hi = std::max(hi, p.size());
  }
  EXPECT_GE(double(hi) / lo, 5.0);
}

TEST(ParsePartition, RejectsBadSpecs) {
  for (const char* bad :
       {"", "dirichlet", "dirichlet:0", "dirichlet:-1", "dirichlet:x", "quantity:0.5", "noniid"}) {
    auto r = ParsePartition(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ParsePartition("quantity:8")->ratio, 8.0);
}

TEST(Partition, RefusesMoreWorkersThanExamples) {
  EXPECT_FALSE(Partition(BalancedLabels(3), 10, PartitionSpec{}, 4, 1).ok());
}

}  // namespace
}  // namespace regtopk
