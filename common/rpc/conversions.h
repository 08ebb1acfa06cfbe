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

// Every field of v1::JobConfig is set (a reflection test keeps it so); max_entries is the k of a
// model of `dim` parameters.
void ToProto(const JobConfig& config, uint64_t dim, v1::JobConfig* proto);
// InvalidArgument if the proto names an unknown algorithm or fails JobConfig::Validate;
// FAILED_PRECONDITION if its max_entries is not this build's k for `dim` (the two ends would
// disagree on how many entries a push may carry).
absl::StatusOr<JobConfig> FromProto(const v1::JobConfig& proto, uint64_t dim);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_RPC_CONVERSIONS_H_
