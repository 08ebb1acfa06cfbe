#include "server/coordinator.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/parallel/task_pool.h"
#include "common/sparse/aggregate.h"
#include "common/status/status_macros.h"
#include "common/wire/digest.h"
#include "common/wire/sparse_codec.h"

namespace regtopk {
namespace {

// --max-abs-value refuses a push with a larger entry (INVALID_ARGUMENT naming it); --clip-norm
// scales one whose L2 norm exceeds it down to it (*clipped).
absl::Status ApplyPushLimits(const JobConfig& job, SparseVector* grad, bool* clipped) {
  if (const double limit = job.max_abs_value; limit > 0) {
    for (size_t i = 0; i < grad->nnz(); ++i) {
      if (std::fabs(grad->values[i]) > limit) {
        return absl::InvalidArgumentError(absl::StrCat("entry ", grad->indices[i], " = ",
                                                       grad->values[i],
                                                       " exceeds --max-abs-value=", limit));
      }
    }
  }
  if (const double clip = job.clip_norm; clip > 0) {
    double squared = 0;
    for (float v : grad->values) squared += static_cast<double>(v) * v;
    const double norm = std::sqrt(squared);
    if (norm > clip) {
      const float scale = static_cast<float>(clip / norm);
      for (float& v : grad->values) v *= scale;
      *clipped = true;
    }
  }
  return absl::OkStatus();
}

// How often a round that waits for a missing worker says so.
constexpr absl::Duration kWaitingLogInterval = absl::Seconds(10);

absl::Status UploadInProgress(uint32_t uploader) {
  return absl::FailedPreconditionError(absl::StrCat(
      "worker ", uploader, " is uploading the parameters; pull them when it is done"));
}

}  // namespace

absl::Status CoordinatorOptions::Validate() const {
  REGTOPK_RETURN_IF_ERROR(job.Validate());
  if (max_dim == 0 || max_dim > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("max_dim must be in [1, 2^32), got ", max_dim));
  }
  if (job.checkpoint_every != 0 && checkpoints == nullptr) {
    return absl::InvalidArgumentError("checkpoint_every needs a checkpoint folder");
  }
  REGTOPK_RETURN_IF_ERROR(ValidateThreadCount(threads, "threads"));
  if (clock == nullptr) return absl::InvalidArgumentError("clock is null");
  if (resume && resume->job.num_workers != job.num_workers) {
    return absl::InvalidArgumentError("the checkpoint to resume is of another job");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorOptions options) {
  REGTOPK_RETURN_IF_ERROR(options.Validate());
  std::shared_ptr<ServerCheckpoint> resume = std::move(options.resume);
  options.resume = nullptr;
  std::unique_ptr<Coordinator> c(new Coordinator(std::move(options), std::move(resume)));
  c->closer_ = std::thread([p = c.get()] { p->CloserLoop(); });
  if (c->options_.checkpoints) c->writer_ = std::thread([p = c.get()] { p->WriterLoop(); });
  return c;
}

Coordinator::Coordinator(CoordinatorOptions options, std::shared_ptr<ServerCheckpoint> resume)
    : options_(std::move(options)), machine_(options_.job.num_workers, options_.clock) {
  absl::MutexLock lock(&mu_);
  const uint32_t n = options_.job.num_workers;
  joined_.assign(n, false);
  sessions_.assign(n, 0);
  num_samples_.assign(n, 0);
  if (options_.job.weighting == Weighting::kUniform) {
    weights_.assign(n, 1.0f / static_cast<float>(n));
  }
  last_close_ = options_.clock->Now();
  if (ServerCheckpoint* r = resume.get()) {
    // Workers must join again (their processes are new to this server), but the layout, the
    // weights and the state are the checkpoint's.
    dim_ = r->dim;
    layout_digest_ = r->layout_digest;
    num_samples_ = r->num_samples;
    weights_ = r->weights;
    params_ = std::make_shared<std::vector<float>>(std::move(r->params));
    optimizer_ = std::make_unique<Optimizer>(options_.job.optimizer, dim_);
    (void)optimizer_->SetState(r->optimizer_state);  // sizes checked when the checkpoint was read
    if (const size_t k = options_.job.DownlinkEntries(dim_); k != 0) {
      downlink_ = std::make_unique<DownlinkCompressor>(dim_, k);
      (void)downlink_->SetError(r->downlink_error);  // checked when the checkpoint was read
    }
    machine_.Reset(r->round, r->last_result, r->last_push_digests);
    has_committed_ = true;
    committed_round_ = r->round;
  }
}

Coordinator::~Coordinator() { Shutdown(); }

void Coordinator::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

uint64_t Coordinator::dim() const {
  absl::MutexLock lock(&mu_);
  return dim_;
}

bool Coordinator::WeightsKnownLocked() const { return !weights_.empty(); }

bool Coordinator::CheckpointZeroDueLocked() const {
  return options_.checkpoints && !has_committed_ && params_ != nullptr && WeightsKnownLocked();
}

void Coordinator::ComputeWeightsLocked() {
  if (WeightsKnownLocked()) return;
  for (bool j : joined_) {
    if (!j) return;
  }
  double total = 0;
  for (uint64_t s : num_samples_) total += static_cast<double>(s);
  weights_.resize(num_samples_.size());
  for (size_t n = 0; n < num_samples_.size(); ++n) {
    weights_[n] = static_cast<float>(static_cast<double>(num_samples_[n]) / total);
  }
}

absl::StatusOr<JoinResult> Coordinator::Join(uint32_t worker_id, uint64_t num_samples, uint64_t dim,
                                             uint64_t layout_digest, const JoinIdentity& identity) {
  const uint32_t n = options_.job.num_workers;
  if (worker_id >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker id ", worker_id, " is out of range: the job has ", n, " workers"));
  }
  if (dim == 0 || dim > options_.max_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("model dimension ", dim, " is not in [1, ", options_.max_dim,
                     "] (the server's --max-dim)"));
  }
  std::optional<uint64_t> roll_back_to;
  {
    absl::MutexLock lock(&mu_);
    if (shutting_down_) return absl::UnavailableError("server is shutting down");
    if (!job_status_.ok()) return job_status_;
    if (num_samples == 0) {
      // A probe: the job config for a worker that needs it before it can count its samples.
      if (dim_ != 0 && (dim != dim_ || layout_digest != layout_digest_)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "worker ", worker_id, "'s model layout differs from the job's (dimension ", dim_, ")"));
      }
      JoinResult r;
      r.config = options_.job;
      r.round = machine_.round();
      return r;
    }
    if (dim_ == 0) {
      // The job's first authenticated join fixes the layout, once its O(d) state exists: a
      // failed allocation leaves nothing changed.
      try {
        auto optimizer = std::make_unique<Optimizer>(options_.job.optimizer, dim);
        if (const size_t k = options_.job.DownlinkEntries(dim); k != 0) {
          downlink_ = std::make_unique<DownlinkCompressor>(dim, k);
        }
        optimizer_ = std::move(optimizer);
      } catch (const std::bad_alloc&) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "cannot allocate the optimizer state for a model of ", dim, " parameters"));
      }
      dim_ = dim;
      layout_digest_ = layout_digest;
    } else if (dim != dim_ || layout_digest != layout_digest_) {
      return absl::FailedPreconditionError(absl::StrCat(
          "worker ", worker_id, "'s model layout (dimension ", dim, ", digest ", layout_digest,
          ") differs from the job's (dimension ", dim_, ", digest ", layout_digest_, ")"));
    }
    if (identity.partition_digest != 0) {
      // The first worker that reports its data split fixes it; the others must have computed
      // the same one (same data, partition and seed, on any standard library).
      if (partition_digest_ == 0) {
        partition_digest_ = identity.partition_digest;
        partition_worker_ = worker_id;
      } else if (partition_digest_ != identity.partition_digest) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "worker %d split the training data differently from worker %d (partition digest "
            "%016x, expected %016x): the workers must load the same data with the same "
            "--partition",
            worker_id, partition_worker_, identity.partition_digest, partition_digest_));
      }
    }
    if (num_samples_[worker_id] != 0 && num_samples_[worker_id] != num_samples &&
        WeightsKnownLocked() && options_.job.weighting == Weighting::kSamples) {
      return absl::FailedPreconditionError(absl::StrCat(
          "worker ", worker_id, " rejoined with ", num_samples,
          " samples, but the weights were fixed with ", num_samples_[worker_id]));
    }
    // A worker process this server has not seen, in a job past round 0: it restarted (or the
    // server did). Its state must be that of the newest committed round.
    const bool new_process = sessions_[worker_id] != identity.session_id || identity.session_id == 0;
    if (new_process && params_ != nullptr && machine_.round() > 0) {
      const bool has_state =
          has_committed_ && std::find(identity.state_rounds.begin(), identity.state_rounds.end(),
                                      committed_round_) != identity.state_rounds.end();
      if (!has_state && !identity.fresh_state) {
        if (!options_.checkpoints) {
          return absl::FailedPreconditionError(absl::StrCat(
              "worker ", worker_id, " restarted at round ", machine_.round(),
              ", but the server keeps no checkpoints (--checkpoint-dir), so the job cannot "
              "resume bit-identically; restart the worker with --allow-fresh-state to go on"));
        }
        return absl::FailedPreconditionError(absl::StrCat(
            "worker ", worker_id, " has no saved state for round ", committed_round_,
            ", the newest committed checkpoint (it has rounds [",
            absl::StrJoin(identity.state_rounds, ", "),
            "]); restart it with its --state-dir, or with --allow-fresh-state (the run is then "
            "no longer bit-identical)"));
      }
      if (!has_state) {
        if (ServerMetrics* m = options_.metrics) m->fresh_state_joins->Add();
      } else if (machine_.round() > committed_round_) {
        roll_back_to = committed_round_;
      }
    }
  }
  if (roll_back_to) {
    REGTOPK_RETURN_IF_ERROR(RollBack(*roll_back_to, worker_id));
    return Join(worker_id, num_samples, dim, layout_digest, identity);  // now at the round
  }
  JoinResult r;
  std::string note;
  std::shared_ptr<const std::vector<float>> held;
  {
    absl::MutexLock lock(&mu_);
    const bool new_process = sessions_[worker_id] != identity.session_id || identity.session_id == 0;
    if (new_process && identity.fresh_state && machine_.round() > 0 && params_ != nullptr) {
      note = absl::StrCat("worker ", worker_id, " joined with fresh state at round ",
                          machine_.round(),
                          ": zero error feedback, pulled parameters and optimizer state; the run "
                          "is no longer bit-identical to an uninterrupted one");
    }
    sessions_[worker_id] = identity.session_id;
    joined_[worker_id] = true;
    num_samples_[worker_id] = num_samples;
    if (options_.metrics) {
      double joined = 0;
      for (bool j : joined_) joined += j;
      options_.metrics->workers_joined->Set(joined);
    }
    ComputeWeightsLocked();
    // The round and the parameters' digest belong together: wait for a step in progress.
    mu_.Await(absl::Condition(+[](bool* stepping) { return !*stepping; }, &stepping_));
    r.config = options_.job;
    r.round = machine_.round();
    r.upload_parameters = params_ == nullptr && !uploading_.has_value();
    if (WeightsKnownLocked()) r.weight = weights_[worker_id];
    r.committed_round = committed_round_;
    held = params_;  // its digest is an O(d) pass: computed below, outside the lock
  }
  if (held != nullptr) r.params_digest = DigestFloats(*held);
  if (!note.empty()) Log(note);
  return r;
}

