// ParameterServerService: the gRPC callback-API front of a Coordinator. Each method decodes and
// checks the request, calls the coordinator, encodes, finishes. A Push is held open (deferred
// Finish) until its round closes; nothing blocks inside a reaction. Thread-safe.
#ifndef REGTOPK_SERVER_SERVICE_H_
#define REGTOPK_SERVER_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "regtopk/v1/parameter_server.grpc.pb.h"
#include "server/auth.h"
#include "server/coordinator.h"

namespace regtopk {

class ParameterServerService final : public v1::ParameterServer::CallbackService {
 public:
  // `coordinator` (and `auth`, if given) are borrowed and must outlive the service and every
  // call in flight. Without `auth` every call is let through. With it, every call is
  // authenticated before it touches state or memory: a call acting as worker N must carry
  // worker N's credential (Join, UploadParameters, PullParameters, Push), GetStatus any
  // worker's.
  explicit ParameterServerService(Coordinator* coordinator, const Authenticator* auth = nullptr);

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context,
                                 const v1::JoinRequest* request,
                                 v1::JoinResponse* response) override;
  grpc::ServerReadReactor<v1::ParameterChunk>* UploadParameters(
      grpc::CallbackServerContext* context, v1::UploadParametersResponse* response) override;
  grpc::ServerWriteReactor<v1::ParameterChunk>* PullParameters(
      grpc::CallbackServerContext* context, const v1::PullParametersRequest* request) override;
  grpc::ServerBidiReactor<v1::PushChunk, v1::AggregateChunk>* Push(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const v1::GetStatusRequest* request,
                                      v1::GetStatusResponse* response) override;

  // Streams (uploads, pulls, pushes) one worker may have open at once: a push, its retry, a
  // pull and an upload, with room to spare. The next one gets RESOURCE_EXHAUSTED.
  static constexpr int kMaxStreamsPerWorker = 8;
  // Takes one of `worker`'s stream slots; false at the limit (or for an id outside the job,
  // which the coordinator refuses anyway). Release gives it back.
  bool AcquireStream(uint32_t worker);
  void ReleaseStream(uint32_t worker);
  // Streams `worker` holds open now (0 for an id outside the job).
  int open_streams(uint32_t worker) const {
    return worker < num_workers_ ? streams_[worker].load() : 0;
  }

  // Payload bytes received (pushes, uploads) and sent (aggregates, pulls).
  uint64_t bytes_in() const { return bytes_in_.load(std::memory_order_relaxed); }
  uint64_t bytes_out() const { return bytes_out_.load(std::memory_order_relaxed); }

 private:
  void AddBytesIn(size_t n);
  void AddBytesOut(size_t n);

  friend class UploadReactor;
  friend class PullReactor;
  friend class PushReactor;

  grpc::Status Check(const grpc::ServerContextBase& context, uint32_t worker_id) const {
    return auth_ ? auth_->Check(context, worker_id) : grpc::Status::OK;
  }

  Coordinator* const coordinator_;
  const Authenticator* const auth_;
  const uint32_t num_workers_;
  const std::unique_ptr<std::atomic<int>[]> streams_;  // open streams per worker id
  std::atomic<uint64_t> bytes_in_{0};
  std::atomic<uint64_t> bytes_out_{0};
};

}  // namespace regtopk

#endif  // REGTOPK_SERVER_SERVICE_H_
