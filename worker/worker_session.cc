#include "worker/worker_session.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/parallel/task_pool.h"
#include "common/status/status_macros.h"
#include "common/wire/digest.h"
#include "common/wire/sparse_codec.h"
#include "worker/worker_state.h"

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

// Codes that mean "the server is not there (yet)", as opposed to a refusal. CANCELLED is what
// a call gets when it races the server's own shutdown.
bool Unreachable(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kDeadlineExceeded ||
         s.code() == absl::StatusCode::kCancelled;
}

uint64_t RandomSessionId() {
  uint64_t id = 0;
  const int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (read(fd, &id, sizeof(id)) != sizeof(id)) id = 0;
    close(fd);
  }
  if (id == 0) id = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())) ^ (uint64_t(getpid()) << 32);
  return id | 1;  // never 0 ("unknown")
}

}  // namespace

void WorkerSession::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

absl::StatusOr<JoinReply> WorkerSession::JoinWithRetry(ServerClient* client,
                                                       const WorkerSessionOptions& options,
                                                       uint64_t dim) {
  JoinIdentity identity;
  identity.session_id = options.session_id;
  identity.state_rounds = SavedStateRounds(options.state_dir);
  // The server uses the saved state when it holds the right round; fresh state only otherwise.
  identity.fresh_state = options.allow_fresh_state;
  identity.partition_digest = options.partition_digest;
  const absl::Time start = absl::Now();
  absl::Time next_log = start + absl::Seconds(10);
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    absl::StatusOr<JoinReply> join =
        client->Join(options.worker_id, options.num_samples, dim, options.layout_digest, identity);
    if (join.ok() || !Unreachable(join.status())) return join;
    const absl::Time now = absl::Now();
    if (now - start > options.reconnect_timeout) {
      return absl::UnavailableError(absl::StrCat(
          "gave up reaching the server after ", absl::FormatDuration(options.reconnect_timeout),
          " (--reconnect-timeout-seconds): ", join.status().message()));
    }
    if (now >= next_log && options.log) {
      options.log(absl::StrCat("waiting for the server (",
                               absl::FormatDuration(absl::Trunc(now - start, absl::Seconds(1))),
                               "): ", join.status().message()));
      next_log = now + absl::Seconds(10);
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

absl::StatusOr<JoinReply> WorkerSession::Probe(ServerClient* client,
                                               const WorkerSessionOptions& options, uint64_t dim) {
  WorkerSessionOptions probe = options;
  probe.num_samples = 0;
  return JoinWithRetry(client, probe, dim);
}

absl::StatusOr<std::unique_ptr<WorkerSession>> WorkerSession::Start(
    ServerClient* client, const WorkerSessionOptions& options_in,
    std::vector<float> initial_parameters) {
  WorkerSessionOptions options = options_in;
  if (options.session_id == 0) options.session_id = RandomSessionId();
  const uint64_t dim = initial_parameters.size();
  REGTOPK_RETURN_IF_ERROR(
      ValidateThreadCount(options.threads, "the worker's sparsification threads"));
  const absl::Time deadline = absl::Now() + options.start_timeout;
  REGTOPK_ASSIGN_OR_RETURN(JoinReply join, JoinWithRetry(client, options, dim));
  if (join.config.checkpoint_every != 0 && options.state_dir.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the job checkpoints every ", join.config.checkpoint_every,
        " rounds; start the worker with --state-dir so that it can save its part"));
  }
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
                    REGTOPK_ASSIGN_OR_RETURN(JoinReply j, JoinWithRetry(client, options, dim));
                    if (!j.weight) return absl::FailedPreconditionError("not all workers joined");
                    return j;
                  },
                  deadline, "every worker to join"));
  }
  SparsifierOptions so;
  so.algorithm = join.config.algorithm;
  so.dim = dim;
  so.density = join.config.density;
  so.mu = join.config.mu;
  so.weight = *join.weight;
  so.seed = join.config.seed + options.worker_id;
  so.threads = options.threads;
  REGTOPK_ASSIGN_OR_RETURN(std::unique_ptr<Sparsifier> sparsifier, CreateSparsifier(so));
  std::unique_ptr<WorkerSession> session(new WorkerSession(
      client, options, join.config, *join.weight, std::move(sparsifier), {}, join.round));
  session->committed_.push_back(join.committed_round);
  const std::vector<uint64_t> saved = SavedStateRounds(options.state_dir);
  if (join.round > 0 && std::find(saved.begin(), saved.end(), join.round) != saved.end()) {
    REGTOPK_RETURN_IF_ERROR(session->RestoreState(join.round, join.params_digest));
    session->resumed_ = true;
    session->Log(absl::StrCat("resumed from the saved state of round ", join.round));
    return session;
  }
  if (uploaded) {
    session->params_ = std::move(initial_parameters);
    return session;
  }
  REGTOPK_ASSIGN_OR_RETURN(
      PulledParameters pulled,
      RetryWhileNotReady<PulledParameters>(
          [&]() -> absl::StatusOr<PulledParameters> {
            // Before round 0 the optimizer state is zero: no need to pull it.
            absl::StatusOr<PulledParameters> p =
                client->PullParameters(options.worker_id, join.round > 0);
            if (p.ok() || p.status().code() != absl::StatusCode::kFailedPrecondition) return p;
            // No parameters yet. The server takes one upload at a time: if the worker that held
            // it went away, the next join asks this worker to upload, and the next pull gets them.
            absl::StatusOr<JoinReply> again = JoinWithRetry(client, options, dim);
            if (!again.ok()) return again.status();
            if (again->upload_parameters) {
              absl::Status s = client->UploadParameters(options.worker_id, initial_parameters);
              if (!s.ok() && s.code() != absl::StatusCode::kFailedPrecondition) return s;
              if (s.ok()) session->Log("uploaded the initial parameters in place of a worker whose upload ended");
            }
            return p;
          },
          deadline, "the initial parameters"));
  if (pulled.values.size() != dim) {
    return absl::DataLossError(
        absl::StrCat("pulled ", pulled.values.size(), " parameters, expected ", dim));
  }
  session->params_ = std::move(pulled.values);
  if (!pulled.optimizer_state.empty()) REGTOPK_RETURN_IF_ERROR(session->optimizer_.SetState(pulled.optimizer_state));
  session->round_ = pulled.round;
  if (pulled.round > 0) {
    session->resumed_ = true;
    session->Log(absl::StrCat("joined at round ", pulled.round,
                              " with fresh state: zero error feedback, pulled parameters and "
                              "momentum; the run is no longer bit-identical"));
  }
  return session;
}

