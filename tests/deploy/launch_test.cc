// regtopk-launch (deploy/regtopk_launch.py) with the real server and workers on 127.0.0.1: the
// paper's ResNet-18 recipe as a smoke run, Ctrl-C, every server flag forwarded, a failing
// worker named, a server that never starts. This test binary links no LibTorch.
#include <signal.h>
#include <sys/types.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <string>
#include <utility>
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
const std::string kServer = kBin + "/regtopk-server";
const std::string kLaunch = kBin + "/regtopk-launch";

// The paper's ResNet-18 / CIFAR-10 recipe (N workers, batch 20, lr 0.01, mu 5, density 0.1 %,
// quantity skew) as a CPU smoke run on small generated files in CIFAR-10's binary format.
TEST(Launch, ResNet18CifarRecipeSmokeRun) {
  const std::string dir = NewTempDir("regtopk_worker");
  std::mt19937 rng(1);
  for (int b = 0; b <= 5; ++b) {
    const std::string name = b == 0 ? "test_batch.bin" : absl::StrCat("data_batch_", b, ".bin");
    std::ofstream out(dir + "/" + name, std::ios::binary);
    for (int r = 0; r < 16; ++r) {
      out.put(static_cast<char>(rng() % 10));
      for (int p = 0; p < 3072; ++p) out.put(static_cast<char>(rng() % 256));
    }
  }
  Subprocess launch(
      kLaunch,
      {"--workers=2", "--model=resnet18", "--dataset=cifar10", absl::StrCat("--data-dir=", dir),
       "--partition=quantity", "--batch-size=20", "--lr=0.01", "--mu=5", "--density=0.001",
       "--rounds=2", "--eval-every=2", "--no-plots", absl::StrCat("--output=", dir, "/out")});
  ASSERT_EQ(launch.Wait(), 0) << launch.stdout_text() << launch.stderr_text();
  const auto lines = Lines(dir + "/out/worker_0.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines.back(), HasSubstr("\"test_accuracy\""));
  // ResNet-18 (CIFAR variant) has 11,173,962 parameters; k = 11,174 entries at 0.1 %.
  EXPECT_THAT(lines.back(), HasSubstr("\"dense_bytes\":44695848"));
  EXPECT_THAT(lines.back(), HasSubstr("\"entries_sent\":11174"));
}

// The processes launch.json names, with their pids.
std::vector<std::pair<std::string, pid_t>> LaunchedProcesses(const std::string& dir) {
  std::vector<std::pair<std::string, pid_t>> out;
  const std::string text = Slurp(dir + "/launch.json");
  std::regex entry("\"name\": \"([a-z0-9 ]+)\",\\s*\"pid\": ([0-9]+)");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), entry);
       it != std::sregex_iterator(); ++it) {
    out.emplace_back((*it)[1].str(), static_cast<pid_t>(std::stol((*it)[2].str())));
  }
  return out;
}

// True while `pid` is a live process (a zombie, dead but not yet reaped, counts as gone).
bool Alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

TEST(Launch, CtrlCStopsTheServerAndEveryWorker) {
  const std::string dir = NewTempDir("regtopk_launch");
  Subprocess launch(kLaunch,
                    {"--workers=2", "--dataset=linreg", "--model=linear", "--rounds=1000000",
                     "--lr=0.001", "--no-plots", absl::StrCat("--output=", dir)});
  ASSERT_TRUE(launch.WaitForStdout("round ", 60000)) << launch.stdout_text();
  const auto processes = LaunchedProcesses(dir);
  ASSERT_EQ(processes.size(), 3u) << Slurp(dir + "/launch.json");
  for (const auto& [name, pid] : processes) ASSERT_TRUE(Alive(pid)) << name << " " << pid;
  launch.Signal(SIGINT);
  EXPECT_EQ(launch.Wait(), 130);
  EXPECT_THAT(launch.stdout_text(), HasSubstr("interrupted"));
  // The launcher has exited: any process of its job still alive now would be an orphan.
  for (const auto& [name, pid] : processes) EXPECT_FALSE(Alive(pid)) << name << " outlived the launcher";
}

