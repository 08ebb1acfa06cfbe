// Who may use a regtopk-server: the real binary with a job secret (worker tokens) and with
// mutual TLS (certificates from deploy/make-certs.sh), called through the real client. A call
// acting as another worker gets PERMISSION_DENIED, a call without a credential UNAUTHENTICATED,
// before it touches state; and the defaults are safe: loopback only without TLS, other
// addresses only with --insecure (and a warning).
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/server_client.h"
#include "common/auth/worker_token.h"
#include "regtopk/v1/parameter_server.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

const std::string kServer = REGTOPK_SERVER_BIN;
const std::string kMakeCerts = REGTOPK_MAKE_CERTS;

// `certs`: a make-certs folder whose CA the client trusts and (cert_worker >= 0) whose
// worker-N pair it presents; `ca_certs`, if given, is the folder whose CA it trusts instead.
std::unique_ptr<ServerClient> Client(const std::string& address, uint32_t worker,
                                     const std::string& secret = "",
                                     const std::string& certs = "", int cert_worker = -1,
                                     const std::string& ca_certs = "") {
  GrpcClientOptions o;
  o.target = address;
  o.worker_id = worker;
  o.job_secret = secret;
  // Generous: every call here is answered at once (accepted or refused), but under ASan on a
  // loaded 2-core machine a TLS handshake took longer than 5 s and read as UNAVAILABLE.
  o.rpc_timeout = absl::Seconds(30);
  if (!certs.empty()) {
    o.tls_ca = (ca_certs.empty() ? certs : ca_certs) + "/ca.pem";
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

// A client that presents a certificate from another CA, or trusts another CA than the one that
// signed the server's certificate, gets no connection: the TLS handshake fails, before any call.
TEST(Security, AnotherCasCertificatesAreRefused) {
  const std::string certs = NewTempDir("regtopk_certs_job");
  const std::string other = NewTempDir("regtopk_certs_other");
  ASSERT_EQ(std::system((kMakeCerts + " " + certs + " 1 >/dev/null").c_str()), 0);
  ASSERT_EQ(std::system((kMakeCerts + " " + other + " 1 >/dev/null").c_str()), 0);
  Subprocess server(kServer, {"--port=0", "--workers=1", "--algorithm=topk", "--density=0.5",
                              "--tls-cert=" + certs + "/server.pem",
                              "--tls-key=" + certs + "/server.key", "--tls-ca=" + certs + "/ca.pem"});
  const std::string address = ServerAddress(server);
  ASSERT_FALSE(address.empty()) << server.stderr_text();

  // worker-0's certificate from the other CA, while trusting the job's CA.
  auto foreign = Client(address, 0, "", other, 0, /*ca_certs=*/certs)->Join(0, 10, 4, 1);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kUnavailable) << foreign.status();

  // The job's own worker certificate, but trusting the other CA: the server is not believed.
  auto wrong_ca = Client(address, 0, "", certs, 0, /*ca_certs=*/other)->Join(0, 10, 4, 1);
  EXPECT_EQ(wrong_ca.status().code(), absl::StatusCode::kUnavailable) << wrong_ca.status();

  // Neither attempt changed anything: the job's own worker joins as the first.
  auto joined = Client(address, 0, "", certs, 0)->Join(0, 10, 4, 1);
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_TRUE(joined->upload_parameters);
}

// The server's peak resident memory (VmHWM) in KiB, from /proc.
uint64_t PeakRssKib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6));
  }
  ADD_FAILURE() << "no VmHWM in /proc/" << pid << "/status";
  return 0;
}

void AddToken(grpc::ClientContext* context, uint32_t worker, const std::string& secret) {
  context->AddMetadata(kWorkerIdMetadata, std::to_string(worker));
  context->AddMetadata(kWorkerTokenMetadata, WorkerToken(secret, worker));
}

