#include "server/service.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/rpc/conversions.h"
#include "common/wire/chunk_assembler.h"
#include "common/wire/chunking.h"

namespace regtopk {
namespace {

grpc::Status InvalidArgument(std::string message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(message));
}

// Exactly one party may finish a reactor: the call's own flow, a round's delivery or a
// cancellation. Whoever claims first finishes; the others stand back. The claim is the only
// thing done under the lock: gRPC is called outside it.
class FinishClaim {
 public:
  bool TryClaim() {
    absl::MutexLock lock(&mu_);
    if (claimed_) return false;
    claimed_ = true;
    return true;
  }

 private:
  absl::Mutex mu_;
  bool claimed_ ABSL_GUARDED_BY(mu_) = false;
};

// The one template of every streaming reactor here (after TensorStore's tsgrpc handler
// template): a cancellation finishes the call, the reactor deletes itself when gRPC is done
// with it, and Done() finishes at most once. The claim is shared, so that a callback that may
// outlive the reactor (a round's delivery after a cancellation) can test it first: whoever
// wins the claim knows the reactor is still alive, because only Finish leads to OnDone.
template <typename Reactor>
class Handler : public Reactor {
 public:
  void OnCancel() override { Done(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled")); }
  void OnDone() override { delete this; }
  ~Handler() override {
    if (slot_owner_ != nullptr) slot_owner_->ReleaseStream(slot_worker_);
  }

 protected:
  // Holds one of `worker`'s stream slots until the call is done; RESOURCE_EXHAUSTED when the
  // worker already has the maximum open.
  grpc::Status TakeStreamSlot(ParameterServerService* service, uint32_t worker) {
    if (!service->AcquireStream(worker)) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat("worker ", worker, " already has ",
                                       ParameterServerService::kMaxStreamsPerWorker,
                                       " streams open"));
    }
    slot_owner_ = service;
    slot_worker_ = worker;
    return grpc::Status::OK;
  }

  // Finishes with `status` unless another party already did.
  void Done(const grpc::Status& status) {
    if (claim_->TryClaim()) this->Finish(status);
  }
  const std::shared_ptr<FinishClaim>& claim() const { return claim_; }

 private:
  const std::shared_ptr<FinishClaim> claim_ = std::make_shared<FinishClaim>();
  ParameterServerService* slot_owner_ = nullptr;
  uint32_t slot_worker_ = 0;
};

}  // namespace

ParameterServerService::ParameterServerService(Coordinator* coordinator,
                                               const Authenticator* auth)
    : coordinator_(coordinator),
      auth_(auth),
      num_workers_(coordinator->job().num_workers),
      streams_(new std::atomic<int>[coordinator->job().num_workers]()) {}

bool ParameterServerService::AcquireStream(uint32_t worker) {
  if (worker >= num_workers_) return true;  // refused by the coordinator, naming the id
  if (streams_[worker].fetch_add(1) >= kMaxStreamsPerWorker) {
    streams_[worker].fetch_sub(1);
    return false;
  }
  return true;
}

void ParameterServerService::ReleaseStream(uint32_t worker) {
  if (worker < num_workers_) streams_[worker].fetch_sub(1);
}

void ParameterServerService::AddBytesIn(size_t n) {
  bytes_in_.fetch_add(n, std::memory_order_relaxed);
  if (ServerMetrics* m = coordinator_->metrics()) m->bytes_received->Add(static_cast<double>(n));
}

void ParameterServerService::AddBytesOut(size_t n) {
  bytes_out_.fetch_add(n, std::memory_order_relaxed);
  if (ServerMetrics* m = coordinator_->metrics()) m->bytes_sent->Add(static_cast<double>(n));
}

