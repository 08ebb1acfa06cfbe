#include "server/coordinator.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/sparse/aggregate.h"
#include "common/status/status_macros.h"
#include "common/wire/digest.h"
#include "common/wire/sparse_codec.h"

namespace regtopk {

absl::Status CoordinatorOptions::Validate() const {
  REGTOPK_RETURN_IF_ERROR(job.Validate());
  if (max_dim == 0 || max_dim > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("max_dim must be in [1, 2^32), got ", max_dim));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(CoordinatorOptions options) {
  REGTOPK_RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<Coordinator> c(new Coordinator(std::move(options)));
  c->closer_ = std::thread([p = c.get()] { p->CloserLoop(); });
  return c;
}

Coordinator::Coordinator(CoordinatorOptions options) : options_(std::move(options)) {
  const uint32_t n = options_.job.num_workers;
  joined_.assign(n, false);
  num_samples_.assign(n, 0);
  pushes_.resize(n);
  callbacks_.resize(n);
  push_digests_.assign(n, 0);
  last_push_digests_.assign(n, 0);
  if (options_.job.weighting == Weighting::kUniform) {
    weights_.assign(n, 1.0f / static_cast<float>(n));
  }
}

Coordinator::~Coordinator() { Shutdown(); }

uint64_t Coordinator::dim() const {
  absl::MutexLock lock(&mu_);
  return dim_;
}

bool Coordinator::WeightsKnownLocked() const { return !weights_.empty(); }

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
                                             uint64_t layout_digest) {
  const uint32_t n = options_.job.num_workers;
  if (worker_id >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker id ", worker_id, " is out of range: the job has ", n, " workers"));
  }
  if (dim == 0 || dim > options_.max_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("model dimension ", dim, " is not in [1, ", options_.max_dim, "]"));
  }
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return absl::UnavailableError("server is shutting down");
  if (num_samples == 0) {
    // A probe: the job config for a worker that needs it before it can count its samples.
    if (dim_ != 0 && (dim != dim_ || layout_digest != layout_digest_)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "worker ", worker_id, "'s model layout differs from the job's (dimension ", dim_, ")"));
    }
    JoinResult r;
    r.config = options_.job;
    r.round = round_;
    return r;
  }
  if (dim_ == 0) {
    dim_ = dim;
    layout_digest_ = layout_digest;
    sgd_ = std::make_unique<Sgd>(options_.job.sgd, dim);
  } else if (dim != dim_ || layout_digest != layout_digest_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", worker_id, "'s model layout (dimension ", dim, ", digest ", layout_digest,
        ") differs from the job's (dimension ", dim_, ", digest ", layout_digest_, ")"));
  }
  if (joined_[worker_id] && num_samples_[worker_id] != num_samples && WeightsKnownLocked() &&
      options_.job.weighting == Weighting::kSamples) {
    return absl::FailedPreconditionError(absl::StrCat("worker ", worker_id, " rejoined with ",
                                                      num_samples,
                                                      " samples, but the weights were "
                                                      "fixed with ",
                                                      num_samples_[worker_id]));
  }
  joined_[worker_id] = true;
  num_samples_[worker_id] = num_samples;
  if (options_.metrics) {
    double joined = 0;
    for (bool j : joined_) joined += j;
    options_.metrics->workers_joined->Set(joined);
  }
  ComputeWeightsLocked();
  JoinResult r;
  r.config = options_.job;
  r.round = round_;
  r.upload_parameters = params_.empty();
  if (WeightsKnownLocked()) r.weight = weights_[worker_id];
  return r;
}

absl::Status Coordinator::UploadParameters(uint32_t worker_id, std::vector<float> values) {
  // Check the values before taking the lock: the scan of a large model must not stall pushes.
  const size_t bad = FindNonFinite(values);
  if (bad != values.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("uploaded parameter ", bad, " is not finite: ", values[bad]));
  }
  absl::MutexLock lock(&mu_);
  if (worker_id >= joined_.size() || !joined_[worker_id]) {
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker_id, " must join before uploading parameters"));
  }
  if (!params_.empty()) {
    return absl::FailedPreconditionError("the server already holds parameters");
  }
  if (values.size() != dim_) {
    return absl::InvalidArgumentError(
        absl::StrCat("uploaded ", values.size(), " parameters, the model has ", dim_));
  }
  params_ = std::move(values);
  return absl::OkStatus();
}

absl::StatusOr<ParameterSnapshot> Coordinator::GetParameters() {
  ParameterSnapshot s;
  {
    absl::MutexLock lock(&mu_);
    if (params_.empty()) {
      return absl::FailedPreconditionError("no parameters yet: waiting for the first upload");
    }
    s.values = params_;
    s.round = round_;
  }
  s.digest = DigestFloats(s.values);
  return s;
}

