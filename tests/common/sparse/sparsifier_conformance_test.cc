// The conformance suite every Sparsifier implementation passes.
#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "common/sparse/sparsifier.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

std::vector<float> RandomGradient(size_t d, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> g(d);
  for (float& x : g) x = normal(rng);
  return g;
}

using Stores = SparsifierOptions::Stores;

// Every algorithm, with the pass writing a through the caches and past them (streaming stores,
// used where the CPU has AVX2): the suite's small dimensions would otherwise only ever take the
// cached path.
class SparsifierConformance : public ::testing::TestWithParam<std::tuple<Algorithm, Stores>> {
 protected:
  Algorithm algorithm() const { return std::get<0>(GetParam()); }
  std::unique_ptr<Sparsifier> Make(size_t d, double density, uint64_t seed = 1) {
    SparsifierOptions o;
    o.algorithm = algorithm();
    o.stores = std::get<1>(GetParam());
    o.dim = d;
    o.density = density;
    o.mu = 2.0;
    o.weight = 0.25f;
    o.seed = seed;
    auto s = CreateSparsifier(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
};

TEST_P(SparsifierConformance, SendsExactlyKSortedUniqueEntries) {
  std::mt19937 rng(1);
  for (size_t d : {1u, 7u, 1000u, 50000u}) {
    for (double density : {0.001, 0.1, 0.55, 1.0}) {
      auto s = Make(d, density);
      SparseVector out;
      for (int round = 0; round < 3; ++round) {
        ASSERT_TRUE(s->Compress(RandomGradient(d, rng), &out).ok());
        ASSERT_EQ(out.nnz(), s->k());
        ASSERT_EQ(out.values.size(), s->k());
        EXPECT_TRUE(ValidateSparse(out, d, s->k()).ok());
        ASSERT_TRUE(s->ObserveAggregate(out).ok());
      }
    }
  }
}

TEST_P(SparsifierConformance, SentPlusNewErrorEqualsAccumulatedBitForBit) {
  std::mt19937 rng(2);
  const size_t d = 30000;
  auto s = Make(d, 0.01);
  std::vector<float> error(d, 0.0f);
  SparseVector out;
  for (int round = 0; round < 5; ++round) {
    const std::vector<float> g = RandomGradient(d, rng);
    ASSERT_TRUE(s->Compress(g, &out).ok());
    const bool keeps_error = !s->error().empty();
    std::vector<float> rebuilt(d, 0.0f);
    for (size_t i = 0; i < out.nnz(); ++i) rebuilt[out.indices[i]] = out.values[i];
    for (size_t j = 0; j < d; ++j) {
      const float accumulated = g[j] + error[j];
      const float sent_plus_error = rebuilt[j] + (keeps_error ? s->error()[j] : 0.0f);
      // Exactly one of the two is the accumulated value, the other is zero.
      if (keeps_error && rebuilt[j] != 0.0f) {
        ASSERT_EQ(s->error()[j], 0.0f) << j;
      }
      ASSERT_EQ(sent_plus_error, keeps_error ? accumulated : g[j])
          << "round " << round << " j " << j;
    }
    if (keeps_error) error.assign(s->error().begin(), s->error().end());
    ASSERT_TRUE(s->ObserveAggregate(out).ok());
  }
}

TEST_P(SparsifierConformance, IsDeterministicForASeed) {
  const size_t d = 40000;
  auto a = Make(d, 0.01, 42), b = Make(d, 0.01, 42);
  std::mt19937 rng(3);
  SparseVector oa, ob;
  for (int round = 0; round < 4; ++round) {
    const std::vector<float> g = RandomGradient(d, rng);
    ASSERT_TRUE(a->Compress(g, &oa).ok());
    ASSERT_TRUE(b->Compress(g, &ob).ok());
    EXPECT_EQ(oa.indices, ob.indices);
    EXPECT_EQ(oa.values, ob.values);
    ASSERT_TRUE(a->ObserveAggregate(oa).ok());
    ASSERT_TRUE(b->ObserveAggregate(ob).ok());
  }
}

// A checkpoint in the middle of a run: a fresh sparsifier given the exported state continues
// exactly as the original does, bit for bit (what a restarted worker relies on).
TEST_P(SparsifierConformance, ExportedStateContinuesBitForBit) {
  const size_t d = 30000;
  auto a = Make(d, 0.01, 42);
  std::mt19937 rng(5);
  SparseVector oa, ob;
  for (int round = 0; round < 3; ++round) {
    const std::vector<float> g = RandomGradient(d, rng);
    ASSERT_TRUE(a->Compress(g, &oa).ok());
    // A made-up aggregate that differs from the push, so RegTop-k's delta is exercised.
    SparseVector agg = oa;
    for (float& v : agg.values) v *= 0.3f;
    ASSERT_TRUE(a->ObserveAggregate(agg).ok());
  }
  auto b = Make(d, 0.01, 42);
  ASSERT_TRUE(b->ImportState(a->ExportState()).ok());
  for (int round = 0; round < 3; ++round) {
    const std::vector<float> g = RandomGradient(d, rng);
    ASSERT_TRUE(a->Compress(g, &oa).ok());
    ASSERT_TRUE(b->Compress(g, &ob).ok());
    EXPECT_EQ(oa.indices, ob.indices) << round;
    EXPECT_EQ(oa.values, ob.values) << round;
    SparseVector agg = oa;
    for (float& v : agg.values) v *= -0.5f;
    ASSERT_TRUE(a->ObserveAggregate(agg).ok());
    ASSERT_TRUE(b->ObserveAggregate(agg).ok());
  }
  EXPECT_TRUE(std::equal(a->error().begin(), a->error().end(), b->error().begin(), b->error().end()));
}

TEST_P(SparsifierConformance, RefusesAStateOfAnotherSize) {
  auto a = Make(100, 0.1), b = Make(200, 0.1);
  if (algorithm() == Algorithm::kDense) {
    SparsifierState s;
    s.error.assign(5, 0.0f);
    EXPECT_EQ(b->ImportState(s).code(), absl::StatusCode::kInvalidArgument);
    return;
  }
  EXPECT_EQ(b->ImportState(a->ExportState()).code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(SparsifierConformance, HandlesDimensionOne) {
  auto s = Make(1, 0.001);
  SparseVector out;
  ASSERT_TRUE(s->Compress(std::vector<float>{-3.5f}, &out).ok());
  EXPECT_THAT(out.indices, ::testing::ElementsAre(0u));
  EXPECT_THAT(out.values, ::testing::ElementsAre(-3.5f));
}

TEST_P(SparsifierConformance, KEqualToDSendsEverythingAndKeepsNoError) {
  auto s = Make(5, 1.0);
  SparseVector out;
  const std::vector<float> g = {1, -2, 0, 4, -5};
  ASSERT_TRUE(s->Compress(g, &out).ok());
  EXPECT_THAT(out.indices, ::testing::ElementsAre(0u, 1u, 2u, 3u, 4u));
  EXPECT_EQ(out.values, g);
  for (float e : s->error()) EXPECT_EQ(e, 0.0f);
}

TEST_P(SparsifierConformance, RejectsNonFiniteGradientAndChangesNothing) {
  const size_t d = 5000;
  auto s = Make(d, 0.01);
  std::mt19937 rng(4);
  SparseVector out;
  ASSERT_TRUE(s->Compress(RandomGradient(d, rng), &out).ok());
  ASSERT_TRUE(s->ObserveAggregate(out).ok());
  const std::vector<float> error_before(s->error().begin(), s->error().end());
  // In a whole 64-entry block (the vector kernel) and in the short last one (d = 78 * 64 + 8).
  for (size_t at : {size_t{4321}, size_t{4995}}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      std::vector<float> g = RandomGradient(d, rng);
      g[at] = bad;
      absl::Status st = s->Compress(g, &out);
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(std::string(st.message()), HasSubstr(std::to_string(at)));
      EXPECT_EQ(std::vector<float>(s->error().begin(), s->error().end()), error_before);
    }
  }
  // Still usable afterwards.
  EXPECT_TRUE(s->Compress(RandomGradient(d, rng), &out).ok());
}

TEST_P(SparsifierConformance, RejectsWrongLength) {
  auto s = Make(10, 0.5);
  SparseVector out;
  absl::Status st = s->Compress(std::vector<float>(9, 1.0f), &out);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("length 9, expected 10"));
}

TEST_P(SparsifierConformance, RejectsBadOptionsWithAClearStatus) {
  struct Case {
    void (*mutate)(SparsifierOptions&);
    const char* says;
  } cases[] = {
      {[](SparsifierOptions& o) { o.dim = 0; }, "dimension"},
      {[](SparsifierOptions& o) { o.density = 0; }, "density"},
      {[](SparsifierOptions& o) { o.density = 1.5; }, "density"},
      {[](SparsifierOptions& o) { o.density = std::nan(""); }, "density"},
      {[](SparsifierOptions& o) { o.mu = 0; }, "mu"},
      {[](SparsifierOptions& o) { o.mu = -1; }, "mu"},
      {[](SparsifierOptions& o) { o.mu = INFINITY; }, "mu"},
      {[](SparsifierOptions& o) { o.weight = 0; }, "weight"},
      {[](SparsifierOptions& o) { o.weight = 2; }, "weight"},
  };
  for (const Case& c : cases) {
    SparsifierOptions o;
    o.algorithm = algorithm();
    o.dim = 10;
    c.mutate(o);
    auto s = CreateSparsifier(o);
    ASSERT_FALSE(s.ok()) << c.says;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(s.status().message()), HasSubstr(c.says));
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllAlgorithms, SparsifierConformance,
    ::testing::Combine(::testing::Values(Algorithm::kDense, Algorithm::kTopK, Algorithm::kRandK,
                                         Algorithm::kRegTopK),
                       ::testing::Values(Stores::kCached, Stores::kStreaming)),
    [](const auto& info) {
      return std::string(AlgorithmName(std::get<0>(info.param))) +
             (std::get<1>(info.param) == Stores::kStreaming ? "_streaming" : "_cached");
    });

TEST(KFromDensity, DoesNotBumpProductsThatAreIntegersUpToRounding) {
  EXPECT_EQ(KFromDensity(0.55, 100), 55u);
  EXPECT_EQ(KFromDensity(0.001, 11200000), 11200u);
  EXPECT_EQ(KFromDensity(0.551, 100), 56u);
  EXPECT_EQ(KFromDensity(1e-9, 100), 1u);
  EXPECT_EQ(KFromDensity(1.0, 7), 7u);
  EXPECT_EQ(KFromDensity(0.5, 2), 1u);
}

TEST(ParseAlgorithm, NamesRoundTripAndUnknownIsAnError) {
  for (Algorithm a :
       {Algorithm::kDense, Algorithm::kTopK, Algorithm::kRandK, Algorithm::kRegTopK}) {
    EXPECT_EQ(*ParseAlgorithm(AlgorithmName(a)), a);
  }
  EXPECT_THAT(std::string(ParseAlgorithm("top-k").status().message()), HasSubstr("top-k"));
}

TEST(RandK, DifferentSeedsPickDifferentMasksAndCoverUniformly) {
  SparsifierOptions o;
  o.algorithm = Algorithm::kRandK;
  o.dim = 100;
  o.density = 0.1;
  std::vector<int> hits(100, 0);
  auto s = *CreateSparsifier(o);
  SparseVector out;
  for (int round = 0; round < 2000; ++round) {
    ASSERT_TRUE(s->Compress(std::vector<float>(100, 1.0f), &out).ok());
    for (uint32_t j : out.indices) ++hits[j];
  }
  // 2000 rounds * 10 picks / 100 positions = 200 expected hits each; binomial sd ~13.4.
  for (int h : hits) {
    EXPECT_GT(h, 130);
    EXPECT_LT(h, 270);
  }
  o.seed = 99;
  auto t = *CreateSparsifier(o);
  SparseVector other;
  ASSERT_TRUE(t->Compress(std::vector<float>(100, 1.0f), &other).ok());
  auto u = *CreateSparsifier(SparsifierOptions{Algorithm::kRandK, 100, 0.1});
  ASSERT_TRUE(u->Compress(std::vector<float>(100, 1.0f), &out).ok());
  EXPECT_NE(other.indices, out.indices);
}

// From the second round on, Top-k and RegTop-k gather candidates inside the pass at a threshold
// guessed from the round before, split over the threads. The gradient's scale jumps (x10, x0.01)
// make the guess far too low (the gather passes its cap and raises its threshold) and far too
// high (too few candidates), so every path runs; none may change a mask, a value or the error.
// In rounds 4, 14, ... only the first tenth of the entries jumps (x30), so the whole top k lies
// in the part of a share the pass has already gathered when it raises its threshold.
std::vector<float> ScaledGradient(size_t d, int round, std::mt19937& rng) {
  static constexpr float kScale[] = {1, 1, 1, 10, 1, 1, 0.01f, 0.01f, 1, 1};
  std::vector<float> g = RandomGradient(d, rng);
  for (float& x : g) x *= kScale[round % 10];
  if (round % 10 == 4) {
    for (size_t j = 0; j < d / 10; ++j) g[j] *= 30.0f;
  }
  return g;
}

std::unique_ptr<Sparsifier> MakeThreaded(Algorithm algorithm, size_t d, int threads,
                                         Stores stores = Stores::kCached) {
  SparsifierOptions o;
  o.algorithm = algorithm;
  o.stores = stores;
  o.dim = d;
  o.density = 0.01;
  o.mu = 2.0;
  o.weight = 0.25f;
  o.threads = threads;
  return *CreateSparsifier(o);
}

TEST(SparsifierThreads, TopKMatchesAFullSortWhateverTheThreadsAndTheGuess) {
  const size_t d = 200003, k = KFromDensity(0.01, d);
  auto one = MakeThreaded(Algorithm::kTopK, d, 1);
  auto three = MakeThreaded(Algorithm::kTopK, d, 3);
  auto streamed = MakeThreaded(Algorithm::kTopK, d, 2, Stores::kStreaming);
  std::vector<float> e(d, 0.0f), a(d);
  std::vector<uint32_t> order(d);
  std::mt19937 rng(21);
  SparseVector x, y, z;
  std::vector<uint32_t> previous;  // last round's mask
  for (int round = 0; round < 30; ++round) {
    const std::vector<float> g = ScaledGradient(d, round, rng);
    ASSERT_TRUE(one->Compress(g, &x).ok());
    ASSERT_TRUE(three->Compress(g, &y).ok());
    ASSERT_TRUE(streamed->Compress(g, &z).ok());
    for (size_t j = 0; j < d; ++j) a[j] = g[j] + e[j];
    for (size_t j = 0; j < d; ++j) order[j] = static_cast<uint32_t>(j);
    std::nth_element(order.begin(), order.begin() + (k - 1), order.end(),
                     [&](uint32_t p, uint32_t q) {
                       return std::fabs(a[p]) > std::fabs(a[q]) ||
                              (std::fabs(a[p]) == std::fabs(a[q]) && p < q);
                     });
    std::vector<uint32_t> expected(order.begin(), order.begin() + k);
    std::sort(expected.begin(), expected.end());
    ASSERT_EQ(x.indices, expected) << "round " << round;
    ASSERT_EQ(y.indices, expected) << "round " << round;
    ASSERT_EQ(z.indices, expected) << "round " << round;
    for (size_t i = 0; i < k; ++i) {
      ASSERT_EQ(x.values[i], a[expected[i]]);
      ASSERT_EQ(y.values[i], a[expected[i]]);
      ASSERT_EQ(z.values[i], a[expected[i]]);
    }
    // The diagnostic's repeats: the mask's overlap with last round's.
    std::vector<uint32_t> both;
    std::set_intersection(expected.begin(), expected.end(), previous.begin(), previous.end(),
                          std::back_inserter(both));
    ASSERT_EQ(one->last_diagnostic()->topk_repeats, both.size()) << "round " << round;
    ASSERT_EQ(three->last_diagnostic()->topk_repeats, both.size()) << "round " << round;
    ASSERT_EQ(streamed->last_diagnostic()->topk_repeats, both.size()) << "round " << round;
    previous = expected;
    e = a;
    for (uint32_t j : expected) e[j] = 0.0f;
    // error() settles the zeros the pass defers; most rounds leave them to the next pass.
    if (round % 3 != 2) continue;
    ASSERT_TRUE(std::equal(e.begin(), e.end(), one->error().begin(), one->error().end()));
    ASSERT_TRUE(std::equal(e.begin(), e.end(), three->error().begin(), three->error().end()));
    ASSERT_TRUE(
        std::equal(e.begin(), e.end(), streamed->error().begin(), streamed->error().end()));
  }
}

TEST(SparsifierThreads, RegTopKIsTheSameOnOneAndThreeThreadsAcrossARestore) {
  const size_t d = 200003;
  auto one = MakeThreaded(Algorithm::kRegTopK, d, 1);
  auto three = MakeThreaded(Algorithm::kRegTopK, d, 3);
  auto streamed = MakeThreaded(Algorithm::kRegTopK, d, 2, Stores::kStreaming);
  std::mt19937 rng(22);
  SparseVector x, y, z;
  for (int round = 0; round < 30; ++round) {
    if (round == 15) {
      // A restore drops the guess and the deferred zeros settle: still the same rounds.
      auto restored = MakeThreaded(Algorithm::kRegTopK, d, 3);
      ASSERT_TRUE(restored->ImportState(three->ExportState()).ok());
      three = std::move(restored);
      auto restored_streamed = MakeThreaded(Algorithm::kRegTopK, d, 2, Stores::kStreaming);
      ASSERT_TRUE(restored_streamed->ImportState(streamed->ExportState()).ok());
      streamed = std::move(restored_streamed);
    }
    const std::vector<float> g = ScaledGradient(d, round, rng);
    ASSERT_TRUE(one->Compress(g, &x).ok());
    ASSERT_TRUE(three->Compress(g, &y).ok());
    ASSERT_EQ(x.indices, y.indices) << "round " << round;
    ASSERT_EQ(x.values, y.values) << "round " << round;
    ASSERT_TRUE(streamed->Compress(g, &z).ok());
    ASSERT_EQ(x.indices, z.indices) << "round " << round;
    ASSERT_EQ(x.values, z.values) << "round " << round;
    for (Sparsifier* other : {three.get(), streamed.get()}) {
      ASSERT_EQ(one->last_diagnostic()->not_topk, other->last_diagnostic()->not_topk);
      ASSERT_EQ(one->last_diagnostic()->topk_repeats, other->last_diagnostic()->topk_repeats);
    }
    // The aggregate: this worker's share plus a cancelling one on every other entry, so that
    // some regularised scores fall and the mask moves away from plain Top-k.
    SparseVector agg = x;
    for (size_t i = 0; i < agg.nnz(); ++i) agg.values[i] *= (i % 2 == 0) ? 0.25f : -0.5f;
    ASSERT_TRUE(one->ObserveAggregate(agg).ok());
    ASSERT_TRUE(three->ObserveAggregate(agg).ok());
    ASSERT_TRUE(streamed->ObserveAggregate(agg).ok());
    if (round % 3 != 2) continue;  // as above: leave most deferred zeros to the pass
    ASSERT_TRUE(std::equal(one->error().begin(), one->error().end(), three->error().begin(),
                           three->error().end()));
    ASSERT_TRUE(std::equal(one->error().begin(), one->error().end(), streamed->error().begin(),
                           streamed->error().end()));
  }
}

// A round where all but the last k entries tie, after one that predicted a tiny threshold: the
// pass's candidates pass their cap, raising the threshold cannot drop any (all reach it), so
// the pass stops gathering and the selection's own filter decides: the last k, which the pass
// had not reached.
TEST(SparsifierThreads, TiesThatOverflowTheGatherStillGiveTheExactTopK) {
  const size_t d = 100003, k = KFromDensity(0.01, d);
  for (int threads : {1, 2}) {
    for (Stores stores : {Stores::kCached, Stores::kStreaming}) {
      auto s = MakeThreaded(Algorithm::kTopK, d, threads, stores);
      // Round 0: k large entries (sent) over 2^-10 everywhere else (kept in e): every score
      // sits in the top bucket of the selection's histogram, so the guess is tiny.
      std::vector<float> g(d, 1.0f / 1024);
      for (size_t i = 0; i < k; ++i) g[(i * 97) % d] = 1.0f + static_cast<float>(i);
      SparseVector out;
      ASSERT_TRUE(s->Compress(g, &out).ok());
      ASSERT_EQ(out.nnz(), k);
      // Round 1: a = 1, and 2 on the last k entries, exactly (2^-10 steps round nowhere).
      for (size_t j = 0; j < d; ++j) {
        g[j] = (s->error()[j] == 0.0f ? 1.0f : 1.0f - 1.0f / 1024) + (j >= d - k ? 1.0f : 0.0f);
      }
      ASSERT_TRUE(s->Compress(g, &out).ok());
      std::vector<uint32_t> last(k);
      for (size_t i = 0; i < k; ++i) last[i] = static_cast<uint32_t>(d - k + i);
      EXPECT_EQ(out.indices, last) << threads << " threads";
      EXPECT_EQ(out.values, std::vector<float>(k, 2.0f));
      for (size_t j : {size_t{0}, d - k - 1, d - k, d - 1}) {
        EXPECT_EQ(s->error()[j], j < d - k ? 1.0f : 0.0f) << "entry " << j;
      }
    }
  }
}

TEST(SparsifierThreads, RejectsAThreadCountOutOfRange) {
  for (int threads : {0, 257}) {
    SparsifierOptions o{Algorithm::kTopK, 100, 0.1};
    o.threads = threads;
    auto s = CreateSparsifier(o);
    ASSERT_FALSE(s.ok());
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("threads"));
  }
}

}  // namespace
}  // namespace regtopk
