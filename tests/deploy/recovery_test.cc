// Crash recovery with real processes on 127.0.0.1: a linear-regression job (3 workers, RegTop-k,
// momentum 0.9, a checkpoint every 10 rounds) is SIGKILLed in each way a machine can fail, the
// dead processes are started again with the same flags, and every worker's final parameter
// digest must equal that of the same job run without a crash. Also: a kill in the middle of a
// checkpoint write, a corrupted newest checkpoint, and a dead worker nobody restarts.
#include <signal.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/files.h"
#include "tests/testing/subprocess.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

const std::string kBin = REGTOPK_BIN_DIR;
constexpr int kWorkers = 3;
constexpr int kRounds = 200;

class Job {
 public:
  explicit Job(const std::string& name, double round_timeout = 60,
               std::vector<std::string> optimizer = {"--lr=0.01", "--momentum=0.9"})
      : dir_(NewTempDir(name)), round_timeout_(round_timeout), optimizer_(std::move(optimizer)) {}

  void StartServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{
        "--host=127.0.0.1", absl::StrCat("--port=", port_), absl::StrCat("--workers=", kWorkers),
            "--algorithm=regtopk", "--density=0.05", "--mu=4",
            absl::StrCat("--rounds=", kRounds), "--checkpoint-dir=" + dir_ + "/server",
            "--checkpoint-every=10", "--linger-seconds=1", "--log-every=0",
            absl::StrCat("--round-timeout-seconds=", round_timeout_)};
    args.insert(args.end(), optimizer_.begin(), optimizer_.end());
    args.insert(args.end(), extra.begin(), extra.end());
    server_ = std::make_unique<Subprocess>(kBin + "/regtopk-server", args);
    if (!extra.empty()) return;  // the caller checks what happens
    if (port_ == "0") {
      const std::string address = ServerAddress(*server_);
      ASSERT_FALSE(address.empty()) << server_->stderr_text();
      port_ = address.substr(address.rfind(':') + 1);
    } else {
      ASSERT_TRUE(server_->WaitForStdout("listening on", 20000)) << server_->stderr_text();
    }
  }
  void StartWorker(int w, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{absl::StrCat("--server=127.0.0.1:", port_),
                                  absl::StrCat("--worker-id=", w), "--dataset=linreg",
                                  "--model=linear", absl::StrCat("--state-dir=", dir_, "/w", w),
                                  absl::StrCat("--metrics=", dir_, "/w", w, ".jsonl"),
                                  "--log-every=0", "--reconnect-timeout-seconds=60"};
    args.insert(args.end(), extra.begin(), extra.end());
    workers_[w] = std::make_unique<Subprocess>(kBin + "/regtopk-worker", args);
  }
  void Start() {
    StartServer();
    for (int w = 0; w < kWorkers; ++w) StartWorker(w);
  }
  // Rounds worker 0 has completed (its metrics lines), rollbacks included.
  int Rounds(int w = 0) const {
    int n = 0;
    for (const std::string& line : Lines(absl::StrCat(dir_, "/w", w, ".jsonl"))) {
      n += line.find("\"round\"") != std::string::npos;
    }
    return n;
  }
  // Waits (bounded) until worker 0 has written `round` lines.
  void WaitForRound(int round) {
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    while (Rounds() < round) {
      ASSERT_LT(absl::Now(), give_up) << "the job never reached round " << round;
      absl::SleepFor(absl::Milliseconds(2));
    }
  }
  void KillServer() {
    server_->Signal(SIGKILL);
    server_->Wait();
  }
  void KillWorker(int w) {
    workers_[w]->Signal(SIGKILL);
    workers_[w]->Wait();
  }
  // Waits for every process; returns the workers' final digests.
  std::vector<std::string> Finish() {
    std::vector<std::string> digests;
    for (int w = 0; w < kWorkers; ++w) {
      EXPECT_EQ(workers_[w]->Wait(120000), 0) << "worker " << w << ": " << workers_[w]->stderr_text();
      std::smatch m;
      const auto lines = Lines(absl::StrCat(dir_, "/w", w, ".jsonl"));
      const std::string last = lines.empty() ? "" : lines.back();
      digests.push_back(std::regex_search(last, m, std::regex("\"param_digest\":\"([0-9a-f]+)\""))
                            ? m[1].str()
                            : "none");
    }
    EXPECT_EQ(server_->Wait(60000), 0) << server_->stderr_text();
    return digests;
  }

  Subprocess& server() { return *server_; }
  Subprocess& worker(int w) { return *workers_[w]; }
  const std::string& dir() const { return dir_; }

 private:
  const std::string dir_;
  const double round_timeout_;
  const std::vector<std::string> optimizer_;
  std::string port_ = "0";
  std::unique_ptr<Subprocess> server_;
  std::unique_ptr<Subprocess> workers_[kWorkers];
};

