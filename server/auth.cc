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
