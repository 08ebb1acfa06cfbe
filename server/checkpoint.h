// ServerCheckpoint: the server's whole state before one round, and CheckpointStore, the folder
// that holds them. A checkpoint is written "pending" (pending-R.rtk) and becomes committed
// (ckpt-R.rtk) by an atomic rename once every worker has saved its own state for R (see the
// proto's "Durability"). The store keeps the two newest committed checkpoints; resuming takes
// the newest one that reads, falling back to the previous one (and saying so) if it is corrupt.
// CheckpointStore is thread-compatible; its methods block on disk I/O.
#ifndef REGTOPK_SERVER_CHECKPOINT_H_
#define REGTOPK_SERVER_CHECKPOINT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/job_config.h"
#include "server/round.h"

namespace regtopk {

struct ServerCheckpoint {
  uint64_t round = 0;  // the state before this round
  JobConfig job;
  uint64_t dim = 0, layout_digest = 0;
  std::vector<uint64_t> num_samples;  // by worker
  std::vector<float> weights;         // by worker
  std::vector<float> params;
  std::vector<float> optimizer_state;  // Optimizer::state(): empty for plain SGD
  std::vector<float> downlink_error;   // DownlinkCompressor::error(): empty when it is off
  // The idempotent-retry path: round - 1's result (null for round 0) and its push digests.
  std::shared_ptr<const RoundResult> last_result;
  std::vector<uint64_t> last_push_digests;
};

class CheckpointStore {
 public:
  // Creates `dir` if missing.
  static absl::StatusOr<std::unique_ptr<CheckpointStore>> Open(const std::string& dir);

  // Writes `c` as pending-R.rtk (atomically and durably).
  absl::Status WritePending(const ServerCheckpoint& c);
  // Renames pending-R.rtk to ckpt-R.rtk, then removes committed checkpoints older than the two
  // newest and pending ones at or below R.
  absl::Status Commit(uint64_t round);
  // Committed rounds on disk, ascending.
  std::vector<uint64_t> Committed() const;
  absl::StatusOr<ServerCheckpoint> Load(uint64_t round) const;
  // The newest committed checkpoint that reads. Each one skipped (corrupt, truncated) adds a
  // line to *log. NOT_FOUND if the folder holds no committed checkpoint; DATA_LOSS (listing
  // each failure) if it holds some and none reads.
  absl::StatusOr<ServerCheckpoint> LoadNewest(std::vector<std::string>* log) const;

  const std::string& dir() const { return dir_; }
  // Fault injection (tests): the process SIGKILLs itself after this many bytes of the next
  // pending write of round `round`.
  void set_kill_during_write(uint64_t round, uint64_t bytes) {
    kill_round_ = round;
    kill_bytes_ = bytes;
  }

 private:
  explicit CheckpointStore(std::string dir) : dir_(std::move(dir)) {}
  const std::string dir_;
  uint64_t kill_round_ = 0, kill_bytes_ = 0;
};

}  // namespace regtopk

#endif  // REGTOPK_SERVER_CHECKPOINT_H_
