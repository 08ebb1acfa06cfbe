#include "common/sparse/sparse_vector.h"

#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

absl::Status Check(std::vector<uint32_t> i, std::vector<float> v, size_t dim = 10,
                   size_t max_nnz = 5) {
  SparseVector s{std::move(i), std::move(v)};
  return ValidateSparse(s, dim, max_nnz);
}

TEST(ValidateSparse, AcceptsAWellFormedVector) { EXPECT_TRUE(Check({0, 3, 9}, {1, -2, 3}).ok()); }

TEST(ValidateSparse, RejectsEachMalformation) {
  const auto nan = std::numeric_limits<float>::quiet_NaN();
  const auto inf = std::numeric_limits<float>::infinity();
  struct Case {
    std::vector<uint32_t> i;
    std::vector<float> v;
    const char* says;
  } cases[] = {
      {{0, 1}, {1}, "2 indices but 1 values"},
      {{0, 1, 2, 3, 4, 5}, {1, 1, 1, 1, 1, 1}, "more than the limit of 5"},
      {{0, 10}, {1, 1}, "out of range"},
      {{3, 2}, {1, 1}, "unsorted"},
      {{2, 2}, {1, 1}, "duplicate"},
      {{1, 2}, {1, nan}, "not finite"},
      {{1, 2}, {-inf, 1}, "not finite"},
  };
  for (const Case& c : cases) {
    absl::Status s = Check(c.i, c.v);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.says;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.says));
  }
}

TEST(FindNonFinite, FindsTheFirstBadPosition) {
  std::vector<float> v(1000, 1.0f);
  EXPECT_EQ(FindNonFinite(v), 1000u);
  v[700] = std::numeric_limits<float>::infinity();
  v[900] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(FindNonFinite(v), 700u);
}

TEST(ScatterToDense, WritesZerosElsewhere) {
  SparseVector s{{1, 3}, {5, 6}};
  std::vector<float> out(5, 9.0f);
  ScatterToDense(s, absl::MakeSpan(out));
  EXPECT_THAT(out, ::testing::ElementsAre(0, 5, 0, 6, 0));
}

}  // namespace
}  // namespace regtopk
