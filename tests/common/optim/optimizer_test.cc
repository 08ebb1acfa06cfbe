#include "common/optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace regtopk {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

OptimizerOptions Sgd(float lr, float momentum = 0, bool nesterov = false, float wd = 0) {
  OptimizerOptions o;
  o.lr = lr;
  o.momentum = momentum;
  o.nesterov = nesterov;
  o.weight_decay = wd;
  return o;
}

OptimizerOptions Adam(OptimizerKind kind, float lr, float wd = 0) {
  OptimizerOptions o;
  o.kind = kind;
  o.lr = lr;
  o.weight_decay = wd;
  return o;
}

TEST(Optimizer, PlainStepTouchesOnlyTheSupport) {
  Optimizer sgd(Sgd(0.5f), 4);
  std::vector<float> p{1, 1, 1, 1};
  sgd.Step(absl::MakeSpan(p), SparseVector{{1, 3}, {2, -4}}, 0);
  EXPECT_THAT(p, ElementsAre(1.0f, 0.0f, 1.0f, 3.0f));
}

TEST(Optimizer, MomentumAndWeightDecayFollowTorchSemantics) {
  // p = 1, g = 1, wd = 0.1, momentum 0.9, lr 0.1: d = 1.1; b = 1.1; p = 1 - 0.11 = 0.89.
  // Step 2 with g = 0: d = 0.089; b = 0.9*1.1 + 0.089 = 1.079; p = 0.89 - 0.1079 = 0.7821.
  Optimizer sgd(Sgd(0.1f, 0.9f, false, 0.1f), 2);
  std::vector<float> p{1, 1};
  sgd.Step(absl::MakeSpan(p), SparseVector{{0}, {1}}, 0);
  EXPECT_FLOAT_EQ(p[0], 0.89f);
  EXPECT_FLOAT_EQ(p[1], 1.0f - 0.1f * 0.1f);
  sgd.Step(absl::MakeSpan(p), SparseVector{}, 1);
  EXPECT_FLOAT_EQ(p[0], 0.7821f);
}

TEST(Optimizer, NesterovUsesTheLookAhead) {
  Optimizer sgd(Sgd(1.0f, 0.5f, true), 1);
  std::vector<float> p{0};
  sgd.StepDense(absl::MakeSpan(p), std::vector<float>{1}, 0);  // b = 1, d = 1 + 0.5 = 1.5
  EXPECT_FLOAT_EQ(p[0], -1.5f);
}

TEST(Optimizer, SparseAndDenseStepsAgreeBitForBit) {
  for (const OptimizerOptions& o :
       {Sgd(0.03f, 0.7f, false, 0.01f), Adam(OptimizerKind::kAdam, 0.01f, 0.1f),
        Adam(OptimizerKind::kAdamW, 0.01f, 0.1f)}) {
    Optimizer a(o, 5), b(o, 5);
    std::vector<float> pa{1, 2, 3, 4, 5}, pb = pa;
    for (int i = 0; i < 3; ++i) {
      a.Step(absl::MakeSpan(pa), SparseVector{{1, 4}, {0.5f, -0.25f}}, i);
      b.StepDense(absl::MakeSpan(pb), std::vector<float>{0, 0.5f, 0, 0, -0.25f}, i);
    }
    EXPECT_EQ(pa, pb) << OptimizerKindName(o.kind);
  }
}

TEST(Optimizer, AdamFirstStepMovesEachEntryByTheLearningRate) {
  // t = 1: m = (1 - b1) g, v = (1 - b2) g^2; the bias corrections cancel them, so the step is
  // lr * g / (|g| + eps): lr * sign(g) up to eps.
  Optimizer adam(Adam(OptimizerKind::kAdam, 0.1f), 3);
  std::vector<float> p{1, 1, 1};
  adam.StepDense(absl::MakeSpan(p), std::vector<float>{2, -0.5f, 0}, 0);
  EXPECT_NEAR(p[0], 0.9f, 1e-6);
  EXPECT_NEAR(p[1], 1.1f, 1e-6);
  EXPECT_EQ(p[2], 1.0f);  // m = 0: no move
  ASSERT_EQ(adam.state().size(), 6u);
  EXPECT_NEAR(adam.state()[0], 0.1f * 2, 1e-6);  // m
  EXPECT_NEAR(adam.state()[3], 0.001f * 4, 1e-7);  // v
}

