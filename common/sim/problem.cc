#include "common/sim/problem.h"

#include <cmath>
#include "common/random/splitmix64.h"

#include "absl/strings/str_cat.h"

namespace regtopk {
namespace {

// Cholesky solve of the (symmetric positive definite) normal equations, in float64.
std::vector<double> SolveSpd(std::vector<double> a, std::vector<double> b, size_t d) {
  for (size_t j = 0; j < d; ++j) {
    double diag = a[j * d + j];
    for (size_t l = 0; l < j; ++l) diag -= a[j * d + l] * a[j * d + l];
    diag = std::sqrt(diag);
    a[j * d + j] = diag;
    for (size_t i = j + 1; i < d; ++i) {
      double v = a[i * d + j];
      for (size_t l = 0; l < j; ++l) v -= a[i * d + l] * a[j * d + l];
      a[i * d + j] = v / diag;
    }
  }
  for (size_t i = 0; i < d; ++i) {  // L z = b
    for (size_t l = 0; l < i; ++l) b[i] -= a[i * d + l] * b[l];
    b[i] /= a[i * d + i];
  }
  for (size_t i = d; i-- > 0;) {  // L^T x = z
    for (size_t l = i + 1; l < d; ++l) b[i] -= a[l * d + i] * b[l];
    b[i] /= a[i * d + i];
  }
  return b;
}

class ToyProblem final : public Problem {
 public:
  size_t dim() const override { return 2; }
  int workers() const override { return 2; }
  size_t samples(int) const override { return 1; }
  void Gradient(int worker, absl::Span<const float> theta, absl::Span<float> grad) const override {
    double g[2];
    GradientImpl(worker, theta[0], theta[1], g);
    grad[0] = static_cast<float>(g[0]);
    grad[1] = static_cast<float>(g[1]);
  }
  void GradientF64(int worker, absl::Span<const double> theta,
                   absl::Span<double> grad) const override {
    GradientImpl(worker, theta[0], theta[1], grad.data());
  }
  std::string metric_name() const override { return "loss"; }
  double Metric(absl::Span<const float> theta) const override { return Loss(theta[0], theta[1]); }
  double MetricF64(absl::Span<const double> theta) const override {
    return Loss(theta[0], theta[1]);
  }
  std::vector<float> InitialTheta() const override { return {0.0f, 1.0f}; }

 private:
  static void GradientImpl(int worker, double t0, double t1, double* g) {
    const double x0 = worker == 0 ? 100.0 : -100.0, x1 = 1.0;
    const double margin = t0 * x0 + t1 * x1;          // y = 1
    const double s = 1.0 / (1.0 + std::exp(margin));  // sigmoid(-margin)
    g[0] = -s * x0;
    g[1] = -s * x1;
  }
  static double Loss(double t0, double t1) {
    double sum = 0;
    for (double x0 : {100.0, -100.0}) {
      const double margin = t0 * x0 + t1;
      sum += margin > 0 ? std::log1p(std::exp(-margin)) : -margin + std::log1p(std::exp(margin));
    }
    return sum / 2;
  }
};

class LinRegProblem final : public Problem {
 public:
  LinRegProblem(const LinRegOptions& o, LinRegData data)
      : o_(o),
        features_(std::move(data.features)),
        labels_(std::move(data.labels)),
        optimum_(std::move(data.optimum)),
        initial_(std::move(data.initial)) {}

