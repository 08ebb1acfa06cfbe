// The one place where wire (regtopk::v1, grpc::Status) and domain types meet: absl::Status <->
// grpc::Status and JobConfig <-> v1::JobConfig. Used only by the service and the client.
// Stateless functions; thread-safe.
#ifndef REGTOPK_COMMON_RPC_CONVERSIONS_H_
#define REGTOPK_COMMON_RPC_CONVERSIONS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/job_config.h"
#include "regtopk/v1/parameter_server.pb.h"

namespace regtopk {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

void ToProto(const JobConfig& config, v1::JobConfig* proto);
// InvalidArgument if the proto names an unknown algorithm or fails JobConfig::Validate.
absl::StatusOr<JobConfig> FromProto(const v1::JobConfig& proto);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_RPC_CONVERSIONS_H_