TEST(Optimizer, AdamWDecaysTheWeightsApartFromTheGradient) {
  // AdamW: p = 1 * (1 - 0.1 * 0.5) = 0.95, then the Adam step of 0.1: 0.85. Adam's L2 adds
  // wd * p to g instead: with g = 2, g' = 2.5 and the first step is still lr * sign(g).
  Optimizer adamw(Adam(OptimizerKind::kAdamW, 0.1f, 0.5f), 1);
  Optimizer adam(Adam(OptimizerKind::kAdam, 0.1f, 0.5f), 1);
  std::vector<float> pw{1}, pa{1};
  adamw.StepDense(absl::MakeSpan(pw), std::vector<float>{2}, 0);
  adam.StepDense(absl::MakeSpan(pa), std::vector<float>{2}, 0);
  EXPECT_NEAR(pw[0], 0.85f, 1e-6);
  EXPECT_NEAR(pa[0], 0.9f, 1e-6);
  EXPECT_NEAR(adam.state()[0], 0.1f * 2.5f, 1e-6);
}

TEST(Optimizer, StateRoundTripsAndResumesBitForBit) {
  // A replica restored from another's state after round 4 continues exactly like it.
  const OptimizerOptions o = Adam(OptimizerKind::kAdam, 0.01f);
  Optimizer a(o, 4);
  std::vector<float> p{1, -1, 2, 0};
  auto grad = [](int r) { return std::vector<float>{0.1f * r, -0.2f, 0.3f, r % 2 ? 1.0f : 0.0f}; };
  for (int r = 0; r < 5; ++r) a.StepDense(absl::MakeSpan(p), grad(r), r);
  Optimizer b(o, 4);
  ASSERT_TRUE(b.SetState(a.state()).ok());
  std::vector<float> q = p;
  for (int r = 5; r < 9; ++r) {
    a.StepDense(absl::MakeSpan(p), grad(r), r);
    b.StepDense(absl::MakeSpan(q), grad(r), r);
  }
  EXPECT_EQ(p, q);
  EXPECT_THAT(std::string(b.SetState(std::vector<float>(3)).message()),
              HasSubstr("3 entries, expected 8"));
}

// The server splits the dry run and the step over its --threads: every kind of step gives the
// same bits with a pool of 1, 2 or 3 threads as without one, and the dry run names the same
// first non-finite entry, also when it lies in a later thread's range.
TEST(Optimizer, APoolGivesTheSameBitsAndTheSameFirstBadEntry) {
  const size_t d = 200003;  // large enough to be split; not a multiple of the split's unit
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> start(d);
  for (float& x : start) x = normal(rng);
  // A gradient on every 3rd entry: over 32768 entries, so plain SGD's update splits too.
  SparseVector grad;
  for (uint32_t j = 0; j < d; j += 3) {
    grad.indices.push_back(j);
    grad.values.push_back(normal(rng));
  }
  for (const OptimizerOptions& o :
       {Sgd(0.1f), Sgd(0.1f, 0.9f, true, 0.01f), Adam(OptimizerKind::kAdam, 0.01f, 0.01f),
        Adam(OptimizerKind::kAdamW, 0.01f, 0.01f)}) {
    Optimizer alone(o, d);
    std::vector<float> expected = start;
    for (uint64_t round = 0; round < 3; ++round) alone.Step(absl::MakeSpan(expected), grad, round);
    for (int threads : {1, 2, 3}) {
      TaskPool pool(threads);
      Optimizer split(o, d);
      std::vector<float> p = start;
      for (uint64_t round = 0; round < 3; ++round) {
        ASSERT_FALSE(split.FirstNonFinite(p, grad, round, &pool).has_value());
        split.Step(absl::MakeSpan(p), grad, round, &pool);
      }
      EXPECT_EQ(p, expected) << OptimizerKindName(o.kind) << ", " << threads << " threads";
      EXPECT_TRUE(std::equal(split.state().begin(), split.state().end(), alone.state().begin(),
                             alone.state().end()));
      // Two entries the step would overflow, both past the first third: the dry run names the
      // lower one, whatever the split.
      SparseVector bad = grad;
      bad.values[bad.nnz() - 10] = 3e38f / o.lr;
      bad.values[bad.nnz() / 2] = 3e38f / o.lr;
      std::vector<float> huge = p;
      huge[bad.indices[bad.nnz() - 10]] = -3e38f;
      huge[bad.indices[bad.nnz() / 2]] = -3e38f;
      const std::optional<size_t> first = split.FirstNonFinite(huge, bad, 3, &pool);
      const std::optional<size_t> first_alone = split.FirstNonFinite(huge, bad, 3);
      ASSERT_TRUE(first_alone.has_value()) << OptimizerKindName(o.kind);
      EXPECT_EQ(first, first_alone) << OptimizerKindName(o.kind) << ", " << threads << " threads";
    }
  }
}

