// StateFile: round trip, and every way a file can be wrong is refused, naming the file.
#include "common/checkpoint/state_file.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

std::string Dir() {
  static int n = 0;
  const std::string d = ::testing::TempDir() + "/state_file_" + std::to_string(getpid()) + "_" +
                        std::to_string(n++);
  std::filesystem::create_directories(d);
  return d;
}

std::string Write(const std::string& dir, size_t floats) {
  auto w = StateFileWriter::Create(dir, "s.rtk", "test kind");
  EXPECT_TRUE(w.ok());
  std::vector<float> v(floats);
  for (size_t i = 0; i < floats; ++i) v[i] = 0.5f * i;
  EXPECT_TRUE((*w)->AddU64("round", 42).ok());
  EXPECT_TRUE((*w)->AddFloats("values", v).ok());
  EXPECT_TRUE((*w)->AddU32s("idx", std::vector<uint32_t>{3, 9}).ok());
  EXPECT_TRUE((*w)->AddBytes("empty", "").ok());
  EXPECT_TRUE((*w)->Commit().ok());
  return dir + "/s.rtk";
}

TEST(StateFile, RoundTripsEverySectionSmallAndLarge) {
  for (size_t n : {size_t{0}, size_t{7}, size_t{100000}}) {
    const std::string path = Write(Dir(), n);
    auto f = StateFile::Read(path, "test kind");
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_EQ(*f->U64("round"), 42u);
    auto v = f->Floats("values");
    ASSERT_TRUE(v.ok());
    ASSERT_EQ(v->size(), n);
    if (n) EXPECT_EQ(v->back(), 0.5f * (n - 1));
    EXPECT_EQ(*f->U32s("idx"), (std::vector<uint32_t>{3, 9}));
    EXPECT_EQ(f->Bytes("empty")->size(), 0u);
    EXPECT_EQ(f->Bytes("nope").status().code(), absl::StatusCode::kDataLoss);
  }
}

// Pieces cut anywhere (inside a stripe, at stripe and 1 KiB block boundaries, past several
// blocks) give the one-shot digest: the whole-block kernel and the stripe-at-a-time path agree.
TEST(StateFile, StreamingDigestEqualsTheOneShotDigest) {
  std::string data(5000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + (i >> 8));
  const absl::string_view all(data);
  for (size_t cut : {0, 1, 31, 63, 64, 65, 500, 1023, 1024, 1025, 2048, 3001, 4999, 5000}) {
    StreamingDigest d;
    d.Update(all.substr(0, cut));
    d.Update(all.substr(cut));
    EXPECT_EQ(d.Finish(), DigestBytes(data)) << cut;
    StreamingDigest three;  // a third piece that starts a block mid-stripe
    three.Update(all.substr(0, cut / 2));
    three.Update(all.substr(cut / 2, cut - cut / 2));
    three.Update(all.substr(cut));
    EXPECT_EQ(three.Finish(), DigestBytes(data)) << cut;
  }
  StreamingDigest bytewise;
  for (char c : data) bytewise.Update(absl::string_view(&c, 1));
  EXPECT_EQ(bytewise.Finish(), DigestBytes(data));
}

TEST(StateFile, RefusesCorruptTruncatedAndForeignFiles) {
  const std::string dir = Dir();
  const std::string path = Write(dir, 1000);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& b) { std::ofstream(path, std::ios::binary) << b; };
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 1;
  write(flipped);
  auto f = StateFile::Read(path, "test kind");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("checksum mismatch"));
  write(bytes.substr(0, bytes.size() - 100));
  EXPECT_EQ(StateFile::Read(path, "test kind").status().code(), absl::StatusCode::kDataLoss);
  write("");
  EXPECT_EQ(StateFile::Read(path, "test kind").status().code(), absl::StatusCode::kDataLoss);
  write(bytes);
  EXPECT_EQ(StateFile::Read(path, "other kind").status().code(),
            absl::StatusCode::kFailedPrecondition);
  // A file of another format version (here 1, whose checksum used the older digest) is named
  // as such, not as corrupt.
  std::string v1 = bytes;
  const uint32_t one = 1;
  std::memcpy(&v1[8], &one, 4);
  write(v1);
  f = StateFile::Read(path, "test kind");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("has format version 1"));
  EXPECT_EQ(StateFile::Read(dir + "/missing", "test kind").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(StateFile, AWriterThatNeverCommitsLeavesNoFile) {
  const std::string dir = Dir();
  {
    auto w = StateFileWriter::Create(dir, "s.rtk", "k");
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->AddU64("x", 1).ok());
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

TEST(StateFile, ListsRoundFilesInOrder) {
  const std::string dir = Dir();
  for (uint64_t r : {120, 5, 40}) {
    std::ofstream(dir + "/" + RoundFileName("ckpt-", r, ".rtk")) << "x";
  }
  std::ofstream(dir + "/ckpt-xyz.rtk") << "x";
  EXPECT_EQ(ListRoundFiles(dir, "ckpt-", ".rtk"), (std::vector<uint64_t>{5, 40, 120}));
}

}  // namespace
}  // namespace regtopk
