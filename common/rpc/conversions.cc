#include "common/rpc/conversions.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace regtopk {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

namespace {

// The one table of domain <-> wire algorithm names; both directions read it.
constexpr std::pair<Algorithm, v1::Algorithm> kAlgorithms[] = {
    {Algorithm::kDense, v1::ALGORITHM_DENSE},
    {Algorithm::kTopK, v1::ALGORITHM_TOPK},
    {Algorithm::kRandK, v1::ALGORITHM_RANDK},
    {Algorithm::kRegTopK, v1::ALGORITHM_REGTOPK},
};

v1::Algorithm ToProto(Algorithm a) {
  for (const auto& [domain, wire] : kAlgorithms) {
    if (domain == a) return wire;
  }
  return v1::ALGORITHM_UNSPECIFIED;
}

}  // namespace

void ToProto(const JobConfig& c, uint64_t dim, v1::JobConfig* p) {
  p->set_algorithm(ToProto(c.algorithm));
  p->set_density(c.density);
  p->set_mu(c.mu);
  p->set_learning_rate(c.optimizer.lr);
  p->set_momentum(c.optimizer.momentum);
  p->set_nesterov(c.optimizer.nesterov);
  p->set_weight_decay(c.optimizer.weight_decay);
  p->set_num_workers(c.num_workers);
  p->set_total_rounds(c.total_rounds);
  p->set_digest_every(c.digest_every);
  p->set_seed(c.seed);
  p->set_weighting_by_samples(c.weighting == Weighting::kSamples);
  p->set_max_entries(c.MaxEntries(dim));
  p->set_checkpoint_every(c.checkpoint_every);
  p->set_round_timeout_seconds(c.round_timeout_seconds);
  const OptimizerOptions& o = c.optimizer;
  p->set_optimizer(o.kind == OptimizerKind::kAdam    ? v1::OPTIMIZER_ADAM
                   : o.kind == OptimizerKind::kAdamW ? v1::OPTIMIZER_ADAMW
                                                     : v1::OPTIMIZER_SGD);
  p->set_beta1(o.beta1);
  p->set_beta2(o.beta2);
  p->set_eps(o.eps);
  p->set_lr_schedule(o.schedule == LrSchedule::kStep     ? v1::LR_SCHEDULE_STEP
                     : o.schedule == LrSchedule::kCosine ? v1::LR_SCHEDULE_COSINE
                                                         : v1::LR_SCHEDULE_CONSTANT);
  p->set_warmup_rounds(o.warmup_rounds);
  p->set_step_rounds(o.step_rounds);
  p->set_step_gamma(o.step_gamma);
  p->set_decay_rounds(o.decay_rounds);
  p->set_min_lr(o.min_lr);
  p->set_clip_norm(c.clip_norm);
  p->set_max_abs_value(c.max_abs_value);
}

absl::StatusOr<JobConfig> FromProto(const v1::JobConfig& p, uint64_t dim) {
  JobConfig c;
  bool known = false;
  for (const auto& [domain, wire] : kAlgorithms) {
    if (wire == p.algorithm()) {
      c.algorithm = domain;
      known = true;
    }
  }
  if (!known) {
    return absl::InvalidArgumentError(
        absl::StrCat("job config names unknown algorithm ", static_cast<int>(p.algorithm())));
  }
  c.density = p.density();
  c.mu = p.mu();
  c.optimizer.lr = p.learning_rate();
  c.optimizer.momentum = p.momentum();
  c.optimizer.nesterov = p.nesterov();
  c.optimizer.weight_decay = p.weight_decay();
  c.num_workers = p.num_workers();
  c.total_rounds = p.total_rounds();
  c.digest_every = p.digest_every();
  c.seed = p.seed();
  c.checkpoint_every = p.checkpoint_every();
  c.round_timeout_seconds = p.round_timeout_seconds();
  OptimizerOptions& o = c.optimizer;
  switch (p.optimizer()) {
    case v1::OPTIMIZER_UNSPECIFIED:
    case v1::OPTIMIZER_SGD:
      o.kind = OptimizerKind::kSgd;
      break;
    case v1::OPTIMIZER_ADAM:
      o.kind = OptimizerKind::kAdam;
      break;
    case v1::OPTIMIZER_ADAMW:
      o.kind = OptimizerKind::kAdamW;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("job config names unknown optimizer ", static_cast<int>(p.optimizer())));
  }
  switch (p.lr_schedule()) {
    case v1::LR_SCHEDULE_CONSTANT:
      o.schedule = LrSchedule::kConstant;
      break;
    case v1::LR_SCHEDULE_STEP:
      o.schedule = LrSchedule::kStep;
      break;
    case v1::LR_SCHEDULE_COSINE:
      o.schedule = LrSchedule::kCosine;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("job config names unknown lr schedule ",
                                                     static_cast<int>(p.lr_schedule())));
  }
  o.beta1 = p.beta1();
  o.beta2 = p.beta2();
  o.eps = p.eps();
  o.warmup_rounds = p.warmup_rounds();
  o.step_rounds = p.step_rounds();
  o.step_gamma = p.step_gamma();
  o.decay_rounds = p.decay_rounds();
  o.min_lr = p.min_lr();
  c.clip_norm = p.clip_norm();
  c.max_abs_value = p.max_abs_value();
  c.weighting = p.weighting_by_samples() ? Weighting::kSamples : Weighting::kUniform;
  REGTOPK_RETURN_IF_ERROR(c.Validate());
  if (p.max_entries() != c.MaxEntries(dim)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the server allows ", p.max_entries(), " entries per push for ", dim,
        " parameters, but this build computes k = ", c.MaxEntries(dim),
        " (mismatched versions of regtopk?)"));
  }
  return c;
}

}  // namespace regtopk
