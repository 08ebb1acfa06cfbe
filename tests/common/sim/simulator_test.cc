#include "common/sim/simulator.h"

#include <cmath>

#include "gtest/gtest.h"

namespace regtopk {
namespace {

SimulationOptions ToyOptions(Algorithm algorithm) {
  SimulationOptions o;
  o.algorithm = algorithm;
  o.density = 0.5;
  o.mu = 1.0;
  o.rounds = 150;
  o.sgd.lr = 0.9f;
  return o;
}

TEST(Simulator, ToyTopKStallsBecauseThePicksCancel) {
  auto problem = MakeToyProblem();
  auto records = RunSimulation(*problem, ToyOptions(Algorithm::kTopK), nullptr);
  ASSERT_TRUE(records.ok()) << records.status();
  for (int r = 0; r < 99; ++r) EXPECT_NEAR((*records)[r].metric, 0.3133, 1e-3) << r;
}

TEST(Simulator, ToyRegTopKConverges) {
  auto problem = MakeToyProblem();
  auto records = RunSimulation(*problem, ToyOptions(Algorithm::kRegTopK), nullptr);
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_LT(records->back().metric, 0.01);
}

TEST(Simulator, ToyDenseIsCentralizedGradientDescent) {
  auto problem = MakeToyProblem();
  auto records = RunSimulation(*problem, ToyOptions(Algorithm::kDense), nullptr);
  ASSERT_TRUE(records.ok());
  EXPECT_LT(records->back().metric, 0.01);
}

TEST(Simulator, LinRegRegTopKBeatsTopKAtDensity06) {
  LinRegOptions lo;
  auto problem = *MakeLinRegProblem(lo);
  SimulationOptions o;
  o.density = 0.6;
  o.mu = 4.0;
  o.rounds = 600;
  o.sgd.lr = 0.01f;
  o.algorithm = Algorithm::kRegTopK;
  auto reg = RunSimulation(*problem, o, nullptr);
  o.algorithm = Algorithm::kTopK;
  auto top = RunSimulation(*problem, o, nullptr);
  ASSERT_TRUE(reg.ok() && top.ok());
  EXPECT_LT(std::log10(reg->back().metric), -4.0);
  EXPECT_GT(std::log10(top->back().metric), -4.0);
}

TEST(Simulator, IsDeterministicForASeed) {
  auto problem = *MakeLinRegProblem(LinRegOptions{});
  SimulationOptions o;
  o.density = 0.3;
  o.rounds = 50;
  o.algorithm = Algorithm::kRandK;
  auto a = RunSimulation(*problem, o, nullptr);
  auto b = RunSimulation(*problem, o, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t i = 0; i < a->size(); ++i) EXPECT_EQ((*a)[i].metric, (*b)[i].metric);
}

TEST(Simulator, DivergenceIsReportedNotSent) {
  auto problem = *MakeLinRegProblem(LinRegOptions{});
  SimulationOptions o;
  o.algorithm = Algorithm::kDense;
  o.sgd.lr = 5.0f;  // far beyond stability: the gradient overflows float32
  o.rounds = 500;
  auto r = RunSimulation(*problem, o, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace regtopk
