// The regtopk-server binary: flags, signals, and a held round ended cleanly by SIGTERM.
#include <httplib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "common/wire/sparse_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"
#include "client/server_client.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

const std::string kServer = REGTOPK_SERVER_BIN;

TEST(ServerMain, BadFlagsExitTwoWithAClearMessage) {
  struct Case {
    std::vector<std::string> args;
    const char* says;
  } cases[] = {
      {{"--density=2"}, "density must be in (0, 1]"},
      {{"--algorithm=top-k"}, "unknown algorithm 'top-k'"},
      {{"--workers=0"}, "--workers must be >= 1"},
      {{"--weighting=size"}, "--weighting must be uniform or samples"},
      {{"--lr=abc"}, "bad value for --lr"},
      {{"--no-such-flag=1"}, "unknown flag --no-such-flag"},
      {{"--momentum=1.5"}, "momentum must be in [0, 1)"},
      {{"positional"}, "unexpected argument 'positional'"},
  };
  for (const Case& c : cases) {
    Subprocess p(kServer, c.args);
    EXPECT_EQ(p.Wait(), 2) << c.says;
    EXPECT_THAT(p.stderr_text(), HasSubstr(c.says));
  }
}

TEST(ServerMain, HelpDocumentsEveryFlagWithItsDefault) {
  Subprocess p(kServer, {"--help"});
  EXPECT_EQ(p.Wait(), 0);
  for (const char* flag : {"--port", "--workers", "--algorithm", "--density", "--mu", "--lr",
                           "--momentum", "--weight-decay", "--weighting", "--rounds"}) {
    EXPECT_THAT(p.stdout_text(), HasSubstr(flag));
  }
  EXPECT_THAT(p.stdout_text(), HasSubstr("(default: 0.01)"));
}

TEST(ServerMain, EveryFlagCanComeFromTheEnvironmentAndTheCommandLineWins) {
  {
    // The variable is read: an invalid density from it is refused like the flag's.
    Subprocess p(kServer, {}, {"REGTOPK_DENSITY=2"});
    EXPECT_EQ(p.Wait(), 2);
    EXPECT_THAT(p.stderr_text(), HasSubstr("density must be in (0, 1]"));
  }
  {
    Subprocess p(kServer, {}, {"REGTOPK_LR=abc"});
    EXPECT_EQ(p.Wait(), 2);
    EXPECT_THAT(p.stderr_text(), HasSubstr("bad value for REGTOPK_LR (--lr)"));
  }
  {
    // The flag wins over the bad variable; the server starts and says what the environment set.
    Subprocess p(kServer, {"--density=0.1", "--host=127.0.0.1"},
                 {"REGTOPK_DENSITY=2", "REGTOPK_PORT=0", "REGTOPK_WORKERS=1"});
    EXPECT_FALSE(ServerAddress(p).empty()) << p.stderr_text();
    p.Signal(SIGTERM);
    EXPECT_EQ(p.Wait(), 0) << p.stderr_text();
    EXPECT_THAT(p.stderr_text(),
                HasSubstr("flags from the environment: REGTOPK_DENSITY, REGTOPK_PORT, "
                          "REGTOPK_WORKERS"));
  }
  Subprocess help(kServer, {"--help"});
  EXPECT_EQ(help.Wait(), 0);
  EXPECT_THAT(help.stdout_text(), HasSubstr("(default: 0.01) [REGTOPK_DENSITY]"));
  EXPECT_THAT(help.stdout_text(), HasSubstr("[REGTOPK_CHECKPOINT_DIR]"));
}

