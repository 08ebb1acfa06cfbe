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
  o.optimizer.lr = 0.9f;
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
  o.optimizer.lr = 0.01f;
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

TEST(Simulator, MatchesThePlainReferenceImplementationBitForBit) {
  // The fast selection, the sparse aggregation and the override scoring against a full stable
  // sort over dense float32 buffers with the DESIGN.md formulas written out.
  auto linreg = *MakeLinRegProblem(LinRegOptions{});
  auto toy = MakeToyProblem();
  for (Algorithm algorithm : {Algorithm::kRegTopK, Algorithm::kTopK, Algorithm::kDense}) {
    for (const Problem* problem : {linreg.get(), toy.get()}) {
      SimulationOptions o;
      o.algorithm = algorithm;
      o.density = problem == toy.get() ? 0.5 : 0.55;
      o.mu = problem == toy.get() ? 1.0 : 4.0;
      o.rounds = problem == toy.get() ? 150 : 300;
      o.optimizer.lr = problem == toy.get() ? 0.9f : 0.01f;
      auto fast = RunSimulation(*problem, o, nullptr);
      auto reference = RunReferenceSimulation<float>(*problem, o);
      ASSERT_TRUE(fast.ok() && reference.ok());
      ASSERT_EQ(fast->size(), reference->size());
      for (size_t i = 0; i < fast->size(); ++i) {
        ASSERT_EQ((*fast)[i].metric, (*reference)[i].metric)
            << AlgorithmName(algorithm) << " round " << i + 1;
        ASSERT_EQ((*fast)[i].nnz_aggregate, (*reference)[i].nnz_aggregate);
      }
    }
  }
}

TEST(Simulator, StepGuardSkipsOversizedAggregates) {
  EXPECT_FALSE(StepGuardRejects(100, 1e9, -1));  // nothing applied yet
  EXPECT_TRUE(StepGuardRejects(100, 100, 1));
  EXPECT_FALSE(StepGuardRejects(100, 99, 1));
  EXPECT_FALSE(StepGuardRejects(0, 1e9, 1));  // off
}

TEST(Simulator, DivergenceIsReportedNotSent) {
  auto problem = *MakeLinRegProblem(LinRegOptions{});
  SimulationOptions o;
  o.algorithm = Algorithm::kDense;
  o.optimizer.lr = 5.0f;  // far beyond stability: the gradient overflows float32
  o.rounds = 500;
  auto r = RunSimulation(*problem, o, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace regtopk
