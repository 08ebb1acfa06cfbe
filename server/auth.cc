#include "server/auth.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/auth/worker_token.h"

namespace regtopk {
namespace {

std::optional<std::string> Metadata(const grpc::ServerContextBase& context, const char* key) {
  const auto& md = context.client_metadata();
  auto it = md.find(key);
  if (it == md.end()) return std::nullopt;
  return std::string(it->second.data(), it->second.size());
}

std::optional<uint32_t> ParseWorker(absl::string_view text) {
  uint32_t id;
  if (!absl::SimpleAtoi(text, &id)) return std::nullopt;
  return id;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& files) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!files.ca.empty() && files.cert.empty()) {
    return absl::InvalidArgumentError("--tls-ca needs --tls-cert and --tls-key");
  }
  if (files.cert.empty()) return grpc::InsecureServerCredentials();
  auto cert = ReadPemFile(files.cert, "--tls-cert");
  if (!cert.ok()) return cert.status();
  auto key = ReadPemFile(files.key, "--tls-key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl(
      files.ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                       // Requested and verified, but the handshake does not demand one: the
                       // health check needs none, and every other call without one gets
                       // UNAUTHENTICATED from the Authenticator.
                       : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!files.ca.empty()) {
    auto ca = ReadPemFile(files.ca, "--tls-ca");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
  }
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(ssl);
}

grpc::Status Authenticator::Identify(const grpc::ServerContextBase& context,
                                     std::optional<uint32_t>* worker) const {
  worker->reset();
  if (!options_.enabled()) return grpc::Status::OK;
  if (options_.client_certificates) {
    std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
    const auto names = auth ? auth->FindPropertyValues("x509_common_name")
                            : std::vector<grpc::string_ref>{};
    if (names.empty()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "no client certificate: this server requires mutual TLS");
    }
    const absl::string_view cn(names[0].data(), names[0].size());
    std::optional<uint32_t> id;
    if (absl::StartsWith(cn, "worker-")) id = ParseWorker(cn.substr(7));
    if (!id) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          absl::StrCat("client certificate CN=", cn,
                                       " does not name a worker (expected CN=worker-N)"));
    }
    *worker = id;
    return grpc::Status::OK;
  }
  const std::optional<std::string> id_text = Metadata(context, kWorkerIdMetadata);
  const std::optional<std::string> token = Metadata(context, kWorkerTokenMetadata);
  if (!id_text || !token) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "no worker token: this job needs --job-secret-file on every worker");
  }
  const std::optional<uint32_t> id = ParseWorker(*id_text);
  if (!id || !TokensEqual(*token, WorkerToken(options_.job_secret, *id))) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "invalid worker token (a different --job-secret-file?)");
  }
  *worker = id;
  return grpc::Status::OK;
}

grpc::Status Authenticator::Check(const grpc::ServerContextBase& context,
                                  uint32_t worker_id) const {
  std::optional<uint32_t> who;
  grpc::Status s = Identify(context, &who);
  if (!s.ok() || !who) return s;
  if (*who != worker_id) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("the credential of worker ", *who,
                                     " cannot act as worker ", worker_id));
  }
  return grpc::Status::OK;
}

}  // namespace regtopk