absl::Status Coordinator::RollBack(uint64_t round, uint32_t restarted_worker) {
  // Read the checkpoint without the lock (the job keeps running meanwhile), then swap it in.
  REGTOPK_ASSIGN_OR_RETURN(ServerCheckpoint c, options_.checkpoints->Load(round));
  std::vector<PushCallback> aborted;
  uint64_t from = 0;
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Coordinator* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
          return p->shutting_down_ || p->machine_.phase() == RoundPhase::kCollecting;
        },
        this));
    if (shutting_down_) return absl::UnavailableError("server is shutting down");
    if (machine_.round() <= round) return absl::OkStatus();  // another join rolled back already
    from = machine_.round();
    params_ = std::make_shared<std::vector<float>>(std::move(c.params));
    REGTOPK_RETURN_IF_ERROR(optimizer_->SetState(c.optimizer_state));
    if (downlink_) REGTOPK_RETURN_IF_ERROR(downlink_->SetError(c.downlink_error));
    aborted = machine_.Reset(round, c.last_result, c.last_push_digests);
    if (to_commit_ && *to_commit_ > round) to_commit_.reset();  // of the abandoned timeline
    if (ServerMetrics* m = options_.metrics) {
      m->rollbacks->Add();
      m->current_round->Set(static_cast<double>(round));
    }
  }
  const std::string why = absl::StrCat("the job rolled back from round ", from,
                                       " to the committed checkpoint of round ", round,
                                       " because worker ", restarted_worker,
                                       " restarted; join again to resume");
  Log(why);
  for (PushCallback& cb : aborted) cb(absl::AbortedError(why));
  return absl::OkStatus();
}