TEST(ServerMain, SigtermDuringAHeldRoundEndsCleanly) {
  Subprocess server(kServer, {"--host=127.0.0.1", "--port=0", "--workers=2", "--algorithm=topk",
                              "--density=0.1"});
  const std::string address = ServerAddress(server);
  ASSERT_FALSE(address.empty()) << server.stdout_text() << server.stderr_text();
  GrpcClientOptions o;
  o.target = address;
  auto client = std::move(*CreateGrpcServerClient(o));
  ASSERT_TRUE(client->Join(0, 1, 10, 5).ok());
  ASSERT_TRUE(client->Join(1, 1, 10, 5).ok());
  ASSERT_TRUE(client->UploadParameters(0, std::vector<float>(10, 0.0f)).ok());
  std::string payload;
  EncodeSparseSmallest(SparseVector{{3}, {1.0f}}, 10, &payload);
  absl::StatusOr<PushReply> held = absl::UnknownError("");
  std::thread t([&] { held = client->Push(0, 0, payload); });
  // Another process: its status is all there is to watch, so poll it, within a bound.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (true) {
    auto s = client->GetStatus();
    ASSERT_TRUE(s.ok()) << s.status();
    if (s->pushes_this_round == 1) break;
    ASSERT_LT(absl::Now(), give_up) << "the push was never held";
    absl::SleepFor(absl::Milliseconds(5));
  }
  server.Signal(SIGTERM);
  t.join();
  EXPECT_EQ(held.status().code(), absl::StatusCode::kUnavailable) << held.status();
  EXPECT_THAT(std::string(held.status().message()), HasSubstr("shutting down"));
  EXPECT_EQ(server.Wait(), 0) << server.stderr_text();
  EXPECT_THAT(server.stderr_text(), HasSubstr("SIGTERM"));
}

TEST(ServerMain, HealthCheckSaysServingThenFailsWhenGone) {
  Subprocess server(kServer, {"--host=127.0.0.1", "--port=0"});
  const std::string address = ServerAddress(server);
  ASSERT_FALSE(address.empty());
  Subprocess up(REGTOPK_HEALTH_BIN, {"--server=" + address});
  EXPECT_EQ(up.Wait(), 0) << up.stderr_text();
  EXPECT_THAT(up.stdout_text(), HasSubstr("SERVING"));
  server.Signal(SIGTERM);
  ASSERT_EQ(server.Wait(), 0);
  Subprocess down(REGTOPK_HEALTH_BIN, {"--server=" + address, "--timeout-seconds=2"});
  EXPECT_EQ(down.Wait(), 1);
  EXPECT_THAT(down.stderr_text(), HasSubstr("did not answer"));
}

TEST(ServerMain, ExitsZeroAfterTheLastRound) {
  Subprocess server(kServer, {"--host=127.0.0.1", "--port=0", "--workers=1", "--algorithm=dense",
                              "--rounds=2", "--linger-seconds=0"});
  const std::string address = ServerAddress(server);
  ASSERT_FALSE(address.empty());
  GrpcClientOptions o;
  o.target = address;
  auto client = std::move(*CreateGrpcServerClient(o));
  ASSERT_TRUE(client->Join(0, 1, 3, 5).ok());
  ASSERT_TRUE(client->UploadParameters(0, std::vector<float>(3, 0.0f)).ok());
  std::string payload;
  EncodeSparseSmallest(SparseVector{{0, 1, 2}, {1.0f, 2.0f, 3.0f}}, 3, &payload);
  ASSERT_TRUE(client->Push(0, 0, payload).ok());
  ASSERT_TRUE(client->Push(0, 1, payload).ok());
  client.reset();
  EXPECT_EQ(server.Wait(), 0);
  EXPECT_THAT(server.stderr_text(), HasSubstr("round 1 closed"));
  EXPECT_THAT(server.stderr_text(), HasSubstr("job finished after 2 rounds"));
}

// Parses Prometheus text format strictly enough to catch a malformed exposition; returns
// "name{labels}" -> value.
std::map<std::string, double> ParsePrometheus(const std::string& text) {
  std::map<std::string, double> values;
  std::istringstream in(text);
  const std::regex sample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-z_]+="[^"]*"\})?) ([-+]?[0-9.eE+-]+|\+Inf|NaN)$)");
  const std::regex comment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$)");
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_match(line, m, sample)) {
      values[m[1].str()] = m[3].str() == "+Inf" ? INFINITY : std::stod(m[3].str());
    } else {
      EXPECT_TRUE(std::regex_match(line, comment)) << "not Prometheus text format: " << line;
    }
  }
  return values;
}