// The attack that grew a server by 384 MiB: upload streams that send one small chunk announcing
// the model's d and then hang. 100 without a credential and 100 with the credential of a worker
// that never joined, all held open at once, against a joined model of 4 M parameters (16 MiB
// each, had the server sized a buffer for them): the peak resident memory grows by under
// 10 MiB, and each stream is answered at once.
TEST(Security, UploadStreamsFromStrangersAllocateNothing) {
  const std::string dir = NewTempDir("regtopk_security_upload");
  constexpr uint64_t kDim = uint64_t{4} << 20;
  Subprocess server(kServer, {"--port=0", "--workers=2", "--algorithm=topk", "--density=0.01",
                              "--job-secret-file=" + SecretFile(dir, kSecret)});
  const std::string address = ServerAddress(server);
  ASSERT_FALSE(address.empty()) << server.stderr_text();
  auto w0 = Client(address, 0, kSecret);
  ASSERT_TRUE(w0->Join(0, 10, kDim, 3).ok());
  ASSERT_TRUE(w0->UploadParameters(0, std::vector<float>(kDim, 0.5f)).ok());
  const uint64_t before = PeakRssKib(server.pid());

  auto stub = v1::ParameterServer::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  struct Open {
    grpc::ClientContext context;
    v1::UploadParametersResponse response;
    std::unique_ptr<grpc::ClientWriter<v1::ParameterChunk>> stream;
  };
  std::vector<std::unique_ptr<Open>> open;
  for (int i = 0; i < 200; ++i) {
    auto o = std::make_unique<Open>();
    o->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    if (i >= 100) AddToken(&o->context, 1, kSecret);  // authenticated, but worker 1 never joined
    o->stream = stub->UploadParameters(&o->context, &o->response);
    v1::ParameterChunk chunk;
    chunk.set_worker_id(1);
    chunk.set_dim(kDim);
    chunk.set_values(std::string(4, '\0'));
    o->stream->Write(chunk);  // false once the server has answered: that is fine
    open.push_back(std::move(o));
  }
  int unauthenticated = 0, refused = 0;
  for (auto& o : open) {
    const grpc::Status s = o->stream->Finish();
    if (s.error_code() == grpc::StatusCode::UNAUTHENTICATED) ++unauthenticated;
    if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
        s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++refused;
    }
  }
  EXPECT_EQ(unauthenticated, 100);
  EXPECT_EQ(refused, 100) << "a worker that did not join may not upload";
  const uint64_t after = PeakRssKib(server.pid());
  // Not after - before: the kernel's RSS counters are approximate (per-CPU), so two reads of
  // the peak can come back a few hundred KiB lower, and the unsigned difference would wrap.
  EXPECT_LT(after, before + 10u * 1024) << "peak RSS " << before << " KiB -> " << after << " KiB";
}

// One 16-byte Join announcing d = 2^28 under --momentum=0.9 once allocated 1 GiB. Without a
// valid credential for the id it names, it allocates nothing and fixes no layout; a credential
// holder asking for more than --max-dim is refused before any allocation too. Afterwards the
// job is intact: its own worker joins with its own d.
TEST(Security, AHugeJoinFromAStrangerAllocatesNothing) {
  const std::string dir = NewTempDir("regtopk_security_join");
  Subprocess server(kServer, {"--port=0", "--workers=2", "--algorithm=topk", "--density=0.01",
                              "--momentum=0.9", "--max-dim=100000000",
                              "--job-secret-file=" + SecretFile(dir, kSecret)});
  const std::string address = ServerAddress(server);
  ASSERT_FALSE(address.empty()) << server.stderr_text();
  const uint64_t before = PeakRssKib(server.pid());
  constexpr uint64_t kHuge = uint64_t{1} << 28;
  EXPECT_EQ(Client(address, 0)->Join(0, 10, kHuge, 1).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Client(address, 1, kSecret)->Join(0, 10, kHuge, 1).status().code(),
            absl::StatusCode::kPermissionDenied);
  auto over = Client(address, 0, kSecret)->Join(0, 10, kHuge, 1);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument) << over.status();
  EXPECT_THAT(std::string(over.status().message()),
              HasSubstr("is not in [1, 100000000] (the server's --max-dim)"));
  const uint64_t after = PeakRssKib(server.pid());
  // Not after - before: the kernel's RSS counters are approximate (per-CPU), so two reads of
  // the peak can come back a few hundred KiB lower, and the unsigned difference would wrap.
  EXPECT_LT(after, before + 10u * 1024) << "peak RSS " << before << " KiB -> " << after << " KiB";
  auto joined = Client(address, 0, kSecret)->Join(0, 10, 1000, 1);
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_TRUE(joined->upload_parameters);
}

}  // namespace
}  // namespace regtopk
