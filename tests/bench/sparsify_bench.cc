// regtopk-bench: one worker's sparsification step at ResNet-18 size (d = 11.2 M), one thread.
//   BM_RegTopK_Ours / BM_TopK_Ours   the common/ sparsifiers (Compress + ObserveAggregate)
//   BM_DiagnosticCost                RegTop-k steps with and without the mask diagnostic,
//                                    interleaved: the "ratio" counter is their time ratio,
//                                    measured in the same run
//   BM_RegTopK_Torch                 the same RegTop-k step written the obvious way in LibTorch
//                                    ops with torch::topk
//   BM_Floor                         one streaming pass a = g + e over the same buffers
// The benchmark argument is the density in parts per million. Run with OMP_NUM_THREADS=1.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>
#include <random>
#include <vector>

#include "common/sparse/sparsifier.h"

namespace regtopk {
namespace {

constexpr size_t kDim = 11200000;

const std::vector<std::vector<float>>& Gradients() {
  // A few fixed gradients, cycled, so that the masks keep changing between iterations.
  static const auto* grads = [] {
    auto* g = new std::vector<std::vector<float>>(4, std::vector<float>(kDim));
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    for (auto& v : *g) {
      for (float& x : v) x = normal(rng);
    }
    return g;
  }();
  return *grads;
}

double Density(const benchmark::State& state) { return state.range(0) / 1e6; }

void RunOurs(benchmark::State& state, Algorithm algorithm, bool diagnostic = true) {
  SparsifierOptions o;
  o.mask_diagnostic = diagnostic;
  o.algorithm = algorithm;
  o.dim = kDim;
  o.density = Density(state);
  o.mu = 5.0;
  o.weight = 0.25f;
  auto s = *CreateSparsifier(o);
  const auto& grads = Gradients();
  SparseVector out;
  size_t i = 0;
  for (auto _ : state) {
    if (!s->Compress(grads[i++ % grads.size()], &out).ok()) state.SkipWithError("compress");
    // A stand-in aggregate: this worker's own share (the server's would differ only in values).
    for (float& v : out.values) v *= 0.25f;
    if (!s->ObserveAggregate(out).ok()) state.SkipWithError("observe");
    benchmark::DoNotOptimize(out.indices.data());
  }
  state.counters["k"] = static_cast<double>(s->k());
}

void BM_RegTopK_Ours(benchmark::State& state) { RunOurs(state, Algorithm::kRegTopK); }
// Two RegTop-k sparsifiers on the same gradients, one computing the diagnostic, stepped in
// turn so that both see the same machine load; reports each one's mean step and the ratio.
void BM_DiagnosticCost(benchmark::State& state) {
  std::unique_ptr<Sparsifier> s[2];
  for (int with = 0; with < 2; ++with) {
    SparsifierOptions o;
    o.algorithm = Algorithm::kRegTopK;
    o.dim = kDim;
    o.density = Density(state);
    o.mu = 5.0;
    o.weight = 0.25f;
    o.mask_diagnostic = with == 1;
    s[with] = *CreateSparsifier(o);
  }
  const auto& grads = Gradients();
  SparseVector out;
  double seconds[2] = {0, 0};
  size_t i = 0;
  for (auto _ : state) {
    const auto& g = grads[i++ % grads.size()];
    double step = 0;
    for (int with = 0; with < 2; ++with) {
      const auto t0 = std::chrono::steady_clock::now();
      if (!s[with]->Compress(g, &out).ok()) state.SkipWithError("compress");
      for (float& v : out.values) v *= 0.25f;
      if (!s[with]->ObserveAggregate(out).ok()) state.SkipWithError("observe");
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      seconds[with] += dt;
      step += dt;
    }
    state.SetIterationTime(step);
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["without_ms"] = 1e3 * seconds[0] / n;
  state.counters["with_ms"] = 1e3 * seconds[1] / n;
  state.counters["ratio"] = seconds[1] / seconds[0];
}
void BM_TopK_Ours(benchmark::State& state) { RunOurs(state, Algorithm::kTopK); }

void BM_RegTopK_Torch(benchmark::State& state) {
  at::set_num_threads(1);
  const int64_t d = kDim;
  const int64_t k = static_cast<int64_t>(KFromDensity(Density(state), kDim));
  const double mu = 5.0, w = 0.25, q = kRegTopKQ;
  const auto& grads = Gradients();
  std::vector<at::Tensor> g;
  for (const auto& v : grads) {
    g.push_back(at::from_blob(const_cast<float*>(v.data()), {d}, at::kFloat));
  }
  at::Tensor e = at::zeros({d}, at::kFloat);
  at::Tensor mask = at::zeros({d}, at::kBool);
  at::Tensor v_prev = at::zeros({d}, at::kFloat);
  at::Tensor g_prev = at::zeros({d}, at::kFloat);
  size_t i = 0;
  for (auto _ : state) {
    at::Tensor a = g[i++ % g.size()] + e;
    at::Tensor share = w * v_prev;
    at::Tensor evidence = mask.logical_and(v_prev != 0);
    at::Tensor delta = at::where(evidence, (g_prev - share) / share, at::full({}, q, at::kFloat));
    at::Tensor score = a.abs() * at::tanh((1 + delta).abs() / mu);
    at::Tensor idx = std::get<1>(at::topk(score, k));
    idx = std::get<0>(idx.sort());
    at::Tensor values = a.index_select(0, idx);
    e = a.index_fill(0, idx, 0.0);
    mask.zero_();
    mask.index_fill_(0, idx, true);
    v_prev.zero_();
    v_prev.index_copy_(0, idx, values);
    g_prev.zero_();
    g_prev.index_copy_(0, idx, values * 0.25f);  // the same stand-in aggregate as ours
    benchmark::DoNotOptimize(values.data_ptr());
  }
  state.counters["k"] = static_cast<double>(k);
}

void BM_Floor(benchmark::State& state) {
  const auto& grads = Gradients();
  std::vector<float> e(kDim, 0.0f), a(kDim);
  size_t i = 0;
  for (auto _ : state) {
    const float* g = grads[i++ % grads.size()].data();
    for (size_t j = 0; j < kDim; ++j) a[j] = g[j] + e[j];
    benchmark::DoNotOptimize(a.data());
    benchmark::ClobberMemory();
  }
}

// Densities in parts per million: 1000 = 0.1 %, 10000 = 1 %.
BENCHMARK(BM_RegTopK_Ours)
    ->ArgName("density_ppm")
    ->Arg(1000)
    ->Arg(10000)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DiagnosticCost)
    ->ArgName("density_ppm")
    ->Arg(1000)
    ->Arg(10000)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TopK_Ours)
    ->ArgName("density_ppm")
    ->Arg(1000)
    ->Arg(10000)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RegTopK_Torch)
    ->ArgName("density_ppm")
    ->Arg(1000)
    ->Arg(10000)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Floor)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace regtopk

BENCHMARK_MAIN();