absl::Status Coordinator::BeginUpload(uint32_t worker_id) {
  absl::MutexLock lock(&mu_);
  if (worker_id >= joined_.size() || !joined_[worker_id]) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker_id, " must join before uploading parameters"));
  }
  if (params_ != nullptr) return absl::FailedPreconditionError("the server already holds parameters");
  if (uploading_.has_value()) {
    return UploadInProgress(*uploading_);
  }
  uploading_ = worker_id;
  return absl::OkStatus();
}

void Coordinator::AbandonUpload(uint32_t worker_id) {
  absl::MutexLock lock(&mu_);
  if (uploading_ == worker_id) uploading_.reset();
}

absl::Status Coordinator::UploadParameters(uint32_t worker_id, std::vector<float> values) {
  // Check the values before taking the lock: the scan of a large model must not stall pushes.
  const size_t bad = FindNonFinite(values);
  if (bad != values.size()) {
    AbandonUpload(worker_id);
    return absl::InvalidArgumentError(
        absl::StrCat("uploaded parameter ", bad, " is not finite: ", values[bad]));
  }
  absl::MutexLock lock(&mu_);
  if (uploading_.has_value() && *uploading_ != worker_id) {
    return UploadInProgress(*uploading_);
  }
  uploading_.reset();
  if (worker_id >= joined_.size() || !joined_[worker_id]) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker_id, " must join before uploading parameters"));
  }
  if (params_ != nullptr) {
    return absl::FailedPreconditionError("the server already holds parameters");
  }
  if (values.size() != dim_) {
    return absl::InvalidArgumentError(
        absl::StrCat("uploaded ", values.size(), " parameters, the model has ", dim_));
  }
  params_ = std::make_shared<std::vector<float>>(std::move(values));
  return absl::OkStatus();
}

