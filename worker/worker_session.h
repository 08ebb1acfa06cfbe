// WorkerSession: one worker's side of a job, independent of how gradients are computed (no
// LibTorch here). Joins, obtains the initial parameters (uploading its own if the server asks),
// and then, once per round: sparsifies the gradient with the job's algorithm, pushes it, waits
// for the round's aggregate, applies the same optimizer step as the server to its parameter
// replica, and feeds the aggregate back to the sparsifier. Every R rounds the server's
// parameter digest is checked; on a mismatch the replica is re-pulled.
// Thread-compatible: one thread drives a session.
#ifndef REGTOPK_WORKER_WORKER_SESSION_H_
#define REGTOPK_WORKER_WORKER_SESSION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/job_config.h"
#include "common/optim/sgd.h"
#include "common/sparse/sparsifier.h"
#include "client/server_client.h"

namespace regtopk {

struct WorkerSessionOptions {
  uint32_t worker_id = 0;
  uint64_t num_samples = 1;    // >= 1; the weight when the job weights by samples
  uint64_t layout_digest = 0;  // digest of the model's tensor names and shapes
  // How long Start waits for the other workers to join (sample weighting) or for the first
  // worker's parameter upload.
  absl::Duration start_timeout = absl::Minutes(5);
  // Attempts per round's push: a push that fails with UNAVAILABLE or ABORTED (a dropped
  // connection, a lost reply) is sent again; the server treats the same bytes as a retry.
  int push_attempts = 3;
};

struct StepStats {
  uint64_t round = 0;  // the round this step completed
  size_t entries_sent = 0;
  size_t bytes_pushed = 0;    // encoded gradient
  size_t bytes_received = 0;  // encoded aggregate
  size_t aggregate_nnz = 0;
  double compress_seconds = 0;  // sparsify + encode
  double communicate_seconds = 0;  // push sent .. aggregate received, wait included
  double wait_seconds = 0;         // of which the server held the push for slower workers
  double apply_seconds = 0;  // decode + optimizer + observe (+ digest check)
  bool resynced = false;     // the digest mismatched and parameters were re-pulled
};

class WorkerSession {
 public:
  // `client` is borrowed and must outlive the session. `initial_parameters` are uploaded if
  // the server holds none; otherwise the server's are pulled. Errors: the client's, or
  // DEADLINE_EXCEEDED if the start conditions are not met within start_timeout.
  static absl::StatusOr<std::unique_ptr<WorkerSession>> Start(
      ServerClient* client, const WorkerSessionOptions& options,
      std::vector<float> initial_parameters);

  // One round with this worker's local gradient (length dim()). FAILED_PRECONDITION once the
  // job's last round is done; INVALID_ARGUMENT for a non-finite gradient (nothing sent); the
  // client's error if the push fails; DATA_LOSS if the aggregate does not decode.
  absl::StatusOr<StepStats> Step(absl::Span<const float> gradient);

  absl::Span<const float> parameters() const { return params_; }
  size_t dim() const { return params_.size(); }
  uint64_t round() const { return round_; }
  bool finished() const;
  const JobConfig& config() const { return config_; }
  float weight() const { return weight_; }
  uint64_t resyncs() const { return resyncs_; }

 private:
  WorkerSession(ServerClient* client, const WorkerSessionOptions& options, JobConfig config,
                float weight, std::unique_ptr<Sparsifier> sparsifier, std::vector<float> params,
                uint64_t round);

  ServerClient* const client_;
  const WorkerSessionOptions options_;
  const JobConfig config_;
  const float weight_;
  std::unique_ptr<Sparsifier> sparsifier_;
  Sgd sgd_;
  std::vector<float> params_;
  uint64_t round_;
  uint64_t resyncs_ = 0;
  // Reused per round.
  SparseVector sent_;
  SparseVector aggregate_;
  std::string encoded_;
};

}  // namespace regtopk

#endif  // REGTOPK_WORKER_WORKER_SESSION_H_