  size_t dim() const override { return o_.dim; }
  int workers() const override { return o_.workers; }
  size_t samples(int) const override { return o_.samples_per_worker; }
  void Gradient(int worker, absl::Span<const float> theta, absl::Span<float> grad) const override {
    std::vector<double> t(theta.begin(), theta.end()), g(o_.dim);
    GradientF64(worker, t, absl::MakeSpan(g));
    for (size_t j = 0; j < o_.dim; ++j) grad[j] = static_cast<float>(g[j]);
  }
  void GradientF64(int worker, absl::Span<const double> theta,
                   absl::Span<double> grad) const override {
    const size_t d = o_.dim, m = o_.samples_per_worker;
    const std::vector<float>& a = features_[worker];
    const std::vector<float>& y = labels_[worker];
    std::fill(grad.begin(), grad.end(), 0.0);
    for (size_t i = 0; i < m; ++i) {
      const float* row = &a[i * d];
      double r = -static_cast<double>(y[i]);
      for (size_t j = 0; j < d; ++j) r += row[j] * theta[j];
      for (size_t j = 0; j < d; ++j) grad[j] += row[j] * r;
    }
    for (size_t j = 0; j < d; ++j) grad[j] = 2.0 * grad[j] / m;
  }
  std::string metric_name() const override { return "gap"; }
  double Metric(absl::Span<const float> theta) const override {
    std::vector<double> t(theta.begin(), theta.end());
    return MetricF64(t);
  }
  double MetricF64(absl::Span<const double> theta) const override {
    double gap = 0;
    for (size_t j = 0; j < o_.dim; ++j) {
      const double diff = theta[j] - optimum_[j];
      gap += diff * diff;
    }
    return gap;
  }
  std::vector<float> InitialTheta() const override { return initial_; }

 private:
  const LinRegOptions o_;
  std::vector<std::vector<float>> features_;  // per worker, m x d row-major
  std::vector<std::vector<float>> labels_;
  std::vector<double> optimum_;
  std::vector<float> initial_;
};

}  // namespace

std::unique_ptr<Problem> MakeToyProblem() { return std::make_unique<ToyProblem>(); }

absl::StatusOr<LinRegData> MakeLinRegData(const LinRegOptions& o) {
  if (o.workers <= 0 || o.dim == 0 || o.samples_per_worker == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("linear regression needs workers, dim and samples > 0; got ", o.workers, ", ",
                     o.dim, ", ", o.samples_per_worker));
  }
  LinRegData data;
  // The project's own samplers (common/random): the same data on any standard library.
  uint64_t rng = o.seed;
  auto normal = [](uint64_t& state) { return StandardNormal(state); };
  const size_t d = o.dim, m = o.samples_per_worker;
  data.features.resize(o.workers);
  data.labels.resize(o.workers);
  std::vector<double> ata(d * d, 0.0), aty(d, 0.0);
  for (int n = 0; n < o.workers; ++n) {
    const double mean = std::sqrt(o.model_mean_variance) * normal(rng);
    std::vector<double> truth(d);
    for (double& t : truth) t = mean + normal(rng);
    std::vector<float>& a = data.features[n];
    std::vector<float>& y = data.labels[n];
    a.resize(m * d);
    y.resize(m);
    for (size_t i = 0; i < m; ++i) {
      double dot = 0;
      for (size_t j = 0; j < d; ++j) {
        a[i * d + j] = static_cast<float>(normal(rng));
        dot += a[i * d + j] * truth[j];
      }
      y[i] = static_cast<float>(dot + std::sqrt(o.label_noise_variance) * normal(rng));
    }
    for (size_t i = 0; i < m; ++i) {
      const float* row = &a[i * d];
      for (size_t j = 0; j < d; ++j) {
        aty[j] += row[j] * static_cast<double>(y[i]);
        for (size_t l = 0; l < d; ++l) ata[j * d + l] += row[j] * static_cast<double>(row[l]);
      }
    }
  }
  data.optimum = SolveSpd(ata, aty, d);
  data.initial.resize(d);
  for (float& t : data.initial) t = static_cast<float>(-0.1 + 0.2 * UniformDouble(rng));
  return data;
}

absl::StatusOr<std::unique_ptr<Problem>> MakeLinRegProblem(const LinRegOptions& options) {
  auto data = MakeLinRegData(options);
  if (!data.ok()) return data.status();
  return std::unique_ptr<Problem>(new LinRegProblem(options, std::move(*data)));
}

}  // namespace regtopk