absl::StatusOr<ParameterSnapshot> Coordinator::GetParameters(bool include_optimizer_state) {
  ParameterSnapshot s;
  {
    // Not while a step is in progress (it runs outside mu_, and the round advances only after
    // it), so the parameters and their round label always agree.
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(+[](bool* stepping) { return !*stepping; }, &stepping_));
    if (params_ == nullptr) {
      return absl::FailedPreconditionError("no parameters yet: waiting for the first upload");
    }
    s.values = params_;  // shared: MutableParamsLocked copies before the next step writes
    if (include_optimizer_state) {
      absl::Span<const float> m = optimizer_->state();
      s.optimizer_state.assign(m.begin(), m.end());
    }
    s.round = machine_.round();
  }
  s.digest = DigestFloats(*s.values);
  return s;
}

std::vector<float>& Coordinator::MutableParamsLocked() {
  // Pulls take a reference only under mu_, so a count of 1 seen here stays 1 until we let go of
  // the lock. The acquire fence pairs with the release of the last pull's reference, so its
  // reads of the buffer happen before our writes.
  if (params_.use_count() > 1) {
    params_ = std::make_shared<std::vector<float>>(*params_);
  } else {
    std::atomic_thread_fence(std::memory_order_acquire);
  }
  return *params_;
}

absl::Status Coordinator::Push(uint32_t worker_id, uint64_t round, absl::string_view encoded,
                               PushCallback done, uint64_t saved_state_round) {
  // State checks, then the (lock-free) decode, then the same checks again before recording:
  // another push of the same worker may have raced in meanwhile.
  // Each failed check names its metrics reason.
  const uint64_t payload_digest = DigestBytes(encoded);
  const char* reason = "";
  auto check = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    if (shutting_down_) {
      reason = "shutting_down";
      return absl::UnavailableError("server is shutting down");
    }
    reason = "job_failed";
    if (!job_status_.ok()) return job_status_;
    reason = "unknown_worker";
    if (worker_id >= joined_.size() || !joined_[worker_id]) {
      return absl::FailedPreconditionError(
          absl::StrCat("unknown worker ", worker_id, ": join before pushing"));
    }
    reason = "not_ready";
    if (params_ == nullptr) {
      return absl::FailedPreconditionError("no parameters yet: waiting for the first upload");
    }
    if (!WeightsKnownLocked()) {
      return absl::FailedPreconditionError(
          "aggregation weights are not known until every worker has joined");
    }
    reason = "finished";
    const uint64_t total = options_.job.total_rounds;
    if (total != 0 && machine_.round() >= total) {
      return absl::FailedPreconditionError(
          absl::StrCat("the job finished after ", total, " rounds"));
    }
    switch (machine_.Classify(worker_id, round, payload_digest)) {
      case RoundMachine::Verdict::kWrongRound:
        reason = "wrong_round";
        return absl::FailedPreconditionError(
            absl::StrCat("worker ", worker_id, " pushed round ", round,
                         " but the server is collecting round ", machine_.round()));
      case RoundMachine::Verdict::kDuplicate:
        reason = "duplicate";
        return absl::FailedPreconditionError(
            absl::StrCat("worker ", worker_id, " already pushed round ", round));
      default:
        return absl::OkStatus();
    }
  };
  auto reject = [&](absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++rejected_pushes_;
    if (options_.metrics) options_.metrics->Rejected(reason)->Add();
    return s;
  };
  uint64_t dim;
  {
    std::shared_ptr<const RoundResult> cached;
    PushCallback superseded;
    bool took_over = false;
    {
      absl::MutexLock lock(&mu_);
      if (absl::Status s = check(); !s.ok()) return reject(s);
      switch (machine_.Classify(worker_id, round, payload_digest)) {
        case RoundMachine::Verdict::kRetryOfClosed:
          cached = machine_.last_result();  // a retry after a lost reply
          break;
        case RoundMachine::Verdict::kRetryOfOpen:
          // The new call takes over; the closer answers whichever call holds the slot.
          superseded = machine_.TakeOver(worker_id, std::move(done));
          took_over = true;
          break;
        default:
          break;
      }
      dim = dim_;
    }
    if (cached) {
      done(std::move(cached));
      return absl::OkStatus();
    }
    if (took_over) {
      if (superseded) superseded(absl::AbortedError("superseded by a retry of the same push"));
      return absl::OkStatus();
    }
  }
  SparseVector grad;
  absl::Status decoded = DecodeSparse(encoded, dim, options_.job.MaxEntries(dim), &grad);
  // The job's push limits are O(nnz): applied with the decode, outside the lock.
  bool clipped = false;
  const absl::Status limited =
      decoded.ok() ? ApplyPushLimits(options_.job, &grad, &clipped) : absl::OkStatus();
  absl::MutexLock lock(&mu_);
  if (!decoded.ok()) {
    reason = "malformed";
    return reject(absl::InvalidArgumentError(
        absl::StrCat("worker ", worker_id, " round ", round, ": ", decoded.message())));
  }
  if (absl::Status s = check(); !s.ok()) return reject(s);
  if (!limited.ok()) {
    reason = "max_abs_value";
    return reject(absl::InvalidArgumentError(
        absl::StrCat("worker ", worker_id, " round ", round, ": ", limited.message())));
  }
  if (machine_.Classify(worker_id, round, payload_digest) != RoundMachine::Verdict::kNew) {
    reason = "duplicate";
    return reject(absl::FailedPreconditionError(
        absl::StrCat("worker ", worker_id, " already pushed round ", round)));
  }
  if (ServerMetrics* m = options_.metrics) {
    m->push_bytes->Add(encoded.size());
    m->push_dense_equivalent_bytes->Add(4.0 * dim);
    m->upstream_compression->SetRatio(*m->push_dense_equivalent_bytes, *m->push_bytes);
  }
  if (clipped) {
    if (ServerMetrics* m = options_.metrics) m->clipped_pushes->Add();
  }
  const bool saved = saved_state_round == round && options_.job.IsCheckpointRound(round);
  machine_.Record(worker_id, payload_digest, std::move(grad), saved, std::move(done));
  return absl::OkStatus();
}

