#include "common/sim/simulator.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "common/sparse/aggregate.h"
#include "common/status/status_macros.h"

namespace regtopk {

absl::StatusOr<std::vector<RoundRecord>> RunSimulation(
    const Problem& problem, const SimulationOptions& options,
    const std::function<void(const RoundRecord&)>& on_round) {
  if (options.rounds < 0) {
    return absl::InvalidArgumentError(absl::StrCat("rounds must be >= 0, got ", options.rounds));
  }
  REGTOPK_RETURN_IF_ERROR(options.sgd.Validate());
  const int n_workers = problem.workers();
  const size_t d = problem.dim();

  std::vector<float> weights(n_workers);
  size_t total_samples = 0;
  for (int n = 0; n < n_workers; ++n) total_samples += problem.samples(n);
  for (int n = 0; n < n_workers; ++n) {
    weights[n] = options.weight_by_samples
                     ? static_cast<float>(static_cast<double>(problem.samples(n)) / total_samples)
                     : 1.0f / static_cast<float>(n_workers);
  }

  std::vector<std::unique_ptr<Sparsifier>> sparsifiers;
  for (int n = 0; n < n_workers; ++n) {
    SparsifierOptions so;
    so.algorithm = options.algorithm;
    so.dim = d;
    so.density = options.density;
    so.mu = options.mu;
    so.weight = weights[n];
    so.seed = options.seed + n;
    REGTOPK_ASSIGN_OR_RETURN(auto s, CreateSparsifier(so));
    sparsifiers.push_back(std::move(s));
  }

  std::vector<float> theta = problem.InitialTheta();
  Sgd sgd(options.sgd, d);
  std::vector<float> grad(d);
  std::vector<SparseVector> sent(n_workers);
  std::vector<SparseView> views(n_workers);
  SparseVector aggregate;
  std::vector<RoundRecord> records;
  records.reserve(options.rounds);
  for (int round = 1; round <= options.rounds; ++round) {
    size_t nnz_sent = 0;
    for (int n = 0; n < n_workers; ++n) {
      problem.Gradient(n, theta, absl::MakeSpan(grad));
      absl::Status s = sparsifiers[n]->Compress(grad, &sent[n]);
      if (!s.ok()) {
        return absl::Status(s.code(), absl::StrCat("round ", round, ", worker ", n, ": ",
                                                   s.message()));
      }
      views[n] = sent[n];
      nnz_sent += sent[n].nnz();
    }
    AggregateSparse(views, weights, &aggregate);
    sgd.Step(absl::MakeSpan(theta), aggregate);
    for (int n = 0; n < n_workers; ++n) {
      REGTOPK_RETURN_IF_ERROR(sparsifiers[n]->ObserveAggregate(aggregate));
    }
    RoundRecord record{round, problem.Metric(theta), nnz_sent, aggregate.nnz()};
    records.push_back(record);
    if (on_round) on_round(record);
  }
  return records;
}

}  // namespace regtopk
