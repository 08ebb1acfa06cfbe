// Coordinator: the parameter server's domain logic, with no gRPC in it. It registers workers,
// holds the authoritative parameters and optimizer state, validates and collects each round's
// pushes (a RoundMachine, server/round.h), and when every worker has pushed round t, aggregates
// (worker-id order), applies the optimizer, encodes the aggregate once and hands the same bytes
// to every waiting push. With a checkpoint folder it also writes checkpoints in the background,
// commits them when every worker has saved its state for the same round, resumes from the
// newest committed one, and rolls the job back to it when a worker's process restarts.
// Thread-safe. Round closing runs on the coordinator's own thread, never on a caller's.
#ifndef REGTOPK_SERVER_COORDINATOR_H_
#define REGTOPK_SERVER_COORDINATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/job_config.h"
#include "common/sparse/downlink.h"
#include "common/optim/optimizer.h"
#include "common/sparse/sparse_vector.h"
#include "server/checkpoint.h"
#include "server/round.h"
#include "server/server_metrics.h"

namespace regtopk {

struct CoordinatorOptions {
  // The job; job.round_timeout_seconds is how long a round waits for a missing worker (or its
  // replacement) before the job fails; job.checkpoint_every needs `checkpoints`.
  JobConfig job;
  // Largest model accepted at join (parameters).
  uint64_t max_dim = uint64_t{1} << 31;
  // Send every aggregate in the dense encoding (the benchmark's baseline); lossless either way.
  bool force_dense_aggregate = false;
  // Threads that aggregate a round's pushes (SparseAggregator), encode the aggregate and run
  // the optimizer's dry run and step, 1 to 256; the aggregate, its bytes and the parameters are
  // the same for any number.
  int threads = 1;
  // Where checkpoints go; null = none (then job.checkpoint_every must be 0).
  std::shared_ptr<CheckpointStore> checkpoints;
  // Start from this checkpoint (its job config must equal `job`); null = a new job. Create
  // takes it out of the options (its buffers become the coordinator's).
  std::shared_ptr<ServerCheckpoint> resume;
  // Borrowed, may be null; must outlive the coordinator.
  ServerMetrics* metrics = nullptr;
  // Where timeouts are measured; borrowed, never null.
  Clock* clock = Clock::Real();
  // Called (from the coordinator's thread, outside locks) after each round closes; may be empty.
  std::function<void(const RoundResult&)> on_round_closed;
  // Test seam: called by the coordinator's thread, outside mu_, just before each round's
  // optimizer step (the parameters are then being stepped: pulls wait); may be empty.
  std::function<void(uint64_t round)> before_step;
  // One line for the operator (rollbacks, fresh-state joins, a missing worker every ~10 s,
  // uncommitted checkpoints, the job's failure); may be empty. Called outside locks.
  std::function<void(const std::string&)> log;

  absl::Status Validate() const;
};

struct JoinResult {
  JobConfig config;
  uint64_t round = 0;
  bool upload_parameters = false;
  std::optional<float> weight;  // known for uniform weighting or once all workers joined
  uint64_t params_digest = 0;   // of the parameters at `round`; 0 while there are none
  uint64_t committed_round = 0;
};

struct ParameterSnapshot {
  // Immutable: the coordinator never writes to a buffer it has handed out (its step writes a
  // copy while any pull still holds one), so every pull of a round shares this one buffer.
  std::shared_ptr<const std::vector<float>> values;
  std::vector<float> optimizer_state;  // when asked for; Optimizer::state()
  uint64_t round = 0;           // the round these parameters are the state before
  uint64_t digest = 0;
};

struct CoordinatorStatus {
  uint64_t round = 0;
  uint32_t workers_joined = 0;
  uint32_t num_workers = 0;
  bool parameters_ready = false;
  bool finished = false;
  uint64_t rejected_pushes = 0;
  uint64_t cancelled_pushes = 0;  // clients that went away mid-push
  uint32_t pushes_this_round = 0;
  uint64_t committed_round = 0;
  absl::Status job_status;  // not OK once the job failed
  std::shared_ptr<const RoundResult> last_round;  // null before the first round closes
};

class Coordinator {
 public:
  // Validates `options`, applies options.resume, and starts the round-closing thread (and the
  // checkpoint writer).
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(CoordinatorOptions options);
  ~Coordinator();  // Shutdown() and join the threads.

  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Registers worker `worker_id`. num_samples == 0 is a probe: it returns the job config and
  // registers nothing. A join with a session id the server does not know for this worker,
  // after round 0, is a restarted worker process: it must hold the state of the newest
  // committed round (and then, if the job has moved past that round, the whole job rolls back
  // to it: held pushes get ABORTED) or ask for fresh state (counted and logged; the run is no
  // longer bit-identical). INVALID_ARGUMENT: id out of range, dim 0 or above max_dim.
  // FAILED_PRECONDITION: layout differs from the first worker's; a restarted worker without
  // the state to resume; the job failed. UNAVAILABLE: shutting down. Blocks on disk I/O when
  // it rolls back, and for the optimizer step of a closing round (its reply carries the
  // parameters' digest).
  absl::StatusOr<JoinResult> Join(uint32_t worker_id, uint64_t num_samples, uint64_t dim,
                                  uint64_t layout_digest, const JoinIdentity& identity = {});

