// MetricsRegistry: counters, gauges and histograms rendered in the Prometheus text exposition
// format (version 0.0.4). Thread-safe: metrics are updated from any thread; Render() takes a
// consistent-enough snapshot (each value is read atomically, not the whole set).
#ifndef REGTOPK_COMMON_METRICS_REGISTRY_H_
#define REGTOPK_COMMON_METRICS_REGISTRY_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace regtopk {

// A monotonically increasing value (Prometheus counter). Lock-free.
class Counter {
 public:
  void Add(double v = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down (Prometheus gauge). Lock-free.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  // Sets numerator / denominator; leaves the value alone while the denominator is 0.
  void SetRatio(const Counter& numerator, const Counter& denominator) {
    if (denominator.value() != 0) Set(numerator.value() / denominator.value());
  }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into fixed upper bounds (Prometheus histogram).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double v);

 private:
  friend class MetricsRegistry;
  const std::vector<double> bounds_;
  mutable absl::Mutex mu_;
  std::vector<uint64_t> counts_ ABSL_GUARDED_BY(mu_);  // per bucket, not cumulative
  uint64_t count_ ABSL_GUARDED_BY(mu_) = 0;
  double sum_ ABSL_GUARDED_BY(mu_) = 0;
};

class MetricsRegistry {
 public:
  // Each call registers a new metric (or a new label value of a family) and returns a pointer
  // owned by the registry, valid for its lifetime. `name` must match [a-zA-Z_:][a-zA-Z0-9_:]*;
  // `label` is "key=value" or empty.
  Counter* AddCounter(const std::string& name, const std::string& help,
                      const std::string& label = "");
  Gauge* AddGauge(const std::string& name, const std::string& help);
  Histogram* AddHistogram(const std::string& name, const std::string& help,
                          std::vector<double> upper_bounds);

  // The whole registry in the Prometheus text format.
  std::string Render() const;

 private:
  struct Family {
    std::string help, type;
    std::vector<std::pair<std::string, std::unique_ptr<Counter>>> counters;  // label -> counter
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  mutable absl::Mutex mu_;
  std::map<std::string, Family> families_ ABSL_GUARDED_BY(mu_);
};

}  // namespace regtopk

#endif  // REGTOPK_COMMON_METRICS_REGISTRY_H_
