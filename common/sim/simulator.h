// Simulator: N virtual workers and one virtual server in one process, running exactly the
// sparsifier, aggregation and optimizer code the distributed system runs, without gRPC.
// Thread-compatible; RunSimulation is a blocking call.
//
// Precision: float32 everywhere the real system is float32 (parameters, gradients handed to the
// sparsifier, error buffers, aggregate, optimizer); problems accumulate their gradients in
// float64 before rounding to float32, and metrics are computed in float64.
#ifndef REGTOPK_COMMON_SIM_SIMULATOR_H_
#define REGTOPK_COMMON_SIM_SIMULATOR_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "common/optim/optimizer.h"
#include "common/sim/problem.h"
#include "common/sparse/sparsifier.h"

namespace regtopk {

struct SimulationOptions {
  Algorithm algorithm = Algorithm::kRegTopK;
  double density = 0.5;
  double mu = 1.0;
  int rounds = 150;
  OptimizerOptions optimizer;
  // Seeds every worker's sparsifier (worker n gets seed + n).
  uint64_t seed = 1;
  // Aggregation weights proportional to local sample counts instead of 1/N.
  bool weight_by_samples = false;
  // The authors' linear-regression safeguard: skip (do not apply) an aggregate whose squared
  // norm is at least step_guard times the last applied one's. 0 = off.
  double step_guard = 0;
};

struct RoundRecord {
  int round;        // 1-based
  double metric;    // problem->Metric() after this round's update
  size_t nnz_sent;  // entries sent by all workers together
  size_t nnz_aggregate;
  bool skipped = false;  // the step guard rejected this round's aggregate
};

// The step guard's decision: true if `squared_norm` must be rejected given the last applied
// one (`last_applied` < 0: none yet).
bool StepGuardRejects(double step_guard, double squared_norm, double last_applied);

// Runs `options.rounds` rounds of: every worker computes its gradient at the shared parameters,
// compresses it, the server aggregates and steps, every worker observes the aggregate.
// `on_round` (may be empty) is called after every round. Returns InvalidArgument for bad options
// and whatever a sparsifier reports (e.g. a non-finite gradient after divergence).
absl::StatusOr<std::vector<RoundRecord>> RunSimulation(
    const Problem& problem, const SimulationOptions& options,
    const std::function<void(const RoundRecord&)>& on_round);

// A plain reference implementation of the same loop in precision T (float or double): full
// stable sort for the selection, dense buffers, the DESIGN.md formulas written out. Supports
// kDense, kTopK and kRegTopK with uniform weights and plain SGD. With T = float it must produce
// exactly RunSimulation's trajectory (a test checks this); T = double is the precision study.
template <typename T>
absl::StatusOr<std::vector<RoundRecord>> RunReferenceSimulation(const Problem& problem,
                                                                const SimulationOptions& options);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_SIM_SIMULATOR_H_