  // Installs the initial parameters. FAILED_PRECONDITION: worker not joined, or parameters
  // already present. INVALID_ARGUMENT: wrong length or a non-finite value.
  // Reserves the one upload the server takes, before the upload allocates its model-sized
  // buffer: OK if `worker_id` joined, the server holds no parameters yet and no upload is in
  // progress. Until that worker's UploadParameters or AbandonUpload, every other upload is
  // refused (FAILED_PRECONDITION; its worker pulls instead) and joins are not asked to upload:
  // one buffer however many workers start at once.
  absl::Status BeginUpload(uint32_t worker_id);
  // Releases `worker_id`'s reservation (its upload stream ended without parameters).
  void AbandonUpload(uint32_t worker_id);
  // Also releases the caller's reservation, whatever the result. FAILED_PRECONDITION too when
  // another worker holds the reservation.
  absl::Status UploadParameters(uint32_t worker_id, std::vector<float> values);

  // The current parameters (shared, not copied: see ParameterSnapshot; a copy of the optimizer
  // state if asked), labelled with the round they are the state before. FAILED_PRECONDITION
  // (retryable) before any upload. Blocks while the optimizer step of a closing round is in
  // progress (milliseconds: the step runs off the lock, and the pull needs its result).
  absl::StatusOr<ParameterSnapshot> GetParameters(bool include_optimizer_state = false);

  // Accepts worker `worker_id`'s encoded sparse gradient for `round`; `saved_state_round` is
  // the round the worker saved its state before (0 = none). Returns the rejection (nothing
  // recorded, `done` never called) or OK, after which `done` is called exactly once.
  // Retries are idempotent: the same bytes again for the open round take over the earlier call
  // (which gets ABORTED) without counting twice; the same bytes for the round that just closed
  // are answered at once with that round's result. FAILED_PRECONDITION: unknown worker,
  // parameters not ready, weights not yet known, round other than the current one, second push
  // for the round, job finished or failed. INVALID_ARGUMENT: anything DecodeSparse rejects
  // (with more than k entries as the limit). UNAVAILABLE: shut down.
  absl::Status Push(uint32_t worker_id, uint64_t round, absl::string_view encoded,
                    PushCallback done, uint64_t saved_state_round = 0);

  // Fails every waiting push with UNAVAILABLE and refuses new ones; lets an in-flight
  // checkpoint write finish, then writes the current state as a final pending checkpoint.
  // Idempotent; blocks until the coordinator's threads have stopped.
  void Shutdown();

  // Counts a push the service layer refused before handing it over, with its metrics reason
  // ("oversize", "malformed").
  void CountRejectedPush(const std::string& reason);
  // Counts a push whose client went away before it was complete (not a rejection).
  void CountCancelledPush();

  // Null when the coordinator was created without metrics.
  ServerMetrics* metrics() const { return options_.metrics; }

  CoordinatorStatus GetStatus();
  uint64_t dim() const;
  const JobConfig& job() const { return options_.job; }

  // Blocks until the open round holds at least `pushes` accepted pushes (true) or `timeout`
  // passes (false). A notification for tests and tools that must act while pushes are held,
  // so that none of them polls.
  bool AwaitPushes(uint32_t pushes, absl::Duration timeout);