// The uninterrupted job's digests, computed once.
const std::vector<std::string>& Reference() {
  static const auto* digests = [] {
    Job job("regtopk_recovery_ref");
    job.Start();
    return new std::vector<std::string>(job.Finish());
  }();
  return *digests;
}

// A seeded "random" round to crash at, away from the very start and end.
int CrashRound(int salt) {
  std::mt19937 rng(1234 + salt);
  return 15 + static_cast<int>(rng() % 150);
}

void ExpectBitIdentical(const std::vector<std::string>& got) {
  const auto& want = Reference();
  ASSERT_EQ(want.size(), static_cast<size_t>(kWorkers));
  EXPECT_NE(want[0], "none");
  EXPECT_EQ(want[0], want[1]);
  EXPECT_EQ(got, want);
}

TEST(Recovery, ServerKilledAndRestartedEndsBitIdentical) {
  Job job("regtopk_recovery");
  job.Start();
  job.WaitForRound(CrashRound(1));
  job.KillServer();
  job.StartServer();
  ExpectBitIdentical(job.Finish());
  EXPECT_THAT(job.server().stderr_text(), HasSubstr("resuming the job from the committed checkpoint"));
}

TEST(Recovery, OneWorkerKilledAndRestartedEndsBitIdentical) {
  Job job("regtopk_recovery");
  job.Start();
  job.WaitForRound(CrashRound(2));
  job.KillWorker(1);
  job.StartWorker(1);
  ExpectBitIdentical(job.Finish());
  // The live workers rolled back without restarting.
  EXPECT_THAT(job.worker(0).stderr_text(), HasSubstr("rolled back from round"));
}

TEST(Recovery, TwoWorkersKilledAndRestartedEndBitIdentical) {
  Job job("regtopk_recovery");
  job.Start();
  job.WaitForRound(CrashRound(3));
  job.KillWorker(0);
  job.KillWorker(2);
  job.StartWorker(2);
  job.StartWorker(0);
  ExpectBitIdentical(job.Finish());
}

TEST(Recovery, ServerAndAWorkerKilledTogetherEndBitIdentical) {
  Job job("regtopk_recovery");
  job.Start();
  job.WaitForRound(CrashRound(4));
  job.KillServer();
  job.KillWorker(1);
  job.StartServer();
  job.StartWorker(1);
  ExpectBitIdentical(job.Finish());
}

// Adam with a warm-up and a cosine schedule: two moments of state per parameter on the server
// and in every worker's saved state, and a learning rate that changes every round.
TEST(Recovery, AdamJobWithAScheduleSurvivesServerAndWorkerKills) {
  const std::vector<std::string> adam = {"--optimizer=adam", "--lr=0.01", "--warmup-rounds=20",
                                         "--lr-schedule=cosine", "--weight-decay=0.001"};
  Job reference("regtopk_recovery_adam_ref", 60, adam);
  reference.Start();
  const std::vector<std::string> want = reference.Finish();
  ASSERT_NE(want[0], "none");
  ASSERT_NE(want[0], Reference()[0]) << "Adam's run differs from SGD's";
  Job job("regtopk_recovery_adam", 60, adam);
  job.Start();
  job.WaitForRound(CrashRound(9));
  job.KillServer();
  job.KillWorker(2);
  job.StartServer();
  job.StartWorker(2);
  EXPECT_EQ(job.Finish(), want);
}

TEST(Recovery, ServerKilledWhileWritingACheckpointEndsBitIdentical) {
  Job job("regtopk_recovery");
  // The server SIGKILLs itself 300 bytes into writing the checkpoint of round 60.
  setenv("REGTOPK_FAULT_KILL_IN_CHECKPOINT_WRITE", "60:300", 1);
  job.Start();
  unsetenv("REGTOPK_FAULT_KILL_IN_CHECKPOINT_WRITE");
  EXPECT_EQ(job.server().Wait(60000), 128 + SIGKILL);
  // What the crash left: a partial temporary file, never a partial checkpoint.
  bool partial = false;
  for (const auto& e : std::filesystem::directory_iterator(job.dir() + "/server")) {
    partial |= e.path().filename().string().find(".tmp") != std::string::npos;
  }
  EXPECT_TRUE(partial);
  job.StartServer();
  ExpectBitIdentical(job.Finish());
  EXPECT_THAT(job.server().stderr_text(), HasSubstr("committed checkpoint of round 50"));
}

