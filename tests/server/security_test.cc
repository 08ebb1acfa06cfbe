// Who may use a regtopk-server: the real binary with a job secret (worker tokens) and with
// mutual TLS (certificates from deploy/make-certs.sh), called through the real client. A call
// acting as another worker gets PERMISSION_DENIED, a call without a credential UNAUTHENTICATED,
// before it touches state; and the defaults are safe: loopback only without TLS, other
// addresses only with --insecure (and a warning).
#include <sys/stat.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "client/server_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

const std::string kServer = REGTOPK_SERVER_BIN;
const std::string kMakeCerts = REGTOPK_MAKE_CERTS;

std::unique_ptr<ServerClient> Client(const std::string& address, uint32_t worker,
                                     const std::string& secret = "",
                                     const std::string& certs = "", int cert_worker = -1) {
  GrpcClientOptions o;
  o.target = address;
  o.worker_id = worker;
  o.job_secret = secret;
  o.rpc_timeout = absl::Seconds(5);
  if (!certs.empty()) {
    o.tls_ca = certs + "/ca.pem";
    o.tls_server_name = "localhost";
    if (cert_worker >= 0) {
      o.tls_cert = absl::StrCat(certs, "/worker-", cert_worker, ".pem");
      o.tls_key = absl::StrCat(certs, "/worker-", cert_worker, ".key");
    }
  }
  auto c = CreateGrpcServerClient(o);
  EXPECT_TRUE(c.ok()) << c.status();
  return std::move(*c);
}

std::string SecretFile(const std::string& dir, const std::string& secret, mode_t mode = 0600) {
  const std::string path = dir + "/job.secret";
  std::ofstream(path) << secret << "\n";
  chmod(path.c_str(), mode);
  return path;
}

constexpr char kSecret[] = "correct horse battery staple";