 private:
  Coordinator(CoordinatorOptions options, std::shared_ptr<ServerCheckpoint> resume);
  void CloserLoop();
  void WriterLoop();
  // Waits until the open round can close (true) or shutdown (false); fails the job when a
  // round outlives the round timeout, and writes checkpoint 0 once the job is ready.
  bool WaitForFullRoundLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool WeightsKnownLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Checkpoints are on, the job is ready (parameters and weights), round 0 not yet committed.
  bool CheckpointZeroDueLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ComputeWeightsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The parameters to step in place: params_ itself when no pull holds it, else a fresh copy
  // that becomes params_ (copy-on-write; the pulls keep streaming the old one). Precondition:
  // params_ is set.
  std::vector<float>& MutableParamsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<ServerCheckpoint> SnapshotLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Loads checkpoint `round` and makes it the job's state; ABORTs held pushes.
  absl::Status RollBack(uint64_t round, uint32_t restarted_worker) ABSL_LOCKS_EXCLUDED(mu_);
  void Log(const std::string& line) const;
  // Commits to_commit_ if its pending file is durable; a no-op otherwise. Takes mu_.
  void MaybeCommit() ABSL_LOCKS_EXCLUDED(mu_);

  // Constant after construction. The checkpoint store is used from several threads (the
  // writer writes pending files, a commit renames one, a rollback reads a committed one); each
  // touches its own files, and a commit only removes checkpoints older than the two newest.
  const CoordinatorOptions options_;

  mutable absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status job_status_ ABSL_GUARDED_BY(mu_);
  uint64_t dim_ ABSL_GUARDED_BY(mu_) = 0;  // 0 until the first join
  uint64_t layout_digest_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t partition_digest_ ABSL_GUARDED_BY(mu_) = 0;  // 0 = no worker reported one yet
  uint32_t partition_worker_ ABSL_GUARDED_BY(mu_) = 0;  // the one that did first
  std::vector<bool> joined_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> sessions_ ABSL_GUARDED_BY(mu_);  // 0 = none yet
  std::vector<uint64_t> num_samples_ ABSL_GUARDED_BY(mu_);
  std::vector<float> weights_ ABSL_GUARDED_BY(mu_);  // empty until known
  // Null until uploaded. Shared with pulls in flight; written only through
  // MutableParamsLocked.
  std::shared_ptr<std::vector<float>> params_ ABSL_GUARDED_BY(mu_);
  // The worker whose parameter upload is in progress (BeginUpload), if any.
  std::optional<uint32_t> uploading_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Optimizer> optimizer_ ABSL_GUARDED_BY(mu_);
  // The compressed downlink's state (null when it is off). Created with the optimizer and never
  // replaced. The closer thread uses it outside mu_ while a round closes; RollBack and
  // SnapshotLocked touch it under mu_ only while no round is closing, or from the closer.
  std::unique_ptr<DownlinkCompressor> downlink_ ABSL_GUARDED_BY(mu_);
  RoundMachine machine_ ABSL_GUARDED_BY(mu_);
  // The closer is stepping params_ and optimizer_ outside mu_ (see CloserLoop): whoever reads
  // their contents waits until it is false.
  bool stepping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t rejected_pushes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t cancelled_pushes_ ABSL_GUARDED_BY(mu_) = 0;
  // Checkpoints: the newest committed round (valid when has_committed_), the snapshot waiting
  // for the writer, the round being written, and the outcome of the last write.
  bool has_committed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t committed_round_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<ServerCheckpoint> to_write_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool writer_stop_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<uint64_t> last_written_ ABSL_GUARDED_BY(mu_);  // durable pending round
  // A checkpoint round every worker saved, waiting for its file to be durable to be committed
  // (the commit follows the write, from whichever thread sees both first, so that a round
  // never waits for a write), and whether a commit is under way.
  std::optional<uint64_t> to_commit_ ABSL_GUARDED_BY(mu_);
  bool committing_ ABSL_GUARDED_BY(mu_) = false;

  std::thread closer_, writer_;
  absl::Time last_close_;  // used only by the closer thread
};

}  // namespace regtopk

#endif  // REGTOPK_SERVER_COORDINATOR_H_
