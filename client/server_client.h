// ServerClient: the worker's view of the parameter server, one method per RPC, blocking, each
// with a deadline. An interface so that tests and fault injection can stand in for the network;
// CreateGrpcServerClient gives the real one. Implementations are thread-safe.
#ifndef REGTOPK_WORKER_SERVER_CLIENT_H_
#define REGTOPK_WORKER_SERVER_CLIENT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/job_config.h"

namespace regtopk {

struct JoinReply {
  JobConfig config;
  uint64_t round = 0;
  bool upload_parameters = false;
  std::optional<float> weight;  // this worker's w_n, once known
  uint64_t params_digest = 0;   // of the server's parameters at `round` (0: none yet)
  uint64_t committed_round = 0;  // the newest committed checkpoint
};

struct PulledParameters {
  std::vector<float> values;
  std::vector<float> optimizer_state;  // when asked for: Optimizer::state() (empty for plain SGD)
  uint64_t round = 0;
  uint64_t digest = 0;
};

struct PushReply {
  uint64_t round = 0;
  std::string encoded;  // SparseCodec encoding of the round's aggregate
  bool has_digest = false;
  uint64_t digest = 0;
  // How long the server held the push waiting for the other workers.
  double held_seconds = 0;
  uint64_t committed_round = 0;  // the newest committed checkpoint once the round closed
};

struct ServerStatusInfo {
  uint64_t round = 0;
  uint32_t workers_joined = 0, num_workers = 0, pushes_this_round = 0;
  bool parameters_ready = false, finished = false;
  uint64_t bytes_in = 0, bytes_out = 0, rejected_pushes = 0;
  uint64_t last_round_nnz = 0, last_round_encoded_bytes = 0;
};

class ServerClient {
 public:
  virtual ~ServerClient() = default;

  // Errors carry the server's code (see the proto) or UNAVAILABLE / DEADLINE_EXCEEDED when the
  // server cannot be reached in time, with a message naming the server.
  virtual absl::StatusOr<JoinReply> Join(uint32_t worker_id, uint64_t num_samples, uint64_t dim,
                                         uint64_t layout_digest,
                                         const JoinIdentity& identity = {}) = 0;
  virtual absl::Status UploadParameters(uint32_t worker_id, absl::Span<const float> values) = 0;
  // With include_optimizer_state, the optimizer's state of the same round comes too.
  virtual absl::StatusOr<PulledParameters> PullParameters(uint32_t worker_id,
                                                          bool include_optimizer_state = false) = 0;
  // Sends round `round`'s encoded gradient and blocks until the round's aggregate arrives.
  // `saved_state_round`: the round this worker saved its state before (0 = none).
  virtual absl::StatusOr<PushReply> Push(uint32_t worker_id, uint64_t round,
                                         absl::string_view encoded,
                                         uint64_t saved_state_round = 0) = 0;
  virtual absl::StatusOr<ServerStatusInfo> GetStatus() = 0;
};

struct GrpcClientOptions {
  std::string target;                                   // host:port
  absl::Duration rpc_timeout = absl::Seconds(30);       // Join, GetStatus
  absl::Duration transfer_timeout = absl::Minutes(10);  // UploadParameters, PullParameters
  // A push waits for the slowest worker of the round; longer than the server's default round
  // timeout (10 min), so that a dead peer is reported by the server, which knows who is missing.
  absl::Duration push_timeout = absl::Minutes(15);
  // Transport security. tls_ca (PEM file) turns TLS on and verifies the server against it;
  // tls_cert / tls_key (PEM files) add this worker's client certificate (mutual TLS: its
  // subject CN=worker-N is the worker's identity). Empty = plaintext.
  std::string tls_ca, tls_cert, tls_key;
  // The name the server's certificate must carry, when `target` is an address it does not
  // list (e.g. an IP); empty = the target's host.
  std::string tls_server_name;
  // A job secret (the contents of --job-secret-file): every call carries worker `worker_id`'s
  // token derived from it (common/auth/worker_token.h). Empty = no token.
  std::string job_secret;
  uint32_t worker_id = 0;

  absl::Status Validate() const;
};

absl::StatusOr<std::unique_ptr<ServerClient>> CreateGrpcServerClient(
    const GrpcClientOptions& options);

}  // namespace regtopk

#endif  // REGTOPK_WORKER_SERVER_CLIENT_H_
