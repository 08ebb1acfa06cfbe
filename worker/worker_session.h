// WorkerSession: one worker's side of a job, independent of how gradients are computed (no
// LibTorch here). Joins (waiting for a server that is not up yet), obtains the initial
// parameters (uploading its own if the server asks) or resumes from its saved state, and then,
// once per round: saves its state before a checkpoint round, sparsifies the gradient with the
// job's algorithm, pushes it, waits for the round's aggregate, applies the same optimizer step
// as the server to its parameter replica, and feeds the aggregate back to the sparsifier. Every
// R rounds the server's parameter digest is checked; on a mismatch the replica and the momentum
// buffer are re-pulled. A failed push (server restarted, job rolled back, connection lost) is
// followed by a re-join: the same push again if the server is at the same round, or a rollback
// to the server's (committed) round from the saved state, without restarting the process.
// Thread-compatible: one thread drives a session.
#ifndef REGTOPK_WORKER_WORKER_SESSION_H_
#define REGTOPK_WORKER_WORKER_SESSION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/job_config.h"
#include "common/optim/optimizer.h"
#include "common/parallel/task_pool.h"
#include "common/sparse/sparsifier.h"
#include "client/server_client.h"

namespace regtopk {

struct WorkerSessionOptions {
  uint32_t worker_id = 0;
  uint64_t num_samples = 1;    // >= 1; the weight when the job weights by samples
  uint64_t layout_digest = 0;  // digest of the model's tensor names and shapes
  // Digest of the whole data split (JoinIdentity::partition_digest); 0 = not applicable.
  uint64_t partition_digest = 0;
  // How long Start waits for the other workers to join (sample weighting) or for the first
  // worker's parameter upload.
  absl::Duration start_timeout = absl::Minutes(5);
  // Re-joins per round after failed pushes before the step gives up (each re-join itself
  // waits up to reconnect_timeout for the server).
  int push_attempts = 5;
  // How long to keep trying to reach a server that is down or not yet started.
  absl::Duration reconnect_timeout = absl::Minutes(5);
  // Where the state before each checkpoint round is saved; empty = nowhere (then a job with
  // checkpoints is refused, and a restart needs allow_fresh_state).
  std::string state_dir;
  // Join a running job without saved state (zero error feedback, pulled parameters and
  // momentum). The run is then no longer bit-identical to an uninterrupted one.
  bool allow_fresh_state = false;
  // Threads that sparsify each gradient and step the replica, 1 to 256. Speed only: the
  // picks, values, error feedback and parameters are the same bit for bit for any number.
  int threads = 1;
  // Random per process (0: one is drawn); tells the server a restarted process from a live one.
  uint64_t session_id = 0;
  // State of the caller's saved and restored with the session's (e.g. the model's buffers,
  // which are not parameters): save_extra is called before each checkpoint round, and
  // restore_extra with those bytes whenever the session restores that round's state (a
  // resume or a rollback). Either may be empty.
  std::function<std::string()> save_extra;
  std::function<absl::Status(absl::string_view)> restore_extra;
  // One line for the operator (waiting for the server, rollbacks, fresh state); may be empty.
  std::function<void(const std::string&)> log;
};

struct StepStats {
  uint64_t round = 0;  // the round this step completed
  size_t entries_sent = 0;
  size_t bytes_pushed = 0;    // encoded gradient
  size_t bytes_received = 0;  // encoded aggregate
  size_t aggregate_nnz = 0;
  // How this round's picks relate to plain Top-k's (Top-k and RegTop-k; MaskDiagnostic).
  std::optional<MaskDiagnostic> mask;
  double compress_seconds = 0;  // sparsify + encode
  double communicate_seconds = 0;  // push sent .. aggregate received, wait included
  double wait_seconds = 0;         // of which the server held the push for slower workers
  double apply_seconds = 0;  // decode + optimizer + observe (+ digest check)
  bool resynced = false;     // the digest mismatched and parameters were re-pulled
  // The job rolled back: no round completed; the session is now at `round` (restored from the
  // saved state) and the caller computes that round's gradient again.
  bool rolled_back = false;
  bool saved_state = false;  // the state before this round was saved
};

class WorkerSession {
 public:
  // `client` is borrowed and must outlive the session. `initial_parameters` are uploaded if
  // the server holds none; otherwise the server's are pulled. Errors: the client's, or
  // DEADLINE_EXCEEDED if the start conditions are not met within start_timeout.
  static absl::StatusOr<std::unique_ptr<WorkerSession>> Start(
      ServerClient* client, const WorkerSessionOptions& options,
      std::vector<float> initial_parameters);

  // The job's config without joining (a probe: num_samples 0, nothing registered), e.g. to
  // split the data by the job's number of workers first; retried like Start's join while the
  // server is unreachable, up to options.reconnect_timeout.
  static absl::StatusOr<JoinReply> Probe(ServerClient* client, const WorkerSessionOptions& options,
                                         uint64_t dim);

  // One round with this worker's local gradient (length dim()) computed at parameters() for
  // round(). FAILED_PRECONDITION once the job's last round is done, or when the server refuses
  // the re-join (the job failed; no state to roll back to); INVALID_ARGUMENT for a non-finite
  // gradient (nothing sent); UNAVAILABLE when the server stayed unreachable past
  // reconnect_timeout; DATA_LOSS if the aggregate does not decode or a saved state is unusable.
  absl::StatusOr<StepStats> Step(absl::Span<const float> gradient);

  absl::Span<const float> parameters() const { return params_; }
  size_t dim() const { return sparsifier_->dim(); }
  uint64_t round() const { return round_; }
  bool finished() const;
  const JobConfig& config() const { return config_; }
  float weight() const { return weight_; }
  uint64_t resyncs() const { return resyncs_; }
  uint64_t rollbacks() const { return rollbacks_; }
  // Started from a saved state or fresh state in a running job (round() > 0 at start).
  bool resumed() const { return resumed_; }

 private:
  WorkerSession(ServerClient* client, const WorkerSessionOptions& options, JobConfig config,
                float weight, std::unique_ptr<Sparsifier> sparsifier, std::vector<float> params,
                uint64_t round);
  // Join, retried with backoff while the server is unreachable (up to reconnect_timeout).
  static absl::StatusOr<JoinReply> JoinWithRetry(ServerClient* client,
                                                 const WorkerSessionOptions& options, uint64_t dim);
  absl::Status SaveState();
  // Restores the saved state of `round` (the server's), checked against `params_digest`.
  absl::Status RestoreState(uint64_t round, uint64_t params_digest);
  // Pulls parameters and momentum (the digest check's repair; fresh state).
  absl::Status PullReplica();
  void Log(const std::string& line) const;

  ServerClient* const client_;
  const WorkerSessionOptions options_;
  const JobConfig config_;
  const float weight_;
  std::unique_ptr<Sparsifier> sparsifier_;
  Optimizer optimizer_;
  TaskPool step_pool_;  // the replica's optimizer step, split by range (options_.threads)
  std::vector<float> params_;
  uint64_t round_;
  uint64_t resyncs_ = 0;
  uint64_t rollbacks_ = 0;
  bool resumed_ = false;
  uint64_t saved_round_ = UINT64_MAX;  // the round whose state this process saved last
  std::vector<uint64_t> committed_;    // the committed rounds heard of, newest last
  // Reused per round.
  SparseVector sent_;
  SparseVector aggregate_;
  std::string encoded_;
};

}  // namespace regtopk

#endif  // REGTOPK_WORKER_WORKER_SESSION_H_
