#include "common/optim/sgd.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace regtopk {
namespace {

using ::testing::ElementsAre;

TEST(Sgd, PlainStepTouchesOnlyTheSupport) {
  Sgd sgd(SgdOptions{0.5f}, 4);
  std::vector<float> p{1, 1, 1, 1};
  sgd.Step(absl::MakeSpan(p), SparseVector{{1, 3}, {2, -4}});
  EXPECT_THAT(p, ElementsAre(1.0f, 0.0f, 1.0f, 3.0f));
}

TEST(Sgd, MomentumAndWeightDecayFollowTorchSemantics) {
  // p = 1, g = 1, wd = 0.1, momentum 0.9, lr 0.1: d = 1.1; b = 1.1; p = 1 - 0.11 = 0.89.
  // Step 2 with g = 0: d = 0.089; b = 0.9*1.1 + 0.089 = 1.079; p = 0.89 - 0.1079 = 0.7821.
  SgdOptions o;
  o.lr = 0.1f;
  o.momentum = 0.9f;
  o.weight_decay = 0.1f;
  Sgd sgd(o, 2);
  std::vector<float> p{1, 1};
  sgd.Step(absl::MakeSpan(p), SparseVector{{0}, {1}});
  EXPECT_FLOAT_EQ(p[0], 0.89f);
  EXPECT_FLOAT_EQ(p[1], 1.0f - 0.1f * 0.1f);
  sgd.Step(absl::MakeSpan(p), SparseVector{});
  EXPECT_FLOAT_EQ(p[0], 0.7821f);
}

TEST(Sgd, NesterovUsesTheLookAhead) {
  SgdOptions o;
  o.lr = 1.0f;
  o.momentum = 0.5f;
  o.nesterov = true;
  Sgd sgd(o, 1);
  std::vector<float> p{0};
  sgd.StepDense(absl::MakeSpan(p), std::vector<float>{1});  // b = 1, d = 1 + 0.5 = 1.5
  EXPECT_FLOAT_EQ(p[0], -1.5f);
}

TEST(Sgd, SparseAndDenseStepsAgreeBitForBit) {
  SgdOptions o;
  o.lr = 0.03f;
  o.momentum = 0.7f;
  o.weight_decay = 0.01f;
  Sgd a(o, 5), b(o, 5);
  std::vector<float> pa{1, 2, 3, 4, 5}, pb = pa;
  for (int i = 0; i < 3; ++i) {
    a.Step(absl::MakeSpan(pa), SparseVector{{1, 4}, {0.5f, -0.25f}});
    b.StepDense(absl::MakeSpan(pb), std::vector<float>{0, 0.5f, 0, 0, -0.25f});
  }
  EXPECT_EQ(pa, pb);
}

TEST(SgdOptions, RejectsBadValues) {
  EXPECT_FALSE((SgdOptions{0.0f}).Validate().ok());
  EXPECT_FALSE((SgdOptions{0.1f, 1.0f}).Validate().ok());
  EXPECT_FALSE((SgdOptions{0.1f, 0.0f, true}).Validate().ok());
  EXPECT_FALSE((SgdOptions{0.1f, 0.0f, false, -1.0f}).Validate().ok());
  EXPECT_TRUE((SgdOptions{0.1f, 0.9f, true, 1e-4f}).Validate().ok());
}

}  // namespace
}  // namespace regtopk
