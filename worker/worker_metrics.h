// WorkerMetrics: one worker's Prometheus metrics, registered in a MetricsRegistry and updated
// once per round. Thread-safe (every member is an atomic metric owned by the registry).
#ifndef REGTOPK_WORKER_WORKER_METRICS_H_
#define REGTOPK_WORKER_WORKER_METRICS_H_

#include <cstddef>

#include "common/metrics/registry.h"
#include "worker/worker_session.h"

namespace regtopk {

struct WorkerMetrics {
  // Registers every metric in `registry` (borrowed; must outlive this).
  explicit WorkerMetrics(MetricsRegistry* registry);

  // Records one round: the session's step, the local compute time, the batch loss, for a
  // model of `dim` parameters.
  void RecordRound(const StepStats& stats, double compute_seconds, double train_loss, size_t dim);
  void RecordAccuracy(double accuracy) { test_accuracy->Set(accuracy); }

  Counter* rounds;
  Counter* pushed_bytes;
  Counter* received_bytes;
  Counter* dense_equivalent_bytes;
  Gauge* upstream_compression;
  Counter* compute_seconds;
  Counter* sparsify_seconds;
  Counter* communicate_seconds;
  Counter* wait_seconds;
  Counter* apply_seconds;
  Gauge* train_loss;
  Gauge* test_accuracy;
  // The mask diagnostic (Top-k and RegTop-k): picks plain Top-k would not have made, and Top-k
  // picks that repeat last round's, as counts (rate() of one over picks gives the fraction over
  // a window) and as the last round's fractions.
  Counter* picks;
  Counter* not_topk_picks;
  Counter* topk_repeat_picks;
  Gauge* not_topk_fraction;
  Gauge* topk_repeat_fraction;
};

}  // namespace regtopk

#endif  // REGTOPK_WORKER_WORKER_METRICS_H_