TEST(LearningRate, WarmUpThenStepOrCosine) {
  OptimizerOptions o = Sgd(1.0f);
  o.warmup_rounds = 4;
  EXPECT_FLOAT_EQ(o.LearningRate(0), 0.25f);
  EXPECT_FLOAT_EQ(o.LearningRate(3), 1.0f);
  EXPECT_FLOAT_EQ(o.LearningRate(100), 1.0f);
  o.schedule = LrSchedule::kStep;
  o.step_rounds = 10;
  o.step_gamma = 0.5f;
  EXPECT_FLOAT_EQ(o.LearningRate(4), 1.0f);
  EXPECT_FLOAT_EQ(o.LearningRate(13), 1.0f);
  EXPECT_FLOAT_EQ(o.LearningRate(14), 0.5f);
  EXPECT_FLOAT_EQ(o.LearningRate(34), 0.125f);
  o.schedule = LrSchedule::kCosine;
  o.decay_rounds = 100;
  o.min_lr = 0.1f;
  EXPECT_FLOAT_EQ(o.LearningRate(4), 1.0f);
  EXPECT_FLOAT_EQ(o.LearningRate(54), 0.55f);  // half-way: the mean of lr and min_lr
  EXPECT_FLOAT_EQ(o.LearningRate(104), 0.1f);
  EXPECT_FLOAT_EQ(o.LearningRate(1000), 0.1f);
}

TEST(Optimizer, TheScheduleDrivesTheStep) {
  OptimizerOptions o = Sgd(1.0f);
  o.warmup_rounds = 2;
  Optimizer sgd(o, 1);
  std::vector<float> p{0};
  sgd.Step(absl::MakeSpan(p), SparseVector{{0}, {1}}, 0);  // lr 0.5
  EXPECT_FLOAT_EQ(p[0], -0.5f);
  sgd.Step(absl::MakeSpan(p), SparseVector{{0}, {1}}, 1);  // lr 1
  EXPECT_FLOAT_EQ(p[0], -1.5f);
}

TEST(OptimizerOptions, RejectsBadValues) {
  EXPECT_FALSE(Sgd(0.0f).Validate().ok());
  EXPECT_FALSE(Sgd(0.1f, 1.0f).Validate().ok());
  EXPECT_FALSE(Sgd(0.1f, 0.0f, true).Validate().ok());
  EXPECT_FALSE(Sgd(0.1f, 0.0f, false, -1.0f).Validate().ok());
  EXPECT_TRUE(Sgd(0.1f, 0.9f, true, 1e-4f).Validate().ok());
  OptimizerOptions adam = Adam(OptimizerKind::kAdam, 0.001f);
  EXPECT_TRUE(adam.Validate().ok());
  adam.momentum = 0.9f;
  EXPECT_THAT(std::string(adam.Validate().message()), HasSubstr("beta1 and beta2"));
  adam.momentum = 0;
  adam.beta2 = 1.0f;
  EXPECT_THAT(std::string(adam.Validate().message()), HasSubstr("beta2"));
  adam.beta2 = 0.999f;
  adam.eps = 0;
  EXPECT_THAT(std::string(adam.Validate().message()), HasSubstr("eps"));
  OptimizerOptions cosine = Sgd(0.1f);
  cosine.schedule = LrSchedule::kCosine;
  EXPECT_THAT(std::string(cosine.Validate().message()), HasSubstr("decay rounds"));
  OptimizerOptions step = Sgd(0.1f);
  step.schedule = LrSchedule::kStep;
  EXPECT_THAT(std::string(step.Validate().message()), HasSubstr("step rounds"));
  EXPECT_FALSE(ParseOptimizerKind("lamb").ok());
  EXPECT_EQ(*ParseOptimizerKind("adamw"), OptimizerKind::kAdamW);
  EXPECT_EQ(*ParseLrSchedule("cosine"), LrSchedule::kCosine);
}

}  // namespace
}  // namespace regtopk
