#include "common/wire/sparse_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <utility>

#include "common/parallel/task_pool.h"
#include "common/wire/digest.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/random_sparse.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

SparseVector SeededSparse(size_t dim, size_t nnz, uint32_t seed) {
  std::mt19937 rng(seed);
  return RandomSparse(dim, nnz, rng);
}

TEST(SparseCodec, EveryFormatRoundTripsBitForBit) {
  SparseVector v = SeededSparse(100000, 3000, 1);
  v.values[7] = -0.0f;
  v.values[8] = 1e-45f;  // denormal
  for (SparseFormat f : {SparseFormat::kSparse, SparseFormat::kBitmap, SparseFormat::kDense}) {
    std::string bytes;
    EncodeSparse(v, 100000, f, &bytes);
    EXPECT_EQ(bytes.size(), EncodedSize(v, 100000, f));
    SparseVector out;
    ASSERT_TRUE(DecodeSparse(bytes, 100000, 100000, &out).ok());
    std::vector<float> a(100000), b(100000);
    ScatterToDense(v, absl::MakeSpan(a));
    ScatterToDense(out, absl::MakeSpan(b));
    EXPECT_EQ(std::memcmp(a.data(), b.data(), 4 * a.size()), 0);
    if (f != SparseFormat::kDense) {
      EXPECT_EQ(out.indices, v.indices);
      EXPECT_EQ(std::memcmp(out.values.data(), v.values.data(), 4 * v.nnz()), 0);
    }
  }
}

TEST(SparseCodec, PicksTheSmallestEncoding) {
  const size_t d = 1000000;
  EXPECT_EQ(SmallestFormat(SeededSparse(d, 1000, 2), d), SparseFormat::kSparse);
  EXPECT_EQ(SmallestFormat(SeededSparse(d, 200000, 3), d), SparseFormat::kBitmap);
  SparseVector full = SeededSparse(1000, 1000, 4);
  EXPECT_EQ(SmallestFormat(full, 1000), SparseFormat::kDense);
  // Sparse at 0.1 % of 1 M: about 6.4 bytes per entry (a 2-byte gap + 4-byte value).
  SparseVector v = SeededSparse(d, 1000, 5);
  EXPECT_LT(EncodedSize(v, d, SparseFormat::kSparse), 7 * 1000 + 16);
}

TEST(SparseCodec, EmptyVectorRoundTrips) {
  std::string bytes;
  EncodeSparseSmallest(SparseVector{}, 10, &bytes);
  SparseVector out{{1}, {1}};
  ASSERT_TRUE(DecodeSparse(bytes, 10, 10, &out).ok());
  EXPECT_EQ(out.nnz(), 0u);
}

absl::Status DecodeError(const std::string& bytes, size_t dim = 10, size_t max = 10) {
  SparseVector out;
  return DecodeSparse(bytes, dim, max, &out);
}

std::string Encode(const SparseVector& v, size_t dim, SparseFormat f) {
  std::string s;
  EncodeSparse(v, dim, f, &s);
  return s;
}

