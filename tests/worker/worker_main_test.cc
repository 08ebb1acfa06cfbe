// The real binaries together: regtopk-server and regtopk-worker processes on 127.0.0.1. This
// test binary itself links no LibTorch.
#include <httplib.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/wire/digest.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/files.h"
#include "tests/testing/subprocess.h"
#include "client/server_client.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

const std::string kBin = REGTOPK_BIN_DIR;
const std::string kServer = kBin + "/regtopk-server";
const std::string kWorker = kBin + "/regtopk-worker";
const std::string kLaunch = kBin + "/regtopk-launch";


TEST(WorkerMain, LinearRegressionOverGrpcEndsWithEveryReplicaEqualToTheServer) {
  const std::string dir = NewTempDir("regtopk_worker");
  Subprocess server(kServer, {"--host=127.0.0.1", "--port=0", "--workers=3", "--algorithm=regtopk",
                              "--density=0.6", "--mu=4", "--lr=0.01", "--rounds=150",
                              "--digest-every=10", "--linger-seconds=120", "--log-every=0"});
  const std::string address = ServerAddress(server);
  ASSERT_FALSE(address.empty()) << server.stderr_text();
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int w = 0; w < 3; ++w) {
    workers.push_back(std::make_unique<Subprocess>(
        kWorker, std::vector<std::string>{absl::StrCat("--server=", address),
                                          absl::StrCat("--worker-id=", w), "--dataset=linreg",
                                          "--model=linear", absl::StrCat("--threads=", 1 + w),
                                          absl::StrCat("--metrics=", dir, "/w", w, ".jsonl")}));
  }
  for (auto& w : workers) ASSERT_EQ(w->Wait(), 0) << w->stderr_text();

  GrpcClientOptions o;
  o.target = address;
  auto client = std::move(*CreateGrpcServerClient(o));
  auto pulled = client->PullParameters(0);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->round, 150u);
  const std::string server_digest = absl::StrFormat("%016x", DigestFloats(pulled->values));
  for (int w = 0; w < 3; ++w) {
    const auto lines = Lines(absl::StrCat(dir, "/w", w, ".jsonl"));
    ASSERT_EQ(lines.size(), 150u);
    for (const std::string& line : lines) {
      ASSERT_THAT(line,
                  ::testing::MatchesRegex(
                      "\\{\"round\":[0-9]+,\"worker\":[0-9],\"train_loss\":.*"
                      "\"communicate_s\":[0-9.]+,\"wait_s\":[0-9.]+,\"apply_s\":[0-9.]+.*\\}"));
    }
    EXPECT_LT(NumberField(lines.back(), "gap"), NumberField(lines.front(), "gap") / 100)
        << "the loss decreases";
    EXPECT_THAT(lines.back(), HasSubstr("\"param_digest\":\"" + server_digest + "\""))
        << "worker " << w << "'s replica equals the server's parameters";
    EXPECT_THAT(lines.back(), ::testing::Not(HasSubstr("resynced")));
  }
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0);
}

// The simulator's linear-regression result through the real system: N = 20 worker processes,
// density 0.6, fewer rounds than the paper's 2500 (the full runs are in docs/REPRODUCTION.md).
double LaunchLinReg(const std::string& algorithm) {
  const std::string dir = NewTempDir("regtopk_worker");
  Subprocess launch(
      kLaunch, {"--workers=20", "--dataset=linreg", "--model=linear",
                absl::StrCat("--algorithm=", algorithm), "--density=0.6", "--mu=4", "--lr=0.01",
                "--rounds=600", "--no-plots", absl::StrCat("--output=", dir)});
  EXPECT_EQ(launch.Wait(), 0) << launch.stdout_text() << launch.stderr_text();
  return NumberField(Slurp(dir + "/summary.json"), "final_gap");
}

TEST(WorkerMain, LinearRegressionRegTopKConvergesWhereTopKPlateaus) {
  const double regtopk = LaunchLinReg("regtopk");
  const double topk = LaunchLinReg("topk");
  EXPECT_LT(std::log10(regtopk), -6) << regtopk;
  EXPECT_GT(std::log10(topk), -4) << topk;
}

