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
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "common/cli/flags.h"
#include "common/metrics/http_exporter.h"
#include "common/wire/chunking.h"
#include "common/wire/sparse_codec.h"
#include "server/checkpoint.h"
#include "common/auth/worker_token.h"
#include "server/auth.h"
#include "server/coordinator.h"
#include "server/service.h"

ABSL_FLAG(std::string, host, "",
          "address to listen on; default 0.0.0.0 with TLS, else 127.0.0.1 (other addresses "
          "without TLS need --insecure)");
ABSL_FLAG(std::string, tls_cert, "", "TLS: this server's certificate chain (PEM)");
ABSL_FLAG(std::string, tls_key, "", "TLS: this server's private key (PEM)");
ABSL_FLAG(std::string, tls_ca, "",
          "mutual TLS: the CA (PEM) that signs the workers' certificates; every call but the "
          "health check then needs a client certificate, whose CN=worker-N is the worker's "
          "identity");
ABSL_FLAG(std::string, job_secret_file, "",
          "a file holding the job's secret: each worker proves its id with a token derived "
          "from it (for one-way TLS or loopback; mutual TLS needs none)");
ABSL_FLAG(bool, insecure, false,
          "allow listening on a non-loopback address without TLS (anyone who can reach the "
          "port can then read the model; tokens travel in plaintext)");
ABSL_FLAG(int, port, 50051, "port to listen on; 0 picks a free one (printed on stdout)");
ABSL_FLAG(int, workers, 1, "number of workers in the job (worker ids 0..workers-1)");
ABSL_FLAG(std::string, algorithm, "regtopk", "dense, topk, randk or regtopk");
ABSL_FLAG(double, density, 0.01, "fraction of entries each worker sends per round, in (0, 1]");
ABSL_FLAG(double, mu, 1.0, "RegTop-k's mu (> 0)");
ABSL_FLAG(std::string, optimizer, "sgd", "sgd, adam or adamw (PyTorch's semantics)");
ABSL_FLAG(double, lr, 0.01, "learning rate (> 0); the peak of the schedule");
ABSL_FLAG(double, momentum, 0.0, "SGD momentum in [0, 1)");
ABSL_FLAG(double, beta1, 0.9, "Adam/AdamW beta1 in [0, 1)");
ABSL_FLAG(double, beta2, 0.999, "Adam/AdamW beta2 in [0, 1)");
ABSL_FLAG(double, eps, 1e-8, "Adam/AdamW eps (> 0)");
ABSL_FLAG(std::string, lr_schedule, "constant",
          "after the warm-up: constant, step (times --lr-step-gamma every --lr-step-rounds) or "
          "cosine (to --min-lr over --lr-decay-rounds)");
ABSL_FLAG(uint64_t, warmup_rounds, 0, "linear learning-rate warm-up over the first N rounds");
ABSL_FLAG(uint64_t, lr_step_rounds, 0, "step schedule: rounds between steps");
ABSL_FLAG(double, lr_step_gamma, 0.1, "step schedule: factor per step, in (0, 1]");
ABSL_FLAG(uint64_t, lr_decay_rounds, 0,
          "cosine schedule: rounds of decay after the warm-up; 0 = to the end of the job");
ABSL_FLAG(double, min_lr, 0.0, "cosine schedule: the final learning rate");
ABSL_FLAG(uint64_t, max_dim, uint64_t{1} << 31,
          "largest model (parameters) a worker may join with; the server allocates O(d) state "
          "for it");
ABSL_FLAG(double, clip_norm, 0.0,
          "scale every push whose L2 norm exceeds this down to it (0 = off)");
ABSL_FLAG(double, max_abs_value, 0.0,
          "refuse a push with an entry of larger magnitude (0 = off)");
ABSL_FLAG(double, downlink_density, 0.0,
          "opt-in compressed downlink: send only the top entries (this fraction of d) of the "
          "aggregate plus the carried error, carrying the rest (server-side error feedback; "
          "replicas stay identical); 0 = the lossless aggregate");
ABSL_FLAG(bool, nesterov, false, "Nesterov momentum (needs --momentum > 0)");
ABSL_FLAG(double, weight_decay, 0.0, "L2 weight decay (>= 0)");
ABSL_FLAG(std::string, weighting, "uniform",
          "aggregation weights: uniform (1/N) or samples (proportional to local sample counts)");
ABSL_FLAG(uint64_t, rounds, 0, "rounds in the job; 0 = unbounded");
ABSL_FLAG(
    uint32_t, digest_every, 10,
    "send a parameter digest with every R-th aggregate so drifted workers re-pull; 0 = never");
ABSL_FLAG(uint64_t, seed, 1, "seed handed to the workers' sparsifiers (worker n: seed + n)");
ABSL_FLAG(int, threads, 1,
          "threads that aggregate the pushes, encode the aggregate and step the parameters (by "
          "index range; the bytes sent and the parameters are the same for any number), 1 to "
          "256");
