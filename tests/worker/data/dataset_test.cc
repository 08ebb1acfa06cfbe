#include "worker/data/dataset.h"

#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

void WriteGz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), bytes.size()), static_cast<int>(bytes.size()));
  gzclose(f);
}

std::string Be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// Three 2x2 images with pixels 0, 255, ...; labels 0, 9, 3.
void WriteTinyIdx(const std::string& dir, const std::string& prefix) {
  std::string images = Be32(0x803) + Be32(3) + Be32(2) + Be32(2);
  for (int i = 0; i < 12; ++i) images.push_back(static_cast<char>(i % 2 ? 255 : 0));
  WriteGz(dir + "/" + prefix + "-images-idx3-ubyte.gz", images);
  WriteGz(dir + "/" + prefix + "-labels-idx1-ubyte.gz",
          Be32(0x801) + Be32(3) + std::string("\x00\x09\x03", 3));
}

TEST(ReadIdx, ReadsGzippedImagesAndLabels) {
  const std::string dir = NewTempDir("regtopk_data");
  WriteTinyIdx(dir, "train");
  auto d =
      ReadIdx(dir + "/train-images-idx3-ubyte.gz", dir + "/train-labels-idx1-ubyte.gz", 0.0f, 1.0f);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_examples, 3u);
  EXPECT_EQ(d->example_shape, (std::vector<int64_t>{1, 2, 2}));
  EXPECT_THAT(d->labels, ::testing::ElementsAre(0, 9, 3));
  EXPECT_EQ(d->features[0], 0.0f);
  EXPECT_EQ(d->features[1], 1.0f);
}

TEST(ReadIdx, ErrorsNameTheBadFile) {
  const std::string dir = NewTempDir("regtopk_data");
  WriteTinyIdx(dir, "train");
  const std::string images = dir + "/train-images-idx3-ubyte.gz";
  const std::string labels = dir + "/train-labels-idx1-ubyte.gz";
  // Missing.
  auto missing = ReadIdx(dir + "/nope.gz", labels, 0, 1);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("nope.gz"));
  // Truncated pixel data.
  WriteGz(images, Be32(0x803) + Be32(3) + Be32(2) + Be32(2) + "abc");
  auto truncated = ReadIdx(images, labels, 0, 1);
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(truncated.status().message()), HasSubstr(images));
  EXPECT_THAT(std::string(truncated.status().message()), HasSubstr("truncated"));
  // Wrong magic (labels where images belong).
  auto swapped = ReadIdx(labels, labels, 0, 1);
  EXPECT_THAT(std::string(swapped.status().message()), HasSubstr("not an IDX file"));
  // Not gzip and not IDX at all.
  std::ofstream(images) << "this is not a data file";
  auto garbage = ReadIdx(images, labels, 0, 1);
  EXPECT_FALSE(garbage.ok());
  EXPECT_THAT(std::string(garbage.status().message()), HasSubstr(images));
  // Counts that disagree.
  WriteGz(images, Be32(0x803) + Be32(2) + Be32(2) + Be32(2) + std::string(8, '\0'));
  auto counts = ReadIdx(images, labels, 0, 1);
  EXPECT_THAT(std::string(counts.status().message()), HasSubstr("2 images but"));
  // A label out of range.
  WriteTinyIdx(dir, "train");
  WriteGz(labels, Be32(0x801) + Be32(3) + std::string("\x00\x0b\x03", 3));
  auto label = ReadIdx(images, labels, 0, 1);
  EXPECT_THAT(std::string(label.status().message()), HasSubstr("label 11"));
}

TEST(LoadFashionMnist, ReadsDebiansPackageWhenInstalled) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir + "/t10k-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  }
  auto test = LoadFashionMnist(dir, false);
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_EQ(test->num_examples, 10000u);
  EXPECT_EQ(test->example_shape, (std::vector<int64_t>{1, 28, 28}));
  std::vector<int> counts(10, 0);
  for (int64_t l : test->labels) ++counts[l];
  for (int c : counts) EXPECT_EQ(c, 1000);  // Fashion-MNIST's test set is balanced
}

TEST(LoadCifar10, ReadsBinaryBatchesAndRejectsBadSizes) {
  const std::string dir = NewTempDir("regtopk_data");
  std::vector<uint8_t> pixels(2 * 3072, 128);
  pixels[0] = 255;
  ASSERT_TRUE(WriteCifar10File(dir + "/test_batch.bin", {7, 2}, pixels).ok());
  auto d = LoadCifar10(dir, false);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_examples, 2u);
  EXPECT_THAT(d->labels, ::testing::ElementsAre(7, 2));
  EXPECT_EQ(d->example_shape, (std::vector<int64_t>{3, 32, 32}));
  EXPECT_GT(d->features[0], d->features[1]);
  auto train = LoadCifar10(dir, true);
  EXPECT_EQ(train.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(train.status().message()), HasSubstr("data_batch_1.bin"));
  std::ofstream(dir + "/test_batch.bin", std::ios::binary) << std::string(3000, 'x');
  auto bad = LoadCifar10(dir, false);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("not a multiple of the 3073-byte"));
}

}  // namespace
}  // namespace regtopk
