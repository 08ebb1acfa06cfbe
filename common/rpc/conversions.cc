#include "common/rpc/conversions.h"

#include <optional>

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

// The one table per enum of domain <-> wire names; both directions read it.
constexpr std::pair<Algorithm, v1::Algorithm> kAlgorithms[] = {
    {Algorithm::kDense, v1::ALGORITHM_DENSE},
    {Algorithm::kTopK, v1::ALGORITHM_TOPK},
    {Algorithm::kRandK, v1::ALGORITHM_RANDK},
    {Algorithm::kRegTopK, v1::ALGORITHM_REGTOPK},
};
constexpr std::pair<OptimizerKind, v1::Optimizer> kOptimizers[] = {
    {OptimizerKind::kSgd, v1::OPTIMIZER_SGD},
    {OptimizerKind::kAdam, v1::OPTIMIZER_ADAM},
    {OptimizerKind::kAdamW, v1::OPTIMIZER_ADAMW},
};
constexpr std::pair<LrSchedule, v1::LrSchedule> kSchedules[] = {
    {LrSchedule::kConstant, v1::LR_SCHEDULE_CONSTANT},
    {LrSchedule::kStep, v1::LR_SCHEDULE_STEP},
    {LrSchedule::kCosine, v1::LR_SCHEDULE_COSINE},
};

template <typename Domain, typename Wire, size_t N>
Wire ToWire(const std::pair<Domain, Wire> (&table)[N], Domain d) {
  for (const auto& [domain, wire] : table) {
    if (domain == d) return wire;
  }
  return Wire{};  // every enumerator is in its table
}

template <typename Domain, typename Wire, size_t N>
std::optional<Domain> ToDomain(const std::pair<Domain, Wire> (&table)[N], Wire w) {
  for (const auto& [domain, wire] : table) {
    if (wire == w) return domain;
  }
  return std::nullopt;
}

}  // namespace

void ToProto(const JobConfig& c, uint64_t dim, v1::JobConfig* p) {
  p->set_algorithm(ToWire(kAlgorithms, c.algorithm));
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
  p->set_optimizer(ToWire(kOptimizers, o.kind));
  p->set_beta1(o.beta1);
  p->set_beta2(o.beta2);
  p->set_eps(o.eps);
  p->set_lr_schedule(ToWire(kSchedules, o.schedule));
  p->set_warmup_rounds(o.warmup_rounds);
  p->set_step_rounds(o.step_rounds);
  p->set_step_gamma(o.step_gamma);
  p->set_decay_rounds(o.decay_rounds);
  p->set_min_lr(o.min_lr);
  p->set_clip_norm(c.clip_norm);
  p->set_max_abs_value(c.max_abs_value);
  p->set_downlink_density(c.downlink_density);
}

absl::StatusOr<JobConfig> FromProto(const v1::JobConfig& p, uint64_t dim) {
  JobConfig c;
  const std::optional<Algorithm> algorithm = ToDomain(kAlgorithms, p.algorithm());
  if (!algorithm) {
    return absl::InvalidArgumentError(
        absl::StrCat("job config names unknown algorithm ", static_cast<int>(p.algorithm())));
  }
  c.algorithm = *algorithm;
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
  // Older senders leave the optimizer unset: that was SGD.
  const v1::Optimizer kind =
      p.optimizer() == v1::OPTIMIZER_UNSPECIFIED ? v1::OPTIMIZER_SGD : p.optimizer();
  const std::optional<OptimizerKind> k = ToDomain(kOptimizers, kind);
  if (!k) {
    return absl::InvalidArgumentError(
        absl::StrCat("job config names unknown optimizer ", static_cast<int>(p.optimizer())));
  }
  o.kind = *k;
  const std::optional<LrSchedule> schedule = ToDomain(kSchedules, p.lr_schedule());
  if (!schedule) {
    return absl::InvalidArgumentError(absl::StrCat("job config names unknown lr schedule ",
                                                   static_cast<int>(p.lr_schedule())));
  }
  o.schedule = *schedule;
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
  c.downlink_density = p.downlink_density();
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
