// Accuracy of full training jobs through regtopk-launch (labelled slow: about 30 s).
#include <iostream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/testing/files.h"
#include "tests/testing/subprocess.h"

namespace regtopk {
namespace {

const std::string kLaunch = std::string(REGTOPK_BIN_DIR) + "/regtopk-launch";

// The Fashion-MNIST job (the README's: MLP, 4 workers, Dirichlet(0.5) label skew, RegTop-k at
// 1 %), shortened to 600 rounds: Adam (lr 0.002) reaches at least SGD's accuracy (lr 0.1), and
// every Adam replica ends bit-identical to the others (two moments of state on every side).
TEST(Launch, AdamReachesTheAccuracyOfSgdOnFashionMnist) {
  auto run = [](const std::vector<std::string>& optimizer) {
    const std::string dir = NewTempDir("regtopk_adam");
    std::vector<std::string> args = {
        "--workers=4", "--dataset=fashion-mnist", "--model=mlp", "--partition=dirichlet:0.5",
        "--algorithm=regtopk", "--density=0.01", "--mu=5", "--rounds=600", "--batch-size=64",
        "--eval-every=0", "--max-eval-examples=5000", "--no-plots", "--output=" + dir};
    args.insert(args.end(), optimizer.begin(), optimizer.end());
    Subprocess launch(kLaunch, args);
    EXPECT_EQ(launch.Wait(), 0) << launch.stdout_text() << launch.stderr_text();
    const std::string summary = Slurp(dir + "/summary.json");
    std::smatch digests;
    std::regex_search(summary, digests, std::regex("\"param_digests\": \\[([^\\]]*)\\]"));
    std::set<std::string> distinct;
    std::string list = digests[1].str();
    std::regex hex("[0-9a-f]{16}");
    for (auto it = std::sregex_iterator(list.begin(), list.end(), hex); it != std::sregex_iterator(); ++it) {
      distinct.insert(it->str());
    }
    EXPECT_EQ(distinct.size(), 1u) << summary;
    return NumberField(summary, "final_test_accuracy");
  };
  const double sgd = run({"--lr=0.1"});
  const double adam = run({"--optimizer=adam", "--lr=0.002"});
  EXPECT_GT(sgd, 0.8);
  EXPECT_GE(adam, sgd) << "Adam " << adam << " vs SGD " << sgd;
  std::cout << "final test accuracy: SGD " << sgd << ", Adam " << adam << "\n";
}

}  // namespace
}  // namespace regtopk
