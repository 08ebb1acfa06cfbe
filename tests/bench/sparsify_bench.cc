// regtopk-bench: one worker's sparsification step at ResNet-18 size (d = 11.2 M).
//   BM_RegTopK_Ours / BM_TopK_Ours   the common/ sparsifiers (Compress + ObserveAggregate), on
//                                    `threads` threads, after `warmup` untimed rounds (0: from
//                                    a zero error, where scores grow every round; 2/density:
//                                    error feedback near its steady state)
//   BM_DiagnosticCost                RegTop-k steps with and without the mask diagnostic,
//                                    interleaved: the "ratio" counter is their time ratio,
//                                    measured in the same run
//   BM_RegTopK_Torch                 the same RegTop-k step written the obvious way in LibTorch
//                                    ops with torch::topk
//   BM_Floor                         one streaming pass a = g + e over the same buffers, split
//                                    over `threads` threads as the sparsifier splits its pass
// The _Ours benchmarks time two floors in every iteration, on the same gradient: the plain pass
// a[j] = g[j] + e[j] as a compiler writes it ("floor_ratio": the yardstick) and the
// same pass with streaming stores ("stream_floor_ratio"), the fastest this machine has, which
// the sparsifier itself uses at this size.
//   BM_Digest                        the parameter digest (DigestFloats) of d floats; the
//                                    "read_ratio" counter is its time over a bare read of the
//                                    same bytes (a sum of 8-byte words), interleaved
// Densities are in parts per million. Every round's gradient is a window of d entries at a
// pseudo-random offset into one fixed array of 2d normal samples: a different gradient every
// round (as training gives) at no cost. Run with OMP_NUM_THREADS=1.
#include <ATen/ATen.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <chrono>
#include <memory>
#include <random>
#include <vector>

#include "absl/types/span.h"
#include "common/cpu.h"
#include "common/parallel/task_pool.h"
#include "common/sparse/sparsifier.h"
#include "common/wire/digest.h"

namespace regtopk {
namespace {

constexpr size_t kDim = 11200000;

const std::vector<float>& Normals() {
  static const auto* normals = [] {
    auto* v = new std::vector<float>(2 * kDim);
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    for (float& x : *v) x = normal(rng);
    return v;
  }();
  return *normals;
}

// Round i's gradient: d consecutive entries of Normals() from a pseudo-random offset.
absl::Span<const float> Gradient(uint64_t i) {
  const uint64_t offset = (i * 0x9e3779b97f4a7c15ull >> 20) % kDim;
  return absl::MakeConstSpan(Normals().data() + offset, kDim);
}

double Density(const benchmark::State& state) { return state.range(0) / 1e6; }

// One round: Compress, then a stand-in aggregate (this worker's own share; the server's would
// differ only in values) for ObserveAggregate.
bool Step(Sparsifier& s, uint64_t round, SparseVector* out) {
  if (!s.Compress(Gradient(round), out).ok()) return false;
  for (float& v : out->values) v *= 0.25f;
  return s.ObserveAggregate(*out).ok();
}

// One pass a = g + e split over `threads` threads as the sparsifier splits its pass: the memory
// floor of a step. `stream`: with AVX2 streaming stores (where the CPU has AVX2).
class FloorPass {
 public:
  FloorPass(int threads, bool stream)
      : threads_(threads), stream_(stream && CpuHasAvx2()), pool_(threads), e_(kDim, 0.0f),
        a_(kDim + 16) {}
  bool streams() const { return stream_; }
  void Run(const float* g) {
    pool_.Run([&](int t) {
      size_t begin, end;
      TaskPool::Share(kDim, 4096, threads_, t, &begin, &end);
      if (stream_) {
        Stream(g, begin, end);
      } else {
        for (size_t j = begin; j < end; ++j) a_[j] = g[j] + e_[j];
      }
    });
    benchmark::DoNotOptimize(a_.data());
    benchmark::ClobberMemory();
  }

 private:
#if defined(__x86_64__) && defined(__GNUC__)
  // a from a 32-byte boundary (streaming stores need one); e at the same offset.
  __attribute__((target("avx2"))) void Stream(const float* g, size_t begin, size_t end) {
    float* a = a_.data();
    const size_t skew = (32 - reinterpret_cast<uintptr_t>(a) % 32) % 32 / sizeof(float);
    a += skew;
    const float* e = e_.data();
    size_t j = begin;
    for (; j + 8 <= end; j += 8) {
      _mm256_stream_ps(a + j, _mm256_add_ps(_mm256_loadu_ps(g + j), _mm256_loadu_ps(e + j)));
    }
    for (; j < end; ++j) a[j] = g[j] + e[j];
    _mm_sfence();
  }
#else
  void Stream(const float*, size_t, size_t) {}
#endif

