// The parts of RunWorker and the model seam, with LibTorch: one conformance test for every
// model behind TrainableModel (the built-in ones and a TorchScript module scripted here with
// python3-torch), the flat-vector copies, the loss choice, evaluation, the metrics file and
// the batch order.
#include <torch/nn/functional/loss.h>
#include <torch/types.h>

#include <cstdlib>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/files.h"
#include "tests/testing/subprocess.h"
#include "worker/train/trainable.h"
#include "worker/train/trainer.h"
#include "worker/train/trainer_parts.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

// A scripted module with BatchNorm and its own loss() method.
std::string ScriptedModelPath() {
  static const std::string path = [] {
    const std::string dir = NewTempDir("regtopk_parts");
    const std::string p = dir + "/net.pt";
    // torch.jit.script reads the class's source: it must live in a file.
    std::ofstream(dir + "/net.py") << absl::StrCat(
        "import torch, torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(4, 8)\n"
        "        self.bn = nn.BatchNorm1d(8)\n"
        "        self.out = nn.Linear(8, 3)\n"
        "    def forward(self, x):\n"
        "        return self.out(torch.relu(self.bn(self.fc(x.flatten(1)))))\n"
        "    @torch.jit.export\n"
        "    def loss(self, output, target):\n"
        "        return nn.functional.cross_entropy(output, target) * 2.0\n"
        "torch.manual_seed(0)\n"
        "torch.jit.script(Net()).save('", p, "')\n");
    const std::string code = "/usr/bin/python3 " + dir + "/net.py";
    EXPECT_EQ(std::system(code.c_str()), 0);
    return p;
  }();
  return path;
}

struct ModelCase {
  std::string name;
  std::vector<int64_t> shape;
  int classes;
};

TEST(TrainableModel, EveryModelConformsToTheSeam) {
  for (const ModelCase& c :
       std::vector<ModelCase>{{"linear", {100}, 0},
                              {"mlp", {1, 28, 28}, 10},
                              {"cnn", {1, 28, 28}, 10},
                              {"resnet18", {3, 32, 32}, 10},
                              {ScriptedModelPath(), {2, 2}, 3}}) {
    SCOPED_TRACE(c.name);
    auto m = CreateTrainableModel(c.name, c.shape, c.classes);
    ASSERT_TRUE(m.ok()) << m.status();
    TrainableModel& model = **m;
    const int64_t dim = NumParameters(model);
    ASSERT_GT(dim, 0);
    // Names are unique and the layout lists each parameter once.
    std::set<std::string> names;
    for (const auto& [n, p] : model.Parameters()) names.insert(n);
    EXPECT_EQ(names.size(), model.Parameters().size());
    const std::string layout = LayoutString(model);
    EXPECT_EQ(std::count(layout.begin(), layout.end(), ';'), static_cast<long>(names.size()));
    // Flat copies round-trip exactly.
    std::vector<float> flat(dim), back(dim);
    ASSERT_TRUE(CopyParametersTo(model, absl::MakeSpan(flat)).ok());
    for (size_t i = 0; i < flat.size(); ++i) flat[i] = 0.001f * static_cast<float>(i % 97);
    CopyParametersFrom(model, flat);
    ASSERT_TRUE(CopyParametersTo(model, absl::MakeSpan(back)).ok());
    EXPECT_EQ(flat, back);
    // A forward and backward pass fills every gradient slot of the flat vector.
    std::vector<int64_t> batch{4};
    batch.insert(batch.end(), c.shape.begin(), c.shape.end());
    model.SetTraining(true);
    torch::Tensor out = model.Forward(torch::randn(batch));
    EXPECT_EQ(out.size(0), 4);
    out.pow(2).sum().backward();
    std::vector<float> grad(dim, NAN);
    CopyGradientsTo(model, absl::MakeSpan(grad));
    for (float g : grad) ASSERT_TRUE(std::isfinite(g));
  }
}

TEST(TrainableModel, TorchScriptKeepsItsNamesBuffersAndLoss) {
  auto m = CreateTrainableModel(ScriptedModelPath(), {2, 2}, 3);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(LayoutString(**m),
            "fc.weight:8x4;fc.bias:8;bn.weight:8;bn.bias:8;out.weight:3x8;out.bias:3;");
  std::vector<std::string> buffers;
  for (const auto& [n, b] : (*m)->Buffers()) buffers.push_back(n);
  EXPECT_THAT(buffers, ::testing::ElementsAre("bn.running_mean", "bn.running_var",
                                              "bn.num_batches_tracked"));
  auto loss = ChooseLoss("", **m, false);
  ASSERT_TRUE(loss.ok());
  torch::Tensor out = torch::randn({5, 3}), y = torch::tensor({0, 1, 2, 0, 1}, torch::kLong);
  EXPECT_FLOAT_EQ((*loss)(out, y).item<float>(),
                  2.0f * torch::nn::functional::cross_entropy(out, y).item<float>())
      << "the module's own loss() is used";
  auto flag = ChooseLoss("cross_entropy", **m, false);
  EXPECT_FLOAT_EQ((*flag)(out, y).item<float>(),
                  torch::nn::functional::cross_entropy(out, y).item<float>())
      << "--loss overrides it";
}

