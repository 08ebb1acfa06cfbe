// ServerMetrics: the parameter server's Prometheus metrics, registered in one MetricsRegistry.
// Thread-safe (every member is an atomic metric owned by the registry).
#ifndef REGTOPK_SERVER_SERVER_METRICS_H_
#define REGTOPK_SERVER_SERVER_METRICS_H_

#include <map>
#include <string>

#include "common/metrics/registry.h"

namespace regtopk {

struct ServerMetrics {
  // Registers every metric in `registry` (borrowed; must outlive this).
  explicit ServerMetrics(MetricsRegistry* registry);

  // The counter for pushes rejected for `reason` (one of the reasons listed in the .cc).
  Counter* Rejected(const std::string& reason) const;

  Counter* rounds;
  Counter* abandoned_rounds;
  Counter* refused_rounds;  // the step would have made a parameter non-finite
  Counter* clipped_pushes;
  Counter* rollbacks;
  Counter* fresh_state_joins;
  Counter* checkpoints_committed;
  Counter* checkpoint_write_seconds;
  Gauge* last_committed_round;
  Histogram* round_seconds;  // from one round's close to the next's
  Counter* bytes_received;   // payload bytes: pushes and uploads
  Counter* bytes_sent;       // payload bytes: aggregates and pulls
  Counter* push_bytes;       // encoded pushes accepted
  Counter* push_dense_equivalent_bytes;
  Counter* aggregate_bytes_sent;
  Counter* aggregate_dense_equivalent_bytes;
  Gauge* upstream_compression;    // dense equivalent / pushed, cumulative
  Gauge* downstream_compression;  // dense equivalent / aggregate bytes sent, cumulative
  Counter* aggregate_seconds;
  Counter* optimizer_seconds;
  Counter* encode_seconds;
  Gauge* workers_joined;
  Gauge* current_round;

 private:
  std::map<std::string, Counter*> rejected_;
};

}  // namespace regtopk

#endif  // REGTOPK_SERVER_SERVER_METRICS_H_
