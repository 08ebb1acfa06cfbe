// regtopk-aggregate-bench: the server's aggregation of N sparse pushes at ResNet-18 size
// (d = 11.2 M), N = 2 ... 32, densities 0.1 % and 1 %. Compares SparseAggregator (cache-sized
// parts, each radix-sorted and folded: O(N k)) with AggregateByPairwiseMerge, the algorithm the
// server used for every N before (O(N^2 k): each push merged into the running union). Both give the same bits (tests/common/sparse/
// aggregate_test.cc). Torch-free; Google Benchmark.
#include <benchmark/benchmark.h>

#include <map>
#include <random>
#include <utility>
#include <vector>

#include "common/sparse/aggregate.h"
#include "common/wire/sparse_codec.h"
#include "tests/testing/random_sparse.h"

namespace regtopk {
namespace {

constexpr size_t kDim = 11200000;

// N pushes of k random entries each, generated once per (N, k).
const std::vector<SparseVector>& Pushes(int n, size_t k) {
  static auto* cache = new std::map<std::pair<int, size_t>, std::vector<SparseVector>>();
  auto& v = (*cache)[{n, k}];
  if (v.empty()) {
    std::mt19937 rng(17);
    for (int w = 0; w < n; ++w) v.push_back(RandomSparse(kDim, k, rng));
  }
  return v;
}

void Run(benchmark::State& state, int threads) {
  const int n = static_cast<int>(state.range(0));
  const size_t k = static_cast<size_t>(state.range(1)) * kDim / 1000000;
  const auto& pushes = Pushes(n, k);
  std::vector<SparseView> views(pushes.begin(), pushes.end());
  std::vector<float> weights(n, 1.0f / n);
  SparseVector out, scratch;
  SparseAggregator aggregator(threads);
  for (auto _ : state) {
    if (threads == 0) {
      AggregateByPairwiseMerge(views, weights, &out, &scratch);
    } else {
      aggregator.Aggregate(views, weights, &out);
    }
    benchmark::DoNotOptimize(out.values.data());
  }
  state.counters["union_nnz"] = static_cast<double>(out.nnz());
  // What the server would send: the smallest lossless encoding of this union (1 sparse,
  // 2 bitmap, 3 dense) and its size, to see where the form switches as N grows.
  state.counters["format"] = static_cast<double>(SmallestFormat(out, kDim));
  state.counters["encoded_MB"] = EncodedSize(out, kDim, SmallestFormat(out, kDim)) / 1e6;
  state.counters["ns_per_pushed_entry"] = benchmark::Counter(
      static_cast<double>(n * k), benchmark::Counter::kIsIterationInvariantRate |
                                      benchmark::Counter::kInvert);
}

void BM_Aggregate_SequentialMerge(benchmark::State& state) { Run(state, 0); }
void BM_Aggregate_Radix(benchmark::State& state) { Run(state, 1); }
void BM_Aggregate_Radix2Threads(benchmark::State& state) { Run(state, 2); }

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "density_ppm"});
  for (int density_ppm : {1000, 10000}) {
    for (int n : {2, 4, 8, 16, 32, 64}) b->Args({n, density_ppm});
  }
  b->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Aggregate_SequentialMerge)->Apply(Args);
BENCHMARK(BM_Aggregate_Radix)->Apply(Args);
BENCHMARK(BM_Aggregate_Radix2Threads)->Apply(Args)->UseRealTime();

}  // namespace
}  // namespace regtopk

BENCHMARK_MAIN();