TEST(Security, WorkerTokensBindEachCallToItsWorker) {
  const std::string dir = NewTempDir("regtopk_security");
  Subprocess server(kServer, {"--port=0", "--workers=2", "--algorithm=topk", "--density=0.5",
                              "--job-secret-file=" + SecretFile(dir, kSecret)});
  const std::string address = ServerAddress(server);
  ASSERT_FALSE(address.empty()) << server.stderr_text();
  EXPECT_THAT(server.stdout_text(), HasSubstr("listening on 127.0.0.1:"))
      << "tokens without TLS: loopback unless --insecure";
  EXPECT_THAT(server.stdout_text(), HasSubstr("(worker tokens)"));

  auto anonymous = Client(address, 0);
  auto no_join = anonymous->Join(0, 10, 4, 1);
  EXPECT_EQ(no_join.status().code(), absl::StatusCode::kUnauthenticated) << no_join.status();
  EXPECT_THAT(std::string(no_join.status().message()), HasSubstr("no worker token"));
  EXPECT_EQ(anonymous->GetStatus().status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(anonymous->PullParameters(0).status().code(), absl::StatusCode::kUnauthenticated);
  auto wrong = Client(address, 0, "another secret, another job")->Join(0, 10, 4, 1);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("invalid worker token"));

  // Worker 1's credential cannot join, upload, pull or push as worker 0.
  auto w1 = Client(address, 1, kSecret);
  auto forged = w1->Join(0, 10, 4, 1);
  EXPECT_EQ(forged.status().code(), absl::StatusCode::kPermissionDenied) << forged.status();
  EXPECT_THAT(std::string(forged.status().message()),
              HasSubstr("the credential of worker 1 cannot act as worker 0"));
  // Nothing the refused join said took effect: the model layout is still open, so worker 0
  // joins with its own dimension.
  auto w0 = Client(address, 0, kSecret);
  auto joined = w0->Join(0, 10, 8, 2);
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_TRUE(joined->upload_parameters);
  EXPECT_EQ(w1->UploadParameters(0, std::vector<float>(8, 1.0f)).code(),
            absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(w0->UploadParameters(0, std::vector<float>(8, 1.0f)).ok());
  EXPECT_EQ(w1->PullParameters(0).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(w1->Push(0, 0, "x").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(w1->GetStatus().ok());
  auto pulled = w0->PullParameters(0);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->values, std::vector<float>(8, 1.0f));
  ASSERT_TRUE(w1->Join(1, 10, 8, 2).ok());
}

TEST(Security, MutualTlsBindsTheWorkerIdToItsCertificate) {
  const std::string certs = NewTempDir("regtopk_certs");
  ASSERT_EQ(std::system((kMakeCerts + " " + certs + " 2 >/dev/null").c_str()), 0);
  Subprocess server(kServer, {"--port=0", "--workers=2", "--algorithm=topk", "--density=0.5",
                              "--tls-cert=" + certs + "/server.pem",
                              "--tls-key=" + certs + "/server.key", "--tls-ca=" + certs + "/ca.pem"});
  const std::string address = ServerAddress(server);
  ASSERT_FALSE(address.empty()) << server.stderr_text();
  EXPECT_THAT(server.stdout_text(), HasSubstr("(mutual TLS)"));

  auto forged = Client(address, 0, "", certs, /*cert_worker=*/1)->Join(0, 10, 4, 1);
  EXPECT_EQ(forged.status().code(), absl::StatusCode::kPermissionDenied) << forged.status();
  auto no_cert = Client(address, 0, "", certs)->Join(0, 10, 4, 1);
  EXPECT_EQ(no_cert.status().code(), absl::StatusCode::kUnauthenticated) << no_cert.status();
  EXPECT_THAT(std::string(no_cert.status().message()), HasSubstr("no client certificate"));
  auto plaintext = Client(address, 0)->Join(0, 10, 4, 1);
  EXPECT_EQ(plaintext.status().code(), absl::StatusCode::kUnavailable);
  auto w0 = Client(address, 0, "", certs, 0);
  auto joined = w0->Join(0, 10, 4, 1);
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_TRUE(Client(address, 1, "", certs, 1)->Join(1, 10, 4, 1).ok());
}

TEST(Security, SafeDefaults) {
  {
    Subprocess server(kServer, {"--port=0"});
    ASSERT_FALSE(ServerAddress(server).empty());
    EXPECT_THAT(server.stdout_text(), HasSubstr("listening on 127.0.0.1:"))
        << "without TLS or a job secret: loopback only";
  }
  {
    Subprocess server(kServer, {"--port=0", "--host=0.0.0.0"});
    EXPECT_EQ(server.Wait(), 2);
    EXPECT_THAT(server.stderr_text(), HasSubstr("--host=0.0.0.0 without TLS needs --insecure"));
  }
  {
    Subprocess server(kServer, {"--port=0", "--host=0.0.0.0", "--insecure"});
    ASSERT_FALSE(ServerAddress(server).empty());
    EXPECT_TRUE(server.WaitForStderr("any client can act as any worker", 5000))
        << server.stderr_text();
    EXPECT_THAT(server.stderr_text(), HasSubstr("WARNING"));
  }
  const std::string dir = NewTempDir("regtopk_security_defaults");
  for (const auto& [args, says] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--job-secret-file=" + SecretFile(dir, kSecret, 0644)}, "readable by group or others"},
           {{"--job-secret-file=" + dir + "/missing"}, "cannot read --job-secret-file"},
           {{"--tls-cert=" + dir + "/c.pem"}, "--tls-cert and --tls-key go together"},
           {{"--tls-ca=" + dir + "/ca.pem"}, "--tls-ca needs --tls-cert"}}) {
    Subprocess server(kServer, args);
    EXPECT_EQ(server.Wait(), 2) << says;
    EXPECT_THAT(server.stderr_text(), HasSubstr(says));
  }
  std::ofstream(dir + "/short.secret") << "short";
  chmod((dir + "/short.secret").c_str(), 0600);
  Subprocess short_secret(kServer, {"--job-secret-file=" + dir + "/short.secret"});
  EXPECT_EQ(short_secret.Wait(), 2);
  EXPECT_THAT(short_secret.stderr_text(), HasSubstr("use at least 16"));
}

}  // namespace
}  // namespace regtopk
