// regtopk-server: the parameter-server daemon. Holds the authoritative parameters, collects each
// round's sparse pushes, aggregates exactly, steps, and answers every push with the aggregate.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/cli/flags.h"
#include "common/metrics/http_exporter.h"
#include "common/wire/chunking.h"
#include "common/wire/sparse_codec.h"
#include "server/coordinator.h"
#include "server/service.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "address to listen on");
ABSL_FLAG(int, port, 50051, "port to listen on; 0 picks a free one (printed on stdout)");
ABSL_FLAG(int, workers, 1, "number of workers in the job (worker ids 0..workers-1)");
ABSL_FLAG(std::string, algorithm, "regtopk", "dense, topk, randk or regtopk");
ABSL_FLAG(double, density, 0.01, "fraction of entries each worker sends per round, in (0, 1]");
ABSL_FLAG(double, mu, 1.0, "RegTop-k's mu (> 0)");
ABSL_FLAG(double, lr, 0.01, "learning rate (> 0)");
ABSL_FLAG(double, momentum, 0.0, "SGD momentum in [0, 1)");
ABSL_FLAG(bool, nesterov, false, "Nesterov momentum (needs --momentum > 0)");
ABSL_FLAG(double, weight_decay, 0.0, "L2 weight decay (>= 0)");
ABSL_FLAG(std::string, weighting, "uniform",
          "aggregation weights: uniform (1/N) or samples (proportional to local sample counts)");
ABSL_FLAG(uint64_t, rounds, 0, "rounds in the job; 0 = unbounded");
ABSL_FLAG(
    uint32_t, digest_every, 10,
    "send a parameter digest with every R-th aggregate so drifted workers re-pull; 0 = never");
ABSL_FLAG(uint64_t, seed, 1, "seed handed to the workers' sparsifiers (worker n: seed + n)");
ABSL_FLAG(bool, force_dense_aggregate, false,
          "always send the aggregate dense (a baseline for benchmarks; still lossless)");
ABSL_FLAG(double, round_timeout_seconds, 600,
          "abandon a round that has not closed this long after its first push, telling the "
          "waiting workers which ones never pushed (dead peers); 0 = wait forever");
ABSL_FLAG(int, log_every, 1, "log one line every N closed rounds; 0 = never");
ABSL_FLAG(int, metrics_port, -1,
          "serve Prometheus metrics on http://HOST:PORT/metrics; 0 picks a free port (printed "
          "on stdout); -1 = off");
ABSL_FLAG(double, linger_seconds, 2.0,
          "after the last round (--rounds > 0), keep serving this long, then exit 0");

