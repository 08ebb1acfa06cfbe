// regtopk-health: asks a regtopk-server (or any gRPC server with health checking on) whether it
// is serving. Exit 0: SERVING; 1: anything else, with one line saying why. For container
// health checks (docker-compose) and scripts.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "common/cli/flags.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "server address, host:port");
ABSL_FLAG(double, timeout_seconds, 3, "deadline of the check, in seconds");

int main(int argc, char** argv) {
  constexpr char kProgram[] = "regtopk-health";
  regtopk::ParseFlagsOrExit(argc, argv, kProgram,
                            "regtopk-health: exits 0 if the server's health check says SERVING.");
  const double timeout = absl::GetFlag(FLAGS_timeout_seconds);
  if (!(timeout > 0)) regtopk::FlagErrorExit(kProgram, "--timeout-seconds must be > 0");
  const std::string target = absl::GetFlag(FLAGS_server);
  auto stub = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000)));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status s = stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  if (!s.ok()) {
    std::cerr << kProgram << ": " << target << " did not answer: " << s.error_message() << "\n";
    return 1;
  }
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    std::cerr << kProgram << ": " << target << " is "
              << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
              << "\n";
    return 1;
  }
  std::cout << target << " SERVING\n";
  return 0;
}
