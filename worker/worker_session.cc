#include "worker/worker_session.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status/status_macros.h"
#include "common/wire/digest.h"
#include "common/wire/sparse_codec.h"

namespace regtopk {
namespace {

// Polls `attempt` with exponential backoff (10 ms .. 1 s) while it returns FAILED_PRECONDITION
// (the server's "not yet"), until it returns anything else or `deadline` passes.
template <typename T, typename F>
absl::StatusOr<T> RetryWhileNotReady(F attempt, absl::Time deadline, absl::string_view what) {
  absl::Duration backoff = absl::Milliseconds(10);
  while (true) {
    absl::StatusOr<T> r = attempt();
    if (r.ok() || r.status().code() != absl::StatusCode::kFailedPrecondition) return r;
    if (absl::Now() + backoff > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("gave up waiting for ", what, ": ", r.status().message()));
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<WorkerSession>> WorkerSession::Start(
    ServerClient* client, const WorkerSessionOptions& options,
    std::vector<float> initial_parameters) {
  const uint64_t dim = initial_parameters.size();
  const absl::Time deadline = absl::Now() + options.start_timeout;
  REGTOPK_ASSIGN_OR_RETURN(JoinReply join, client->Join(options.worker_id, options.num_samples, dim,
                                                        options.layout_digest));
  bool uploaded = false;
  if (join.upload_parameters) {
    absl::Status s = client->UploadParameters(options.worker_id, initial_parameters);
    // Another worker's upload may have won the race: then pull like everyone else.
    if (!s.ok() && s.code() != absl::StatusCode::kFailedPrecondition) return s;
    uploaded = s.ok();
  }
  if (!join.weight) {
    // Weights by sample count are known once every worker has joined; Join is idempotent.
    REGTOPK_ASSIGN_OR_RETURN(
        join, RetryWhileNotReady<JoinReply>(
                  [&]() -> absl::StatusOr<JoinReply> {
                    REGTOPK_ASSIGN_OR_RETURN(
                        JoinReply j, client->Join(options.worker_id, options.num_samples, dim,
                                                  options.layout_digest));
                    if (!j.weight) return absl::FailedPreconditionError("not all workers joined");
                    return j;
                  },
                  deadline, "every worker to join"));
  }
  std::vector<float> params;
  uint64_t round = join.round;
  if (uploaded) {
    params = std::move(initial_parameters);
  } else {
    REGTOPK_ASSIGN_OR_RETURN(PulledParameters pulled,
                             RetryWhileNotReady<PulledParameters>(
                                 [&] { return client->PullParameters(options.worker_id); },
                                 deadline, "the initial parameters"));
    if (pulled.values.size() != dim) {
      return absl::DataLossError(
          absl::StrCat("pulled ", pulled.values.size(), " parameters, expected ", dim));
    }
    params = std::move(pulled.values);
    round = pulled.round;
  }
  SparsifierOptions so;
  so.algorithm = join.config.algorithm;
  so.dim = dim;
  so.density = join.config.density;
  so.mu = join.config.mu;
  so.weight = *join.weight;
  so.seed = join.config.seed + options.worker_id;
  REGTOPK_ASSIGN_OR_RETURN(std::unique_ptr<Sparsifier> sparsifier, CreateSparsifier(so));
  return std::unique_ptr<WorkerSession>(new WorkerSession(
      client, options, join.config, *join.weight, std::move(sparsifier), std::move(params), round));
}

WorkerSession::WorkerSession(ServerClient* client, const WorkerSessionOptions& options,
                             JobConfig config, float weight, std::unique_ptr<Sparsifier> sparsifier,
                             std::vector<float> params, uint64_t round)
    : client_(client),
      options_(options),
      config_(std::move(config)),
      weight_(weight),
      sparsifier_(std::move(sparsifier)),
      sgd_(config_.sgd, params.size()),
      params_(std::move(params)),
      round_(round) {}

bool WorkerSession::finished() const {
  return config_.total_rounds != 0 && round_ >= config_.total_rounds;
}

absl::StatusOr<StepStats> WorkerSession::Step(absl::Span<const float> gradient) {
  if (finished()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the job finished after ", config_.total_rounds, " rounds"));
  }
  StepStats stats;
  stats.round = round_;
  absl::Time t0 = absl::Now();
  REGTOPK_RETURN_IF_ERROR(sparsifier_->Compress(gradient, &sent_));
  EncodeSparseSmallest(sent_, dim(), &encoded_);
  stats.entries_sent = sent_.nnz();
  stats.bytes_pushed = encoded_.size();
  absl::Time t1 = absl::Now();
  absl::StatusOr<PushReply> pushed = client_->Push(options_.worker_id, round_, encoded_);
  absl::Duration backoff = absl::Milliseconds(100);
  for (int attempt = 1; attempt < options_.push_attempts && !pushed.ok() &&
                        (pushed.status().code() == absl::StatusCode::kUnavailable ||
                         pushed.status().code() == absl::StatusCode::kAborted);
       ++attempt) {
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
    pushed = client_->Push(options_.worker_id, round_, encoded_);
  }
  if (!pushed.ok()) return pushed.status();
  PushReply reply = std::move(*pushed);
  absl::Time t2 = absl::Now();
  stats.bytes_received = reply.encoded.size();
  stats.wait_seconds = reply.held_seconds;
  // The aggregate of N pushes may hold up to N * k entries: bounded by d only.
  absl::Status decoded = DecodeSparse(reply.encoded, dim(), dim(), &aggregate_);
  if (!decoded.ok()) {
    return absl::DataLossError(absl::StrCat("round ", round_,
                                            "'s aggregate from the server is "
                                            "malformed: ",
                                            decoded.message()));
  }
  stats.aggregate_nnz = aggregate_.nnz();
  sgd_.Step(absl::MakeSpan(params_), aggregate_);
  REGTOPK_RETURN_IF_ERROR(sparsifier_->ObserveAggregate(aggregate_));
  ++round_;
  if (reply.has_digest && DigestFloats(params_) != reply.digest) {
    // Drifted (e.g. a missed or corrupted round): take the server's parameters. The optimizer's
    // momentum buffer cannot be re-synchronised this way; with plain SGD nothing else drifts.
    REGTOPK_ASSIGN_OR_RETURN(PulledParameters pulled, client_->PullParameters(options_.worker_id));
    if (pulled.values.size() != dim()) {
      return absl::DataLossError("re-pulled parameters have the wrong length");
    }
    params_ = std::move(pulled.values);
    round_ = pulled.round;
    ++resyncs_;
    stats.resynced = true;
  }
  absl::Time t3 = absl::Now();
  stats.compress_seconds = absl::ToDoubleSeconds(t1 - t0);
  stats.communicate_seconds = absl::ToDoubleSeconds(t2 - t1);
  stats.apply_seconds = absl::ToDoubleSeconds(t3 - t2);
  return stats;
}

}  // namespace regtopk
