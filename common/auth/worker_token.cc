#include "common/auth/worker_token.h"

#include <openssl/hmac.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace regtopk {

std::string WorkerToken(absl::string_view secret, uint32_t worker_id) {
  const std::string message = absl::StrCat("regtopk-worker-", worker_id);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &len);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) absl::StrAppendFormat(&hex, "%02x", mac[i]);
  return hex;
}

bool TokensEqual(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", what, " '", path, "'"));
  std::stringstream s;
  s << in.rdbuf();
  if (s.str().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " '", path, "' is empty"));
  }
  return s.str();
}

absl::StatusOr<std::string> ReadJobSecret(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read --job-secret-file '", path, "'"));
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--job-secret-file '", path, "' is readable by group or others: chmod 600 it"));
  }
  auto text = ReadPemFile(path, "--job-secret-file");
  if (!text.ok()) return text.status();
  std::string secret = *text;
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  if (secret.size() < 16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--job-secret-file '", path, "' holds ", secret.size(),
        " bytes; use at least 16 (e.g. head -c 32 /dev/urandom | base64 > FILE)"));
  }
  return secret;
}

}  // namespace regtopk
