// regtopk-checkpoint-bench: what checkpoints cost the server. An in-process Coordinator (no
// gRPC: the round itself is as cheap as it gets, so the overhead is shown at its largest), 2
// workers pushing k = 0.1 % random entries, SGD with momentum 0.9 (the checkpoint holds
// parameters and momentum: 8 bytes per parameter), checkpoints to a folder on the local disk.
// For d = 11.2 M and 100 M and --checkpoint-every 1, 10, 100 it prints the mean round time
// against the same job without checkpoints, and the mean background write time.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/time/clock.h"
#include "common/metrics/registry.h"
#include "common/wire/sparse_codec.h"
#include "server/checkpoint.h"
#include "server/coordinator.h"
#include "tests/testing/random_sparse.h"

namespace regtopk {
namespace {

struct Result {
  double round_ms = 0;
  double write_ms = 0;  // mean per checkpoint written
  int checkpoints = 0;
};

Result Run(size_t dim, uint32_t every, int rounds, const std::string& dir) {
  std::filesystem::remove_all(dir);
  MetricsRegistry registry;
  ServerMetrics metrics(&registry);
  CoordinatorOptions o;
  o.job.num_workers = 2;
  o.job.algorithm = Algorithm::kTopK;
  o.job.density = 0.001;
  o.job.optimizer.momentum = 0.9f;
  o.job.digest_every = 0;
  o.metrics = &metrics;
  if (every > 0) {
    o.checkpoints = std::move(*CheckpointStore::Open(dir));
    o.job.checkpoint_every = every;
  }
  auto c = std::move(*Coordinator::Create(o));
  for (uint32_t w = 0; w < 2; ++w) {
    JoinIdentity id;
    id.session_id = w + 1;
    if (!c->Join(w, 1, dim, 7, id).ok()) std::abort();
  }
  if (!c->UploadParameters(0, std::vector<float>(dim, 0.01f)).ok()) std::abort();
  const size_t k = KFromDensity(0.001, dim);
  std::vector<std::string> payloads;
  std::mt19937 rng(1);
  for (int i = 0; i < 4; ++i) {
    std::string s;
    EncodeSparseSmallest(RandomSparse(dim, k, rng), dim, &s);
    payloads.push_back(std::move(s));
  }
  auto round = [&](int r) {
    absl::BlockingCounter done(2);
    for (uint32_t w = 0; w < 2; ++w) {
      const uint64_t saved = o.job.IsCheckpointRound(r) ? r : 0;
      absl::Status s = c->Push(w, r, payloads[(2 * r + w) % 4],
                               [&done](auto result) {
                                 if (!result.ok()) std::abort();
                                 done.DecrementCount();
                               },
                               saved);
      if (!s.ok()) std::abort();
    }
    done.Wait();
  };
  round(0);  // warm-up (and checkpoint 0)
  const double written0 = metrics.checkpoint_write_seconds->value();
  const absl::Time start = absl::Now();
  for (int r = 1; r <= rounds; ++r) round(r);
  Result res;
  res.round_ms = absl::ToDoubleMilliseconds(absl::Now() - start) / rounds;
  c->Shutdown();
  res.checkpoints = every ? rounds / static_cast<int>(every) : 0;
  if (res.checkpoints) {
    res.write_ms = (metrics.checkpoint_write_seconds->value() - written0) * 1e3 / (res.checkpoints + 1);
  }
  std::filesystem::remove_all(dir);
  return res;
}

}  // namespace
}  // namespace regtopk

int main(int argc, char** argv) {
  if (argc > 1) {
    std::printf("Usage: regtopk-checkpoint-bench\nCheckpoint write time and round-time overhead at d = "
                "11.2 M and 100 M for --checkpoint-every 1, 10, 100 (see the file's header). "
                "Takes no flags; writes to $TMPDIR.\n");
    return std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ? 0 : 2;
  }
  const char* tmp = std::getenv("TMPDIR");
  const std::string dir = std::string(tmp ? tmp : "/tmp") + "/regtopk_ckpt_bench_" + std::to_string(getpid());
  std::printf("%-10s %-8s %8s %12s %12s %10s %14s\n", "d", "every", "rounds", "round ms", "no-ckpt ms",
              "overhead", "write ms/ckpt");
  for (size_t dim : {size_t{11200000}, size_t{100000000}}) {
    const int base_rounds = dim > 50000000 ? 20 : 200;
    const regtopk::Result plain = regtopk::Run(dim, 0, base_rounds, dir);
    for (uint32_t every : {1u, 10u, 100u}) {
      const int rounds = every == 1 ? (dim > 50000000 ? 5 : 20) : std::max(base_rounds, static_cast<int>(2 * every));
      const regtopk::Result r = regtopk::Run(dim, every, rounds, dir);
      std::printf("%-10zu %-8u %8d %12.2f %12.2f %9.1f%% %14.1f\n", dim, every, rounds, r.round_ms,
                  plain.round_ms, 100.0 * (r.round_ms / plain.round_ms - 1.0), r.write_ms);
      std::fflush(stdout);
    }
  }
  return 0;
}