ABSL_FLAG(bool, force_dense_aggregate, false,
          "always send the aggregate dense (a baseline for benchmarks; still lossless)");
ABSL_FLAG(double, round_timeout_seconds, 600,
          "how long a round waits for a missing worker (or its restarted replacement) after its "
          "first push before the job fails, naming it; 0 = wait forever");
ABSL_FLAG(std::string, checkpoint_dir, "",
          "keep checkpoints here and resume from the newest committed one on start (the stored "
          "job config wins); empty = no checkpoints");
ABSL_FLAG(uint32_t, checkpoint_every, 100,
          "with --checkpoint-dir: checkpoint before every round that is a multiple of this");
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
  job.optimizer.lr = static_cast<float>(absl::GetFlag(FLAGS_lr));
  job.optimizer.momentum = static_cast<float>(absl::GetFlag(FLAGS_momentum));
  job.optimizer.nesterov = absl::GetFlag(FLAGS_nesterov);
  job.optimizer.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  auto kind = ParseOptimizerKind(absl::GetFlag(FLAGS_optimizer));
  if (!kind.ok()) FlagErrorExit(kProgram, absl::StrCat("--optimizer: ", kind.status().message()));
  job.optimizer.kind = *kind;
  job.optimizer.beta1 = static_cast<float>(absl::GetFlag(FLAGS_beta1));
  job.optimizer.beta2 = static_cast<float>(absl::GetFlag(FLAGS_beta2));
  job.optimizer.eps = static_cast<float>(absl::GetFlag(FLAGS_eps));
  auto schedule = ParseLrSchedule(absl::GetFlag(FLAGS_lr_schedule));
  if (!schedule.ok())
    FlagErrorExit(kProgram, absl::StrCat("--lr-schedule: ", schedule.status().message()));
  job.optimizer.schedule = *schedule;
  job.optimizer.warmup_rounds = absl::GetFlag(FLAGS_warmup_rounds);
  job.optimizer.step_rounds = absl::GetFlag(FLAGS_lr_step_rounds);
  job.optimizer.step_gamma = static_cast<float>(absl::GetFlag(FLAGS_lr_step_gamma));
  job.optimizer.decay_rounds = absl::GetFlag(FLAGS_lr_decay_rounds);
  job.optimizer.min_lr = static_cast<float>(absl::GetFlag(FLAGS_min_lr));
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
  job.clip_norm = absl::GetFlag(FLAGS_clip_norm);
  job.max_abs_value = absl::GetFlag(FLAGS_max_abs_value);
  job.downlink_density = absl::GetFlag(FLAGS_downlink_density);
  if (job.optimizer.schedule == LrSchedule::kCosine && job.optimizer.decay_rounds == 0 &&
      job.total_rounds > job.optimizer.warmup_rounds) {
    job.optimizer.decay_rounds = job.total_rounds - job.optimizer.warmup_rounds;
  }
  job.digest_every = absl::GetFlag(FLAGS_digest_every);
  job.seed = absl::GetFlag(FLAGS_seed);
  job.round_timeout_seconds = absl::GetFlag(FLAGS_round_timeout_seconds);
  if (!(job.round_timeout_seconds >= 0)) FlagErrorExit(kProgram, "--round-timeout-seconds must be >= 0");
  if (!absl::GetFlag(FLAGS_checkpoint_dir).empty()) {
    job.checkpoint_every = absl::GetFlag(FLAGS_checkpoint_every);
    if (job.checkpoint_every == 0) FlagErrorExit(kProgram, "--checkpoint-every must be >= 1");
  } else if (FlagWasSet("checkpoint_every")) {
    FlagErrorExit(kProgram, "--checkpoint-every needs --checkpoint-dir");
  }
  if (absl::Status s = job.Validate(); !s.ok()) FlagErrorExit(kProgram, s.message());
  return job;
}