std::shared_ptr<ServerCheckpoint> Coordinator::SnapshotLocked() const {
  auto c = std::make_shared<ServerCheckpoint>();
  c->round = machine_.round();
  c->job = options_.job;
  c->dim = dim_;
  c->layout_digest = layout_digest_;
  c->num_samples = num_samples_;
  c->weights = weights_;
  c->params = *params_;
  absl::Span<const float> m = optimizer_->state();
  c->optimizer_state.assign(m.begin(), m.end());
  if (downlink_) c->downlink_error.assign(downlink_->error().begin(), downlink_->error().end());
  c->last_result = machine_.last_result();
  c->last_push_digests = machine_.last_push_digests();
  return c;
}

bool Coordinator::WaitForFullRoundLocked() {
  const absl::Duration timeout = absl::Seconds(options_.job.round_timeout_seconds);
  while (true) {
    if (shutting_down_) return false;
    // Checkpoint 0: the job's start, committed as soon as the job is ready (every worker's
    // state before round 0 is empty, so the server's file alone makes it consistent).
    if (CheckpointZeroDueLocked()) {
      std::shared_ptr<ServerCheckpoint> c = SnapshotLocked();
      mu_.Unlock();
      absl::Status s = options_.checkpoints->WritePending(*c);
      if (s.ok()) s = options_.checkpoints->Commit(c->round);
      mu_.Lock();
      if (!s.ok()) {
        job_status_ = absl::InternalError(absl::StrCat("the job failed: cannot write its first checkpoint: ", s.message()));
        std::vector<PushCallback> calls = machine_.Abandon();
        const absl::Status failed = job_status_;  // a copy: the callbacks run unlocked
        mu_.Unlock();
        Log(std::string(failed.message()));
        for (PushCallback& cb : calls) cb(failed);
        mu_.Lock();
        continue;
      }
      has_committed_ = true;
      committed_round_ = c->round;
      continue;
    }
    const bool ready = job_status_.ok() && machine_.full() &&
                       machine_.phase() == RoundPhase::kCollecting &&
                       (!options_.checkpoints || has_committed_);
    if (ready) return true;
    const std::optional<absl::Time> first = machine_.first_push_time();
    if (!job_status_.ok() || !first) {
      // Nothing to time: wake when something changes.
      const uint64_t round = machine_.round();
      const uint32_t pushed = machine_.pushed();
      struct Arg {
        Coordinator* c;
        uint64_t round;
        uint32_t pushed;
      } arg{this, round, pushed};
      mu_.Await(absl::Condition(
          +[](Arg* a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(a->c->mu_) {
            return a->c->shutting_down_ || a->c->machine_.round() != a->round ||
                   a->c->machine_.pushed() != a->pushed || a->c->CheckpointZeroDueLocked() ||
                   a->c->machine_.full();
          },
          &arg));
      continue;
    }
    const absl::Time now = options_.clock->Now();
    const absl::Time deadline =
        timeout > absl::ZeroDuration() ? *first + timeout : absl::InfiniteFuture();
    if (now >= deadline) {
      const std::vector<uint32_t> missing = machine_.Missing();
      job_status_ = absl::FailedPreconditionError(absl::StrCat(
          "the job failed: round ", machine_.round(), " waited ", absl::FormatDuration(timeout),
          " (--round-timeout-seconds) for worker(s) ", absl::StrJoin(missing, ", "),
          ", which never pushed or came back (dead, stuck or not restarted)"));
      std::vector<PushCallback> calls = machine_.Abandon();
      if (ServerMetrics* m = options_.metrics) m->abandoned_rounds->Add();
      const absl::Status failed = job_status_;
      mu_.Unlock();
      Log(std::string(failed.message()));
      for (PushCallback& cb : calls) cb(failed);
      mu_.Lock();
      continue;
    }
    // Wait for the round to fill, at most until the deadline, and say every ~10 s who is
    // missing, so that an operator sees which process to restart.
    const absl::Time wake = std::min(deadline, now + kWaitingLogInterval);
    const uint64_t round = machine_.round();
    struct Arg {
      Coordinator* c;
      uint64_t round;
    } arg{this, round};
    const bool changed = mu_.AwaitWithTimeout(
        absl::Condition(
            +[](Arg* a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(a->c->mu_) {
              return a->c->shutting_down_ || a->c->machine_.full() || a->c->machine_.round() != a->round;
            },
            &arg),
        wake - now);
    if (!changed && options_.clock->Now() < deadline && machine_.round() == round) {
      const std::string line = absl::StrCat(
          "round ", round, " is waiting for worker(s) ", absl::StrJoin(machine_.Missing(), ", "),
          " (", absl::FormatDuration(absl::Trunc(options_.clock->Now() - *first, absl::Seconds(1))),
          " of ", absl::FormatDuration(timeout), " before the job fails)");
      mu_.Unlock();
      Log(line);
      mu_.Lock();
    }
  }
}

void Coordinator::CloserLoop() {
  const uint32_t n = options_.job.num_workers;
  std::vector<SparseView> views(n);
  std::vector<float> weights;
  SparseVector aggregate;
  SparseAggregator aggregator(options_.threads);
  // The aggregate's encoding (split by entry range) and the optimizer's dry run and step (split
  // by parameter range), in turn on the closer's thread.
  TaskPool pool(options_.threads);
  while (true) {
    std::vector<SparseVector> pushes;
    DownlinkCompressor* downlink = nullptr;
    uint64_t round, dim;
    bool all_saved;
    {
      mu_.Lock();
      if (!WaitForFullRoundLocked()) {
        mu_.Unlock();
        return;
      }
      pushes = machine_.BeginClose();
      downlink = downlink_.get();
      all_saved = machine_.AllSavedState();
      weights = weights_;
      round = machine_.round();
      dim = dim_;
      mu_.Unlock();
    }
    for (uint32_t w = 0; w < n; ++w) views[w] = pushes[w];
    auto result = std::make_shared<RoundResult>();
    result->round = round;
    const absl::Time t0 = absl::Now();
    aggregator.Aggregate(views, weights, &aggregate);  // worker-id order: reproducible bit for bit
    // The compressed downlink (opt-in) replaces the aggregate with what is sent; the server
    // steps with exactly that, as every worker does.
    absl::Status downlink_status;
    if (downlink != nullptr) downlink_status = downlink->Compress(&aggregate);
    const absl::Time t1 = absl::Now();
    // The encoding needs only the aggregate, so it is done before the step, outside the lock.
    if (options_.force_dense_aggregate) {
      EncodeSparse(aggregate, dim, SparseFormat::kDense, &result->encoded, &pool);
    } else {
      EncodeSparseSmallest(aggregate, dim, &result->encoded, &pool);
    }
    const absl::Time t2 = absl::Now();
    result->nnz = aggregate.nnz();

    // This round's checkpoint can be committed once every worker saved its state for it (known
    // now) and the server's own file is durable (perhaps later: then the writer commits).
    std::string commit_note;
    if (options_.checkpoints && options_.job.IsCheckpointRound(round)) {
      absl::MutexLock lock(&mu_);
      const bool already = has_committed_ && committed_round_ == round;  // resumed or rolled back here
      if (already) {
      } else if (!all_saved) {
        commit_note = absl::StrCat("checkpoint of round ", round,
                                   " not committed: not every worker saved its state for it");
      } else {
        to_commit_ = round;
      }
    }
    if (!commit_note.empty()) Log(commit_note);
    MaybeCommit();

    std::vector<PushCallback> callbacks;
    std::vector<PushCallback> refused;
    const uint32_t every = options_.job.digest_every;
    const absl::Time t3 = absl::Now();
    // The dry run, the step and the digest run off the lock, on parameters no one else can
    // reach meanwhile: MutableParamsLocked makes them ours alone, and while stepping_ is set,
    // pulls and the joins' digests wait (they need this step's result with its round label);
    // pushes and status calls do not. Nothing else replaces params_ or optimizer_ during a
    // close (a rollback waits for the collecting phase).
    std::vector<float>* params;
    Optimizer* optimizer;
    {
      absl::MutexLock lock(&mu_);
      params = &MutableParamsLocked();
      optimizer = optimizer_.get();
      stepping_ = true;
    }
    // Never apply a step that makes a parameter (or the optimizer's state) non-finite: a dry
    // run first, the same arithmetic. Such a round is refused to every worker and the job
    // stops, its parameters and committed checkpoints those from before the round.
    if (options_.before_step) options_.before_step(round);
    // A refusal (the downlink's carried error overflowed, or the dry run found a non-finite
    // parameter) applies nothing and fails the job.
    absl::Status refusal;
    if (!downlink_status.ok()) {
      refusal = absl::FailedPreconditionError(absl::StrCat(
          "the job failed: round ", round, ": ", downlink_status.message(),
          "; nothing was applied, the checkpoints are those from before round ", round));
    } else if (std::optional<size_t> bad =
                   optimizer->FirstNonFinite(*params, aggregate, round, &pool)) {
      refusal = absl::FailedPreconditionError(absl::StrCat(
          "the job failed: round ", round, "'s step would make parameter ", *bad,
          " non-finite (an exploding or poisoned update); nothing was applied, the "
          "parameters and checkpoints are those from before round ", round,
          ". Lower --lr or set --clip-norm / --max-abs-value, then resume"));
    } else {
      optimizer->Step(absl::MakeSpan(*params), aggregate, round, &pool);
      if (every != 0 && (round + 1) % every == 0) {
        result->has_digest = true;
        result->digest = DigestFloats(*params);
      }
    }
    const absl::Time t4 = absl::Now();
    {
      // The round's advance: from here a pull sees the stepped parameters with the new round.
      absl::MutexLock lock(&mu_);
      stepping_ = false;
      if (!refusal.ok()) {
        job_status_ = refusal;
        refused = machine_.Refuse();
        if (ServerMetrics* m = options_.metrics) m->refused_rounds->Add();
      } else {
        result->committed_round = committed_round_;
        result->aggregate_seconds = absl::ToDoubleSeconds(t1 - t0);
        result->encode_seconds = absl::ToDoubleSeconds(t2 - t1);
        result->step_seconds = absl::ToDoubleSeconds(t4 - t3);
        callbacks = machine_.FinishClose(result);
        const uint64_t next = round + 1;
        const uint64_t total = options_.job.total_rounds;
        if (options_.checkpoints && options_.job.IsCheckpointRound(next) && (total == 0 || next < total)) {
          // Copy the state now (one pass over memory); the writer thread does the slow part.
          mu_.Await(absl::Condition(
              +[](Coordinator* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
                return c->shutting_down_ || c->to_write_ == nullptr;
              },
              this));
          to_write_ = SnapshotLocked();
        }
      }
    }
    if (!refusal.ok()) {
      Log(std::string(refusal.message()));
      for (PushCallback& cb : refused) cb(refusal);
      continue;
    }
    std::shared_ptr<const RoundResult> shared = std::move(result);
    if (ServerMetrics* m = options_.metrics) {
      const absl::Time now = options_.clock->Now();
      m->rounds->Add();
      m->round_seconds->Observe(absl::ToDoubleSeconds(now - last_close_));
      last_close_ = now;
      m->aggregate_seconds->Add(shared->aggregate_seconds);
      m->optimizer_seconds->Add(shared->step_seconds);
      m->encode_seconds->Add(shared->encode_seconds);
      m->aggregate_bytes_sent->Add(static_cast<double>(shared->encoded.size()) * n);
      m->aggregate_dense_equivalent_bytes->Add(4.0 * dim * n);
      m->downstream_compression->SetRatio(*m->aggregate_dense_equivalent_bytes,
                                          *m->aggregate_bytes_sent);
      m->current_round->Set(static_cast<double>(round + 1));
    }
    for (PushCallback& cb : callbacks) cb(shared);
    if (options_.on_round_closed) options_.on_round_closed(*shared);
  }
}

void Coordinator::WriterLoop() {
  // Checkpoints are background work: on a machine with few cores the round (the optimizer step)
  // must win the CPU. Linux gives each thread its own nice value.
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
  while (true) {
    std::shared_ptr<ServerCheckpoint> c;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Coordinator* p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(p->mu_) {
            return p->to_write_ != nullptr || p->writer_stop_;
          },
          this));
      if (to_write_ == nullptr) return;  // stopped, nothing left
      c = std::move(to_write_);
      writing_ = true;
    }
    const absl::Time start = absl::Now();
    absl::Status s = options_.checkpoints->WritePending(*c);
    if (ServerMetrics* m = options_.metrics) {
      m->checkpoint_write_seconds->Add(absl::ToDoubleSeconds(absl::Now() - start));
    }
    if (!s.ok()) Log(absl::StrCat("writing the checkpoint of round ", c->round, " failed: ", s.message()));
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (s.ok()) last_written_ = c->round;
    }
    MaybeCommit();
  }
}