TEST(TrainableModel, BadFilesAreNamed) {
  const std::string dir = NewTempDir("regtopk_parts_bad");
  auto missing = CreateTrainableModel(dir + "/nope.pt", {1}, 2);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(dir + "/nope.pt"));
  std::ofstream(dir + "/junk.pt") << "not a zip";
  auto junk = CreateTrainableModel(dir + "/junk.pt", {1}, 2);
  EXPECT_THAT(std::string(junk.status().message()), HasSubstr("is not a TorchScript module"));
  EXPECT_THAT(std::string(CreateTrainableModel("vgg", {1}, 2).status().message()),
              HasSubstr("unknown model 'vgg'"));
}

TEST(ChooseLoss, ByTargetKindAndFlag) {
  auto m = CreateTrainableModel("linear", {3}, 0);
  ASSERT_TRUE(m.ok());
  auto mse = ChooseLoss("", **m, /*regression=*/true);
  ASSERT_TRUE(mse.ok());
  EXPECT_FLOAT_EQ((*mse)(torch::tensor({1.0f, 3.0f}), torch::tensor({0.0f, 1.0f})).item<float>(),
                  2.5f);
  EXPECT_THAT(std::string(ChooseLoss("cross_entropy", **m, true).status().message()),
              HasSubstr("--loss=mse"));
  EXPECT_FALSE(ChooseLoss("hinge", **m, false).ok());
}

TEST(Evaluate, AccuracyAndMeanLossOverBatches) {
  auto m = CreateTrainableModel("mlp", {1, 28, 28}, 10);
  ASSERT_TRUE(m.ok());
  auto loss = ChooseLoss("", **m, false);
  torch::Tensor x = torch::randn({2500, 1, 28, 28});
  torch::Tensor out = (*m)->Forward(x).detach();
  torch::Tensor y = out.argmax(1);
  y.slice(0, 0, 500).add_(1).remainder_(10);  // 500 of 2500 wrong
  const Evaluation e = Evaluate(**m, *loss, x, y, true);
  EXPECT_NEAR(e.accuracy, 0.8, 1e-9);
  EXPECT_NEAR(e.loss, torch::nn::functional::cross_entropy(out, y).item<double>(), 1e-4);
}

TEST(MetricsFile, AppendingTerminatesAPartialLine) {
  const std::string path = NewTempDir("regtopk_parts_metrics") + "/m.jsonl";
  std::ofstream(path) << "{\"round\":0}\n{\"round\":1,\"trunc";
  MetricsFile f(path);
  ASSERT_TRUE(f.Probe().ok());
  ASSERT_TRUE(f.Open(/*append=*/true).ok());
  f.Write("{\"round\":1}\n");
  ASSERT_TRUE(f.Close().ok());
  EXPECT_THAT(Lines(path), ::testing::ElementsAre("{\"round\":0}", "{\"round\":1,\"trunc",
                                                  "{\"round\":1}"));
  MetricsFile fresh(path);
  ASSERT_TRUE(fresh.Open(false).ok());
  ASSERT_TRUE(fresh.Close().ok());
  EXPECT_TRUE(Lines(path).empty());
  EXPECT_THAT(std::string(MetricsFile("/nonexistent/dir/m.jsonl").Probe().message()),
              HasSubstr("/nonexistent/dir/m.jsonl"));
}

TEST(BatchOrder, EachEpochIsAPermutationAndAPureFunctionOfTheRound) {
  BatchOrder a(7, 1, 10, 3), b(7, 1, 10, 3);
  std::set<int64_t> epoch;
  for (uint64_t r = 0; r < 3; ++r) {  // floor(10 / 3) = 3 batches per epoch
    const int64_t* rows = a.Rows(r);
    epoch.insert(rows, rows + 3);
  }
  EXPECT_EQ(epoch.size(), 9u);
  // Out of order, as after a resume: the same rows.
  std::vector<int64_t> late(a.Rows(17), a.Rows(17) + 3);
  b.Rows(2);
  EXPECT_EQ(std::vector<int64_t>(b.Rows(17), b.Rows(17) + 3), late);
  BatchOrder other_worker(7, 2, 10, 3);
  EXPECT_NE(std::vector<int64_t>(other_worker.Rows(17), other_worker.Rows(17) + 3), late);
}

}  // namespace
}  // namespace regtopk