// On resume the stored job config wins; a job flag given on the command line must agree.
void CheckFlagsAgreeWith(const JobConfig& stored, const JobConfig& flags, uint64_t round) {
  const std::vector<std::tuple<const char*, std::string, std::string>> fields = {
      {"algorithm", std::string(AlgorithmName(stored.algorithm)), std::string(AlgorithmName(flags.algorithm))},
      {"density", absl::StrCat(stored.density), absl::StrCat(flags.density)},
      {"mu", absl::StrCat(stored.mu), absl::StrCat(flags.mu)},
      {"lr", absl::StrCat(stored.optimizer.lr), absl::StrCat(flags.optimizer.lr)},
      {"momentum", absl::StrCat(stored.optimizer.momentum), absl::StrCat(flags.optimizer.momentum)},
      {"nesterov", absl::StrCat(stored.optimizer.nesterov), absl::StrCat(flags.optimizer.nesterov)},
      {"weight_decay", absl::StrCat(stored.optimizer.weight_decay), absl::StrCat(flags.optimizer.weight_decay)},
      {"optimizer", std::string(OptimizerKindName(stored.optimizer.kind)),
       std::string(OptimizerKindName(flags.optimizer.kind))},
      {"beta1", absl::StrCat(stored.optimizer.beta1), absl::StrCat(flags.optimizer.beta1)},
      {"beta2", absl::StrCat(stored.optimizer.beta2), absl::StrCat(flags.optimizer.beta2)},
      {"eps", absl::StrCat(stored.optimizer.eps), absl::StrCat(flags.optimizer.eps)},
      {"lr_schedule", std::string(LrScheduleName(stored.optimizer.schedule)),
       std::string(LrScheduleName(flags.optimizer.schedule))},
      {"warmup_rounds", absl::StrCat(stored.optimizer.warmup_rounds), absl::StrCat(flags.optimizer.warmup_rounds)},
      {"lr_step_rounds", absl::StrCat(stored.optimizer.step_rounds), absl::StrCat(flags.optimizer.step_rounds)},
      {"lr_step_gamma", absl::StrCat(stored.optimizer.step_gamma), absl::StrCat(flags.optimizer.step_gamma)},
      {"lr_decay_rounds", absl::StrCat(stored.optimizer.decay_rounds), absl::StrCat(flags.optimizer.decay_rounds)},
      {"min_lr", absl::StrCat(stored.optimizer.min_lr), absl::StrCat(flags.optimizer.min_lr)},
      {"clip_norm", absl::StrCat(stored.clip_norm), absl::StrCat(flags.clip_norm)},
      {"max_abs_value", absl::StrCat(stored.max_abs_value), absl::StrCat(flags.max_abs_value)},
      {"downlink_density", absl::StrCat(stored.downlink_density),
       absl::StrCat(flags.downlink_density)},
      {"workers", absl::StrCat(stored.num_workers), absl::StrCat(flags.num_workers)},
      {"weighting", stored.weighting == Weighting::kSamples ? "samples" : "uniform",
       flags.weighting == Weighting::kSamples ? "samples" : "uniform"},
      {"rounds", absl::StrCat(stored.total_rounds), absl::StrCat(flags.total_rounds)},
      {"digest_every", absl::StrCat(stored.digest_every), absl::StrCat(flags.digest_every)},
      {"seed", absl::StrCat(stored.seed), absl::StrCat(flags.seed)},
      {"checkpoint_every", absl::StrCat(stored.checkpoint_every), absl::StrCat(flags.checkpoint_every)},
      {"round_timeout_seconds", absl::StrCat(stored.round_timeout_seconds),
       absl::StrCat(flags.round_timeout_seconds)},
  };
  for (const auto& [name, was, given] : fields) {
    if (FlagWasSet(name) && was != given) {
      FlagErrorExit(kProgram, absl::StrCat("--", absl::StrReplaceAll(name, {{"_", "-"}}), "=", given,
                                           " contradicts the job in --checkpoint-dir (", was,
                                           ", resuming at round ", round,
                                           "); drop the flag or use another directory"));
    }
  }
}

