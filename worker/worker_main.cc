// regtopk-worker: one training worker of a regtopk job.
#include <cstdlib>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/cli/flags.h"
#include "worker/train/trainer.h"

ABSL_FLAG(std::string, server, "", "parameter server address, host:port (required)");
ABSL_FLAG(int, worker_id, 0,
          "this worker's id, 0 .. workers-1; when neither this flag nor REGTOPK_WORKER_ID is set, "
          "JOB_COMPLETION_INDEX (a Kubernetes Indexed Job's index) gives it");
ABSL_FLAG(std::string, model, "mlp",
          "a TorchScript module saved by torch.jit.script/trace (PATH.pt), or a built-in model: "
          "mlp or cnn (28x28 images), resnet18 (32x32x3), linear (linreg), logistic (toy)");
ABSL_FLAG(std::string, dataset, "fashion-mnist",
          "fashion-mnist, cifar10, linreg (the paper's synthetic regression), toy, or npz (the "
          "default when --train-data is given)");
ABSL_FLAG(std::string, train_data, "",
          "the user's training data: PATH.npz with arrays x (float32, samples first) and y "
          "(int64 labels or float32 targets), as numpy.savez(PATH, x=x, y=y) writes it");
ABSL_FLAG(std::string, test_data, "", "the user's test data, PATH.npz like --train-data");
ABSL_FLAG(std::string, loss, "",
          "cross_entropy or mse; default: the TorchScript module's own loss(output, target) if it "
          "has one, else cross_entropy for labels and mse for float targets");
ABSL_FLAG(std::string, save_model, "",
          "write the trained model here (a state_dict for torch.load) at the end and at every "
          "checkpoint round");
ABSL_FLAG(std::string, data_dir, "/usr/share/datasets/fashion-mnist",
          "folder with the data set's files (IDX .gz for fashion-mnist, .bin for cifar10)");
ABSL_FLAG(std::string, partition, "iid",
          "how the training set is split across workers: iid, dirichlet:ALPHA (label skew) or "
          "quantity[:RATIO] (size skew, largest/smallest share)");
ABSL_FLAG(int, batch_size, 64, "examples per local batch (synthetic data sets: full batch)");
ABSL_FLAG(int, local_steps, 1,
          "mini-batches per round, the RegTop-k authors' loop: L-1 local SGD steps at the job's "
          "learning rate, then the gradient of the L-th mini-batch is sent; the model is reset to "
          "the replica after each round");
ABSL_FLAG(std::string, device, "auto", "auto (CUDA when available), cpu or cuda");
ABSL_FLAG(int, eval_every, 50, "evaluate on the test set every N rounds (and at the end)");
ABSL_FLAG(std::string, evaluate, "auto", "evaluate on the test set: auto (worker 0 only), yes, no");
ABSL_FLAG(int, max_eval_examples, 0, "evaluate on at most this many test examples; 0 = all");
ABSL_FLAG(std::string, metrics, "", "write one JSON line per round to this file");
ABSL_FLAG(int, metrics_port, -1,
          "serve Prometheus metrics on http://0.0.0.0:PORT/metrics; 0 = a free port (printed on "
          "stderr); -1 = off");
ABSL_FLAG(uint64_t, seed, 1, "seed of the model initialisation and the batch order");
ABSL_FLAG(double, rpc_timeout_seconds, 30, "deadline of join/status calls, in seconds");
ABSL_FLAG(double, push_timeout_seconds, 900,
          "deadline of one round's push-and-wait, in seconds (covers the slowest worker; keep it "
          "above the server's --round-timeout-seconds, which names a dead peer)");
ABSL_FLAG(double, start_timeout_seconds, 300,
          "how long to wait for the other workers and the initial parameters, in seconds");
ABSL_FLAG(double, reconnect_timeout_seconds, 300,
          "how long to keep trying to reach a server that is down or not started yet, in seconds");
ABSL_FLAG(std::string, state_dir, "",
          "save this worker's state (error feedback, RegTop-k history, optimizer) here before "
          "each checkpoint round, and resume from it after a restart");
ABSL_FLAG(bool, allow_fresh_state, false,
          "join a running job without saved state (zero error feedback, pulled parameters); the "
          "run is then no longer bit-identical to an uninterrupted one");
ABSL_FLAG(int, threads, 1,
          "threads that sparsify each gradient and step the replica, 1 to 256 (speed only: what "
          "is sent and the replica are the same bit for bit for any number)");
ABSL_FLAG(int, log_every, 100, "print a progress line on stderr every N rounds; 0 = never");
ABSL_FLAG(std::string, tls_ca, "",
          "TLS: the CA (PEM) that signs the server's certificate (deploy/make-certs.sh: ca.pem)");
ABSL_FLAG(std::string, tls_cert, "",
          "mutual TLS: this worker's certificate (PEM, CN=worker-N: worker-N.pem)");
ABSL_FLAG(std::string, tls_key, "", "mutual TLS: this worker's private key (worker-N.key)");
ABSL_FLAG(std::string, tls_server_name, "",
          "the name in the server's certificate, when --server is an address it does not list");