WorkerSession::WorkerSession(ServerClient* client, const WorkerSessionOptions& options,
                             JobConfig config, float weight, std::unique_ptr<Sparsifier> sparsifier,
                             std::vector<float> params, uint64_t round)
    : client_(client),
      options_(options),
      config_(std::move(config)),
      weight_(weight),
      sparsifier_(std::move(sparsifier)),
      optimizer_(config_.optimizer, sparsifier_->dim()),
      step_pool_(options.threads),
      params_(std::move(params)),
      round_(round) {}

bool WorkerSession::finished() const {
  return config_.total_rounds != 0 && round_ >= config_.total_rounds;
}

absl::Status WorkerSession::SaveState() {
  WorkerState s;
  s.round = round_;
  s.worker_id = options_.worker_id;
  s.params = params_;
  absl::Span<const float> m = optimizer_.state();
  s.optimizer_state.assign(m.begin(), m.end());
  s.sparsifier = sparsifier_->ExportState();
  if (options_.save_extra) s.extra = options_.save_extra();
  REGTOPK_RETURN_IF_ERROR(SaveWorkerState(options_.state_dir, s));
  saved_round_ = round_;
  return absl::OkStatus();
}

absl::Status WorkerSession::RestoreState(uint64_t round, uint64_t params_digest) {
  REGTOPK_ASSIGN_OR_RETURN(WorkerState s,
                           LoadWorkerState(options_.state_dir, round, options_.worker_id, dim()));
  if (params_digest != 0 && DigestFloats(s.params) != params_digest) {
    return absl::DataLossError(absl::StrCat(
        "the saved state of round ", round, " in '", options_.state_dir,
        "' does not match the server's parameters of that round (digest differs): it belongs "
        "to another job or run"));
  }
  REGTOPK_RETURN_IF_ERROR(sparsifier_->ImportState(s.sparsifier));
  REGTOPK_RETURN_IF_ERROR(optimizer_.SetState(s.optimizer_state));
  if (options_.restore_extra && !s.extra.empty()) {
    REGTOPK_RETURN_IF_ERROR(options_.restore_extra(s.extra));
  }
  params_ = std::move(s.params);
  round_ = round;
  saved_round_ = round;  // the file on disk is this very state
  return absl::OkStatus();
}

