#include "server/server_metrics.h"

#include "absl/strings/str_cat.h"

namespace regtopk {

namespace {
constexpr const char* kReasons[] = {"unknown_worker", "wrong_round", "duplicate", "not_ready",
                                    "finished",       "malformed",   "oversize",  "shutting_down",
                                    "job_failed",     "cancelled",   "unauthenticated", "max_abs_value",
                                    "too_many_streams"};
}  // namespace

ServerMetrics::ServerMetrics(MetricsRegistry* r)
    : rounds(r->AddCounter("regtopk_rounds_total", "Rounds closed.")),
      abandoned_rounds(r->AddCounter("regtopk_abandoned_rounds_total",
                                     "Rounds abandoned because a worker never pushed in time.")),
      refused_rounds(r->AddCounter("regtopk_refused_rounds_total",
                                   "Rounds refused because their step would have made a "
                                   "parameter non-finite (nothing applied; the job stops).")),
      clipped_pushes(r->AddCounter("regtopk_clipped_pushes_total",
                                   "Pushes scaled down to --clip-norm.")),
      rollbacks(r->AddCounter("regtopk_rollbacks_total",
                              "Times the job was rolled back to a committed checkpoint.")),
      fresh_state_joins(r->AddCounter("regtopk_fresh_state_joins_total",
                                      "Restarted workers that joined with fresh state (the run is "
                                      "no longer bit-identical).")),
      checkpoints_committed(
          r->AddCounter("regtopk_checkpoints_committed_total", "Checkpoints committed.")),
      checkpoint_write_seconds(r->AddCounter("regtopk_checkpoint_write_seconds_total",
                                             "Time spent writing checkpoints (background).")),
      last_committed_round(
          r->AddGauge("regtopk_last_committed_round", "Round of the newest committed checkpoint.")),
      round_seconds(r->AddHistogram(
          "regtopk_round_duration_seconds", "Wall time from one round's close to the next's.",
          {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30})),
      bytes_received(r->AddCounter("regtopk_received_bytes_total",
                                   "Payload bytes received (pushes and parameter uploads).")),
      bytes_sent(r->AddCounter("regtopk_sent_bytes_total",
                               "Payload bytes sent (aggregates and parameter pulls).")),
      push_bytes(r->AddCounter("regtopk_push_bytes_total", "Encoded bytes of accepted pushes.")),
      push_dense_equivalent_bytes(r->AddCounter(
          "regtopk_push_dense_equivalent_bytes_total",
          "Bytes the accepted pushes would have taken dense (4 bytes per parameter).")),
      aggregate_bytes_sent(r->AddCounter("regtopk_aggregate_sent_bytes_total",
                                         "Encoded aggregate bytes sent to workers.")),
      aggregate_dense_equivalent_bytes(
          r->AddCounter("regtopk_aggregate_dense_equivalent_bytes_total",
                        "Bytes the aggregates sent would have taken dense.")),
      upstream_compression(r->AddGauge("regtopk_upstream_compression_ratio",
                                       "Dense-equivalent bytes over pushed bytes, cumulative.")),
      downstream_compression(
          r->AddGauge("regtopk_downstream_compression_ratio",
                      "Dense-equivalent bytes over aggregate bytes sent, cumulative.")),
      aggregate_seconds(
          r->AddCounter("regtopk_aggregate_seconds_total", "Time spent aggregating pushes.")),
      optimizer_seconds(
          r->AddCounter("regtopk_optimizer_seconds_total", "Time spent in the optimizer step.")),
      encode_seconds(
          r->AddCounter("regtopk_encode_seconds_total", "Time spent encoding aggregates.")),
      workers_joined(r->AddGauge("regtopk_workers_joined", "Workers that have joined the job.")),
      current_round(r->AddGauge("regtopk_round", "The round being collected.")) {
  for (const char* reason : kReasons) {
    rejected_[reason] =
        r->AddCounter("regtopk_rejected_pushes_total", "Pushes rejected, by reason.",
                      absl::StrCat("reason=", reason));
  }
}

Counter* ServerMetrics::Rejected(const std::string& reason) const {
  auto it = rejected_.find(reason);
  return it == rejected_.end() ? rejected_.at("malformed") : it->second;
}

}  // namespace regtopk