// Encoding on several threads (the server's --threads) gives the same bytes as on one, in every
// format, for vectors large enough to be split: random ones, runs of consecutive indices (many
// entries per bitmap byte, so share boundaries fall inside bytes), and gaps of every varint
// length.
TEST(SparseCodec, EncodingOnThreadsGivesTheSameBytes) {
  std::mt19937 rng(11);
  std::vector<std::pair<size_t, SparseVector>> cases;
  cases.emplace_back(20000000, RandomSparse(20000000, 300000, rng));  // sparse wins
  cases.emplace_back(400000, RandomSparse(400000, 100000, rng));      // bitmap wins
  cases.emplace_back(120000, RandomSparse(120000, 110000, rng));      // dense wins
  SparseVector runs;  // runs of 9 consecutive indices every 50, then a few huge gaps
  for (uint32_t base = 0; base < 3000000; base += 50) {
    for (uint32_t j = 0; j < 9; ++j) {
      runs.indices.push_back(base + j);
      runs.values.push_back(static_cast<float>(base + j) * 0.5f);
    }
  }
  for (uint32_t j : {3100000u, 90000000u, 2000000000u}) {
    runs.indices.push_back(j);
    runs.values.push_back(-1.0f);
  }
  cases.emplace_back(size_t{2100000000}, runs);
  for (int threads : {2, 3, 7}) {
    TaskPool pool(threads);
    for (const auto& [dim, v] : cases) {
      for (SparseFormat format : {SparseFormat::kSparse, SparseFormat::kBitmap, SparseFormat::kDense}) {
        if (format == SparseFormat::kDense && dim > 50000000) continue;  // 8 GB of zeros
        if (format == SparseFormat::kBitmap && dim > 1000000000) continue;
        std::string one, many;
        EncodeSparse(v, dim, format, &one);
        EncodeSparse(v, dim, format, &many, &pool);
        ASSERT_EQ(one.size(), EncodedSize(v, dim, format));
        ASSERT_TRUE(one == many) << "threads " << threads << " dim " << dim << " format "
                                 << static_cast<int>(format);
      }
      std::string one, many;
      EncodeSparseSmallest(v, dim, &one);
      EncodeSparseSmallest(v, dim, &many, &pool);
      ASSERT_TRUE(one == many) << "threads " << threads << " dim " << dim;
      SparseVector back;
      ASSERT_TRUE(DecodeSparse(many, dim, v.nnz(), &back).ok());
      ASSERT_EQ(back.indices, v.indices);
    }
  }
  std::string small;  // below the split's threshold, and empty
  TaskPool pool(3);
  EncodeSparseSmallest(SparseVector{}, 100, &small, &pool);
  EXPECT_EQ(small, [] { std::string s; EncodeSparseSmallest(SparseVector{}, 100, &s); return s; }());
}

TEST(SparseCodec, RejectsMalformedEncodings) {
  const SparseVector v{{1, 4, 9}, {1, 2, 3}};
  const std::string good = Encode(v, 10, SparseFormat::kSparse);
  struct Case {
    std::string bytes;
    size_t dim, max;
    const char* says;
  } cases[] = {
      {"", 10, 10, "truncated"},
      {std::string("\x07\x0a\x00", 3), 10, 10, "unknown sparse encoding format 7"},
      {good, 11, 10, "does not match the model's 11"},
      {good, 10, 2, "more than the limit of 2"},
      {good.substr(0, good.size() - 1), 10, 10, "truncated in its values"},
      {good + "x", 10, 10, "trailing bytes"},
      // Gaps that run past the dimension: 1, then +1+8 = 10 >= 10.
      {std::string("\x01\x0a\x02\x01\x08", 5) + std::string(8, '\0'), 10, 10, "out of range"},
      // Bitmap with a bit set beyond the dimension (bit 10 of a 10-vector).
      {std::string("\x02\x0a\x01\x00\x04", 5) + std::string(4, '\0'), 10, 10, "beyond dimension"},
      // Bitmap whose popcount disagrees with the entry count.
      {std::string("\x02\x0a\x02\x01\x00", 5) + std::string(8, '\0'), 10, 10, "sets 1 bits"},
      // Dense must hold exactly dim entries.
      {std::string("\x03\x0a\x02", 3), 10, 10, "dense encoding must hold 10"},
  };
  for (const Case& c : cases) {
    absl::Status s = DecodeError(c.bytes, c.dim, c.max);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.says;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.says));
  }
}

