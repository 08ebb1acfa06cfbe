// JobConfig: the one description of a training job, owned by the server and handed to every
// worker at join. Plain value; thread-compatible.
#ifndef REGTOPK_COMMON_JOB_CONFIG_H_
#define REGTOPK_COMMON_JOB_CONFIG_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "common/optim/optimizer.h"
#include "common/sparse/sparsifier.h"

namespace regtopk {

enum class Weighting { kUniform, kSamples };

struct JobConfig {
  Algorithm algorithm = Algorithm::kRegTopK;
  double density = 0.01;  // (0, 1]
  double mu = 1.0;        // > 0, finite
  OptimizerOptions optimizer;
  uint32_t num_workers = 1;  // >= 1
  Weighting weighting = Weighting::kUniform;
  // 0 = unbounded.
  uint64_t total_rounds = 0;
  // A parameter digest rides with every aggregate of round r with (r + 1) % digest_every == 0;
  // 0 = never.
  uint32_t digest_every = 10;
  // Worker n's sparsifier is seeded with seed + n.
  uint64_t seed = 1;
  // Checkpoint rounds are the positive multiples of this; 0 = no checkpoints.
  uint32_t checkpoint_every = 0;
  // How long a round waits for a missing worker before the job fails; 0 = forever.
  double round_timeout_seconds = 600;
  // Protection against exploding or poisoned updates, applied by the server to every push:
  // scale a push whose L2 norm exceeds clip_norm down to it; refuse a push with an entry whose
  // magnitude exceeds max_abs_value. 0 = off.
  double clip_norm = 0;
  double max_abs_value = 0;
  // The compressed downlink (opt-in; DownlinkCompressor): 0 = the lossless aggregate; in (0, 1]
  // the server sends the top DownlinkEntries(dim) entries of aggregate + carried error.
  double downlink_density = 0;

  // InvalidArgument naming the bad field.
  absl::Status Validate() const;
  // Entries a worker may send per round for a model of `dim` parameters.
  size_t MaxEntries(size_t dim) const;
  // Entries the compressed downlink sends per round (0 when it is off).
  size_t DownlinkEntries(size_t dim) const;
  // Round r > 0 with r % checkpoint_every == 0, when checkpoints are on.
  bool IsCheckpointRound(uint64_t round) const {
    return checkpoint_every != 0 && round != 0 && round % checkpoint_every == 0;
  }
};

// Identifies the worker process behind a join (JoinRequest's session and state fields).
struct JoinIdentity {
  uint64_t session_id = 0;             // random per process; 0 = unknown
  std::vector<uint64_t> state_rounds;  // rounds the worker holds saved state for, ascending
  bool fresh_state = false;            // no state: join with fresh state (not bit-identical)
  // Digest of the whole data split this worker computed (all workers' indices); every worker
  // of a job must agree. 0 = not applicable.
  uint64_t partition_digest = 0;
};

}  // namespace regtopk

#endif  // REGTOPK_COMMON_JOB_CONFIG_H_