TEST(Recovery, SigtermWritesAFinalPendingCheckpointAndTheJobResumes) {
  Job job("regtopk_recovery");
  job.Start();
  job.WaitForRound(CrashRound(5));
  job.server().Signal(SIGTERM);
  EXPECT_EQ(job.server().Wait(30000), 0) << job.server().stderr_text();
  EXPECT_THAT(job.server().stderr_text(), HasSubstr("checkpoints flushed"));
  int pending = 0;
  for (const auto& e : std::filesystem::directory_iterator(job.dir() + "/server")) {
    pending += e.path().filename().string().rfind("pending-", 0) == 0;
  }
  EXPECT_GE(pending, 1) << "no final pending checkpoint";
  job.StartServer();  // resumes from the newest committed round, not the pending one
  ExpectBitIdentical(job.Finish());
}

TEST(Recovery, CorruptNewestCheckpointFallsBackToThePreviousOne) {
  Job job("regtopk_recovery");
  job.Start();
  job.WaitForRound(120);
  job.KillServer();
  // Flip one byte in the middle of the newest committed checkpoint.
  std::vector<std::string> committed;
  for (const auto& e : std::filesystem::directory_iterator(job.dir() + "/server")) {
    if (e.path().filename().string().rfind("ckpt-", 0) == 0) committed.push_back(e.path());
  }
  std::sort(committed.begin(), committed.end());
  // Two are kept; a third may remain when the kill fell between a commit and its clean-up.
  ASSERT_GE(committed.size(), 2u);
  {
    std::fstream f(committed.back(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const auto size = f.tellg();
    f.seekp(size / 2);
    f.put('\x5a');
  }
  job.StartServer();
  ExpectBitIdentical(job.Finish());
  EXPECT_THAT(job.server().stderr_text(), HasSubstr("is unusable"));
  EXPECT_THAT(job.server().stderr_text(), HasSubstr("checksum mismatch"));
}

TEST(Recovery, ALostStateDirNeedsAllowFreshStateAndThenTheJobGoesOn) {
  Job job("regtopk_recovery");
  job.Start();
  job.WaitForRound(60);
  job.KillWorker(1);
  std::filesystem::remove_all(job.dir() + "/w1");  // the worker moved to a new machine
  job.StartWorker(1);
  EXPECT_EQ(job.worker(1).Wait(60000), 1);
  EXPECT_THAT(job.worker(1).stderr_text(), HasSubstr("has no saved state for round"));
  EXPECT_THAT(job.worker(1).stderr_text(), HasSubstr("--allow-fresh-state"));
  job.StartWorker(1, {"--allow-fresh-state"});
  const std::vector<std::string> digests = job.Finish();
  EXPECT_THAT(job.worker(1).stderr_text(), HasSubstr("with fresh state"));
  EXPECT_THAT(job.server().stderr_text(), HasSubstr("no longer bit-identical"));
  // Every replica still equals the server's (the digests agree), but not the uninterrupted run.
  EXPECT_EQ(digests[0], digests[1]);
  EXPECT_EQ(digests[0], digests[2]);
  EXPECT_NE(digests, Reference());
}

TEST(Recovery, ResumingRefusesAFlagThatContradictsTheStoredJob) {
  Job job("regtopk_recovery");
  job.Start();
  job.WaitForRound(30);
  job.KillServer();
  job.StartServer({"--lr=0.02"});
  EXPECT_EQ(job.server().Wait(30000), 2);
  EXPECT_THAT(job.server().stderr_text(), HasSubstr("--lr=0.02 contradicts the job in --checkpoint-dir"));
  job.StartServer();  // the same flags: resumes
  ExpectBitIdentical(job.Finish());
}

TEST(Recovery, DeadWorkerNeverReplacedFailsTheJobNamingIt) {
  // 12 s: long enough to see the server name the missing worker once (every ~10 s).
  Job job("regtopk_recovery", /*round_timeout=*/12);
  job.Start();
  job.WaitForRound(30);
  const absl::Time killed = absl::Now();
  job.KillWorker(2);
  for (int w : {0, 1}) {
    EXPECT_EQ(job.worker(w).Wait(60000), 1);
    EXPECT_THAT(job.worker(w).stderr_text(), HasSubstr("for worker(s) 2")) << w;
  }
  EXPECT_EQ(job.server().Wait(60000), 1);
  EXPECT_THAT(job.server().stderr_text(), HasSubstr("the job failed"));
  EXPECT_THAT(job.server().stderr_text(),
              ::testing::ContainsRegex("round [0-9]+ is waiting for worker\\(s\\) 2 \\([0-9]+s of 12s"));
  EXPECT_LT(absl::Now() - killed, absl::Seconds(30));  // no ten-minute silence
}

}  // namespace
}  // namespace regtopk
