// The regtopk-server binary: flags, signals, and a held round ended cleanly by SIGTERM.
#include <signal.h>

#include <regex>
#include <thread>

#include "common/wire/sparse_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"
#include "worker/server_client.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

const std::string kServer = REGTOPK_SERVER_BIN;

// Starts the server on a free port and returns its address ("" on failure).
std::string StartServer(Subprocess& server) {
  if (!server.WaitForStdout("listening on", 20000) || !server.WaitForStdout("\n", 1000)) return "";
  std::smatch m;
  const std::string& out = server.stdout_text();
  if (!std::regex_search(out, m, std::regex("listening on ([0-9.]+):([0-9]+)"))) return "";
  return "127.0.0.1:" + m[2].str();
}

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

TEST(ServerMain, SigtermDuringAHeldRoundEndsCleanly) {
  Subprocess server(kServer, {"--host=127.0.0.1", "--port=0", "--workers=2", "--algorithm=topk",
                              "--density=0.1"});
  const std::string address = StartServer(server);
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
  while (true) {
    auto s = client->GetStatus();
    ASSERT_TRUE(s.ok()) << s.status();
    if (s->pushes_this_round == 1) break;
  }
  server.Signal(SIGTERM);
  t.join();
  EXPECT_EQ(held.status().code(), absl::StatusCode::kUnavailable) << held.status();
  EXPECT_THAT(std::string(held.status().message()), HasSubstr("shutting down"));
  EXPECT_EQ(server.Wait(), 0) << server.stderr_text();
  EXPECT_THAT(server.stderr_text(), HasSubstr("SIGTERM"));
}

TEST(ServerMain, ExitsZeroAfterTheLastRound) {
  Subprocess server(kServer, {"--host=127.0.0.1", "--port=0", "--workers=1", "--algorithm=dense",
                              "--rounds=2", "--linger-seconds=0"});
  const std::string address = StartServer(server);
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

}  // namespace
}  // namespace regtopk
