#include "common/rpc/conversions.h"

#include <string>

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

v1::Algorithm ToProto(Algorithm a) {
  switch (a) {
    case Algorithm::kDense:
      return v1::ALGORITHM_DENSE;
    case Algorithm::kTopK:
      return v1::ALGORITHM_TOPK;
    case Algorithm::kRandK:
      return v1::ALGORITHM_RANDK;
    case Algorithm::kRegTopK:
      return v1::ALGORITHM_REGTOPK;
  }
  return v1::ALGORITHM_UNSPECIFIED;
}

}  // namespace

void ToProto(const JobConfig& c, v1::JobConfig* p) {
  p->set_algorithm(ToProto(c.algorithm));
  p->set_density(c.density);
  p->set_mu(c.mu);
  p->set_learning_rate(c.sgd.lr);
  p->set_momentum(c.sgd.momentum);
  p->set_nesterov(c.sgd.nesterov);
  p->set_weight_decay(c.sgd.weight_decay);
  p->set_num_workers(c.num_workers);
  p->set_total_rounds(c.total_rounds);
  p->set_digest_every(c.digest_every);
  p->set_seed(c.seed);
  p->set_weighting_by_samples(c.weighting == Weighting::kSamples);
}

absl::StatusOr<JobConfig> FromProto(const v1::JobConfig& p) {
  JobConfig c;
  switch (p.algorithm()) {
    case v1::ALGORITHM_DENSE:
      c.algorithm = Algorithm::kDense;
      break;
    case v1::ALGORITHM_TOPK:
      c.algorithm = Algorithm::kTopK;
      break;
    case v1::ALGORITHM_RANDK:
      c.algorithm = Algorithm::kRandK;
      break;
    case v1::ALGORITHM_REGTOPK:
      c.algorithm = Algorithm::kRegTopK;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("job config names unknown algorithm ", static_cast<int>(p.algorithm())));
  }
  c.density = p.density();
  c.mu = p.mu();
  c.sgd.lr = p.learning_rate();
  c.sgd.momentum = p.momentum();
  c.sgd.nesterov = p.nesterov();
  c.sgd.weight_decay = p.weight_decay();
  c.num_workers = p.num_workers();
  c.total_rounds = p.total_rounds();
  c.digest_every = p.digest_every();
  c.seed = p.seed();
  c.weighting = p.weighting_by_samples() ? Weighting::kSamples : Weighting::kUniform;
  REGTOPK_RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace regtopk
