#include "common/metrics/registry.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace regtopk {

void Counter::Add(double v) {
  double current = value_.load(std::memory_order_relaxed);
  while (!value_.compare_exchange_weak(current, current + v, std::memory_order_relaxed)) {
  }
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double v) {
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  absl::MutexLock lock(&mu_);
  ++counts_[bucket];
  ++count_;
  sum_ += v;
}

Counter* MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                     const std::string& label) {
  absl::MutexLock lock(&mu_);
  Family& f = families_[name];
  f.help = help;
  f.type = "counter";
  f.counters.emplace_back(label, std::make_unique<Counter>());
  return f.counters.back().second.get();
}

Gauge* MetricsRegistry::AddGauge(const std::string& name, const std::string& help) {
  absl::MutexLock lock(&mu_);
  Family& f = families_[name];
  f.help = help;
  f.type = "gauge";
  f.gauge = std::make_unique<Gauge>();
  return f.gauge.get();
}

Histogram* MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<double> upper_bounds) {
  absl::MutexLock lock(&mu_);
  Family& f = families_[name];
  f.help = help;
  f.type = "histogram";
  f.histogram = std::make_unique<Histogram>(std::move(upper_bounds));
  return f.histogram.get();
}

namespace {

std::string Number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  return absl::StrFormat("%.17g", v);
}

std::string LabelText(const std::string& label) {
  if (label.empty()) return "";
  std::pair<std::string, std::string> kv = absl::StrSplit(label, absl::MaxSplits('=', 1));
  return absl::StrCat("{", kv.first, "=\"", kv.second, "\"}");
}

}  // namespace

std::string MetricsRegistry::Render() const {
  std::string out;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, f] : families_) {
    absl::StrAppend(&out, "# HELP ", name, " ", f.help, "\n# TYPE ", name, " ", f.type, "\n");
    for (const auto& [label, counter] : f.counters) {
      absl::StrAppend(&out, name, LabelText(label), " ", Number(counter->value()), "\n");
    }
    if (f.gauge) absl::StrAppend(&out, name, " ", Number(f.gauge->value()), "\n");
    if (f.histogram) {
      const Histogram& h = *f.histogram;
      absl::MutexLock hlock(&h.mu_);
      uint64_t cumulative = 0;
      for (size_t b = 0; b < h.bounds_.size(); ++b) {
        cumulative += h.counts_[b];
        absl::StrAppend(&out, name, "_bucket{le=\"", Number(h.bounds_[b]), "\"} ", cumulative,
                        "\n");
      }
      absl::StrAppend(&out, name, "_bucket{le=\"+Inf\"} ", h.count_, "\n", name, "_sum ",
                      Number(h.sum_), "\n", name, "_count ", h.count_, "\n");
    }
  }
  return out;
}

}  // namespace regtopk
