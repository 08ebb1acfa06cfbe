// TestServer: a real regtopk server (coordinator + gRPC service) on 127.0.0.1, port 0, inside
// the test process, and the small helpers every test against it needs. For tests only.
#ifndef REGTOPK_TESTS_TESTING_TEST_SERVER_H_
#define REGTOPK_TESTS_TESTING_TEST_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/wire/chunking.h"
#include "common/wire/sparse_codec.h"
#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "server/service.h"
#include "client/server_client.h"

namespace regtopk {

// A job of `workers` workers with lr 0.1, mu 2 and a digest every 3 rounds.
inline CoordinatorOptions Options(uint32_t workers, Algorithm algorithm, double density) {
  CoordinatorOptions o;
  o.job.num_workers = workers;
  o.job.algorithm = algorithm;
  o.job.density = density;
  o.job.mu = 2.0;
  o.job.optimizer.lr = 0.1f;
  o.job.digest_every = 3;
  return o;
}

// The smallest SparseCodec encoding of `v`.
inline std::string Encode(const SparseVector& v, size_t dim) {
  std::string s;
  EncodeSparseSmallest(v, dim, &s);
  return s;
}

class TestServer {
 public:
  explicit TestServer(CoordinatorOptions options) {
    auto c = Coordinator::Create(std::move(options));
    EXPECT_TRUE(c.ok()) << c.status();
    coordinator_ = std::move(*c);
    service_ = std::make_unique<ParameterServerService>(coordinator_.get());
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    EXPECT_NE(port_, 0);
  }
  ~TestServer() { Stop(); }

  // Fails held pushes with UNAVAILABLE and stops serving. Idempotent.
  void Stop() {
    if (!server_) return;
    coordinator_->Shutdown();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    server_->Wait();
    server_.reset();
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  Coordinator& coordinator() { return *coordinator_; }
  ParameterServerService& service() { return *service_; }

  std::unique_ptr<ServerClient> NewClient(absl::Duration timeout = absl::Seconds(60)) {
    GrpcClientOptions o;
    o.target = address();
    o.rpc_timeout = o.transfer_timeout = o.push_timeout = timeout;
    return std::move(*CreateGrpcServerClient(o));
  }

 private:
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<ParameterServerService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace regtopk

#endif  // REGTOPK_TESTS_TESTING_TEST_SERVER_H_