absl::Status Coordinator::Push(uint32_t worker_id, uint64_t round, absl::string_view encoded,
                               PushCallback done) {
  // State checks, then the (lock-free) decode, then the same checks again before recording:
  // another push of the same worker may have raced in meanwhile.
  // Each failed check names its metrics reason.
  const char* reason = "";
  auto check = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    if (shutting_down_) {
      reason = "shutting_down";
      return absl::UnavailableError("server is shutting down");
    }
    reason = "unknown_worker";
    if (worker_id >= joined_.size() || !joined_[worker_id]) {
      return absl::FailedPreconditionError(
          absl::StrCat("unknown worker ", worker_id, ": join before pushing"));
    }
    reason = "not_ready";
    if (params_.empty()) {
      return absl::FailedPreconditionError("no parameters yet: waiting for the first upload");
    }
    if (!WeightsKnownLocked()) {
      return absl::FailedPreconditionError(
          "aggregation weights are not known until every worker has joined");
    }
    reason = "finished";
    const uint64_t total = options_.job.total_rounds;
    if (total != 0 && round_ >= total) {
      return absl::FailedPreconditionError(
          absl::StrCat("the job finished after ", total, " rounds"));
    }
    reason = "wrong_round";
    if (round != round_) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker ", worker_id, " pushed round ", round,
                       " but the server is collecting round ", round_));
    }
    reason = "duplicate";
    if (pushes_[worker_id].has_value()) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker ", worker_id, " already pushed round ", round));
    }
    return absl::OkStatus();
  };
  auto reject = [&](absl::Status s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++rejected_pushes_;
    if (options_.metrics) options_.metrics->Rejected(reason)->Add();
    return s;
  };
  const uint64_t payload_digest = DigestBytes(encoded);
  uint64_t dim;
  {
    std::shared_ptr<const RoundResult> cached;
    PushCallback superseded;
    bool took_over = false;
    {
      absl::MutexLock lock(&mu_);
      const bool known = !shutting_down_ && worker_id < joined_.size() && joined_[worker_id];
      if (known && last_round_ && round + 1 == round_ &&
          last_push_digests_[worker_id] == payload_digest) {
        cached = last_round_;  // a retry after a lost reply
      } else if (known && round == round_ && pushes_[worker_id].has_value() &&
                 push_digests_[worker_id] == payload_digest) {
        // A retry while the round is open (or closing, when the slot is already empty): the
        // new call takes over; the closer also answers callbacks that arrive while it works.
        superseded = std::move(callbacks_[worker_id]);
        callbacks_[worker_id] = std::move(done);
        took_over = true;
      } else {
        if (absl::Status s = check(); !s.ok()) return reject(s);
        dim = dim_;
      }
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
  absl::MutexLock lock(&mu_);
  if (!decoded.ok()) {
    reason = "malformed";
    return reject(absl::InvalidArgumentError(
        absl::StrCat("worker ", worker_id, " round ", round, ": ", decoded.message())));
  }
  if (absl::Status s = check(); !s.ok()) return reject(s);
  if (ServerMetrics* m = options_.metrics) {
    m->push_bytes->Add(encoded.size());
    m->push_dense_equivalent_bytes->Add(4.0 * dim);
    m->upstream_compression->SetRatio(*m->push_dense_equivalent_bytes, *m->push_bytes);
  }
  pushes_[worker_id] = std::move(grad);
  callbacks_[worker_id] = std::move(done);
  push_digests_[worker_id] = payload_digest;
  if (++pushed_ == 1) first_push_time_ = absl::Now();
  return absl::OkStatus();
}

bool Coordinator::WaitForFullRoundLocked() {
  const absl::Condition full(
      +[](Coordinator* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
        return c->shutting_down_ || c->pushed_ == c->options_.job.num_workers;
      },
      this);
  const absl::Condition started(
      +[](Coordinator* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
        return c->shutting_down_ || c->pushed_ > 0;
      },
      this);
  const absl::Duration timeout = options_.round_timeout;
  while (true) {
    if (timeout <= absl::ZeroDuration()) {
      mu_.Await(full);
      return !shutting_down_;
    }
    mu_.Await(started);
    if (mu_.AwaitWithDeadline(full, first_push_time_ + timeout)) return !shutting_down_;
    // Abandon the round: nothing was applied, so starting it over loses nothing but time.
    std::vector<PushCallback> expired;
    std::vector<uint32_t> missing;
    for (uint32_t w = 0; w < pushes_.size(); ++w) {
      if (!pushes_[w].has_value()) missing.push_back(w);
      if (callbacks_[w]) expired.push_back(std::move(callbacks_[w]));
      callbacks_[w] = nullptr;
      pushes_[w].reset();
      push_digests_[w] = 0;
    }
    pushed_ = 0;
    const std::string message = absl::StrCat(
        "round ", round_, " did not close within ", absl::FormatDuration(timeout),
        ": no push from worker(s) ", absl::StrJoin(missing, ", "),
        " (dead, stuck or misconfigured); the round was abandoned");
    if (ServerMetrics* m = options_.metrics) m->abandoned_rounds->Add();
    mu_.Unlock();
    for (PushCallback& cb : expired) cb(absl::DeadlineExceededError(message));
    mu_.Lock();
  }
}

void Coordinator::CloserLoop() {
  const uint32_t n = options_.job.num_workers;
  std::vector<SparseVector> pushes(n);
  std::vector<SparseView> views(n);
  std::vector<float> weights;
  SparseVector aggregate;
  while (true) {
    std::vector<PushCallback> callbacks;
    uint64_t round, dim;
    {
      mu_.Lock();
      if (!WaitForFullRoundLocked()) {
        mu_.Unlock();
        return;
      }
      // The pushes are moved out but their slots stay engaged, so a duplicate push for this
      // round is still refused while the round closes.
      for (uint32_t w = 0; w < n; ++w) {
        pushes[w] = std::move(*pushes_[w]);
        views[w] = pushes[w];
      }
      callbacks.swap(callbacks_);
      callbacks_.resize(n);
      weights = weights_;
      round = round_;
      dim = dim_;
      mu_.Unlock();
    }
    auto result = std::make_shared<RoundResult>();
    result->round = round;
    absl::Time t0 = absl::Now();
    AggregateSparse(views, weights, &aggregate);  // worker-id order: reproducible bit for bit
    absl::Time t1 = absl::Now();
    const uint32_t every = options_.job.digest_every;
    {
      absl::MutexLock lock(&mu_);
      sgd_->Step(absl::MakeSpan(params_), aggregate);
      if (every != 0 && (round + 1) % every == 0) {
        result->has_digest = true;
        result->digest = DigestFloats(params_);
      }
    }
    absl::Time t2 = absl::Now();
    if (options_.force_dense_aggregate) {
      EncodeSparse(aggregate, dim, SparseFormat::kDense, &result->encoded);
    } else {
      EncodeSparseSmallest(aggregate, dim, &result->encoded);
    }
    absl::Time t3 = absl::Now();
    result->nnz = aggregate.nnz();
    result->aggregate_seconds = absl::ToDoubleSeconds(t1 - t0);
    result->step_seconds = absl::ToDoubleSeconds(t2 - t1);
    result->encode_seconds = absl::ToDoubleSeconds(t3 - t2);
    std::shared_ptr<const RoundResult> shared = std::move(result);
    {
      absl::MutexLock lock(&mu_);
      for (auto& p : pushes_) p.reset();
      pushed_ = 0;
      ++round_;
      last_round_ = shared;
      last_push_digests_.swap(push_digests_);
      // Retries that arrived while the round was closing.
      for (auto& cb : callbacks_) {
        if (cb) callbacks.push_back(std::move(cb));
        cb = nullptr;
      }
    }
    if (ServerMetrics* m = options_.metrics) {
      const absl::Time now = absl::Now();
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

void Coordinator::Shutdown() {
  std::vector<PushCallback> callbacks;
  {
    absl::MutexLock lock(&mu_);
    if (!shutting_down_) {
      shutting_down_ = true;
      for (auto& cb : callbacks_) {
        if (cb) callbacks.push_back(std::move(cb));
        cb = nullptr;
      }
    }
  }
  for (PushCallback& cb : callbacks) {
    cb(absl::UnavailableError("server is shutting down; the round did not close"));
  }
  if (closer_.joinable() && closer_.get_id() != std::this_thread::get_id()) closer_.join();
}

void Coordinator::CountRejectedPush(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  ++rejected_pushes_;
  if (options_.metrics) options_.metrics->Rejected(reason)->Add();
}

bool Coordinator::AwaitPushes(uint32_t pushes, absl::Duration timeout) {
  struct Arg {
    Coordinator* c;
    uint32_t pushes;
  } arg{this, pushes};
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(
                                  +[](Arg* a) ABSL_EXCLUSIVE_LOCKS_REQUIRED(a->c->mu_) {
                                    return a->c->pushed_ >= a->pushes;
                                  },
                                  &arg),
                              timeout);
}

CoordinatorStatus Coordinator::GetStatus() {
  absl::MutexLock lock(&mu_);
  CoordinatorStatus s;
  s.round = round_;
  for (bool j : joined_) s.workers_joined += j;
  s.num_workers = options_.job.num_workers;
  s.parameters_ready = !params_.empty();
  s.finished = options_.job.total_rounds != 0 && round_ >= options_.job.total_rounds;
  s.rejected_pushes = rejected_pushes_;
  s.pushes_this_round = pushed_;
  s.last_round = last_round_;
  return s;
}

}  // namespace regtopk
