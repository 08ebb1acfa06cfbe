// TestServer: a real regtopk server (coordinator + gRPC service) on 127.0.0.1, port 0, inside
// the test process, and the small helpers every test against it needs. For tests only.
#ifndef REGTOPK_TESTS_TESTING_TEST_SERVER_H_
#define REGTOPK_TESTS_TESTING_TEST_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/wire/chunking.h"
#include "common/wire/sparse_codec.h"
#include "gtest/gtest.h"
#include "server/coordinator.h"
#include "server/service.h"
#include "client/server_client.h"
#include "regtopk/v1/parameter_server.grpc.pb.h"

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

// A raw stub, so a test can cancel a call in the middle of its stream.
inline std::unique_ptr<v1::ParameterServer::Stub> RawStub(const TestServer& server) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  return v1::ParameterServer::NewStub(
      grpc::CreateCustomChannel(server.address(), grpc::InsecureChannelCredentials(), args));
}

// A parameter upload by `worker` (joined with `dim` parameters) held open after its first
// chunk: it holds the server's upload reservation until Cancel. Wait for the server to have
// seen the chunk with AwaitUploadOffer(..., false).
class HeldUpload {
 public:
  HeldUpload(const TestServer& server, uint32_t worker, size_t dim)
      : stub_(RawStub(server)), writer_(stub_->UploadParameters(&context_, &response_)) {
    v1::ParameterChunk chunk;
    chunk.set_worker_id(worker);
    chunk.set_dim(dim);
    std::vector<float> part(std::min(dim, kChunkBytes / 4), 1.0f);
    chunk.set_values(reinterpret_cast<const char*>(part.data()), 4 * part.size());
    EXPECT_TRUE(writer_->Write(chunk));
  }
  ~HeldUpload() { Cancel(); }
  // Cancels the stream; returns its final status code.
  grpc::StatusCode Cancel() {
    if (done_) return code_;
    done_ = true;
    context_.TryCancel();
    return code_ = writer_->Finish().error_code();
  }

 private:
  grpc::ClientContext context_;
  v1::UploadParametersResponse response_;
  std::unique_ptr<v1::ParameterServer::Stub> stub_;
  std::unique_ptr<grpc::ClientWriter<v1::ParameterChunk>> writer_;
  bool done_ = false;
  grpc::StatusCode code_ = grpc::StatusCode::OK;
};

// Re-joins `worker` until the server's "upload the parameters" answer is `want` (an upload's
// reservation is taken and released on the server's threads); false after 10 s.
inline bool AwaitUploadOffer(Coordinator& c, uint32_t worker, size_t dim, uint64_t layout,
                             bool want) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    absl::StatusOr<JoinResult> j = c.Join(worker, 1, dim, layout);
    if (j.ok() && j->upload_parameters == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

}  // namespace regtopk

#endif  // REGTOPK_TESTS_TESTING_TEST_SERVER_H_
