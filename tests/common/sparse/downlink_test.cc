#include "common/sparse/downlink.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "absl/base/casts.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/random_sparse.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

uint32_t Bits(float x) { return absl::bit_cast<uint32_t>(x); }

// Over 30 rounds of random aggregates (overlapping supports, so the carried error meets new
// values): at every index, sent + e_after equals fl(agg + e_before) bit for bit; the sent set is
// the exact top-k of |agg + e_before| with ties to the lower index (a full sort as the
// reference), less zeros; and it is sorted.
TEST(DownlinkCompressor, ErrorFeedbackInvariantHoldsBitForBit) {
  constexpr size_t kDim = 5000, kK = 60;
  DownlinkCompressor compressor(kDim, kK);
  std::mt19937 rng(11);
  for (int round = 0; round < 30; ++round) {
    SparseVector agg = RandomSparse(kDim, 400, rng);
    if (round == 5) agg.values.assign(agg.nnz(), 0.25f);  // ties everywhere
    std::vector<float> before(compressor.error().begin(), compressor.error().end());
    std::vector<float> c = before;
    std::vector<float> dense_agg(kDim, 0.0f);
    for (size_t i = 0; i < agg.nnz(); ++i) {
      c[agg.indices[i]] = before[agg.indices[i]] + agg.values[i];
      dense_agg[agg.indices[i]] = agg.values[i];
    }
    SparseVector sent = agg;
    ASSERT_TRUE(compressor.Compress(&sent).ok());
    std::vector<float> sent_dense(kDim, 0.0f);
    ASSERT_TRUE(std::is_sorted(sent.indices.begin(), sent.indices.end()));
    for (size_t i = 0; i < sent.nnz(); ++i) sent_dense[sent.indices[i]] = sent.values[i];
    for (size_t j = 0; j < kDim; ++j) {
      ASSERT_EQ(Bits(sent_dense[j] + compressor.error()[j]), Bits(c[j]))
          << "round " << round << " index " << j;
      ASSERT_TRUE(sent_dense[j] == 0.0f || compressor.error()[j] == 0.0f);
    }
    std::vector<uint32_t> order(kDim);
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(),
                     [&](uint32_t a, uint32_t b) { return std::fabs(c[a]) > std::fabs(c[b]); });
    std::vector<uint32_t> expected;
    for (size_t i = 0; i < kK; ++i) {
      if (c[order[i]] != 0.0f) expected.push_back(order[i]);
    }
    std::sort(expected.begin(), expected.end());
    ASSERT_EQ(sent.indices, expected) << "round " << round;
  }
}

TEST(DownlinkCompressor, SendsEverythingWhenKCoversTheSupportAndCarriesNothing) {
  DownlinkCompressor compressor(100, 50);
  SparseVector agg;
  agg.indices = {3, 7, 99};
  agg.values = {1.0f, -2.0f, 0.5f};
  SparseVector sent = agg;
  ASSERT_TRUE(compressor.Compress(&sent).ok());
  EXPECT_EQ(sent.indices, agg.indices);
  EXPECT_EQ(sent.values, agg.values);
  for (float e : compressor.error()) EXPECT_EQ(e, 0.0f);
}

TEST(DownlinkCompressor, OverflowAndBadRestoresAreRefused) {
  DownlinkCompressor compressor(10, 1);
  SparseVector agg;
  agg.indices = {2, 4};
  agg.values = {FLT_MAX, FLT_MAX};
  ASSERT_TRUE(compressor.Compress(&agg).ok());  // sends one, carries the other FLT_MAX
  SparseVector again;
  again.indices = {2, 4};
  again.values = {FLT_MAX, FLT_MAX};
  absl::Status s = compressor.Compress(&again);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("overflowed at parameter"));
  EXPECT_EQ(compressor.SetError(std::vector<float>(9, 0.0f)).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> bad(10, 0.0f);
  bad[3] = NAN;
  EXPECT_EQ(compressor.SetError(bad).code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> good(10, 0.0f);
  good[3] = 1.5f;
  ASSERT_TRUE(compressor.SetError(good).ok());
  EXPECT_EQ(compressor.error()[3], 1.5f);
}

}  // namespace
}  // namespace regtopk