absl::Status WorkerSession::PullReplica() {
  REGTOPK_ASSIGN_OR_RETURN(PulledParameters pulled, client_->PullParameters(options_.worker_id, true));
  if (pulled.values.size() != dim()) {
    return absl::DataLossError("re-pulled parameters have the wrong length");
  }
  REGTOPK_RETURN_IF_ERROR(optimizer_.SetState(pulled.optimizer_state));
  params_ = std::move(pulled.values);
  round_ = pulled.round;
  return absl::OkStatus();
}

absl::StatusOr<StepStats> WorkerSession::Step(absl::Span<const float> gradient) {
  if (finished()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the job finished after ", config_.total_rounds, " rounds"));
  }
  StepStats stats;
  stats.round = round_;
  absl::Time t0 = absl::Now();
  // The state before a checkpoint round goes to disk before anything of the round changes it.
  if (config_.IsCheckpointRound(round_) && !options_.state_dir.empty() && saved_round_ != round_) {
    REGTOPK_RETURN_IF_ERROR(SaveState());
  }
  stats.saved_state = saved_round_ == round_ && config_.IsCheckpointRound(round_);
  REGTOPK_RETURN_IF_ERROR(sparsifier_->Compress(gradient, &sent_));
  stats.mask = sparsifier_->last_diagnostic();
  EncodeSparseSmallest(sent_, dim(), &encoded_);
  stats.entries_sent = sent_.nnz();
  stats.bytes_pushed = encoded_.size();
  absl::Time t1 = absl::Now();
  absl::StatusOr<PushReply> pushed = absl::UnknownError("not pushed");
  for (int attempt = 0;; ++attempt) {
    pushed = client_->Push(options_.worker_id, round_, encoded_, stats.saved_state ? round_ : 0);
    if (pushed.ok()) break;
    if (attempt + 1 >= options_.push_attempts) return pushed.status();
    // Whatever went wrong (server restarted, job rolled back, lost reply, connection reset),
    // ask the server where the job stands.
    absl::StatusOr<JoinReply> join = JoinWithRetry(client_, options_, dim());
    if (!join.ok()) {
      return absl::Status(join.status().code(),
                          absl::StrCat("round ", round_, ": the push failed (", pushed.status().message(),
                                       "), and re-joining failed: ", join.status().message()));
    }
    // The same round, or the next one (the round closed and only the reply was lost): the same
    // bytes again, which the server counts once or answers from its copy of the result.
    if (join->round == round_ || join->round == round_ + 1) continue;
    if (join->round > round_) {
      return absl::DataLossError(absl::StrCat("the server is at round ", join->round,
                                              ", ahead of this worker's ", round_));
    }
    // The job rolled back to a committed checkpoint: restore it and redo from there.
    const uint64_t from = round_;
    REGTOPK_RETURN_IF_ERROR(RestoreState(join->round, join->params_digest));
    ++rollbacks_;
    Log(absl::StrCat("rolled back from round ", from, " to round ", round_,
                     " (the job's newest committed checkpoint)"));
    stats.rolled_back = true;
    stats.round = round_;
    return stats;
  }
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
  optimizer_.Step(absl::MakeSpan(params_), aggregate_, round_, &step_pool_);
  REGTOPK_RETURN_IF_ERROR(sparsifier_->ObserveAggregate(aggregate_));
  ++round_;
  if (reply.has_digest && DigestFloats(params_) != reply.digest) {
    // Drifted (e.g. a missed or corrupted round): take the server's parameters and optimizer state.
    REGTOPK_RETURN_IF_ERROR(PullReplica());
    ++resyncs_;
    stats.resynced = true;
  }
  // Keep the saved states from the committed round before the newest on: the server keeps its
  // two newest committed checkpoints and may fall back to the older one.
  if (!options_.state_dir.empty() &&
      (committed_.empty() || committed_.back() != reply.committed_round)) {
    committed_.push_back(reply.committed_round);
    if (committed_.size() > 2) committed_.erase(committed_.begin());
    if (committed_.size() == 2) DropStatesBefore(options_.state_dir, committed_.front());
  }
  absl::Time t3 = absl::Now();
  stats.compress_seconds = absl::ToDoubleSeconds(t1 - t0);
  stats.communicate_seconds = absl::ToDoubleSeconds(t2 - t1);
  stats.apply_seconds = absl::ToDoubleSeconds(t3 - t2);
  return stats;
}

}  // namespace regtopk
