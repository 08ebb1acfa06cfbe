// regtopk-aggregate-bench: the server's aggregation of N sparse pushes at ResNet-18 size
// (d = 11.2 M), N = 2 ... 32, densities 0.1 % and 1 %. Compares SparseAggregator (a stable radix
// sort and one fold, O(N k)) with the sequential pairwise merge the server used before (O(N^2 k):
// each push merged into the running union). Both give the same bits (tests/common/sparse/
// aggregate_test.cc). Torch-free; Google Benchmark.
#include <benchmark/benchmark.h>

#include <map>
#include <random>
#include <utility>
#include <vector>

#include "common/sparse/aggregate.h"
#include "tests/testing/random_sparse.h"

namespace regtopk {
namespace {

constexpr size_t kDim = 11200000;

// The previous algorithm (common/sparse/aggregate.cc before SparseAggregator), unchanged, kept
// here as the baseline.
void SequentialMerge(absl::Span<const SparseView> pushes, absl::Span<const float> weights,
                     SparseVector* out) {
  out->clear();
  if (pushes.empty()) return;
  // Fold the pushes in one at a time with a linear merge of sorted lists. This keeps the
  // left-to-right summation order per index that the contract promises, costs O(N * nnz) per
  // push and needs no dense buffer (d may be 100 M while N * k is small).
  SparseVector merged;
  {
    const SparseView& p = pushes[0];
    out->indices.assign(p.indices.begin(), p.indices.end());
    out->values.resize(p.nnz());
    for (size_t i = 0; i < p.nnz(); ++i) out->values[i] = weights[0] * p.values[i];
  }
  for (size_t n = 1; n < pushes.size(); ++n) {
    const SparseView& p = pushes[n];
    const float w = weights[n];
    merged.indices.resize(out->nnz() + p.nnz());
    merged.values.resize(out->nnz() + p.nnz());
    size_t a = 0, b = 0, m = 0;
    const size_t na = out->nnz(), nb = p.nnz();
    while (a < na && b < nb) {
      const uint32_t ia = out->indices[a], ib = p.indices[b];
      if (ia < ib) {
        merged.indices[m] = ia;
        merged.values[m++] = out->values[a++];
      } else if (ib < ia) {
        merged.indices[m] = ib;
        merged.values[m++] = w * p.values[b++];
      } else {
        merged.indices[m] = ia;
        merged.values[m++] = out->values[a++] + w * p.values[b++];
      }
    }
    for (; a < na; ++a, ++m) {
      merged.indices[m] = out->indices[a];
      merged.values[m] = out->values[a];
    }
    for (; b < nb; ++b, ++m) {
      merged.indices[m] = p.indices[b];
      merged.values[m] = w * p.values[b];
    }
    merged.indices.resize(m);
    merged.values.resize(m);
    std::swap(*out, merged);
  }
}

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
  SparseVector out;
  SparseAggregator aggregator(threads);
  for (auto _ : state) {
    if (threads == 0) {
      SequentialMerge(views, weights, &out);
    } else {
      aggregator.Aggregate(views, weights, &out);
    }
    benchmark::DoNotOptimize(out.values.data());
  }
  state.counters["union_nnz"] = static_cast<double>(out.nnz());
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
    for (int n : {2, 4, 8, 16, 32}) b->Args({n, density_ppm});
  }
  b->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Aggregate_SequentialMerge)->Apply(Args);
BENCHMARK(BM_Aggregate_Radix)->Apply(Args);
BENCHMARK(BM_Aggregate_Radix2Threads)->Apply(Args)->UseRealTime();

}  // namespace
}  // namespace regtopk

BENCHMARK_MAIN();
