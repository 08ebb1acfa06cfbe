// Problem: a synthetic distributed learning problem for the in-process simulator (the paper's
// toy logistic regression and linear regression). Immutable after construction: thread-safe.
#ifndef REGTOPK_COMMON_SIM_PROBLEM_H_
#define REGTOPK_COMMON_SIM_PROBLEM_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace regtopk {

class Problem {
 public:
  virtual ~Problem() = default;

  virtual size_t dim() const = 0;
  virtual int workers() const = 0;
  // Number of local samples of `worker` (for sample-proportional weights).
  virtual size_t samples(int worker) const = 0;
  // Writes worker `worker`'s full-batch gradient at `theta` into `grad` (both length dim()).
  virtual void Gradient(int worker, absl::Span<const float> theta,
                        absl::Span<float> grad) const = 0;
  // The same gradient with float64 parameters and result (for the precision study).
  virtual void GradientF64(int worker, absl::Span<const double> theta,
                           absl::Span<double> grad) const = 0;
  // The per-round metric: "loss" (toy) or "gap" = ||theta - theta*||^2 (linreg).
  virtual std::string metric_name() const = 0;
  virtual double Metric(absl::Span<const float> theta) const = 0;
  virtual double MetricF64(absl::Span<const double> theta) const = 0;
  virtual std::vector<float> InitialTheta() const = 0;
};

// The paper's toy: 2 workers, logistic regression without bias, x1 = [100, 1], x2 = [-100, 1],
// y1 = y2 = 1, theta0 = [0, 1]. Metric: mean cross-entropy of the two samples.
std::unique_ptr<Problem> MakeToyProblem();

struct LinRegOptions {
  int workers = 20;
  size_t dim = 100;
  size_t samples_per_worker = 500;
  double model_mean_variance = 5.0;  // m_n ~ N(0, 5)
  double label_noise_variance = 0.5;
  uint64_t seed = 1;
};

// The generated data of the linear-regression problem, shared with the real workers so that
// both train on exactly the same numbers.
struct LinRegData {
  std::vector<std::vector<float>> features;  // per worker, samples x dim, row-major
  std::vector<std::vector<float>> labels;    // per worker
  std::vector<double> optimum;               // pooled least-squares solution theta*
  std::vector<float> initial;                // uniform(-0.1, 0.1)
};
// InvalidArgument for non-positive sizes.
absl::StatusOr<LinRegData> MakeLinRegData(const LinRegOptions& options);

// The paper's linear regression: worker n draws m_n ~ N(0, 5), its own true model
// x_n = m_n * 1 + N(0, I), features N(0, 1), labels A_n x_n + N(0, 0.5). Gradient of the
// worker's mean squared error (2/m) A^T (A theta - y), accumulated in float64. theta* is the
// pooled least-squares solution (float64 normal equations). Initial theta: uniform(-0.1, 0.1).
// InvalidArgument for non-positive sizes.
absl::StatusOr<std::unique_ptr<Problem>> MakeLinRegProblem(const LinRegOptions& options);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_SIM_PROBLEM_H_