grpc::ServerUnaryReactor* ParameterServerService::Join(grpc::CallbackServerContext* context,
                                                       const v1::JoinRequest* request,
                                                       v1::JoinResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (grpc::Status s = Check(*context, request->worker_id()); !s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  JoinIdentity identity;
  identity.session_id = request->session_id();
  identity.state_rounds.assign(request->state_rounds().begin(), request->state_rounds().end());
  identity.fresh_state = request->fresh_state();
  identity.partition_digest = request->partition_digest();
  // Runs in the reaction: a join only blocks when it rolls the job back (reading a checkpoint),
  // which happens once per worker restart.
  auto result = coordinator_->Join(request->worker_id(), request->num_samples(), request->dim(),
                                   request->layout_digest(), identity);
  if (!result.ok()) {
    reactor->Finish(ToGrpcStatus(result.status()));
    return reactor;
  }
  ToProto(result->config, request->dim(), response->mutable_config());
  response->set_round(result->round);
  response->set_upload_parameters(result->upload_parameters);
  response->set_weight_known(result->weight.has_value());
  if (result->weight) response->set_weight(*result->weight);
  response->set_params_digest(result->params_digest);
  response->set_committed_round(result->committed_round);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ParameterServerService::GetStatus(grpc::CallbackServerContext* context,
                                                            const v1::GetStatusRequest*,
                                                            v1::GetStatusResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (auth_ != nullptr) {
    std::optional<uint32_t> who;
    if (grpc::Status a = auth_->Identify(*context, &who); !a.ok()) {
      reactor->Finish(a);
      return reactor;
    }
  }
  CoordinatorStatus s = coordinator_->GetStatus();
  response->set_round(s.round);
  response->set_workers_joined(s.workers_joined);
  response->set_num_workers(s.num_workers);
  response->set_parameters_ready(s.parameters_ready);
  response->set_finished(s.finished);
  response->set_rejected_pushes(s.rejected_pushes);
  response->set_pushes_this_round(s.pushes_this_round);
  response->set_bytes_in(bytes_in());
  response->set_bytes_out(bytes_out());
  if (s.last_round) {
    response->set_last_aggregate_us(static_cast<uint64_t>(s.last_round->aggregate_seconds * 1e6));
    response->set_last_step_us(static_cast<uint64_t>(s.last_round->step_seconds * 1e6));
    response->set_last_encode_us(static_cast<uint64_t>(s.last_round->encode_seconds * 1e6));
    response->set_last_round_nnz(s.last_round->nnz);
    response->set_last_round_encoded_bytes(s.last_round->encoded.size());
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

// Collects the uploaded chunks in order, then hands the whole buffer to the coordinator. Only
// the upload holding the coordinator's reservation allocates the buffer.
class UploadReactor final : public Handler<grpc::ServerReadReactor<v1::ParameterChunk>> {
 public:
  UploadReactor(ParameterServerService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    StartRead(&chunk_);
  }
  // An upload that ends without handing its parameters over (a bad chunk, a cancelled or dead
  // client) frees the reservation for the next one.
  ~UploadReactor() override {
    if (reserved_) service_->coordinator_->AbandonUpload(worker_id_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client half-closed (or went away: then Finish is a no-op)
      if (!started_) return Done(InvalidArgument("upload carried no parameter chunks"));
      if (received_ != dim_) {
        return Done(InvalidArgument(
            absl::StrCat("upload ended after ", received_, " of ", dim_, " parameters")));
      }
      reserved_ = false;  // UploadParameters releases it, whatever its result
      return Done(
          ToGrpcStatus(service_->coordinator_->UploadParameters(worker_id_, std::move(values_))));
    }
    service_->AddBytesIn(chunk_.values().size());
    if (!started_) {
      started_ = true;
      worker_id_ = chunk_.worker_id();
      // Authenticated before anything is allocated for the upload.
      if (grpc::Status a = service_->Check(*context_, worker_id_); !a.ok()) return Done(a);
      if (grpc::Status a = TakeStreamSlot(service_, worker_id_); !a.ok()) return Done(a);
      dim_ = chunk_.dim();
      const uint64_t expected = service_->coordinator_->dim();
      if (expected == 0 || dim_ != expected) {
        return Done(grpc::Status(
            grpc::StatusCode::FAILED_PRECONDITION,
            absl::StrCat("upload of ", dim_, " parameters does not match the joined model's ",
                         expected, " (join first)")));
      }
      // The state check before the O(d) buffer: only the joined worker an upload is due from.
      if (absl::Status ok = service_->coordinator_->BeginUpload(worker_id_); !ok.ok()) {
        return Done(ToGrpcStatus(ok));
      }
      reserved_ = true;
      try {
        values_.resize(dim_);
      } catch (const std::bad_alloc&) {
        return Done(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 absl::StrCat("cannot allocate an upload of ", dim_, " parameters")));
      }
    }
    const std::string& bytes = chunk_.values();
    if (chunk_.dim() != dim_ || chunk_.worker_id() != worker_id_) {
      return Done(InvalidArgument("upload chunks disagree on worker id or dimension"));
    }
    if (chunk_.offset() != received_) {
      return Done(InvalidArgument(
          absl::StrCat("upload chunk at offset ", chunk_.offset(), ", expected ", received_)));
    }
    if (bytes.size() % 4 != 0 || bytes.size() > kChunkBytes ||
        bytes.size() / 4 > dim_ - received_) {
      return Done(InvalidArgument(absl::StrCat("upload chunk of ", bytes.size(),
                                               " bytes is malformed or overruns the model")));
    }
    std::memcpy(values_.data() + received_, bytes.data(), bytes.size());
    received_ += bytes.size() / 4;
    StartRead(&chunk_);
  }

 private:
  ParameterServerService* const service_;
  grpc::CallbackServerContext* const context_;
  v1::ParameterChunk chunk_;
  bool started_ = false;
  bool reserved_ = false;  // holds the coordinator's upload reservation
  uint32_t worker_id_ = 0;
  uint64_t dim_ = 0;
  uint64_t received_ = 0;
  std::vector<float> values_;
};

grpc::ServerReadReactor<v1::ParameterChunk>* ParameterServerService::UploadParameters(
    grpc::CallbackServerContext* context, v1::UploadParametersResponse*) {
  return new UploadReactor(this, context);
}

// Streams a snapshot of the parameters in chunks, one write in flight at a time.
class PullReactor final : public Handler<grpc::ServerWriteReactor<v1::ParameterChunk>> {
 public:
  PullReactor(ParameterServerService* service, grpc::CallbackServerContext* context,
              uint32_t worker_id, bool include_optimizer_state)
      : service_(service) {
    if (grpc::Status a = service_->Check(*context, worker_id); !a.ok()) {
      Done(a);
      return;
    }
    if (grpc::Status a = TakeStreamSlot(service_, worker_id); !a.ok()) {
      Done(a);
      return;
    }
    auto snapshot = service_->coordinator_->GetParameters(include_optimizer_state);
    if (!snapshot.ok()) {
      Done(ToGrpcStatus(snapshot.status()));
      return;
    }
    snapshot_ = std::move(*snapshot);
    chunk_.set_worker_id(worker_id);
    WriteNext();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return Done(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
    if (offset_ == Current().size()) {
      // The parameters, then the optimizer state when it was asked for and exists.
      if (section_ == v1::ParameterChunk::OPTIMIZER_STATE || snapshot_.optimizer_state.empty()) {
        return Done(grpc::Status::OK);
      }
      section_ = v1::ParameterChunk::OPTIMIZER_STATE;
      offset_ = 0;
    }
    WriteNext();
  }

 private:
  const std::vector<float>& Current() const {
    return section_ == v1::ParameterChunk::OPTIMIZER_STATE ? snapshot_.optimizer_state
                                                           : *snapshot_.values;
  }
  void WriteNext() {
    const std::vector<float>& buffer = Current();
    const size_t dim = buffer.size();
    const size_t n = std::min(kChunkBytes / 4, dim - offset_);
    chunk_.set_dim(snapshot_.values->size());
    chunk_.set_section(section_);
    chunk_.set_section_size(dim);
    chunk_.set_offset(offset_);
    chunk_.set_round(snapshot_.round);
    chunk_.set_values(reinterpret_cast<const char*>(buffer.data() + offset_), 4 * n);
    offset_ += n;
    chunk_.set_digest(offset_ == dim && section_ == v1::ParameterChunk::PARAMETERS ? snapshot_.digest : 0);
    service_->AddBytesOut(4 * n);
    StartWrite(&chunk_);
  }

  ParameterServerService* const service_;
  ParameterSnapshot snapshot_;
  v1::ParameterChunk chunk_;
  v1::ParameterChunk::Section section_ = v1::ParameterChunk::PARAMETERS;
  size_t offset_ = 0;
};

grpc::ServerWriteReactor<v1::ParameterChunk>* ParameterServerService::PullParameters(
    grpc::CallbackServerContext* context, const v1::PullParametersRequest* request) {
  return new PullReactor(this, context, request->worker_id(), request->include_optimizer_state());
}

// Reads the push's chunks until the client half-closes, submits the push, and when the round
// closes (on the coordinator's thread) streams the aggregate's bytes back and finishes.
class PushReactor final
    : public Handler<grpc::ServerBidiReactor<v1::PushChunk, v1::AggregateChunk>> {
 public:
  PushReactor(ParameterServerService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    // A client that gave up (cancelled, or its deadline passed) did not send a malformed push.
    if (!ok && context_->IsCancelled()) {
      service_->coordinator_->CountCancelledPush();
      return Done(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
    }
    if (!ok) return Submit();
    service_->AddBytesIn(in_.payload().size());
    if (!assembler_.started()) {
      worker_id_ = in_.worker_id();
      round_ = in_.round();
      saved_state_round_ = in_.saved_state_round();
      if (grpc::Status a = service_->Check(*context_, worker_id_); !a.ok()) {
        return Reject("unauthenticated", a);
      }
      if (grpc::Status a = TakeStreamSlot(service_, worker_id_); !a.ok()) {
        return Reject("too_many_streams", a);
      }
      const uint64_t dim = service_->coordinator_->dim();
      if (dim == 0) {
        return Reject("unknown_worker",
                      grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                   absl::StrCat("push from worker ", worker_id_,
                                                ", but no worker has joined yet: join before pushing")));
      }
      const size_t limit = MaxEncodedBytes(dim, service_->coordinator_->job().MaxEntries(dim));
      if (absl::Status s = assembler_.Start(worker_id_, round_, in_.total_bytes(), limit); !s.ok()) {
        return Reject("oversize", ToGrpcStatus(s));
      }
    }
    if (absl::Status s = assembler_.Add(in_.worker_id(), in_.round(), in_.payload()); !s.ok()) {
      return Reject("malformed", ToGrpcStatus(s));
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return FinishClaimed(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
    if (offset_ == result_->encoded.size()) return FinishClaimed(grpc::Status::OK);
    WriteNext();
  }


 private:
  void Submit() {
    if (absl::Status s = assembler_.Finish(); !s.ok()) return Reject("malformed", ToGrpcStatus(s));
    // The reactor stays alive until Finish, and Finish is only called by whoever claims it, so
    // the callback may use the raw pointer once it has claimed.
    const absl::Time submitted = absl::Now();
    auto deliver = [claim = claim(), self = this,
                    submitted](absl::StatusOr<std::shared_ptr<const RoundResult>> r) {
      if (!claim->TryClaim()) return;  // already finished (cancelled)
      if (!r.ok()) return self->Finish(ToGrpcStatus(r.status()));
      self->result_ = std::move(*r);
      self->held_us_ = static_cast<uint64_t>(absl::ToInt64Microseconds(absl::Now() - submitted));
      self->WriteNext();
    };
    absl::Status s =
        service_->coordinator_->Push(worker_id_, round_, assembler_.payload(), deliver,
                                     saved_state_round_);
    assembler_ = ChunkAssembler();  // the coordinator copied what it keeps
    if (!s.ok()) Done(ToGrpcStatus(s));  // counted there
  }

  void WriteNext() {
    const std::string& bytes = result_->encoded;
    const size_t n = std::min(kChunkBytes, bytes.size() - offset_);
    out_.Clear();
    out_.set_round(result_->round);
    if (offset_ == 0) {
      out_.set_total_bytes(bytes.size());
      out_.set_held_us(held_us_);
      out_.set_committed_round(result_->committed_round);
    }
    out_.set_payload(bytes.data() + offset_, n);
    offset_ += n;
    if (offset_ == bytes.size() && result_->has_digest) {
      out_.set_has_digest(true);
      out_.set_digest(result_->digest);
    }
    service_->AddBytesOut(n);
    StartWrite(&out_);
  }

  // A push refused here, before the coordinator saw it: counted under `reason`.
  void Reject(const char* reason, const grpc::Status& status) {
    service_->coordinator_->CountRejectedPush(reason);
    Done(status);
  }
  // For the party that already holds the claim (the delivery's write chain).
  void FinishClaimed(const grpc::Status& status) { Finish(status); }

  ParameterServerService* const service_;
  grpc::CallbackServerContext* const context_;
  v1::PushChunk in_;
  v1::AggregateChunk out_;
  uint32_t worker_id_ = 0;
  uint64_t round_ = 0;
  uint64_t saved_state_round_ = 0;
  ChunkAssembler assembler_;
  std::shared_ptr<const RoundResult> result_;
  uint64_t held_us_ = 0;
  size_t offset_ = 0;
};

grpc::ServerBidiReactor<v1::PushChunk, v1::AggregateChunk>* ParameterServerService::Push(
    grpc::CallbackServerContext* context) {
  return new PushReactor(this, context);
}

}  // namespace regtopk
