// CheckpointStore round trips: what the server writes is what it reads back, bit for bit,
// including the compressed downlink's carried error (without which a resumed job would not be
// bit-identical).
#include "server/checkpoint.h"

#include <cstring>
#include <random>

#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"

namespace regtopk {
namespace {

ServerCheckpoint Sample(double downlink_density) {
  ServerCheckpoint c;
  c.round = 20;
  c.job.num_workers = 2;
  c.job.algorithm = Algorithm::kRegTopK;
  c.job.density = 0.1;
  c.job.checkpoint_every = 10;
  c.job.downlink_density = downlink_density;
  c.dim = 1000;
  c.layout_digest = 77;
  c.num_samples = {10, 30};
  c.weights = {0.5f, 0.5f};
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  c.params.resize(c.dim);
  for (float& x : c.params) x = normal(rng);
  c.last_push_digests = {1, 2};
  if (downlink_density != 0) {
    c.downlink_error.resize(c.dim);
    for (float& x : c.downlink_error) x = normal(rng);
  }
  return c;
}

TEST(CheckpointStore, KeepsTheDownlinkErrorBitForBit) {
  auto store = CheckpointStore::Open(NewTempDir("regtopk_ckpt_downlink"));
  ASSERT_TRUE(store.ok()) << store.status();
  const ServerCheckpoint written = Sample(0.01);
  ASSERT_TRUE((*store)->WritePending(written).ok());
  ASSERT_TRUE((*store)->Commit(written.round).ok());
  auto read = (*store)->Load(written.round);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->job.downlink_density, 0.01);
  ASSERT_EQ(read->downlink_error.size(), written.dim);
  EXPECT_EQ(std::memcmp(read->downlink_error.data(), written.downlink_error.data(),
                        4 * written.dim), 0);
  EXPECT_EQ(std::memcmp(read->params.data(), written.params.data(), 4 * written.dim), 0);
}

TEST(CheckpointStore, ALosslessJobHasNoDownlinkSection) {
  auto store = CheckpointStore::Open(NewTempDir("regtopk_ckpt_lossless"));
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->WritePending(Sample(0)).ok());
  ASSERT_TRUE((*store)->Commit(20).ok());
  auto read = (*store)->Load(20);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->downlink_error.empty());
}

TEST(CheckpointStore, ADownlinkErrorOfTheWrongSizeIsRefused) {
  auto store = CheckpointStore::Open(NewTempDir("regtopk_ckpt_bad_downlink"));
  ASSERT_TRUE(store.ok()) << store.status();
  ServerCheckpoint bad = Sample(0.01);
  bad.downlink_error.resize(10);
  ASSERT_TRUE((*store)->WritePending(bad).ok());
  ASSERT_TRUE((*store)->Commit(20).ok());
  auto read = (*store)->Load(20);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
}

}  // namespace
}  // namespace regtopk
