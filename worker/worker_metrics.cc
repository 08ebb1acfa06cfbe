#include "worker/worker_metrics.h"

namespace regtopk {

WorkerMetrics::WorkerMetrics(MetricsRegistry* r)
    : rounds(r->AddCounter("regtopk_worker_rounds_total", "Rounds completed.")),
      pushed_bytes(
          r->AddCounter("regtopk_worker_pushed_bytes_total", "Encoded gradient bytes pushed.")),
      received_bytes(r->AddCounter("regtopk_worker_received_bytes_total",
                                   "Encoded aggregate bytes received.")),
      dense_equivalent_bytes(r->AddCounter("regtopk_worker_dense_equivalent_bytes_total",
                                           "Bytes the pushes would have taken dense.")),
      upstream_compression(r->AddGauge("regtopk_worker_upstream_compression_ratio",
                                       "Dense-equivalent bytes over pushed bytes, cumulative.")),
      compute_seconds(r->AddCounter("regtopk_worker_compute_seconds_total",
                                    "Forward, backward and parameter copies.")),
      sparsify_seconds(r->AddCounter("regtopk_worker_sparsify_seconds_total",
                                     "Selection (sparsification) and encoding.")),
      communicate_seconds(r->AddCounter("regtopk_worker_communicate_seconds_total",
                                        "From sending the push to holding the aggregate.")),
      wait_seconds(r->AddCounter("regtopk_worker_wait_seconds_total",
                                 "Part of the communicate time the server held the push for "
                                 "slower workers.")),
      apply_seconds(r->AddCounter("regtopk_worker_apply_seconds_total",
                                  "Decoding and applying the aggregate.")),
      train_loss(r->AddGauge("regtopk_worker_train_loss", "Loss of the last local batch.")),
      test_accuracy(
          r->AddGauge("regtopk_worker_test_accuracy", "Test accuracy at the last evaluation.")),
      picks(r->AddCounter("regtopk_worker_mask_picks_total",
                          "Entries picked in rounds with a mask diagnostic (Top-k, RegTop-k).")),
      not_topk_picks(r->AddCounter("regtopk_worker_not_topk_picks_total",
                                   "Picks plain Top-k would not have made: RegTop-k at work.")),
      topk_repeat_picks(r->AddCounter("regtopk_worker_topk_repeat_picks_total",
                                      "Plain Top-k's picks that were also sent the round before: "
                                      "the only picks RegTop-k can change.")),
      not_topk_fraction(r->AddGauge("regtopk_worker_not_topk_fraction",
                                    "Last round: picks plain Top-k would not have made, over k.")),
      topk_repeat_fraction(r->AddGauge("regtopk_worker_topk_repeat_fraction",
                                       "Last round: Top-k's picks repeating last round's, over "
                                       "k.")) {}

void WorkerMetrics::RecordRound(const StepStats& stats, double compute, double loss, size_t dim) {
  rounds->Add();
  pushed_bytes->Add(static_cast<double>(stats.bytes_pushed));
  received_bytes->Add(static_cast<double>(stats.bytes_received));
  dense_equivalent_bytes->Add(4.0 * static_cast<double>(dim));
  upstream_compression->SetRatio(*dense_equivalent_bytes, *pushed_bytes);
  compute_seconds->Add(compute);
  sparsify_seconds->Add(stats.compress_seconds);
  communicate_seconds->Add(stats.communicate_seconds);
  wait_seconds->Add(stats.wait_seconds);
  apply_seconds->Add(stats.apply_seconds);
  train_loss->Set(loss);
  if (stats.mask) {
    picks->Add(static_cast<double>(stats.mask->k));
    not_topk_picks->Add(static_cast<double>(stats.mask->not_topk));
    topk_repeat_picks->Add(static_cast<double>(stats.mask->topk_repeats));
    not_topk_fraction->Set(stats.mask->not_topk_fraction());
    topk_repeat_fraction->Set(stats.mask->topk_repeat_fraction());
  }
}

}  // namespace regtopk