TEST(ServerMain, MetricsCountRoundsBytesAndRejections) {
  Subprocess server(kServer, {"--host=127.0.0.1", "--port=0", "--metrics-port=0", "--workers=1",
                              "--algorithm=topk", "--density=0.5"});
  const std::string address = ServerAddress(server);
  ASSERT_FALSE(address.empty());
  ASSERT_TRUE(server.WaitForStdout("/metrics\n", 5000));
  std::smatch m;
  const std::string out = server.stdout_text();
  ASSERT_TRUE(std::regex_search(out, m, std::regex("metrics on http://[0-9.]+:([0-9]+)/metrics")));
  const int metrics_port = std::stoi(m[1].str());

  GrpcClientOptions o;
  o.target = address;
  auto client = std::move(*CreateGrpcServerClient(o));
  ASSERT_TRUE(client->Join(0, 1, 10, 5).ok());
  ASSERT_TRUE(client->UploadParameters(0, std::vector<float>(10, 0.0f)).ok());
  std::string payload;
  EncodeSparseSmallest(SparseVector{{1, 3, 5, 7, 9}, {1, 2, 3, 4, 5}}, 10, &payload);
  for (int round = 0; round < 3; ++round) ASSERT_TRUE(client->Push(0, round, payload).ok());
  EXPECT_FALSE(client->Push(0, 7, payload).ok());                 // wrong round
  EXPECT_FALSE(client->Push(0, 3, std::string(5, '\x09')).ok());  // malformed

  httplib::Client http("127.0.0.1", metrics_port);
  auto res = http.Get("/metrics");
  ASSERT_TRUE(res) << "no answer from the metrics endpoint";
  EXPECT_EQ(res->status, 200);
  EXPECT_THAT(res->get_header_value("Content-Type"), HasSubstr("text/plain"));
  auto values = ParsePrometheus(res->body);
  auto status = client->GetStatus();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(values["regtopk_rounds_total"], 3);
  EXPECT_EQ(values["regtopk_round"], 3);
  EXPECT_EQ(values["regtopk_workers_joined"], 1);
  EXPECT_EQ(values["regtopk_received_bytes_total"], status->bytes_in);
  EXPECT_EQ(values["regtopk_sent_bytes_total"], status->bytes_out);
  EXPECT_EQ(values["regtopk_push_bytes_total"], 3 * payload.size());
  EXPECT_EQ(values["regtopk_push_dense_equivalent_bytes_total"], 3 * 40);
  EXPECT_DOUBLE_EQ(values["regtopk_upstream_compression_ratio"], 120.0 / (3 * payload.size()));
  EXPECT_EQ(values["regtopk_round_duration_seconds_count"], 3);
  EXPECT_EQ(values["regtopk_round_duration_seconds_bucket{le=\"+Inf\"}"], 3);
  EXPECT_EQ(values["regtopk_rejected_pushes_total{reason=\"wrong_round\"}"], 1);
  EXPECT_EQ(values["regtopk_rejected_pushes_total{reason=\"malformed\"}"], 1);
  EXPECT_EQ(values["regtopk_rejected_pushes_total{reason=\"duplicate\"}"], 0);
  EXPECT_GT(values["regtopk_aggregate_seconds_total"], 0);
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0);
}

// Eight clients that connect to /metrics and then stall (the slow-client attack) do not keep
// it from answering: their connections time out within a second and the pool is bounded.
TEST(ServerMain, StalledMetricsClientsDoNotBlockTheEndpoint) {
  Subprocess server(kServer, {"--port=0", "--metrics-port=0", "--workers=1"});
  ASSERT_FALSE(ServerAddress(server).empty());
  ASSERT_TRUE(server.WaitForStdout("/metrics\n", 5000));
  std::smatch m;
  const std::string out = server.stdout_text();
  ASSERT_TRUE(std::regex_search(out, m, std::regex("metrics on http://[0-9.]+:([0-9]+)/metrics")));
  const int port = std::stoi(m[1].str());
  std::vector<int> stalled;
  for (int i = 0; i < 8; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    const char partial[] = "GET /metrics HTTP/1.1\r\n";  // and never the rest
    ASSERT_GT(write(fd, partial, sizeof(partial) - 1), 0);
    stalled.push_back(fd);
  }
  httplib::Client http("127.0.0.1", port);
  http.set_read_timeout(10, 0);
  const auto start = std::chrono::steady_clock::now();
  auto res = http.Get("/metrics");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(res) << "no answer with 8 stalled clients";
  EXPECT_EQ(res->status, 200);
  // Without the bounds (8 pool threads, 5 s read timeout) it answers after ~5 s.
  EXPECT_LT(seconds, 3.5) << "answered only after the stalled clients gave up";
  for (int fd : stalled) close(fd);
}

}  // namespace
}  // namespace regtopk