void Coordinator::MaybeCommit() {
  uint64_t round;
  {
    absl::MutexLock lock(&mu_);
    if (!to_commit_ || committing_ || last_written_ != *to_commit_) return;
    round = *to_commit_;
    committing_ = true;
  }
  absl::Status s = options_.checkpoints->Commit(round);
  {
    absl::MutexLock lock(&mu_);
    committing_ = false;
    if (to_commit_ == round) to_commit_.reset();
    if (s.ok() && (!has_committed_ || committed_round_ < round)) {
      has_committed_ = true;
      committed_round_ = round;
      if (ServerMetrics* m = options_.metrics) {
        m->checkpoints_committed->Add();
        m->last_committed_round->Set(static_cast<double>(round));
      }
    }
  }
  if (!s.ok()) Log(absl::StrCat("checkpoint of round ", round, " not committed: ", s.message()));
}

void Coordinator::Shutdown() {
  std::vector<PushCallback> callbacks;
  {
    absl::MutexLock lock(&mu_);
    if (!shutting_down_) {
      shutting_down_ = true;
      // A round being closed is answered by the closer; an open one gets UNAVAILABLE.
      if (machine_.phase() == RoundPhase::kCollecting) callbacks = machine_.Abandon();
    }
  }
  for (PushCallback& cb : callbacks) {
    cb(absl::UnavailableError("server is shutting down; the round did not close"));
  }
  if (closer_.joinable() && closer_.get_id() != std::this_thread::get_id()) closer_.join();
  if (writer_.joinable() && writer_.get_id() != std::this_thread::get_id()) {
    {
      // The checkpoint being written is finished; then the current state is written as a
      // final pending checkpoint (committed only if the workers saved the same round).
      absl::MutexLock lock(&mu_);
      if (to_write_ == nullptr && params_ != nullptr && optimizer_ &&
          (!last_written_ || *last_written_ != machine_.round()) &&
          (!has_committed_ || committed_round_ != machine_.round())) {
        to_write_ = SnapshotLocked();
      }
      writer_stop_ = true;
    }
    writer_.join();
  }
}