// Every flag the server's --help lists (but --host and --port, the launcher's own) is accepted
// by the launcher and reaches the server. A server flag this table does not know fails the
// test: add it here, with a value that differs from its default.
TEST(Launch, ForwardsEveryServerFlag) {
  const std::map<std::string, std::string> values = {
      {"algorithm", "topk"},          {"density", "0.25"},
      {"digest-every", "2"},          {"force-dense-aggregate", "true"},
      {"linger-seconds", "0.5"},      {"log-every", "1"},
      {"lr", "0.005"},                {"metrics-port", "0"},
      {"momentum", "0"},              {"mu", "3"},
      {"nesterov", "false"},          {"round-timeout-seconds", "120"},
      // AdamW (so SGD's momentum and Nesterov stay at 0 / false, but are still forwarded).
      {"optimizer", "adamw"},         {"beta1", "0.8"},
      {"beta2", "0.99"},              {"eps", "1e-07"},
      {"lr-schedule", "step"},        {"warmup-rounds", "1"},
      {"lr-step-rounds", "2"},        {"lr-step-gamma", "0.5"},
      {"lr-decay-rounds", "3"},       {"min-lr", "0.0001"},
      {"clip-norm", "1000"},          {"max-abs-value", "1e6"},
      {"max-dim", "100000"},         {"threads", "2"},
      {"downlink-density", "0.5"},
      {"rounds", "4"},                {"seed", "7"},
      {"weight-decay", "0.001"},      {"weighting", "samples"},
      {"workers", "2"},               {"checkpoint-every", "2"},
  };
  Subprocess help(kServer, {"--help"});
  ASSERT_EQ(help.Wait(), 0);
  std::vector<std::string> args = {"--dataset=linreg", "--model=linear", "--no-plots"};
  std::vector<std::string> expected;
  const std::string text = help.stdout_text();
  std::regex flag("\n  --([a-z0-9-]+)  ");
  int listed = 0;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), flag);
       it != std::sregex_iterator(); ++it) {
    const std::string name = (*it)[1].str();
    // The launcher's own: the address, the checkpoint layout and the job's credentials.
    if (name == "host" || name == "port" || name == "checkpoint-dir" || name == "tls-cert" ||
        name == "tls-key" || name == "tls-ca" || name == "job-secret-file" || name == "insecure") {
      continue;
    }
    ++listed;
    auto v = values.find(name);
    ASSERT_NE(v, values.end()) << "server flag --" << name << " has no value in this test";
    args.push_back(absl::StrCat("--", name, "=", v->second));
    expected.push_back(args.back());
  }
  EXPECT_GE(listed, 15);
  const std::string dir = NewTempDir("regtopk_launch");
  args.push_back("--output=" + dir);
  args.push_back("--checkpoint-dir=" + dir + "/ckpt");
  expected.push_back("--checkpoint-dir=" + dir + "/ckpt/server");
  Subprocess launch(kLaunch, args);
  ASSERT_EQ(launch.Wait(), 0) << launch.stdout_text() << launch.stderr_text();
  const std::string manifest = Slurp(dir + "/launch.json");
  for (const std::string& a : expected) {
    EXPECT_THAT(manifest, HasSubstr("\"" + a + "\"")) << "not forwarded to the server";
  }
  EXPECT_THAT(Slurp(dir + "/server.log"), HasSubstr("round 3 closed"));  // --log-every=1
  EXPECT_EQ(Lines(dir + "/worker_0.jsonl").size(), 4u);                  // --rounds=4
}

// The mask diagnostic where it is known exactly: the paper's toy (2 workers, k = 1 of 2). Both
// workers send coordinate 0 in round 0 and the aggregate cancels it; RegTop-k then demotes it and
// sends coordinate 1 (which plain Top-k would not), and the round after, with coordinate 1 the
// previous pick, sends coordinate 0 again as Top-k would. So every odd round differs from Top-k
// and repeats Top-k's pick of the round before, every even round does neither: exactly half.
TEST(Launch, MaskDiagnosticOfTheToyIsExactlyHalf) {
  const std::string dir = NewTempDir("regtopk_launch_toy");
  Subprocess launch(kLaunch, {"--workers=2", "--dataset=toy", "--model=logistic",
                              "--algorithm=regtopk", "--density=0.5", "--mu=1", "--lr=0.9",
                              "--rounds=20", "--no-plots", "--output=" + dir});
  ASSERT_EQ(launch.Wait(), 0) << launch.stdout_text() << launch.stderr_text();
  for (int w = 0; w < 2; ++w) {
    const auto lines = Lines(absl::StrCat(dir, "/worker_", w, ".jsonl"));
    ASSERT_EQ(lines.size(), 20u);
    for (size_t r = 0; r < lines.size(); ++r) {
      const std::string odd = r % 2 ? "1" : "0";
      EXPECT_THAT(lines[r], HasSubstr(absl::StrCat("\"not_topk\":", odd, ",\"topk_repeat\":", odd)))
          << "worker " << w << " round " << r;
    }
  }
  EXPECT_THAT(launch.stdout_text(),
              HasSubstr("mask diagnostic: 50% of the picks differed from plain Top-k's"));
  EXPECT_THAT(Slurp(dir + "/summary.json"), HasSubstr("\"not_topk\": 0.5"));
}

