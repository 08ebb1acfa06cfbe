// regtopk-ps-bench: round throughput of the parameter server over loopback gRPC.
// One in-process server, 4 client threads, d = 11.2 M (ResNet-18), densities 0.1 % and 1 %;
// each round every client pushes k random entries, waits for the aggregate and decodes it.
// Compared against the same server forced to send the aggregate dense. Prints a table.
// With --tls-dir=DIR (a deploy/make-certs.sh folder for 4 workers) it instead compares mutual
// TLS (server certificate, client certificates, the Authenticator on every call) with plaintext
// at density 0.1 %, alternating the two so that both see the same machine load.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "common/wire/chunking.h"
#include "common/wire/sparse_codec.h"
#include "server/auth.h"
#include "server/coordinator.h"
#include "server/service.h"
#include "tests/testing/random_sparse.h"
#include "client/server_client.h"

namespace regtopk {
namespace {

constexpr size_t kDim = 11200000;
constexpr uint32_t kWorkers = 4;

struct Result {
  double rounds_per_second;
  double up_bytes_per_round;    // all workers together
  double down_bytes_per_round;  // all workers together
  // The server's own phases, means over the timed rounds (RoundResult's timers).
  double aggregate_ms = 0, encode_ms = 0, step_ms = 0;
};

std::string RandomPush(size_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  const SparseVector v = RandomSparse(kDim, k, rng);
  std::string s;
  EncodeSparseSmallest(v, kDim, &s);
  return s;
}

// tls_dir empty: plaintext, no authentication; else mutual TLS with that folder's certificates.
Result Run(double density, bool force_dense, int rounds, const std::string& tls_dir = "",
           uint32_t num_workers = kWorkers, int threads = 1) {
  CoordinatorOptions o;
  o.job.num_workers = num_workers;
  o.threads = threads;
  // Written by the coordinator's thread, read after Shutdown has joined it.
  struct Phases {
    double aggregate = 0, encode = 0, step = 0;
  } phases;
  o.on_round_closed = [&phases](const RoundResult& r) {
    if (r.round == 0) return;  // the warm-up
    phases.aggregate += r.aggregate_seconds;
    phases.encode += r.encode_seconds;
    phases.step += r.step_seconds;
  };
  o.job.algorithm = Algorithm::kTopK;
  o.job.density = density;
  o.job.digest_every = 0;
  o.force_dense_aggregate = force_dense;
  auto coordinator = std::move(*Coordinator::Create(o));
  ServerTlsFiles tls;
  if (!tls_dir.empty()) {
    tls = {tls_dir + "/server.pem", tls_dir + "/server.key", tls_dir + "/ca.pem"};
  }
  auto credentials = MakeServerCredentials(tls);
  if (!credentials.ok()) {
    std::fprintf(stderr, "regtopk-ps-bench: %s\n", std::string(credentials.status().message()).c_str());
    std::exit(2);
  }
  AuthOptions auth;
  auth.client_certificates = !tls_dir.empty();
  Authenticator authenticator(auth);
  ParameterServerService service(coordinator.get(), &authenticator);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", *credentials, &port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  const size_t k = KFromDensity(density, kDim);
  std::vector<std::unique_ptr<ServerClient>> clients;
  std::vector<std::vector<std::string>> pushes(num_workers);
  for (uint32_t w = 0; w < num_workers; ++w) {
    GrpcClientOptions co;
    co.target = "127.0.0.1:" + std::to_string(port);
    if (!tls_dir.empty()) {
      co.tls_ca = tls_dir + "/ca.pem";
      co.tls_cert = tls_dir + "/worker-" + std::to_string(w) + ".pem";
      co.tls_key = tls_dir + "/worker-" + std::to_string(w) + ".key";
      co.tls_server_name = "localhost";
    }
    clients.push_back(std::move(*CreateGrpcServerClient(co)));
    if (!clients[w]->Join(w, 1, kDim, 0).ok()) std::abort();
    for (int r = 0; r < 4; ++r) pushes[w].push_back(RandomPush(k, 1000 * w + r));
  }
  if (!clients[0]->UploadParameters(0, std::vector<float>(kDim, 0.0f)).ok()) std::abort();
  auto round_trip = [&](int round) {
    std::vector<std::thread> threads;
    for (uint32_t w = 0; w < num_workers; ++w) {
      threads.emplace_back([&, w] {
        auto reply = clients[w]->Push(w, round, pushes[w][round % 4]);
        SparseVector agg;
        if (!reply.ok() || !DecodeSparse(reply->encoded, kDim, kDim, &agg).ok()) std::abort();
      });
    }
    for (auto& t : threads) t.join();
  };
  round_trip(0);  // warm-up: connections, allocations
  const uint64_t in0 = service.bytes_in(), out0 = service.bytes_out();
  const absl::Time start = absl::Now();
  for (int r = 1; r <= rounds; ++r) round_trip(r);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  Result result{rounds / seconds, double(service.bytes_in() - in0) / rounds,
                double(service.bytes_out() - out0) / rounds};
  coordinator->Shutdown();
  result.aggregate_ms = 1e3 * phases.aggregate / rounds;
  result.encode_ms = 1e3 * phases.encode / rounds;
  result.step_ms = 1e3 * phases.step / rounds;
  server->Shutdown();
  return result;
}

}  // namespace
}  // namespace regtopk