void Coordinator::CountRejectedPush(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  ++rejected_pushes_;
  if (options_.metrics) options_.metrics->Rejected(reason)->Add();
}

void Coordinator::CountCancelledPush() {
  absl::MutexLock lock(&mu_);
  ++cancelled_pushes_;
  if (options_.metrics) options_.metrics->Rejected("cancelled")->Add();
}

bool Coordinator::AwaitPushes(uint32_t pushes, absl::Duration timeout) {
  struct Arg {
    Coordinator* c;
    uint32_t pushes;
  } arg{this, pushes};
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(
                                  +[](Arg* a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(a->c->mu_) {
                                    return a->c->machine_.pushed() >= a->pushes;
                                  },
                                  &arg),
                              timeout);
}

CoordinatorStatus Coordinator::GetStatus() {
  absl::MutexLock lock(&mu_);
  CoordinatorStatus s;
  s.round = machine_.round();
  for (bool j : joined_) s.workers_joined += j;
  s.num_workers = options_.job.num_workers;
  s.parameters_ready = params_ != nullptr;
  s.finished = options_.job.total_rounds != 0 && machine_.round() >= options_.job.total_rounds;
  s.rejected_pushes = rejected_pushes_;
  s.cancelled_pushes = cancelled_pushes_;
  s.pushes_this_round = machine_.pushed();
  s.committed_round = committed_round_;
  s.job_status = job_status_;
  s.last_round = machine_.last_result();
  return s;
}

}  // namespace regtopk
