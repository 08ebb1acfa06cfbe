// Authenticator: which worker a call comes from, and whether it may act as the worker it names.
// The identity is the client certificate's subject (CN=worker-N, under mutual TLS) or, without
// client certificates, a per-worker token derived from the job secret (call metadata, see
// common/auth/worker_token.h). With neither configured every call is let through (the server
// then listens on loopback only, unless --insecure). Immutable: thread-safe.
#ifndef REGTOPK_SERVER_AUTH_H_
#define REGTOPK_SERVER_AUTH_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace regtopk {

struct AuthOptions {
  bool client_certificates = false;  // mutual TLS: the peer's certificate CN names the worker
  std::string job_secret;            // tokens; empty = none
  bool enabled() const { return client_certificates || !job_secret.empty(); }
};

// The server's TLS files (PEM paths). cert and key go together; ca (the workers' CA) turns on
// mutual TLS: client certificates are requested and verified, and the Authenticator reads the
// worker id from their CN.
struct ServerTlsFiles {
  std::string cert;
  std::string key;
  std::string ca;  // empty: one-way TLS
};

// Credentials for grpc::ServerBuilder: insecure when `files.cert` is empty, else TLS as above.
// INVALID_ARGUMENT naming the flag (--tls-cert, --tls-key, --tls-ca) of a file that is missing
// or unreadable, or of a combination that does not make sense.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& files);

class Authenticator {
 public:
  explicit Authenticator(AuthOptions options) : options_(std::move(options)) {}

  // The worker the call's credential belongs to: UNAUTHENTICATED without a valid credential.
  // std::nullopt when authentication is off.
  grpc::Status Identify(const grpc::ServerContextBase& context,
                        std::optional<uint32_t>* worker) const;
  // OK if the call may act as `worker_id`; PERMISSION_DENIED naming both ids when its
  // credential is another worker's; UNAUTHENTICATED without one.
  grpc::Status Check(const grpc::ServerContextBase& context, uint32_t worker_id) const;

  bool enabled() const { return options_.enabled(); }

 private:
  const AuthOptions options_;
};

}  // namespace regtopk

#endif  // REGTOPK_SERVER_AUTH_H_
