// One conformance test for every DataSource behind the seam (Fashion-MNIST from Debian's
// package, CIFAR-10 and .npz from files written here, linreg, toy): Load, then Split for a
// 3-worker job on every worker. Every worker sees the same shapes and the same partition digest,
// the parts are disjoint and cover the training set, and a second split is identical.
#include "worker/data/data_source.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"
#include "worker/data/npz.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

struct Case {
  std::string name;
  DataSourceOptions options;
  size_t train_size;  // the whole training set (0: per-worker synthetic data)
  int workers;
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  const std::string dir = NewTempDir("regtopk_sources");
  // CIFAR-10: 5 train batches and a test batch of 4 records each.
  std::vector<uint8_t> pixels(4 * 3072);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 7);
  for (int b = 1; b <= 5; ++b) {
    EXPECT_TRUE(WriteCifar10File(absl::StrCat(dir, "/data_batch_", b, ".bin"), {0, 1, 2, 3}, pixels).ok());
  }
  EXPECT_TRUE(WriteCifar10File(dir + "/test_batch.bin", {4, 5, 6, 7}, pixels).ok());
  DataSourceOptions cifar;
  cifar.dataset = "cifar10";
  cifar.data_dir = dir;
  cases.push_back({"cifar10", cifar, 20, 3});
  // .npz, labelled and regression.
  std::vector<float> x(30 * 4);
  std::vector<int64_t> y(30);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
  for (size_t i = 0; i < y.size(); ++i) y[i] = static_cast<int64_t>(i % 3);
  EXPECT_TRUE(WriteNpz(dir + "/train.npz", {{"x", MakeFloat32Array({30, 2, 2}, x)},
                                             {"y", MakeInt64Array({30}, y)}}).ok());
  DataSourceOptions npz;
  npz.dataset = "npz";
  npz.train_path = dir + "/train.npz";
  npz.test_path = dir + "/train.npz";
  npz.partition = "dirichlet:0.5";
  cases.push_back({"npz", npz, 30, 3});
  EXPECT_TRUE(WriteNpz(dir + "/regression.npz",
                       {{"x", MakeFloat32Array({30, 4}, x)},
                        {"y", MakeFloat32Array({30, 2}, std::vector<float>(60, 0.5f))}}).ok());
  DataSourceOptions reg;
  reg.dataset = "npz";
  reg.train_path = dir + "/regression.npz";
  reg.partition = "quantity";
  cases.push_back({"npz-regression", reg, 30, 3});
  DataSourceOptions fmnist;  // Debian's dataset-fashion-mnist (an install-deps package)
  fmnist.max_eval_examples = 100;
  cases.push_back({"fashion-mnist", fmnist, 60000, 3});
  DataSourceOptions linreg;
  linreg.dataset = "linreg";
  cases.push_back({"linreg", linreg, 0, 3});
  DataSourceOptions toy;
  toy.dataset = "toy";
  cases.push_back({"toy", toy, 0, 2});
  return cases;
}

TEST(DataSource, EverySourceConformsToTheSeam) {
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    auto source = CreateDataSource(c.options);
    ASSERT_TRUE(source.ok()) << source.status();
    ASSERT_TRUE((*source)->Load().ok());
    const auto shape = (*source)->example_shape();
    size_t example = 1;
    for (int64_t s : shape) example *= s;
    std::set<uint64_t> digests;
    size_t total = 0;
    for (int w = 0; w < c.workers; ++w) {
      auto part = (*source)->Split(c.workers, w, /*seed=*/5);
      ASSERT_TRUE(part.ok()) << part.status();
      const Dataset& d = part->train;
      EXPECT_GT(d.num_examples, 0u);
      EXPECT_EQ(d.example_shape, shape);
      EXPECT_EQ(d.features.size(), d.num_examples * example);
      if ((*source)->num_classes() > 0) {
        EXPECT_EQ(d.labels.size(), d.num_examples);
        for (int64_t l : d.labels) EXPECT_LT(l, (*source)->num_classes());
      } else {
        EXPECT_FALSE(d.targets.empty());
        EXPECT_EQ(d.targets.size() % d.num_examples, 0u);
      }
      digests.insert(part->partition_digest);
      total += d.num_examples;
      auto again = (*source)->Split(c.workers, w, 5);
      ASSERT_TRUE(again.ok());
      EXPECT_EQ(again->train.features, d.features) << "a split is a pure function of the seed";
      EXPECT_EQ(again->partition_digest, part->partition_digest);
      EXPECT_EQ(part->full_batch, c.train_size == 0);
      EXPECT_EQ(part->problem != nullptr, c.train_size == 0);
    }
    EXPECT_EQ(digests.size(), 1u) << "every worker computes the same split";
    if (c.train_size > 0) {
      EXPECT_EQ(total, c.train_size) << "the parts cover the training set";
      EXPECT_NE(*digests.begin(), 0u);
      auto other = (*source)->Split(c.workers, 0, /*seed=*/6);
      ASSERT_TRUE(other.ok());
      EXPECT_NE(other->partition_digest, *digests.begin()) << "another seed, another split";
    } else {
      EXPECT_EQ(*digests.begin(), 0u);
    }
  }
}

TEST(DataSource, BadOptionsAreNamed) {
  DataSourceOptions o;
  o.dataset = "imagenet";
  EXPECT_THAT(std::string(CreateDataSource(o).status().message()), HasSubstr("'imagenet'"));
  o.dataset = "npz";
  EXPECT_THAT(std::string(CreateDataSource(o).status().message()), HasSubstr("--train-data"));
  o.dataset = "fashion-mnist";
  o.partition = "zipf";
  EXPECT_FALSE(CreateDataSource(o).ok());
  DataSourceOptions toy;
  toy.dataset = "toy";
  auto s = CreateDataSource(toy);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->Split(3, 0, 1).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace regtopk
