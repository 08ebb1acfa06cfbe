#include "common/sim/simulator.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/sparse/aggregate.h"
#include "common/status/status_macros.h"

namespace regtopk {

bool StepGuardRejects(double step_guard, double squared_norm, double last_applied) {
  return step_guard > 0 && last_applied >= 0 && squared_norm >= step_guard * last_applied;
}

absl::StatusOr<std::vector<RoundRecord>> RunSimulation(
    const Problem& problem, const SimulationOptions& options,
    const std::function<void(const RoundRecord&)>& on_round) {
  if (options.rounds < 0) {
    return absl::InvalidArgumentError(absl::StrCat("rounds must be >= 0, got ", options.rounds));
  }
  REGTOPK_RETURN_IF_ERROR(options.optimizer.Validate());
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
  Optimizer sgd(options.optimizer, d);
  std::vector<float> grad(d);
  std::vector<SparseVector> sent(n_workers);
  std::vector<SparseView> views(n_workers);
  SparseVector aggregate;
  double last_applied = -1;
  std::vector<RoundRecord> records;
  records.reserve(options.rounds);
  for (int round = 1; round <= options.rounds; ++round) {
    size_t nnz_sent = 0;
    for (int n = 0; n < n_workers; ++n) {
      problem.Gradient(n, theta, absl::MakeSpan(grad));
      absl::Status s = sparsifiers[n]->Compress(grad, &sent[n]);
      if (!s.ok()) {
        return absl::Status(s.code(),
                            absl::StrCat("round ", round, ", worker ", n, ": ", s.message()));
      }
      views[n] = sent[n];
      nnz_sent += sent[n].nnz();
    }
    AggregateSparse(views, weights, &aggregate);
    double squared_norm = 0;
    for (float v : aggregate.values) squared_norm += static_cast<double>(v) * v;
    const bool skipped = StepGuardRejects(options.step_guard, squared_norm, last_applied);
    if (!skipped) {
      sgd.Step(absl::MakeSpan(theta), aggregate, round - 1);
      last_applied = squared_norm;
    }
    for (int n = 0; n < n_workers; ++n) {
      REGTOPK_RETURN_IF_ERROR(sparsifiers[n]->ObserveAggregate(aggregate));
    }
    RoundRecord record{round, problem.Metric(theta), nnz_sent, aggregate.nnz(), skipped};
    records.push_back(record);
    if (on_round) on_round(record);
  }
  return records;
}

template <typename T>
absl::StatusOr<std::vector<RoundRecord>> RunReferenceSimulation(const Problem& problem,
                                                                const SimulationOptions& options) {
  if (options.algorithm == Algorithm::kRandK || options.weight_by_samples ||
      !options.optimizer.IsSparseFriendly()) {
    return absl::InvalidArgumentError(
        "the reference simulation supports dense, topk and regtopk with uniform weights and "
        "plain SGD");
  }
  const int n_workers = problem.workers();
  const size_t d = problem.dim();
  const bool dense = options.algorithm == Algorithm::kDense;
  const bool regularised = options.algorithm == Algorithm::kRegTopK;
  const size_t k = EntriesPerRound(options.algorithm, options.density, d);
  const T w = T(1) / static_cast<T>(n_workers);
  const T mu = static_cast<T>(options.mu);
  const T lr = static_cast<T>(options.optimizer.lr);
  const T no_evidence = static_cast<T>(std::tanh(std::fabs(1.0 + kRegTopKQ) / options.mu));

  std::vector<T> theta(d);
  {
    const std::vector<float> init = problem.InitialTheta();
    for (size_t j = 0; j < d; ++j) theta[j] = init[j];
  }
  // Per worker: error e, last mask, last sent values v_prev, last aggregate (dense).
  std::vector<std::vector<T>> error(n_workers, std::vector<T>(d, 0));
  std::vector<std::vector<bool>> mask(n_workers, std::vector<bool>(d, false));
  std::vector<std::vector<T>> sent_prev(n_workers, std::vector<T>(d, 0));
  std::vector<T> agg_prev(d, 0), agg(d), grad(d), a(d), score(d);
  std::vector<bool> touched(d);
  std::vector<float> gradf(d);
  std::vector<double> gradd(d), thetad(d);
  std::vector<uint32_t> order(d);
  double last_applied = -1;
  std::vector<RoundRecord> records;
  for (int round = 1; round <= options.rounds; ++round) {
    std::fill(agg.begin(), agg.end(), T(0));
    std::fill(touched.begin(), touched.end(), false);
    size_t nnz_sent = 0;
    for (int n = 0; n < n_workers; ++n) {
      if constexpr (std::is_same_v<T, float>) {
        problem.Gradient(n, theta, absl::MakeSpan(gradf));
        for (size_t j = 0; j < d; ++j) grad[j] = gradf[j];
      } else {
        problem.GradientF64(n, theta, absl::MakeSpan(gradd));
        for (size_t j = 0; j < d; ++j) grad[j] = gradd[j];
      }
      std::vector<uint32_t> chosen;
      if (dense) {
        for (size_t j = 0; j < d; ++j) a[j] = grad[j];
        chosen.resize(d);
        std::iota(chosen.begin(), chosen.end(), 0u);
      } else {
        for (size_t j = 0; j < d; ++j) {
          a[j] = grad[j] + error[n][j];
          T s = std::fabs(a[j]) * no_evidence;
          if (!regularised) {
            s = std::fabs(a[j]);
          } else if (mask[n][j] && w * sent_prev[n][j] != T(0)) {
            const T share = w * sent_prev[n][j];
            const T delta = (agg_prev[j] - share) / share;
            s = std::fabs(a[j]) * std::tanh(std::fabs(T(1) + delta) / mu);
          }
          score[j] = s;
        }
        std::iota(order.begin(), order.end(), 0u);
        std::stable_sort(order.begin(), order.end(),
                         [&](uint32_t x, uint32_t y) { return score[x] > score[y]; });
        chosen.assign(order.begin(), order.begin() + k);
        std::sort(chosen.begin(), chosen.end());
        std::fill(mask[n].begin(), mask[n].end(), false);
        std::fill(sent_prev[n].begin(), sent_prev[n].end(), T(0));
        error[n] = a;
        for (uint32_t j : chosen) {
          mask[n][j] = true;
          sent_prev[n][j] = a[j];
          error[n][j] = 0;
        }
      }
      for (uint32_t j : chosen) {
        agg[j] = touched[j] ? agg[j] + w * a[j] : w * a[j];
        touched[j] = true;
      }
      nnz_sent += chosen.size();
    }
    double squared_norm = 0;
    size_t nnz = 0;
    for (size_t j = 0; j < d; ++j) {
      squared_norm += static_cast<double>(agg[j]) * agg[j];
      nnz += touched[j];
    }
    const bool skipped = StepGuardRejects(options.step_guard, squared_norm, last_applied);
    if (!skipped) {
      for (size_t j = 0; j < d; ++j) {
        if (touched[j]) theta[j] = theta[j] - lr * agg[j];
      }
      last_applied = squared_norm;
    }
    agg_prev = agg;
    double metric;
    if constexpr (std::is_same_v<T, float>) {
      metric = problem.Metric(theta);
    } else {
      metric = problem.MetricF64(theta);
    }
    records.push_back(RoundRecord{round, metric, nnz_sent, nnz, skipped});
  }
  return records;
}

template absl::StatusOr<std::vector<RoundRecord>> RunReferenceSimulation<float>(
    const Problem&, const SimulationOptions&);
template absl::StatusOr<std::vector<RoundRecord>> RunReferenceSimulation<double>(
    const Problem&, const SimulationOptions&);

}  // namespace regtopk
