// RegTop-k specifics (DESIGN.md section 1), with hand-computed deltas.
#include <cmath>
#include <random>
#include <vector>

#include "common/sparse/sparsifier.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace regtopk {
namespace {

using ::testing::ElementsAre;

std::unique_ptr<Sparsifier> Make(Algorithm algorithm, size_t d, double density, double mu,
                                 float weight) {
  SparsifierOptions o;
  o.algorithm = algorithm;
  o.dim = d;
  o.density = density;
  o.mu = mu;
  o.weight = weight;
  return std::move(*CreateSparsifier(o));
}

TEST(RegTopK, RoundZeroEqualsTopK) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (double mu : {0.5, 1.0, 5.0}) {
    const size_t d = 100000;
    std::vector<float> g(d);
    for (float& x : g) x = normal(rng);
    auto reg = Make(Algorithm::kRegTopK, d, 0.01, mu, 0.125f);
    auto top = Make(Algorithm::kTopK, d, 0.01, mu, 0.125f);
    SparseVector a, b;
    ASSERT_TRUE(reg->Compress(g, &a).ok());
    ASSERT_TRUE(top->Compress(g, &b).ok());
    EXPECT_EQ(a.indices, b.indices);
    EXPECT_EQ(a.values, b.values);
  }
}

TEST(RegTopK, CancelledEntryIsDemoted) {
  // Round 0: a = [3, -1, 2, 0.5], k = 2 sends {0: 3, 2: 2}; e = [0, -1, 0, 0.5].
  // The aggregate cancels index 0 (g_prev = 0, delta = -1, tanh(0) = 0) and at index 2 is
  // -1 = -(w v): delta = (-1 - 1) / 1 = -2, |1 + delta| = 1, score |a| tanh(1).
  // Round 1: g = 1 everywhere, a = [1, 0, 1, 1.5]; scores [0, 0, 0.76, 1.5] -> {2, 3}.
  // Top-k would send {0, 3}.
  auto reg = Make(Algorithm::kRegTopK, 4, 0.5, 1.0, 0.5f);
  auto top = Make(Algorithm::kTopK, 4, 0.5, 1.0, 0.5f);
  SparseVector out;
  for (auto* s : {reg.get(), top.get()}) {
    ASSERT_TRUE(s->Compress(std::vector<float>{3, -1, 2, 0.5}, &out).ok());
    ASSERT_THAT(out.indices, ElementsAre(0u, 2u));
    ASSERT_THAT(out.values, ElementsAre(3.0f, 2.0f));
    ASSERT_TRUE(s->ObserveAggregate(SparseVector{{0, 2}, {0.0f, -1.0f}}).ok());
  }
  ASSERT_TRUE(reg->Compress(std::vector<float>{1, 1, 1, 1}, &out).ok());
  EXPECT_THAT(out.indices, ElementsAre(2u, 3u));
  EXPECT_THAT(out.values, ElementsAre(1.0f, 1.5f));
  EXPECT_THAT(reg->error(), ElementsAre(1.0f, 0.0f, 0.0f, 0.0f));
  ASSERT_TRUE(top->Compress(std::vector<float>{1, 1, 1, 1}, &out).ok());
  EXPECT_THAT(out.indices, ElementsAre(0u, 3u));
}

TEST(RegTopK, AbsentFromAggregateCountsAsCancelled) {
  auto reg = Make(Algorithm::kRegTopK, 2, 0.5, 1.0, 0.5f);
  SparseVector out;
  ASSERT_TRUE(reg->Compress(std::vector<float>{5, 1}, &out).ok());
  ASSERT_TRUE(reg->ObserveAggregate(SparseVector{}).ok());  // index 0 not in the aggregate
  ASSERT_TRUE(reg->Compress(std::vector<float>{5, 0}, &out).ok());
  EXPECT_THAT(out.indices, ElementsAre(1u));
}

// Round 0 sends {0: 4} with w = 0.5; the aggregate there is 4, so delta = (4 - 2) / 2 = 1 and
// entry 0's next score is |a0| tanh(|1 + 1| / 4) = 2 * tanh(0.5) = 0.9242. A fresh entry scores
// |a1| * tanh(1e8 / 4) = |a1|. So |a1| = 0.95 wins and |a1| = 0.90 loses.
int SecondRoundPick(float a1) {
  auto reg = Make(Algorithm::kRegTopK, 2, 0.5, 4.0, 0.5f);
  SparseVector out;
  EXPECT_TRUE(reg->Compress(std::vector<float>{4, 0.5f}, &out).ok());
  EXPECT_TRUE(reg->ObserveAggregate(SparseVector{{0}, {4.0f}}).ok());
  EXPECT_TRUE(reg->Compress(std::vector<float>{2, a1 - 0.5f}, &out).ok());
  return static_cast<int>(out.indices[0]);
}

TEST(RegTopK, HandComputedDeltaAndMu) {
  EXPECT_EQ(SecondRoundPick(0.95f), 1);
  EXPECT_EQ(SecondRoundPick(0.90f), 0);
}

TEST(RegTopK, ZeroDenominatorMeansNoEvidence) {
  // Round 0: a = [0, 0, 0, 5], k = 2 sends {0: 0, 3: 5} (a tie at 0 goes to the lower index).
  // v_prev[0] = 0, so delta at 0 must be Q ("no evidence"), not 0/0 = NaN: with the aggregate
  // also 0 there, an unguarded delta would poison the comparison.
  auto reg = Make(Algorithm::kRegTopK, 4, 0.5, 1.0, 0.5f);
  SparseVector out;
  ASSERT_TRUE(reg->Compress(std::vector<float>{0, 0, 0, 5}, &out).ok());
  ASSERT_THAT(out.indices, ElementsAre(0u, 3u));
  ASSERT_TRUE(reg->ObserveAggregate(SparseVector{{3}, {2.5f}}).ok());
  // a = [0.3, 0.2, 0.1, 0]: scores [0.3 (no evidence), 0.2, 0.1, 0] -> {0, 1}.
  ASSERT_TRUE(reg->Compress(std::vector<float>{0.3f, 0.2f, 0.1f, 0}, &out).ok());
  EXPECT_THAT(out.indices, ElementsAre(0u, 1u));
}

TEST(RegTopK, CompressWithoutObservingIsAFailedPrecondition) {
  auto reg = Make(Algorithm::kRegTopK, 4, 0.5, 1.0, 0.5f);
  SparseVector out;
  ASSERT_TRUE(reg->Compress(std::vector<float>{1, 2, 3, 4}, &out).ok());
  EXPECT_EQ(reg->Compress(std::vector<float>{1, 2, 3, 4}, &out).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(RegTopK, SendsUnscaledAccumulatedValues) {
  // Values on the wire are a = g + e, never multiplied by the weight, the score or lr.
  auto reg = Make(Algorithm::kRegTopK, 3, 0.34, 1.0, 0.25f);  // k = 2
  SparseVector out;
  ASSERT_TRUE(reg->Compress(std::vector<float>{1, -7, 2}, &out).ok());
  EXPECT_THAT(out.values, ElementsAre(-7.0f, 2.0f));
  ASSERT_TRUE(reg->ObserveAggregate(SparseVector{{1, 2}, {-1.75f, 0.5f}}).ok());
  ASSERT_TRUE(reg->Compress(std::vector<float>{0.5f, 0, 0}, &out).ok());
  // a = [1.5, 0, 0]: entry 0 is sent with its accumulated value 1.5.
  EXPECT_EQ(out.indices[0], 0u);
  EXPECT_EQ(out.values[0], 1.5f);
}

}  // namespace
}  // namespace regtopk
