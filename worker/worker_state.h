// WorkerState: what a worker carries between rounds that the server does not have (the
// sparsifier's error feedback and RegTop-k history, Rand-k's generator, the optimizer replica)
// plus its parameter replica, as saved before a checkpoint round in its --state-dir
// (state-R.rtk, a StateFile). The batch order needs no saving: it is a pure function of
// (seed, worker, round). Functions block on disk I/O; thread-compatible.
#ifndef REGTOPK_WORKER_WORKER_STATE_H_
#define REGTOPK_WORKER_WORKER_STATE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/sparse/sparsifier.h"

namespace regtopk {

struct WorkerState {
  uint64_t round = 0;  // the state before this round
  uint32_t worker_id = 0;
  std::vector<float> params;
  std::vector<float> optimizer_state;  // Optimizer::state(): empty for plain SGD
  SparsifierState sparsifier;
  // The caller's own bytes (WorkerSessionOptions::save_extra: e.g. a model's BatchNorm
  // statistics); empty if none.
  std::string extra;
};

// Writes DIR/state-R.rtk atomically (DIR is created if missing).
absl::Status SaveWorkerState(const std::string& dir, const WorkerState& state);
// Reads DIR/state-R.rtk. NOT_FOUND if absent; DATA_LOSS (naming the file) if corrupt or if it
// belongs to another worker id or another model size.
absl::StatusOr<WorkerState> LoadWorkerState(const std::string& dir, uint64_t round,
                                            uint32_t worker_id, size_t dim);
// Rounds with a saved state in DIR, ascending (none if DIR does not exist).
std::vector<uint64_t> SavedStateRounds(const std::string& dir);
// Removes the saved states of rounds below `round`.
void DropStatesBefore(const std::string& dir, uint64_t round);

}  // namespace regtopk

#endif  // REGTOPK_WORKER_WORKER_STATE_H_