// Every value has one encoding: an overlong varint (a zero continuation byte at the end), in the
// header or in the indices, is refused, so that no reader can skip the header by its canonical
// size and see different bytes than one that parses it.
TEST(SparseCodec, RejectsNonCanonicalVarints) {
  std::string good;
  EncodeSparse(SparseVector{{3}, {1.5f}}, 10, SparseFormat::kSparse, &good);
  SparseVector out;
  ASSERT_TRUE(DecodeSparse(good, 10, 10, &out).ok());
  // good = [format][dim=10][nnz=1][gap=3][4 value bytes]. Overlong dim: 10 as 0x8a 0x00.
  std::string overlong_dim = good.substr(0, 1) + std::string("\x8a\x00", 2) + good.substr(2);
  auto s = DecodeSparse(overlong_dim, 10, 10, &out);
  EXPECT_THAT(std::string(s.message()), HasSubstr("non-canonical (overlong) varint in its dimension"));
  std::string overlong_nnz = good.substr(0, 2) + std::string("\x81\x00", 2) + good.substr(3);
  EXPECT_THAT(std::string(DecodeSparse(overlong_nnz, 10, 10, &out).message()),
              HasSubstr("in its entry count"));
  std::string overlong_gap = good.substr(0, 3) + std::string("\x83\x00", 2) + good.substr(4);
  EXPECT_THAT(std::string(DecodeSparse(overlong_gap, 10, 10, &out).message()),
              HasSubstr("in its indices"));
  SparseHeader h;
  ASSERT_TRUE(PeekSparseHeader(good, &h).ok());
  EXPECT_EQ(h.size, 3u);
  // Eleven bytes, or a tenth byte above 1: beyond 64 bits.
  std::string huge = good.substr(0, 1) + std::string(9, '\xff') + "\x02" + good.substr(2);
  EXPECT_FALSE(PeekSparseHeader(huge, &h).ok());
}

TEST(SparseCodec, RejectsNonFiniteValues) {
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    const SparseVector v{{1, 4}, {1, bad}};
    for (SparseFormat f : {SparseFormat::kSparse, SparseFormat::kBitmap, SparseFormat::kDense}) {
      absl::Status s = DecodeError(Encode(v, 10, f));
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(s.message()), HasSubstr("not finite"));
    }
  }
}

TEST(SparseCodec, UnsortedAndDuplicateIndicesAreUnrepresentable) {
  // Gaps are idx[i] - idx[i-1] - 1 >= 0: every decodable sparse payload is strictly increasing.
  const std::string bytes = std::string("\x01\x0a\x03\x05\x00\x00", 6) + std::string(12, '\0');
  SparseVector out;
  ASSERT_TRUE(DecodeSparse(bytes, 10, 10, &out).ok());
  EXPECT_THAT(out.indices, ::testing::ElementsAre(5u, 6u, 7u));
}

TEST(Digest, DependsOnEveryBitAndOnLength) {
  std::vector<float> v(1001, 1.0f);
  const uint64_t base = DigestFloats(v);
  EXPECT_EQ(base, DigestFloats(v));
  for (size_t i : {0u, 500u, 999u, 1000u}) {
    std::vector<float> w = v;
    w[i] = std::nextafter(w[i], 2.0f);
    EXPECT_NE(DigestFloats(w), base) << i;
  }
  v.push_back(0.0f);
  EXPECT_NE(DigestFloats(v), base);
}

// The digest's accumulators are sums within a 1 KiB block: stripes (64 bytes) that trade places
// inside a block, whole blocks that trade places, and a lone word moved to another lane must
// all change it.
TEST(Digest, DependsOnOrder) {
  std::vector<float> v(4096);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.5f - 7.0f;
  const uint64_t base = DigestFloats(v);
  auto swapped = [&](size_t a, size_t b, size_t n) {
    std::vector<float> w = v;
    std::swap_ranges(w.begin() + a, w.begin() + a + n, w.begin() + b);
    return DigestFloats(w);
  };
  EXPECT_NE(swapped(0, 16, 16), base);     // stripes 0 and 1 of block 0
  EXPECT_NE(swapped(16, 240, 16), base);   // stripes 1 and 15
  EXPECT_NE(swapped(0, 256, 256), base);   // blocks 0 and 1
  EXPECT_NE(swapped(0, 2, 2), base);       // words 0 and 1 of a stripe
  std::vector<float> zeros(4096, 0.0f), shorter(4095, 0.0f);
  EXPECT_NE(DigestFloats(zeros), DigestFloats(shorter));  // the zero-padded tail
}

}  // namespace
}  // namespace regtopk
