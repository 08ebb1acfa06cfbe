// regtopk-health: asks a regtopk-server (or any gRPC server with health checking on) whether it
// is serving. Exit 0: SERVING; 1: anything else, with one line saying why. For container
// health checks (docker-compose) and scripts.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "common/auth/worker_token.h"
#include "common/cli/flags.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "server address, host:port");
ABSL_FLAG(double, timeout_seconds, 3, "deadline of the check, in seconds");
ABSL_FLAG(std::string, tls_ca, "", "TLS: the CA (PEM) that signs the server's certificate");
ABSL_FLAG(std::string, tls_cert, "", "a client certificate (PEM; the health check needs none)");
ABSL_FLAG(std::string, tls_key, "", "the client certificate's key (PEM)");
ABSL_FLAG(std::string, tls_server_name, "",
          "the name in the server's certificate, when --server is an address it does not list");

int main(int argc, char** argv) {
  constexpr char kProgram[] = "regtopk-health";
  regtopk::ParseFlagsOrExit(argc, argv, kProgram,
                            "regtopk-health: exits 0 if the server's health check says SERVING.");
  const double timeout = absl::GetFlag(FLAGS_timeout_seconds);
  if (!(timeout > 0)) regtopk::FlagErrorExit(kProgram, "--timeout-seconds must be > 0");
  const std::string target = absl::GetFlag(FLAGS_server);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (const std::string ca = absl::GetFlag(FLAGS_tls_ca); !ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    auto read = [&](const std::string& path, const char* what) {
      auto pem = regtopk::ReadPemFile(path, what);
      if (!pem.ok()) regtopk::FlagErrorExit(kProgram, pem.status().message());
      return *pem;
    };
    ssl.pem_root_certs = read(ca, "--tls-ca");
    if (!absl::GetFlag(FLAGS_tls_cert).empty()) {
      ssl.pem_cert_chain = read(absl::GetFlag(FLAGS_tls_cert), "--tls-cert");
      ssl.pem_private_key = read(absl::GetFlag(FLAGS_tls_key), "--tls-key");
    }
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  if (!absl::GetFlag(FLAGS_tls_server_name).empty()) {
    args.SetSslTargetNameOverride(absl::GetFlag(FLAGS_tls_server_name));
  }
  auto stub = grpc::health::v1::Health::NewStub(grpc::CreateCustomChannel(target, credentials, args));
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