// The worker's /metrics endpoint: its round counter and byte counters move while it trains.
TEST(WorkerMain, MetricsEndpointCountsRounds) {
  Subprocess server(kServer, {"--host=127.0.0.1", "--port=0", "--workers=1", "--algorithm=topk",
                              "--density=0.5", "--lr=0.001", "--log-every=0"});  // unbounded
  const std::string address = ServerAddress(server);
  ASSERT_FALSE(address.empty());
  Subprocess worker(kWorker, {absl::StrCat("--server=", address), "--dataset=linreg",
                              "--model=linear", "--metrics-port=0",
                              "--reconnect-timeout-seconds=1"});
  ASSERT_TRUE(worker.WaitForStderr("/metrics\n", 30000)) << worker.stderr_text();
  std::smatch m;
  const std::string err = worker.stderr_text();
  ASSERT_TRUE(std::regex_search(err, m, std::regex("metrics on http://[0-9.]+:([0-9]+)/metrics")));
  httplib::Client http("127.0.0.1", std::stoi(m[1].str()));
  auto scrape = [&](const std::string& name) {
    auto res = http.Get("/metrics");
    EXPECT_TRUE(res && res->status == 200);
    return res ? NumberField(res->body, name) : NAN;  // NumberField reads "name value" too
  };
  double first = 0;
  for (int i = 0; i < 200 && !(first >= 1); ++i) {
    first = scrape("regtopk_worker_rounds_total");
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_GE(first, 1);
  double later = first;
  for (int i = 0; i < 200 && later <= first; ++i) {
    absl::SleepFor(absl::Milliseconds(20));
    later = scrape("regtopk_worker_rounds_total");
  }
  EXPECT_GT(later, first);
  EXPECT_GT(scrape("regtopk_worker_pushed_bytes_total"), 0);
  EXPECT_GT(scrape("regtopk_worker_upstream_compression_ratio"), 1);
  // The mask diagnostic: a Top-k worker's picks are Top-k's by definition (none differ); some of
  // them repeat the round before's, never more than were picked.
  const double picks = scrape("regtopk_worker_mask_picks_total");
  EXPECT_GE(picks, 50);  // k = 50 per round
  EXPECT_EQ(scrape("regtopk_worker_not_topk_picks_total"), 0);
  const double repeats = scrape("regtopk_worker_topk_repeat_picks_total");
  EXPECT_GE(repeats, 0);
  EXPECT_LE(repeats, picks);
  EXPECT_GE(scrape("regtopk_worker_topk_repeat_fraction"), 0);
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0);
  // Its push in flight is refused; the worker waits for the server to come back, and when it
  // does not within --reconnect-timeout-seconds, exits 1 saying so.
  EXPECT_EQ(worker.Wait(), 1);
  EXPECT_THAT(worker.stderr_text(),
              ::testing::ContainsRegex("round [0-9]+: the push failed .*re-joining failed: gave up "
                                       "reaching the server after 1s"))
      << worker.stderr_text();
}

TEST(WorkerMain, BadDataDirFailsNamingTheFile) {
  Subprocess w(kWorker, {"--server=127.0.0.1:1", "--data-dir=/nonexistent/fmnist"});
  EXPECT_EQ(w.Wait(), 1);
  EXPECT_THAT(w.stderr_text(), HasSubstr("/nonexistent/fmnist/train-images-idx3-ubyte.gz"));
}

TEST(WorkerMain, CorruptDataFileFailsNamingTheFile) {
  const std::string dir = NewTempDir("regtopk_worker");
  for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    std::ofstream(dir + "/" + name) << "garbage, not gzip and not IDX";
  }
  Subprocess w(kWorker, {"--server=127.0.0.1:1", absl::StrCat("--data-dir=", dir)});
  EXPECT_EQ(w.Wait(), 1);
  EXPECT_THAT(w.stderr_text(), HasSubstr(dir + "/train-images-idx3-ubyte.gz"));
  EXPECT_THAT(w.stderr_text(), HasSubstr("not an IDX file"));
}

TEST(WorkerMain, UnreachableServerIsRetriedThenFailsWithinTheReconnectTimeout) {
  const absl::Time start = absl::Now();
  Subprocess w(kWorker, {"--server=127.0.0.1:1", "--dataset=linreg", "--model=linear",
                         "--rpc-timeout-seconds=1", "--reconnect-timeout-seconds=3"});
  EXPECT_EQ(w.Wait(), 1);
  EXPECT_GT(absl::Now() - start, absl::Seconds(3));  // it kept trying
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_THAT(w.stderr_text(), HasSubstr("Join to 127.0.0.1:1 failed"));
}

// A worker started before its server waits for it instead of failing at once.
TEST(WorkerMain, WorkerStartedBeforeItsServerWaitsForIt) {
  // Reserve a free port by starting a server and stopping it; then start the worker first.
  Subprocess probe(kServer, {"--host=127.0.0.1", "--port=0", "--workers=1"});
  const std::string address = ServerAddress(probe);
  ASSERT_FALSE(address.empty());
  probe.Signal(SIGTERM);
  ASSERT_EQ(probe.Wait(), 0);
  const std::string dir = NewTempDir("regtopk_worker");
  Subprocess worker(kWorker, {"--server=" + address, "--dataset=linreg", "--model=linear",
                              "--metrics=" + dir + "/w.jsonl", "--rpc-timeout-seconds=1"});
  absl::SleepFor(absl::Seconds(2));  // the worker is retrying meanwhile (not a synchronisation)
  Subprocess server(kServer, {"--host=127.0.0.1", "--port=" + address.substr(address.rfind(':') + 1),
                              "--workers=1", "--rounds=5", "--lr=0.001", "--linger-seconds=0.2"});
  EXPECT_EQ(worker.Wait(60000), 0) << worker.stderr_text();
  EXPECT_EQ(server.Wait(60000), 0) << server.stderr_text();
  EXPECT_EQ(Lines(dir + "/w.jsonl").size(), 5u);
}

