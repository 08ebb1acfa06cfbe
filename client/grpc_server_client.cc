#include <grpcpp/grpcpp.h>

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/auth/worker_token.h"
#include "common/rpc/conversions.h"
#include "common/wire/chunking.h"
#include "regtopk/v1/parameter_server.grpc.pb.h"
#include "client/server_client.h"

namespace regtopk {

absl::Status GrpcClientOptions::Validate() const {
  if (target.empty()) return absl::InvalidArgumentError("server address is empty");
  if (rpc_timeout <= absl::ZeroDuration() || transfer_timeout <= absl::ZeroDuration() ||
      push_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("client timeouts must be positive");
  }
  if ((!tls_cert.empty() || !tls_key.empty()) && (tls_cert.empty() || tls_key.empty())) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!tls_cert.empty() && tls_ca.empty()) {
    return absl::InvalidArgumentError("a client certificate (--tls-cert) needs --tls-ca");
  }
  return absl::OkStatus();
}

namespace {

class GrpcServerClient final : public ServerClient {
 public:
  GrpcServerClient(const GrpcClientOptions& options,
                   std::shared_ptr<grpc::ChannelCredentials> credentials)
      : options_(options),
        token_(options.job_secret.empty() ? "" : WorkerToken(options.job_secret, options.worker_id)) {
    grpc::ChannelArguments args;
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
    args.SetMaxReceiveMessageSize(kMaxMessageBytes);
    // A restarted server should be found within seconds, not after gRPC's default reconnect
    // backoff (which grows to two minutes).
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    channel_ = grpc::CreateCustomChannel(options.target, credentials, args);
    stub_ = v1::ParameterServer::NewStub(channel_);
  }

  absl::StatusOr<JoinReply> Join(uint32_t worker_id, uint64_t num_samples, uint64_t dim,
                                 uint64_t layout_digest, const JoinIdentity& identity) override {
    grpc::ClientContext context;
    SetDeadline(&context, options_.rpc_timeout);
    v1::JoinRequest request;
    request.set_worker_id(worker_id);
    request.set_num_samples(num_samples);
    request.set_dim(dim);
    request.set_layout_digest(layout_digest);
    request.set_session_id(identity.session_id);
    for (uint64_t r : identity.state_rounds) request.add_state_rounds(r);
    request.set_fresh_state(identity.fresh_state);
    request.set_partition_digest(identity.partition_digest);
    v1::JoinResponse response;
    grpc::Status s = stub_->Join(&context, request, &response);
    if (!s.ok()) return Annotate("Join", s);
    auto config = FromProto(response.config(), dim);
    if (!config.ok()) return config.status();
    JoinReply reply;
    reply.config = *config;
    reply.round = response.round();
    reply.upload_parameters = response.upload_parameters();
    if (response.weight_known()) reply.weight = response.weight();
    reply.params_digest = response.params_digest();
    reply.committed_round = response.committed_round();
    return reply;
  }

  absl::Status UploadParameters(uint32_t worker_id, absl::Span<const float> values) override {
    grpc::ClientContext context;
    SetDeadline(&context, options_.transfer_timeout);
    v1::UploadParametersResponse response;
    auto writer = stub_->UploadParameters(&context, &response);
    v1::ParameterChunk chunk;
    chunk.set_worker_id(worker_id);
    chunk.set_dim(values.size());
    for (size_t offset = 0; offset < values.size();) {
      const size_t n = std::min(kChunkBytes / 4, values.size() - offset);
      chunk.set_offset(offset);
      chunk.set_values(reinterpret_cast<const char*>(values.data() + offset), 4 * n);
      if (!writer->Write(chunk)) break;  // the server finished early: Finish says why
      offset += n;
    }
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    if (!s.ok()) return Annotate("UploadParameters", s);
    return absl::OkStatus();
  }

  absl::StatusOr<PulledParameters> PullParameters(uint32_t worker_id,
                                                  bool include_optimizer_state) override {
    grpc::ClientContext context;
    SetDeadline(&context, options_.transfer_timeout);
    v1::PullParametersRequest request;
    request.set_worker_id(worker_id);
    request.set_include_optimizer_state(include_optimizer_state);
    auto reader = stub_->PullParameters(&context, request);
    PulledParameters out;
    v1::ParameterChunk chunk;
    bool first = true;
    absl::Status bad;
    while (reader->Read(&chunk)) {
      if (!bad.ok()) continue;  // drain
      if (first) {
        if (chunk.dim() == 0 || chunk.dim() > std::numeric_limits<uint32_t>::max()) {
          bad = absl::DataLossError("PullParameters: the server announced an impossible size");
          context.TryCancel();
          continue;
        }
        out.values.resize(chunk.dim());
        out.round = chunk.round();
        first = false;
      }
      const std::string& bytes = chunk.values();
      const bool state = chunk.section() == v1::ParameterChunk::OPTIMIZER_STATE;
      std::vector<float>& into = state ? out.optimizer_state : out.values;
      if (state && into.empty()) {
        // One or two slots of d floats (SGD momentum; Adam's moments).
        const uint64_t size = chunk.section_size();
        if (size == 0 || size % out.values.size() != 0 || size / out.values.size() > 2) {
          bad = absl::DataLossError("PullParameters: the server announced an impossible state size");
          context.TryCancel();
          continue;
        }
        into.resize(size);
      }
      if (chunk.dim() != out.values.size() || chunk.offset() > into.size() ||
          bytes.size() % 4 != 0 || bytes.size() / 4 > into.size() - chunk.offset() ||
          (state && !include_optimizer_state)) {
        bad = absl::DataLossError("PullParameters: malformed chunk from the server");
        context.TryCancel();
        continue;
      }
      std::memcpy(into.data() + chunk.offset(), bytes.data(), bytes.size());
      if (!state) out.digest = chunk.digest();
    }
    grpc::Status s = reader->Finish();
    if (!bad.ok()) return bad;
    if (!s.ok()) return Annotate("PullParameters", s);
    if (first) return absl::DataLossError("PullParameters: the server sent no parameters");
    return out;
  }