int main(int argc, char** argv) {
  using regtopk::Run;
  std::string tls_dir;
  bool sweep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf(
          "Usage: regtopk-ps-bench [--tls-dir=DIR]\n"
          "Round rate of the parameter server over loopback gRPC: one in-process server, %u "
          "client threads, d = %zu,\ndensities 0.1 %% and 1 %%, the adaptive aggregate against "
          "one forced dense; prints a table.\n"
          "--tls-dir=DIR: instead, mutual TLS (DIR from deploy/make-certs.sh DIR %u) against "
          "plaintext at 0.1 %%.\n"
          "--workers-sweep: instead, N = 2 ... 32 workers at 0.1 %%, the server's aggregate, "
          "encode and step times per round (each on 1 and 2 threads).\n",
          regtopk::kWorkers, regtopk::kDim, regtopk::kWorkers);
      return 0;
    }
    if (arg == "--workers-sweep") {
      sweep = true;
      continue;
    }
    if (arg.rfind("--tls-dir=", 0) == 0) {
      tls_dir = arg.substr(10);
      continue;
    }
    std::fprintf(stderr, "regtopk-ps-bench: unexpected argument '%s' (see --help)\n", argv[i]);
    return 2;
  }
  if (sweep) {
    std::printf("parameter server, d = %zu, density 0.1 %%, plain SGD; times are the server's, "
                "ms per round\n", regtopk::kDim);
    std::printf("%-4s %10s %12s %12s %14s %10s %12s %10s %10s %16s\n", "N", "rounds/s",
                "aggregate", "agg 2 thr", "agg / (N k) ns", "encode", "encode 2 thr", "step",
                "step 2 thr", "down MB/worker");
    for (uint32_t n : {2u, 4u, 8u, 16u, 32u}) {
      const auto one = Run(0.001, false, 30, "", n, 1);
      const auto two = Run(0.001, false, 30, "", n, 2);
      const double nk = double(n) * regtopk::KFromDensity(0.001, regtopk::kDim);
      std::printf("%-4u %10.2f %12.3f %12.3f %14.2f %10.3f %12.3f %10.3f %10.3f %16.3f\n", n,
                  one.rounds_per_second, one.aggregate_ms, two.aggregate_ms,
                  1e6 * one.aggregate_ms / nk, one.encode_ms, two.encode_ms, one.step_ms,
                  two.step_ms, one.down_bytes_per_round / n / 1e6);
    }
    return 0;
  }
  if (!tls_dir.empty()) {
    std::printf("parameter server, %u loopback workers, d = %zu, density 0.1 %%, plain SGD\n",
                regtopk::kWorkers, regtopk::kDim);
    std::printf("%-6s %18s %18s %12s\n", "pair", "plaintext rounds/s", "mutual TLS rounds/s",
                "TLS/plain");
    double plain_sum = 0, tls_sum = 0;
    for (int pair = 1; pair <= 4; ++pair) {
      // Alternate which goes first, so that neither always runs on a warmer machine.
      regtopk::Result plain, tls;
      if (pair % 2 == 1) {
        plain = Run(0.001, false, 100);
        tls = Run(0.001, false, 100, tls_dir);
      } else {
        tls = Run(0.001, false, 100, tls_dir);
        plain = Run(0.001, false, 100);
      }
      plain_sum += plain.rounds_per_second;
      tls_sum += tls.rounds_per_second;
      std::printf("%-6d %18.2f %18.2f %11.2fx\n", pair, plain.rounds_per_second,
                  tls.rounds_per_second, tls.rounds_per_second / plain.rounds_per_second);
    }
    std::printf("all    %18.2f %18.2f %11.2fx\n", plain_sum / 4, tls_sum / 4, tls_sum / plain_sum);
    return 0;
  }
  std::printf("parameter server, %u loopback workers, d = %zu, plain SGD\n", regtopk::kWorkers,
              regtopk::kDim);
  std::printf("%-8s %-16s %10s %16s %18s %14s\n", "density", "aggregate", "rounds/s", "up MB/round",
              "down MB/round", "dense/ours");
  for (double density : {0.001, 0.01}) {
    const auto ours = Run(density, false, density < 0.005 ? 40 : 20);
    const auto dense = Run(density, true, 8);
    std::printf("%-8g %-16s %10.2f %16.3f %18.3f %14s\n", density, "smallest (ours)",
                ours.rounds_per_second, ours.up_bytes_per_round / 1e6,
                ours.down_bytes_per_round / 1e6, "");
    std::printf("%-8g %-16s %10.2f %16.3f %18.3f %13.1fx\n", density, "forced dense",
                dense.rounds_per_second, dense.up_bytes_per_round / 1e6,
                dense.down_bytes_per_round / 1e6,
                dense.down_bytes_per_round / ours.down_bytes_per_round);
    std::printf("%-8g round-rate ratio ours/dense: %.1fx\n", density,
                ours.rounds_per_second / dense.rounds_per_second);
  }
  return 0;
}
