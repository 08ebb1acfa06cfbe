// RunWorker: a whole training worker. Loads its data (a DataSource), builds or loads the model
// (a TrainableModel), joins the server (which supplies the job config), and trains until the
// job's last round: forward and backward on a local batch, flatten the gradient, and hand it to
// a WorkerSession (sparsify, push, apply the aggregate). Blocking; the header is free of
// LibTorch.
#ifndef REGTOPK_WORKER_TRAIN_TRAINER_H_
#define REGTOPK_WORKER_TRAIN_TRAINER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "worker/data/data_source.h"

namespace regtopk {

struct TrainerOptions {
  std::string server;  // host:port
  uint32_t worker_id = 0;
  // mlp, cnn, resnet18 (images); linear (linreg); logistic (toy); or PATH.pt (TorchScript).
  std::string model = "mlp";
  // fashion-mnist, cifar10, linreg (the paper's synthetic linear regression; one data set per
  // worker), toy (the paper's 2-worker logistic regression), npz (train_data / test_data).
  std::string dataset = "fashion-mnist";
  std::string train_data, test_data;  // npz
  // cross_entropy, mse; empty = the module's own loss(), else by the kind of target.
  std::string loss;
  // Where the trained state_dict goes (end of job and checkpoint rounds); empty = nowhere.
  std::string save_model;
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  // iid, dirichlet:ALPHA, quantity[:RATIO] (ignored by the synthetic data sets).
  std::string partition = "iid";
  int batch_size = 64;           // ignored by the synthetic data sets (full batch)
  // The authors' loop: L - 1 local SGD steps (the job's learning rate for the round) on
  // successive mini-batches, then the gradient of the L-th mini-batch, taken at the locally
  // updated point, is what the round sends. The model is reset to the replica after the round,
  // so replicas stay identical to the server. 1 = one mini-batch per round.
  int local_steps = 1;
  std::string device = "auto";   // auto, cpu, cuda
  int eval_every = 50;           // rounds between evaluations; 0 = only at the end
  bool evaluate = false;         // evaluate on the test set (worker 0 by default in main)
  size_t max_eval_examples = 0;  // 0 = the whole test set
  std::string metrics_path;      // JSON lines, one per round; empty = none
  // Prometheus metrics on http://metrics_host:metrics_port/metrics; 0 picks a free port
  // (announced on stderr); -1 = off.
  int metrics_port = -1;
  std::string metrics_host = "0.0.0.0";
  uint64_t seed = 1;  // model initialisation and batch order
  absl::Duration rpc_timeout = absl::Seconds(30);
  absl::Duration push_timeout = absl::Minutes(15);
  absl::Duration start_timeout = absl::Minutes(5);
  // How long to keep trying to reach a server that is down or not yet started.
  absl::Duration reconnect_timeout = absl::Minutes(5);
  // Saved state before each checkpoint round (needed when the server checkpoints).
  std::string state_dir;
  // Join a running job without saved state (the run is then not bit-identical).
  bool allow_fresh_state = false;
  // Threads that sparsify each gradient (WorkerSessionOptions::threads), 1 to 256.
  int threads = 1;
  // A progress line on stderr every N rounds; 0 = none.
  int log_every = 100;
  // Transport security and identity (GrpcClientOptions): the CA that signs the server's
  // certificate, this worker's certificate and key (mutual TLS), the server's certificate name
  // when --server is an address it does not list, and the job secret's file (tokens).
  std::string tls_ca, tls_cert, tls_key, tls_server_name, job_secret_file;

  // INVALID_ARGUMENT naming the bad field.
  absl::Status Validate() const;
  DataSourceOptions SourceOptions() const;
};

// BatchOrder: the local batch of each round, as positions into this worker's `n` examples,
// min(batch, n) of them. A pure function of (seed, worker, round) through the project's own
// generator, so a worker that resumes from round r draws exactly the batches of an
// uninterrupted run, on any standard library. Each epoch of floor(n / batch) batches is a
// fresh permutation, computed once per epoch. Thread-compatible.
class BatchOrder {
 public:
  // Preconditions: n >= 1, batch >= 1.
  BatchOrder(uint64_t seed, uint32_t worker, int64_t n, int64_t batch);
  // Valid until the next call.
  const int64_t* Rows(uint64_t round);
  int64_t batch() const { return batch_; }

 private:
  const uint64_t seed_;
  const uint32_t worker_;
  const int64_t n_, batch_;
  const uint64_t per_epoch_;
  uint64_t epoch_ = UINT64_MAX;  // whose permutation perm_ holds
  std::vector<int64_t> perm_;
};

// Runs the worker to the end of the job. Errors name what failed: a missing or corrupt data
// file, an unreachable server (within the deadlines), a refused join, a non-finite gradient.
absl::Status RunWorker(const TrainerOptions& options);

}  // namespace regtopk

#endif  // REGTOPK_WORKER_TRAIN_TRAINER_H_
