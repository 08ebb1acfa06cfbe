// Coordinator: the parameter server's domain logic, with no gRPC in it. It registers workers,
// holds the authoritative parameters and optimizer state, validates and collects each round's
// pushes, and when every worker has pushed round t, aggregates (worker-id order), applies the
// optimizer, encodes the aggregate once and hands the same bytes to every waiting push.
// Thread-safe. Round closing runs on the coordinator's own thread, never on a caller's.
#ifndef REGTOPK_SERVER_COORDINATOR_H_
#define REGTOPK_SERVER_COORDINATOR_H_

#include <atomic>
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
#include "absl/time/clock.h"
#include "common/job_config.h"
#include "common/optim/sgd.h"
#include "common/sparse/sparse_vector.h"
#include "server/server_metrics.h"

namespace regtopk {

struct CoordinatorOptions {
  JobConfig job;
  // Largest model accepted at join (parameters).
  uint64_t max_dim = uint64_t{1} << 31;
  // Send every aggregate in the dense encoding (the benchmark's baseline); lossless either way.
  bool force_dense_aggregate = false;
  // A round that has not closed this long after its first push is abandoned: the waiting
  // pushes get DEADLINE_EXCEEDED naming the workers that never pushed (dead or stuck), and the
  // round starts over with nothing applied. Zero = wait forever.
  absl::Duration round_timeout = absl::ZeroDuration();
  // Borrowed, may be null; must outlive the coordinator.
  ServerMetrics* metrics = nullptr;
  // Called (from the coordinator's thread, outside locks) after each round closes; may be empty.
  std::function<void(const struct RoundResult&)> on_round_closed;

  absl::Status Validate() const;
};

// One closed round, shared by every push it answers.
struct RoundResult {
  uint64_t round = 0;
  std::string encoded;  // SparseCodec encoding of the aggregate
  size_t nnz = 0;
  bool has_digest = false;
  uint64_t digest = 0;  // of the parameters after this round's step
  double aggregate_seconds = 0, step_seconds = 0, encode_seconds = 0;
};

struct JoinResult {
  JobConfig config;
  uint64_t round = 0;
  bool upload_parameters = false;
  std::optional<float> weight;  // known for uniform weighting or once all workers joined
};

struct ParameterSnapshot {
  std::vector<float> values;
  uint64_t round = 0;  // the round these parameters are the state before
  uint64_t digest = 0;
};

struct CoordinatorStatus {
  uint64_t round = 0;
  uint32_t workers_joined = 0;
  uint32_t num_workers = 0;
  bool parameters_ready = false;
  bool finished = false;
  uint64_t rejected_pushes = 0;
  uint32_t pushes_this_round = 0;
  std::shared_ptr<const RoundResult> last_round;  // null before the first round closes
};

class Coordinator {
 public:
  // Receives round t's result, or UNAVAILABLE if the server shuts down first. Called exactly
  // once per accepted push, from the coordinator's thread or from Shutdown(), outside locks.
  using PushCallback = std::function<void(absl::StatusOr<std::shared_ptr<const RoundResult>>)>;

  // Validates `options` and starts the round-closing thread.
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(CoordinatorOptions options);
  ~Coordinator();  // Shutdown() and join the thread.

  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Registers worker `worker_id` (idempotent for the same layout). num_samples == 0 is a probe:
  // it returns the job config and registers nothing. INVALID_ARGUMENT: id out of range, dim 0
  // or above max_dim. FAILED_PRECONDITION: layout (dim or digest) differs from the first
  // worker's.
  absl::StatusOr<JoinResult> Join(uint32_t worker_id, uint64_t num_samples, uint64_t dim,
                                  uint64_t layout_digest);

  // Installs the initial parameters. FAILED_PRECONDITION: worker not joined, or parameters
  // already present. INVALID_ARGUMENT: wrong length or a non-finite value.
  absl::Status UploadParameters(uint32_t worker_id, std::vector<float> values);

  // A copy of the current parameters. FAILED_PRECONDITION (retryable) before any upload.
  absl::StatusOr<ParameterSnapshot> GetParameters();

  // Accepts worker `worker_id`'s encoded sparse gradient for `round`. Returns the rejection
  // (nothing recorded, `done` never called) or OK, after which `done` is called exactly once.
  // Retries are idempotent: the same bytes again for the open round take over the earlier call
  // (which gets ABORTED) without counting twice; the same bytes for the round that just closed
  // are answered at once with that round's result (a worker whose reply was lost recovers).
  // FAILED_PRECONDITION: unknown worker, parameters not ready, weights not yet known, round
  // other than the current one, second push for the round, job finished. INVALID_ARGUMENT:
  // anything DecodeSparse rejects (with more than k entries as the limit). UNAVAILABLE: shut down.
  absl::Status Push(uint32_t worker_id, uint64_t round, absl::string_view encoded,
                    PushCallback done);

  // Fails every waiting push with UNAVAILABLE and refuses new ones. Idempotent; blocks until
  // the round-closing thread has stopped.
  void Shutdown();

  // Counts a push the service layer refused before handing it over, with its metrics reason
  // ("oversize", "malformed").
  void CountRejectedPush(const std::string& reason);

  // Null when the coordinator was created without metrics.
  ServerMetrics* metrics() const { return options_.metrics; }

  CoordinatorStatus GetStatus();

  // Blocks until the open round holds at least `pushes` accepted pushes (true) or `timeout`
  // passes (false). A notification for tests and tools that must act while pushes are held,
  // so that none of them polls.
  bool AwaitPushes(uint32_t pushes, absl::Duration timeout);
  uint64_t dim() const;
  const JobConfig& job() const { return options_.job; }

 private:
  explicit Coordinator(CoordinatorOptions options);
  void CloserLoop();
  // Blocks until every worker has pushed the open round (true) or the coordinator shuts down
  // (false). Rounds that time out meanwhile are abandoned (see round_timeout); their callbacks
  // run with mu_ released.
  bool WaitForFullRoundLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool WeightsKnownLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ComputeWeightsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const CoordinatorOptions options_;

  mutable absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t dim_ ABSL_GUARDED_BY(mu_) = 0;  // 0 until the first join
  uint64_t layout_digest_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<bool> joined_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> num_samples_ ABSL_GUARDED_BY(mu_);
  std::vector<float> weights_ ABSL_GUARDED_BY(mu_);  // empty until known
  std::vector<float> params_ ABSL_GUARDED_BY(mu_);   // empty until uploaded
  std::unique_ptr<Sgd> sgd_ ABSL_GUARDED_BY(mu_);
  uint64_t round_ ABSL_GUARDED_BY(mu_) = 0;
  // This round's accepted pushes, by worker id.
  std::vector<std::optional<SparseVector>> pushes_ ABSL_GUARDED_BY(mu_);
  std::vector<PushCallback> callbacks_ ABSL_GUARDED_BY(mu_);
  // Digests of the payloads accepted for the open round and for the round that just closed,
  // by worker id: they recognise retries.
  std::vector<uint64_t> push_digests_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> last_push_digests_ ABSL_GUARDED_BY(mu_);
  uint32_t pushed_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time first_push_time_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const RoundResult> last_round_ ABSL_GUARDED_BY(mu_);
  uint64_t rejected_pushes_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread closer_;
  absl::Time last_close_ = absl::Now();  // used only by the closer thread
};

}  // namespace regtopk

#endif  // REGTOPK_SERVER_COORDINATOR_H_