  absl::StatusOr<PushReply> Push(uint32_t worker_id, uint64_t round, absl::string_view encoded,
                                 uint64_t saved_state_round) override {
    grpc::ClientContext context;
    SetDeadline(&context, options_.push_timeout);
    auto stream = stub_->Push(&context);
    v1::PushChunk chunk;
    chunk.set_worker_id(worker_id);
    chunk.set_round(round);
    chunk.set_total_bytes(encoded.size());
    chunk.set_saved_state_round(saved_state_round);
    size_t offset = 0;
    do {
      const size_t n = std::min(kChunkBytes, encoded.size() - offset);
      chunk.set_payload(encoded.data() + offset, n);
      if (!stream->Write(chunk)) break;  // the server finished early: Finish says why
      offset += n;
    } while (offset < encoded.size());
    stream->WritesDone();
    PushReply reply;
    reply.round = round;
    v1::AggregateChunk in;
    while (stream->Read(&in)) {
      if (reply.encoded.empty()) {
        // The announced size is only a hint: never let it allocate more than a sane bound.
        reply.encoded.reserve(std::min<uint64_t>(in.total_bytes(), uint64_t{1} << 30));
        reply.held_seconds = static_cast<double>(in.held_us()) * 1e-6;
        reply.committed_round = in.committed_round();
      }
      reply.encoded.append(in.payload());
      if (in.has_digest()) {
        reply.has_digest = true;
        reply.digest = in.digest();
      }
    }
    grpc::Status s = stream->Finish();
    if (!s.ok()) return Annotate(absl::StrCat("Push of round ", round), s);
    return reply;
  }

  absl::StatusOr<ServerStatusInfo> GetStatus() override {
    grpc::ClientContext context;
    SetDeadline(&context, options_.rpc_timeout);
    v1::GetStatusResponse r;
    grpc::Status s = stub_->GetStatus(&context, v1::GetStatusRequest(), &r);
    if (!s.ok()) return Annotate("GetStatus", s);
    ServerStatusInfo info;
    info.round = r.round();
    info.workers_joined = r.workers_joined();
    info.num_workers = r.num_workers();
    info.pushes_this_round = r.pushes_this_round();
    info.parameters_ready = r.parameters_ready();
    info.finished = r.finished();
    info.bytes_in = r.bytes_in();
    info.bytes_out = r.bytes_out();
    info.rejected_pushes = r.rejected_pushes();
    info.last_round_nnz = r.last_round_nnz();
    info.last_round_encoded_bytes = r.last_round_encoded_bytes();
    return info;
  }

 private:
  // The deadline, and the worker's token when the job has a secret.
  void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) const {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    if (!token_.empty()) {
      context->AddMetadata(kWorkerIdMetadata, absl::StrCat(options_.worker_id));
      context->AddMetadata(kWorkerTokenMetadata, token_);
    }
  }

  // Keeps the server's code and says which call to which server failed.
  absl::Status Annotate(absl::string_view call, const grpc::Status& s) const {
    absl::Status status = FromGrpcStatus(s);
    return absl::Status(status.code(), absl::StrCat(call, " to ", options_.target, " failed (",
                                                    absl::StatusCodeToString(status.code()),
                                                    "): ", status.message()));
  }

  const GrpcClientOptions options_;
  const std::string token_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ParameterServer::Stub> stub_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ServerClient>> CreateGrpcServerClient(
    const GrpcClientOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    auto ca = ReadPemFile(options.tls_ca, "--tls-ca");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
    if (!options.tls_cert.empty()) {
      auto cert = ReadPemFile(options.tls_cert, "--tls-cert");
      if (!cert.ok()) return cert.status();
      auto key = ReadPemFile(options.tls_key, "--tls-key");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    credentials = grpc::SslCredentials(ssl);
  }
  return std::unique_ptr<ServerClient>(new GrpcServerClient(options, std::move(credentials)));
}

}  // namespace regtopk