  const int threads_;
  const bool stream_;
  TaskPool pool_;
  std::vector<float> e_, a_;
};

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Every iteration times one step and, right before it on the same gradient, each floor pass:
// the ratio counters (step / floor) compare them under the same machine load.
void RunOurs(benchmark::State& state, Algorithm algorithm, bool diagnostic = true) {
  SparsifierOptions o;
  o.mask_diagnostic = diagnostic;
  o.algorithm = algorithm;
  o.dim = kDim;
  o.density = Density(state);
  o.mu = 5.0;
  o.weight = 0.25f;
  o.threads = static_cast<int>(state.range(2));
  auto s = *CreateSparsifier(o);
  Normals();  // generated before the clock starts
  SparseVector out;
  uint64_t round = 0;
  for (; round < static_cast<uint64_t>(state.range(1)); ++round) {
    if (!Step(*s, round, &out)) state.SkipWithError("warm-up");
  }
  FloorPass floor(o.threads, false), stream_floor(o.threads, true);
  double step_s = 0, floor_s = 0, stream_floor_s = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    floor.Run(Gradient(round).data());
    floor_s += Seconds(t0);
    t0 = std::chrono::steady_clock::now();
    stream_floor.Run(Gradient(round).data());
    stream_floor_s += Seconds(t0);
    t0 = std::chrono::steady_clock::now();
    if (!Step(*s, round++, &out)) state.SkipWithError("step");
    benchmark::DoNotOptimize(out.indices.data());
    const double dt = Seconds(t0);
    step_s += dt;
    state.SetIterationTime(dt);
  }
  state.counters["k"] = static_cast<double>(s->k());
  state.counters["floor_ms"] = 1e3 * floor_s / static_cast<double>(state.iterations());
  state.counters["floor_ratio"] = step_s / floor_s;
  if (stream_floor.streams()) {
    state.counters["stream_floor_ms"] = 1e3 * stream_floor_s / static_cast<double>(state.iterations());
    state.counters["stream_floor_ratio"] = step_s / stream_floor_s;
  }
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
  SparseVector out;
  double seconds[2] = {0, 0};
  uint64_t round = 0;
  for (auto _ : state) {
    double step = 0;
    for (int with = 0; with < 2; ++with) {
      const auto t0 = std::chrono::steady_clock::now();
      if (!Step(*s[with], round, &out)) state.SkipWithError("step");
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      seconds[with] += dt;
      step += dt;
    }
    state.SetIterationTime(step);
    ++round;
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
  at::Tensor e = at::zeros({d}, at::kFloat);
  at::Tensor mask = at::zeros({d}, at::kBool);
  at::Tensor v_prev = at::zeros({d}, at::kFloat);
  at::Tensor g_prev = at::zeros({d}, at::kFloat);
  uint64_t round = 0;
  for (auto _ : state) {
    const absl::Span<const float> g = Gradient(round++);
    at::Tensor a = at::from_blob(const_cast<float*>(g.data()), {d}, at::kFloat) + e;
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
  FloorPass floor(static_cast<int>(state.range(0)), false);
  uint64_t round = 0;
  for (auto _ : state) floor.Run(Gradient(round++).data());
}

// The digest against the floor of any function of every byte: one read of them. Each iteration
// reads a different window of the normals (out of cache, as a fresh replica would be).
void BM_Digest(benchmark::State& state) {
  uint64_t round = 0;
  double digest_s = 0, read_s = 0;
  for (auto _ : state) {
    absl::Span<const float> v = Gradient(round++);
    // Whole 8-byte words from an 8-byte boundary, as a bare read can take them.
    const uint64_t* words = reinterpret_cast<const uint64_t*>(
        reinterpret_cast<uintptr_t>(v.data() + 1) & ~uintptr_t{7});
    auto t0 = std::chrono::steady_clock::now();
    uint64_t sum = 0;
    for (size_t i = 0; i < (kDim - 2) / 2; ++i) sum += words[i];
    benchmark::DoNotOptimize(sum);
    read_s += Seconds(t0);
    v = Gradient(round++);
    t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(DigestFloats(v));
    const double dt = Seconds(t0);
    digest_s += dt;
    state.SetIterationTime(dt);
  }
  state.counters["read_ms"] = 1e3 * read_s / static_cast<double>(state.iterations());
  state.counters["read_ratio"] = digest_s / read_s;
}

// Densities in parts per million: 1000 = 0.1 %, 10000 = 1 %.
// {density_ppm, warmup rounds, threads}: from a zero error, and near the steady state.
void OursArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"density_ppm", "warmup", "threads"});
  for (int threads : {1, 2}) {
    for (int64_t ppm : {1000, 10000}) {
      b->Args({ppm, 0, threads});
      b->Args({ppm, 2 * 1000000 / ppm, threads});
    }
  }
  b->UseManualTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_RegTopK_Ours)->Apply(OursArgs);
BENCHMARK(BM_DiagnosticCost)
    ->ArgName("density_ppm")
    ->Arg(1000)
    ->Arg(10000)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TopK_Ours)->Apply(OursArgs);
BENCHMARK(BM_RegTopK_Torch)
    ->ArgName("density_ppm")
    ->Arg(1000)
    ->Arg(10000)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Floor)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Digest)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace regtopk

BENCHMARK_MAIN();
