// Per-worker tokens derived from a job secret: worker N proves its id with
// HMAC-SHA256(secret, "regtopk-worker-N") (hex), sent as call metadata. Used where client
// certificates are not (one-way TLS, loopback). Stateless functions; thread-safe.
#ifndef REGTOPK_COMMON_AUTH_WORKER_TOKEN_H_
#define REGTOPK_COMMON_AUTH_WORKER_TOKEN_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace regtopk {

// Metadata keys of the token credential.
inline constexpr char kWorkerIdMetadata[] = "regtopk-worker-id";
inline constexpr char kWorkerTokenMetadata[] = "regtopk-worker-token";

std::string WorkerToken(absl::string_view secret, uint32_t worker_id);

// Constant-time comparison (a token check must not leak how many leading bytes matched).
bool TokensEqual(absl::string_view a, absl::string_view b);

// The secret in `path` (trailing newlines stripped). INVALID_ARGUMENT naming the file if it is
// missing, shorter than 16 bytes, or readable by group or others.
absl::StatusOr<std::string> ReadJobSecret(const std::string& path);

// Reads a whole file (certificates, keys); INVALID_ARGUMENT naming it (and `what`) on failure.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view what);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_AUTH_WORKER_TOKEN_H_