TEST(WorkerMain, BadFlagsExitTwo) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--server=x:1", "--device=tpu"},
        std::vector<std::string>{"--server=x:1", "--partition=dirichlet:-1"},
        std::vector<std::string>{"--batch-size=0", "--server=x:1"},
        std::vector<std::string>{"--server=x:1", "--threads=0"},
        std::vector<std::string>{"--server=x:1", "--threads=257"},
        std::vector<std::string>{"--dataset=linreg"}}) {
    Subprocess w(kWorker, args);
    EXPECT_EQ(w.Wait(), 2) << args[0] << " " << w.stderr_text();
  }
}

// A worker configured only through the environment, as a container or a Kubernetes Indexed Job
// configures it: its id from JOB_COMPLETION_INDEX, everything else from REGTOPK_* variables.
// Two such workers train a job to its end, and the worker that got id 1 from its index is the
// one the server saw (its metrics file, named by the variable, has every round).
TEST(WorkerMain, WorkersConfiguredOnlyByEnvironmentVariablesJoinAndTrain) {
  const std::string dir = NewTempDir("regtopk_worker_env");
  Subprocess server(kServer, {}, {"REGTOPK_HOST=127.0.0.1", "REGTOPK_PORT=0", "REGTOPK_WORKERS=2",
                                  "REGTOPK_ALGORITHM=regtopk", "REGTOPK_DENSITY=0.5",
                                  "REGTOPK_LR=0.01", "REGTOPK_ROUNDS=20", "REGTOPK_LOG_EVERY=0",
                                  "REGTOPK_LINGER_SECONDS=30"});
  const std::string address = ServerAddress(server);
  ASSERT_FALSE(address.empty()) << server.stderr_text();
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int w = 0; w < 2; ++w) {
    workers.push_back(std::make_unique<Subprocess>(
        kWorker, std::vector<std::string>{},
        std::vector<std::string>{
            absl::StrCat("REGTOPK_SERVER=", address), absl::StrCat("JOB_COMPLETION_INDEX=", w),
            "REGTOPK_DATASET=linreg", "REGTOPK_MODEL=linear", "REGTOPK_LOG_EVERY=5",
            absl::StrCat("REGTOPK_METRICS=", dir, "/w", w, ".jsonl")}));
  }
  for (int w = 0; w < 2; ++w) {
    ASSERT_EQ(workers[w]->Wait(), 0) << workers[w]->stderr_text();
    EXPECT_THAT(workers[w]->stderr_text(),
                HasSubstr(absl::StrCat("worker id ", w, " from JOB_COMPLETION_INDEX")));
    EXPECT_THAT(workers[w]->stderr_text(), HasSubstr("flags from the environment: "
                                                     "REGTOPK_DATASET, REGTOPK_LOG_EVERY"));
    EXPECT_EQ(Lines(absl::StrCat(dir, "/w", w, ".jsonl")).size(), 20u);
  }
  // The progress line every REGTOPK_LOG_EVERY=5 rounds.
  EXPECT_THAT(workers[1]->stderr_text(), HasSubstr("round 20/20"));
  EXPECT_TRUE(server.WaitForStderr("flags from the environment: REGTOPK_ALGORITHM", 10000))
      << server.stderr_text();
}

// The command line wins over the environment, and a bad variable is named in the error. An id
// given by flag (or REGTOPK_WORKER_ID) wins over JOB_COMPLETION_INDEX; a bad index is an error.
TEST(WorkerMain, FlagsWinOverEnvironmentAndBadVariablesAreNamed) {
  {
    Subprocess w(kWorker, {"--server=x:1"}, {"REGTOPK_BATCH_SIZE=lots"});
    EXPECT_EQ(w.Wait(), 2);
    EXPECT_THAT(w.stderr_text(), HasSubstr("bad value for REGTOPK_BATCH_SIZE (--batch-size)"));
  }
  {
    Subprocess w(kWorker, {"--server=x:1"}, {"REGTOPK_DEVICE=tpu"});
    EXPECT_EQ(w.Wait(), 2) << "REGTOPK_DEVICE=tpu was not read";
  }
  {
    Subprocess w(kWorker, {"--server=x:1"}, {"JOB_COMPLETION_INDEX=two"});
    EXPECT_EQ(w.Wait(), 2);
    EXPECT_THAT(w.stderr_text(), HasSubstr("JOB_COMPLETION_INDEX='two' is not a worker id"));
  }
  {
    // --device=cpu on the command line overrides the bad variable; the worker then gets past
    // flag checking to its data and fails there (exit 1, not the flag error's 2).
    Subprocess w(kWorker, {"--server=127.0.0.1:1", "--device=cpu", "--worker-id=0",
                           "--data-dir=/nonexistent/fmnist"},
                 {"REGTOPK_DEVICE=tpu", "JOB_COMPLETION_INDEX=two"});
    EXPECT_EQ(w.Wait(), 1) << w.stderr_text();
    EXPECT_THAT(w.stderr_text(), HasSubstr("/nonexistent/fmnist"));
  }
}

}  // namespace
}  // namespace regtopk