// A server that never prints its address does not hang the launcher.
TEST(Launch, GivesUpOnAServerThatNeverStarts) {
  const std::string bin = NewTempDir("regtopk_launch_bin");
  {
    std::ofstream fake(bin + "/regtopk-server");
    fake << "#!/bin/sh\n"
            "if [ \"$1\" = --help ]; then exec " << kServer << " --help; fi\n"
            "sleep 600\n";
  }
  std::filesystem::permissions(bin + "/regtopk-server", std::filesystem::perms::owner_all);
  std::filesystem::copy_file(kBin + "/regtopk-worker", bin + "/regtopk-worker");
  const std::string dir = NewTempDir("regtopk_launch");
  Subprocess launch(kLaunch, {"--bin-dir=" + bin, "--output=" + dir, "--no-plots",
                              "--server-start-seconds=2"});
  EXPECT_EQ(launch.Wait(60000), 1);
  EXPECT_THAT(launch.stderr_text(), HasSubstr("no address within"));
}

TEST(Launch, SaysWhichProcessFailed) {
  const std::string dir = NewTempDir("regtopk_worker");
  Subprocess launch(kLaunch, {"--workers=2", "--rounds=5", "--data-dir=/nonexistent",
                              absl::StrCat("--output=", dir), "--no-plots"});
  EXPECT_EQ(launch.Wait(), 1);
  EXPECT_THAT(launch.stderr_text(),
              ::testing::ContainsRegex("worker [01] failed with exit code 1"));
  EXPECT_THAT(launch.stderr_text(), HasSubstr("cannot open data file"));
}
}  // namespace
}  // namespace regtopk

namespace regtopk {
namespace {

// The launcher's --checkpoint-dir and --restart-on-failure on the real Fashion-MNIST MLP job: a
// worker SIGKILLed mid-job is restarted by the launcher, the job rolls back to its committed
// checkpoint, and every final digest equals that of the same launch without a kill.
std::vector<std::string> Digests(const std::string& summary) {
  std::vector<std::string> out;
  std::regex digest("\"([0-9a-f]{16})\"");
  const size_t at = summary.find("\"param_digests\"");
  const std::string tail = summary.substr(at, summary.find(']', at) - at);
  for (auto it = std::sregex_iterator(tail.begin(), tail.end(), digest); it != std::sregex_iterator(); ++it) {
    out.push_back((*it)[1].str());
  }
  return out;
}

TEST(Launch, RestartOnFailureRecoversAKilledWorkerBitIdentically) {
  auto args = [](const std::string& dir) {
    return std::vector<std::string>{
        "--workers=2", "--model=mlp", "--rounds=150", "--density=0.01", "--momentum=0.9",
        "--partition=dirichlet:0.5", "--eval-every=75", "--max-eval-examples=1000",
        "--checkpoint-every=25", "--no-plots", "--restart-on-failure=1",
        "--output=" + dir, "--checkpoint-dir=" + dir + "/ckpt"};
  };
  const std::string ref = NewTempDir("regtopk_launch");
  Subprocess plain(kLaunch, args(ref));
  ASSERT_EQ(plain.Wait(), 0) << plain.stdout_text() << plain.stderr_text();
  const std::vector<std::string> want = Digests(Slurp(ref + "/summary.json"));
  ASSERT_EQ(want.size(), 2u);

  const std::string dir = NewTempDir("regtopk_launch");
  Subprocess launch(kLaunch, args(dir));
  const absl::Time give_up = absl::Now() + absl::Seconds(120);
  while (Lines(dir + "/worker_1.jsonl").size() < 70) {
    ASSERT_LT(absl::Now(), give_up);
    absl::SleepFor(absl::Milliseconds(5));
  }
  pid_t victim = 0;
  for (const auto& [name, pid] : LaunchedProcesses(dir)) {
    if (name == "worker 1") victim = pid;
  }
  ASSERT_GT(victim, 0);
  kill(victim, SIGKILL);
  ASSERT_EQ(launch.Wait(), 0) << launch.stdout_text() << launch.stderr_text();
  EXPECT_THAT(launch.stdout_text(), HasSubstr("worker 1 exited with code -9; restarting it"));
  const std::string summary = Slurp(dir + "/summary.json");
  EXPECT_THAT(summary, HasSubstr("\"total_restarts\": 1"));
  EXPECT_EQ(Digests(summary), want);
}

}  // namespace
}  // namespace regtopk
