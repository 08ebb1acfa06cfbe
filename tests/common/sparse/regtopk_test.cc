// RegTop-k specifics (DESIGN.md section 1), with hand-computed deltas.
#include <algorithm>
#include <cmath>
#include <numeric>
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

// The mask diagnostic on the hand case above: round 0 has nothing to repeat; in round 1
// RegTop-k picks {2, 3} where Top-k picks {0, 3} (0 beats 2 on the tie |a| = 1 by its lower
// index), so one pick (2) is not Top-k's, and one of Top-k's picks (0) was sent last round.
TEST(RegTopKDiagnostic, HandCase) {
  auto reg = Make(Algorithm::kRegTopK, 4, 0.5, 1.0, 0.5f);
  auto top = Make(Algorithm::kTopK, 4, 0.5, 1.0, 0.5f);
  EXPECT_FALSE(reg->last_diagnostic().has_value());
  SparseVector out;
  for (auto* s : {reg.get(), top.get()}) {
    ASSERT_TRUE(s->Compress(std::vector<float>{3, -1, 2, 0.5}, &out).ok());
    ASSERT_TRUE(s->last_diagnostic().has_value());
    EXPECT_EQ(s->last_diagnostic()->k, 2u);
    EXPECT_EQ(s->last_diagnostic()->not_topk, 0u);
    EXPECT_EQ(s->last_diagnostic()->topk_repeats, 0u);
    ASSERT_TRUE(s->ObserveAggregate(SparseVector{{0, 2}, {0.0f, -1.0f}}).ok());
  }
  ASSERT_TRUE(reg->Compress(std::vector<float>{1, 1, 1, 1}, &out).ok());
  ASSERT_THAT(out.indices, ElementsAre(2u, 3u));
  EXPECT_EQ(reg->last_diagnostic()->not_topk, 1u);
  EXPECT_EQ(reg->last_diagnostic()->topk_repeats, 1u);
  EXPECT_DOUBLE_EQ(reg->last_diagnostic()->not_topk_fraction(), 0.5);
  // Top-k's own mask {0, 3} repeats 0 of last round's {0, 2}.
  ASSERT_TRUE(top->Compress(std::vector<float>{1, 1, 1, 1}, &out).ok());
  EXPECT_EQ(top->last_diagnostic()->not_topk, 0u);
  EXPECT_EQ(top->last_diagnostic()->topk_repeats, 1u);
}

// Plain Top-k's mask of a, by a full stable sort: the reference the diagnostic must match.
std::vector<uint32_t> ReferenceTopK(const std::vector<float>& a, size_t k) {
  std::vector<uint32_t> order(a.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t x, uint32_t y) { return std::fabs(a[x]) > std::fabs(a[y]); });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

size_t Common(const std::vector<uint32_t>& x, const std::vector<uint32_t>& y) {
  std::vector<uint32_t> both;
  std::set_intersection(x.begin(), x.end(), y.begin(), y.end(), std::back_inserter(both));
  return both.size();
}

// Many rounds of RegTop-k where demotions happen often (a few large coordinates keep winning,
// aggregates cancel or overshoot them, values repeat so ties occur): the O(k) diagnostic equals
// the one computed from a full sort of a = g + e, every round; and Top-k's repeat count equals
// the intersection of its consecutive masks.
TEST(RegTopKDiagnostic, MatchesAFullSortEveryRound) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> coin(0, 3);
  const size_t d = 300;
  for (double mu : {0.5, 2.0, 10.0}) {
    auto reg = Make(Algorithm::kRegTopK, d, 0.05, mu, 0.25f);
    auto top = Make(Algorithm::kTopK, d, 0.05, mu, 0.25f);
    std::vector<uint32_t> prev_reg, prev_top;
    size_t differed = 0;
    for (int round = 0; round < 200; ++round) {
      std::vector<float> g(d);
      for (size_t j = 0; j < d; ++j) {
        // Coarse values (multiples of 1/4) make ties; the first 20 coordinates dominate.
        g[j] = std::round(normal(rng) * 4.0f) / 4.0f * (j < 20 ? 8.0f : 1.0f);
      }
      for (auto* s : {reg.get(), top.get()}) {
        std::vector<float> a(d);
        for (size_t j = 0; j < d; ++j) a[j] = g[j] + s->error()[j];
        SparseVector out;
        ASSERT_TRUE(s->Compress(g, &out).ok());
        const std::vector<uint32_t> t = ReferenceTopK(a, out.indices.size());
        std::vector<uint32_t>& prev = s == reg.get() ? prev_reg : prev_top;
        ASSERT_TRUE(s->last_diagnostic().has_value());
        EXPECT_EQ(s->last_diagnostic()->not_topk, out.indices.size() - Common(t, out.indices))
            << "mu " << mu << " round " << round;
        EXPECT_EQ(s->last_diagnostic()->topk_repeats, Common(t, prev))
            << "mu " << mu << " round " << round;
        if (s == reg.get()) differed += s->last_diagnostic()->not_topk;
        prev = out.indices;
        // An aggregate that cancels, halves or doubles each sent entry.
        SparseVector agg = out;
        for (float& v : agg.values) v *= static_cast<float>(coin(rng)) / 2.0f;
        ASSERT_TRUE(s->ObserveAggregate(agg).ok());
      }
    }
    EXPECT_GT(differed, 0u) << "mu " << mu << ": the case never made RegTop-k differ";
  }
}

TEST(RegTopKDiagnostic, NoneForDenseAndRandKOrTopKAfterARestore) {
  SparseVector out;
  for (Algorithm algorithm : {Algorithm::kDense, Algorithm::kRandK}) {
    auto s = Make(algorithm, 10, 0.3, 1.0, 1.0f);
    ASSERT_TRUE(s->Compress(std::vector<float>(10, 1.0f), &out).ok());
    EXPECT_FALSE(s->last_diagnostic().has_value()) << AlgorithmName(algorithm);
  }
  auto top = Make(Algorithm::kTopK, 10, 0.3, 1.0, 1.0f);
  ASSERT_TRUE(top->Compress(std::vector<float>(10, 1.0f), &out).ok());
  auto restored = Make(Algorithm::kTopK, 10, 0.3, 1.0, 1.0f);
  ASSERT_TRUE(restored->ImportState(top->ExportState()).ok());
  ASSERT_TRUE(restored->Compress(std::vector<float>(10, 1.0f), &out).ok());
  EXPECT_FALSE(restored->last_diagnostic().has_value()) << "the previous mask is not known";
  ASSERT_TRUE(restored->Compress(std::vector<float>(10, 1.0f), &out).ok());
  EXPECT_TRUE(restored->last_diagnostic().has_value());
  // RegTop-k's state carries its previous mask: its diagnostic is exact right after a restore.
  auto reg = Make(Algorithm::kRegTopK, 10, 0.3, 1.0, 1.0f);
  ASSERT_TRUE(reg->Compress(std::vector<float>(10, 1.0f), &out).ok());
  ASSERT_TRUE(reg->ObserveAggregate(out).ok());
  auto reg2 = Make(Algorithm::kRegTopK, 10, 0.3, 1.0, 1.0f);
  ASSERT_TRUE(reg2->ImportState(reg->ExportState()).ok());
  ASSERT_TRUE(reg2->Compress(std::vector<float>(10, 1.0f), &out).ok());
  EXPECT_TRUE(reg2->last_diagnostic().has_value());
}

}  // namespace
}  // namespace regtopk