ABSL_FLAG(std::string, job_secret_file, "",
          "the job's secret (the server's --job-secret-file): proves this worker's id");

int main(int argc, char** argv) {
  constexpr char kProgram[] = "regtopk-worker";
  regtopk::ParseFlagsOrExit(
      argc, argv, kProgram,
      "regtopk-worker: trains with LibTorch and exchanges sparsified gradients with a "
      "regtopk-server.\nExample: regtopk-worker --server=10.0.0.1:50051 --worker-id=0 "
      "--model=mlp --dataset=fashion-mnist --partition=dirichlet:0.5 --metrics=w0.jsonl");
  regtopk::TrainerOptions o;
  o.server = absl::GetFlag(FLAGS_server);
  int id = absl::GetFlag(FLAGS_worker_id);
  if (!regtopk::FlagWasSet("worker_id")) {
    if (const char* index = std::getenv("JOB_COMPLETION_INDEX"); index != nullptr) {
      if (!absl::SimpleAtoi(index, &id)) {
        regtopk::FlagErrorExit(kProgram, absl::StrCat("JOB_COMPLETION_INDEX='", index,
                                                      "' is not a worker id"));
      }
      std::cerr << kProgram << ": worker id " << id << " from JOB_COMPLETION_INDEX\n";
    }
  }
  if (id < 0) regtopk::FlagErrorExit(kProgram, "--worker-id must be >= 0");
  o.worker_id = static_cast<uint32_t>(id);
  o.model = absl::GetFlag(FLAGS_model);
  o.dataset = absl::GetFlag(FLAGS_dataset);
  o.train_data = absl::GetFlag(FLAGS_train_data);
  o.test_data = absl::GetFlag(FLAGS_test_data);
  if (!o.train_data.empty() && !regtopk::FlagWasSet("dataset")) o.dataset = "npz";
  o.loss = absl::GetFlag(FLAGS_loss);
  o.save_model = absl::GetFlag(FLAGS_save_model);
  o.data_dir = absl::GetFlag(FLAGS_data_dir);
  o.partition = absl::GetFlag(FLAGS_partition);
  o.batch_size = absl::GetFlag(FLAGS_batch_size);
  o.local_steps = absl::GetFlag(FLAGS_local_steps);
  if (o.local_steps < 1) regtopk::FlagErrorExit(kProgram, "--local-steps must be >= 1");
  o.device = absl::GetFlag(FLAGS_device);
  o.eval_every = absl::GetFlag(FLAGS_eval_every);
  const std::string evaluate = absl::GetFlag(FLAGS_evaluate);
  if (evaluate != "auto" && evaluate != "yes" && evaluate != "no") {
    regtopk::FlagErrorExit(kProgram, "--evaluate must be auto, yes or no");
  }
  o.evaluate = evaluate == "yes" || (evaluate == "auto" && id == 0);
  const int max_eval = absl::GetFlag(FLAGS_max_eval_examples);
  if (max_eval < 0) regtopk::FlagErrorExit(kProgram, "--max-eval-examples must be >= 0");
  o.max_eval_examples = static_cast<size_t>(max_eval);
  o.metrics_path = absl::GetFlag(FLAGS_metrics);
  o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (o.metrics_port < -1 || o.metrics_port > 65535) {
    regtopk::FlagErrorExit(kProgram, "--metrics-port must be -1 (off) or in [0, 65535]");
  }
  o.seed = absl::GetFlag(FLAGS_seed);
  for (double t :
       {absl::GetFlag(FLAGS_rpc_timeout_seconds), absl::GetFlag(FLAGS_push_timeout_seconds),
        absl::GetFlag(FLAGS_start_timeout_seconds), absl::GetFlag(FLAGS_reconnect_timeout_seconds)}) {
    if (!(t > 0)) regtopk::FlagErrorExit(kProgram, "timeouts must be > 0 seconds");
  }
  o.rpc_timeout = absl::Seconds(absl::GetFlag(FLAGS_rpc_timeout_seconds));
  o.push_timeout = absl::Seconds(absl::GetFlag(FLAGS_push_timeout_seconds));
  o.start_timeout = absl::Seconds(absl::GetFlag(FLAGS_start_timeout_seconds));
  o.reconnect_timeout = absl::Seconds(absl::GetFlag(FLAGS_reconnect_timeout_seconds));
  o.state_dir = absl::GetFlag(FLAGS_state_dir);
  o.allow_fresh_state = absl::GetFlag(FLAGS_allow_fresh_state);
  o.log_every = absl::GetFlag(FLAGS_log_every);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.tls_ca = absl::GetFlag(FLAGS_tls_ca);
  o.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key = absl::GetFlag(FLAGS_tls_key);
  o.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  o.job_secret_file = absl::GetFlag(FLAGS_job_secret_file);
  if (o.log_every < 0) regtopk::FlagErrorExit(kProgram, "--log-every must be >= 0");
  if (absl::Status s = o.Validate(); !s.ok()) regtopk::FlagErrorExit(kProgram, s.message());
  absl::Status s = regtopk::RunWorker(o);
  if (!s.ok()) {
    std::cerr << kProgram << " " << id << ": " << s.message() << "\n";
    return 1;
  }
  return 0;
}