int Main() {
  // Handle SIGINT/SIGTERM synchronously on this thread: block them before any thread starts
  // (the coordinator's and gRPC's threads inherit the mask, so none of them can take a signal
  // and die of it).
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  const int port = absl::GetFlag(FLAGS_port);
  if (port < 0 || port > 65535)
    FlagErrorExit(kProgram, absl::StrCat("--port must be in [0, 65535]"));
  if (absl::GetFlag(FLAGS_metrics_port) < -1 || absl::GetFlag(FLAGS_metrics_port) > 65535) {
    FlagErrorExit(kProgram, "--metrics-port must be -1 (off) or in [0, 65535]");
  }
  CoordinatorOptions options;
  options.job = JobFromFlags();
  options.max_dim = absl::GetFlag(FLAGS_max_dim);
  options.log = [](const std::string& line) { std::cerr << kProgram << ": " << line << std::endl; };
  if (const std::string dir = absl::GetFlag(FLAGS_checkpoint_dir); !dir.empty()) {
    auto store = CheckpointStore::Open(dir);
    if (!store.ok()) FlagErrorExit(kProgram, store.status().message());
    std::vector<std::string> skipped;
    auto resume = (*store)->LoadNewest(&skipped);
    for (const std::string& line : skipped) options.log(line);
    if (resume.ok()) {
      CheckFlagsAgreeWith(resume->job, options.job, resume->round);
      options.job = resume->job;
      options.log(absl::StrCat("resuming the job from the committed checkpoint of round ",
                               resume->round, " in ", dir));
      options.resume = std::make_shared<ServerCheckpoint>(std::move(*resume));
    } else if (resume.status().code() != absl::StatusCode::kNotFound) {
      // Never start over silently while the folder holds checkpoints.
      std::cerr << kProgram << ": cannot resume: " << resume.status().message()
                << " (refusing to start the job over; move the folder away to do that)\n";
      return 1;
    }
    if (const char* fault = std::getenv("REGTOPK_FAULT_KILL_IN_CHECKPOINT_WRITE")) {
      // Test hook: "ROUND:BYTES" makes the server SIGKILL itself mid-write of that checkpoint.
      uint64_t round = 0, bytes = 0;
      if (std::sscanf(fault, "%lu:%lu", &round, &bytes) == 2) (*store)->set_kill_during_write(round, bytes);
    }
    options.checkpoints = std::move(*store);
  }
  MetricsRegistry registry;
  ServerMetrics metrics(&registry);
  options.metrics = &metrics;
  options.force_dense_aggregate = absl::GetFlag(FLAGS_force_dense_aggregate);
  options.threads = absl::GetFlag(FLAGS_threads);
  const int log_every = absl::GetFlag(FLAGS_log_every);
  const uint64_t total_rounds = options.job.total_rounds;
  const bool checkpointing = options.checkpoints != nullptr;
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


  // Transport security and identity (see server/auth.h).
  ServerTlsFiles tls_files{absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
                           absl::GetFlag(FLAGS_tls_ca)};
  auto credentials = MakeServerCredentials(tls_files);
  if (!credentials.ok()) FlagErrorExit(kProgram, credentials.status().message());
  const bool tls = !tls_files.cert.empty();
  AuthOptions auth_options;
  auth_options.client_certificates = !tls_files.ca.empty();
  if (const std::string f = absl::GetFlag(FLAGS_job_secret_file); !f.empty()) {
    auto secret = ReadJobSecret(f);
    if (!secret.ok()) FlagErrorExit(kProgram, secret.status().message());
    auth_options.job_secret = *secret;
  }
  std::string host = absl::GetFlag(FLAGS_host);
  // Tokens in plaintext are only as private as the network: without TLS, loopback by default.
  if (host.empty()) host = tls ? "0.0.0.0" : "127.0.0.1";
  const bool loopback = host == "127.0.0.1" || host == "localhost" || host == "::1" || host == "[::1]";
  if (!tls && !loopback) {
    if (!absl::GetFlag(FLAGS_insecure)) {
      FlagErrorExit(kProgram, absl::StrCat("--host=", host,
                                           " without TLS needs --insecure (or give --tls-cert and "
                                           "--tls-key; deploy/make-certs.sh writes them)"));
    }
    std::cerr << kProgram << ": WARNING: listening on " << host
              << " without TLS (--insecure): traffic is plaintext"
              << (auth_options.enabled() ? "" : " and any client can act as any worker") << "\n";
  }
  Authenticator authenticator(auth_options);

  ParameterServerService service(coordinator->get(), &authenticator);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int selected_port = 0;
  const std::string address = absl::StrCat(host, ":", port);
  builder.AddListeningPort(address, *credentials, &selected_port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || selected_port == 0) {
    std::cerr << kProgram << ": cannot listen on " << address << "\n";
    return 1;
  }
  std::cout << "regtopk-server listening on " << host << ":" << selected_port
            << (tls ? (tls_files.ca.empty() ? " (TLS)" : " (mutual TLS)") : "")
            << (auth_options.job_secret.empty() ? "" : " (worker tokens)") << std::endl;
  std::unique_ptr<MetricsHttpExporter> exporter;
  if (const int metrics_port = absl::GetFlag(FLAGS_metrics_port); metrics_port >= 0) {
    auto e = MetricsHttpExporter::Start(host, metrics_port, &registry);
    if (!e.ok()) {
      std::cerr << kProgram << ": " << e.status().message() << "\n";
      (*coordinator)->Shutdown();
      server->Shutdown();
      return 1;
    }
    exporter = std::move(*e);
    std::cout << "regtopk-server metrics on http://" << host << ":"
              << exporter->port() << "/metrics" << std::endl;
  }

  const double linger = absl::GetFlag(FLAGS_linger_seconds);
  auto finished_at = std::chrono::steady_clock::time_point::max();
  bool job_failed = false;
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
    if (!job_failed && !(*coordinator)->GetStatus().job_status.ok()) {
      // The message was logged when the job failed; the waiting workers have it too. Linger
      // so that workers that come back late learn it from Join, then exit non-zero.
      job_failed = true;
      finished_at = std::chrono::steady_clock::now();
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
  if (checkpointing) std::cerr << kProgram << ": checkpoints flushed\n";
  return job_failed ? 1 : 0;
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