namespace regtopk {
namespace {

constexpr char kProgram[] = "regtopk-server";

std::atomic<bool> g_finished{false};

JobConfig JobFromFlags() {
  JobConfig job;
  auto algorithm = ParseAlgorithm(absl::GetFlag(FLAGS_algorithm));
  if (!algorithm.ok())
    FlagErrorExit(kProgram, absl::StrCat("--algorithm: ", algorithm.status().message()));
  job.algorithm = *algorithm;
  job.density = absl::GetFlag(FLAGS_density);
  job.mu = absl::GetFlag(FLAGS_mu);
  job.sgd.lr = static_cast<float>(absl::GetFlag(FLAGS_lr));
  job.sgd.momentum = static_cast<float>(absl::GetFlag(FLAGS_momentum));
  job.sgd.nesterov = absl::GetFlag(FLAGS_nesterov);
  job.sgd.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  const int workers = absl::GetFlag(FLAGS_workers);
  if (workers < 1) FlagErrorExit(kProgram, absl::StrCat("--workers must be >= 1, got ", workers));
  job.num_workers = static_cast<uint32_t>(workers);
  const std::string weighting = absl::GetFlag(FLAGS_weighting);
  if (weighting == "uniform") {
    job.weighting = Weighting::kUniform;
  } else if (weighting == "samples") {
    job.weighting = Weighting::kSamples;
  } else {
    FlagErrorExit(kProgram,
                  absl::StrCat("--weighting must be uniform or samples, got '", weighting, "'"));
  }
  job.total_rounds = absl::GetFlag(FLAGS_rounds);
  job.digest_every = absl::GetFlag(FLAGS_digest_every);
  job.seed = absl::GetFlag(FLAGS_seed);
  if (absl::Status s = job.Validate(); !s.ok()) FlagErrorExit(kProgram, s.message());
  return job;
}

int Main() {
  const int port = absl::GetFlag(FLAGS_port);
  if (port < 0 || port > 65535)
    FlagErrorExit(kProgram, absl::StrCat("--port must be in [0, 65535]"));
  if (absl::GetFlag(FLAGS_metrics_port) < -1 || absl::GetFlag(FLAGS_metrics_port) > 65535) {
    FlagErrorExit(kProgram, "--metrics-port must be -1 (off) or in [0, 65535]");
  }
  CoordinatorOptions options;
  options.job = JobFromFlags();
  MetricsRegistry registry;
  ServerMetrics metrics(&registry);
  options.metrics = &metrics;
  options.force_dense_aggregate = absl::GetFlag(FLAGS_force_dense_aggregate);
  const double round_timeout = absl::GetFlag(FLAGS_round_timeout_seconds);
  if (!(round_timeout >= 0)) FlagErrorExit(kProgram, "--round-timeout-seconds must be >= 0");
  options.round_timeout = absl::Seconds(round_timeout);
  const int log_every = absl::GetFlag(FLAGS_log_every);
  const uint64_t total_rounds = options.job.total_rounds;
  options.on_round_closed = [log_every, total_rounds](const RoundResult& r) {
    if (log_every > 0 && (r.round + 1) % log_every == 0) {
      SparseHeader h;
      const bool ok = PeekSparseHeader(r.encoded, &h).ok();
      const char* format = !ok                                 ? "?"
                           : h.format == SparseFormat::kSparse ? "sparse"
                           : h.format == SparseFormat::kBitmap ? "bitmap"
                                                               : "dense";
      std::cerr << absl::StrFormat(
          "round %d closed: aggregate %d nnz, %d bytes (%s); aggregate %.2f ms, step %.2f ms, "
          "encode %.2f ms\n",
          r.round, r.nnz, r.encoded.size(), format, r.aggregate_seconds * 1e3, r.step_seconds * 1e3,
          r.encode_seconds * 1e3);
    }
    if (total_rounds != 0 && r.round + 1 == total_rounds) g_finished = true;
  };
  auto coordinator = Coordinator::Create(std::move(options));
  if (!coordinator.ok()) FlagErrorExit(kProgram, coordinator.status().message());

  // Handle SIGINT/SIGTERM synchronously on this thread: block them before gRPC starts threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  ParameterServerService service(coordinator->get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int selected_port = 0;
  const std::string address = absl::StrCat(absl::GetFlag(FLAGS_host), ":", port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &selected_port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || selected_port == 0) {
    std::cerr << kProgram << ": cannot listen on " << address << "\n";
    return 1;
  }
  std::cout << "regtopk-server listening on " << absl::GetFlag(FLAGS_host) << ":" << selected_port
            << std::endl;
  std::unique_ptr<MetricsHttpExporter> exporter;
  if (const int metrics_port = absl::GetFlag(FLAGS_metrics_port); metrics_port >= 0) {
    auto e = MetricsHttpExporter::Start(absl::GetFlag(FLAGS_host), metrics_port, &registry);
    if (!e.ok()) {
      std::cerr << kProgram << ": " << e.status().message() << "\n";
      (*coordinator)->Shutdown();
      server->Shutdown();
      return 1;
    }
    exporter = std::move(*e);
    std::cout << "regtopk-server metrics on http://" << absl::GetFlag(FLAGS_host) << ":"
              << exporter->port() << "/metrics" << std::endl;
  }

  const double linger = absl::GetFlag(FLAGS_linger_seconds);
  auto finished_at = std::chrono::steady_clock::time_point::max();
  while (true) {
    timespec tick{0, 100 * 1000 * 1000};
    const int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig == SIGINT || sig == SIGTERM) {
      std::cerr << kProgram << ": " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
                << ", shutting down\n";
      break;
    }
    if (g_finished && finished_at == std::chrono::steady_clock::time_point::max()) {
      finished_at = std::chrono::steady_clock::now();
      std::cerr << kProgram << ": job finished after " << total_rounds << " rounds\n";
    }
    if (std::chrono::steady_clock::now() - finished_at >
        std::chrono::duration<double>(std::max(0.0, linger))) {
      break;
    }
  }
  // Held pushes get UNAVAILABLE first; then gRPC drains whatever is still in flight.
  (*coordinator)->Shutdown();
  if (auto* health = server->GetHealthCheckService()) health->Shutdown();
  // Connected clients can hold this for the whole grace period; held pushes are already done.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
}

}  // namespace
}  // namespace regtopk

int main(int argc, char** argv) {
  regtopk::ParseFlagsOrExit(
      argc, argv, regtopk::kProgram,
      "regtopk-server: the parameter server of a regtopk job.\n"
      "Example: regtopk-server --port=50051 --workers=4 --algorithm=regtopk --density=0.001 "
      "--mu=5 --lr=0.1 --rounds=1000");
  return regtopk::Main();
}
