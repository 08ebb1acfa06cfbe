#include "worker/train/trainer.h"

#include <torch/cuda.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/server_client.h"
#include "common/auth/worker_token.h"
#include "common/metrics/http_exporter.h"
#include "common/metrics/registry.h"
#include "common/parallel/task_pool.h"
#include "common/random/splitmix64.h"
#include "common/status/status_macros.h"
#include "common/wire/digest.h"
#include "worker/data/data_source.h"
#include "worker/data/partition.h"
#include "worker/train/trainable.h"
#include "worker/train/trainer_parts.h"
#include "worker/worker_metrics.h"
#include "worker/worker_session.h"

namespace regtopk {

absl::Status TrainerOptions::Validate() const {
  if (server.empty()) return absl::InvalidArgumentError("--server is required (host:port)");
  if (batch_size < 1) return absl::InvalidArgumentError("--batch-size must be >= 1");
  if (eval_every < 0) return absl::InvalidArgumentError("--eval-every must be >= 0");
  REGTOPK_RETURN_IF_ERROR(ValidateThreadCount(threads, "--threads"));
  if (device != "auto" && device != "cpu" && device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be auto, cpu or cuda, got '", device, "'"));
  }
  if (!loss.empty() && loss != "cross_entropy" && loss != "mse") {
    return absl::InvalidArgumentError(
        absl::StrCat("--loss must be cross_entropy or mse, got '", loss, "'"));
  }
  if ((!train_data.empty() || !test_data.empty()) && dataset != "npz") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--train-data and --test-data are the npz data set's; --dataset is '", dataset, "'"));
  }
  REGTOPK_RETURN_IF_ERROR(CreateDataSource(SourceOptions()).status());
  return absl::OkStatus();
}

DataSourceOptions TrainerOptions::SourceOptions() const {
  DataSourceOptions d;
  d.dataset = dataset;
  d.data_dir = data_dir;
  d.train_path = train_data;
  d.test_path = test_data;
  d.partition = partition;
  d.max_eval_examples = max_eval_examples;
  return d;
}

namespace {

// LibTorch reports bad input by throwing c10::Error: every torch call of the worker runs inside
// this one conversion, so nothing throws past RunWorker.
template <typename F>
absl::Status TorchCall(absl::string_view what, F&& f) {
  try {
    return f();
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(what, ": LibTorch error: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  }
}

float ToFloat(const torch::Tensor& t) { return t.item<float>(); }

}  // namespace

absl::Status MetricsFile::Probe() const {
  if (path_.empty()) return absl::OkStatus();
  std::ofstream probe(path_, std::ios::app);
  if (!probe) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open --metrics file '", path_, "' for writing"));
  }
  return absl::OkStatus();
}

absl::Status MetricsFile::Open(bool append) {
  if (path_.empty()) return absl::OkStatus();
  bool partial_line = false;
  if (append) {
    // A process killed mid-line leaves it unterminated: end it, so that the lines appended
    // from now on stay whole (readers skip the broken one).
    std::ifstream in(path_, std::ios::binary | std::ios::ate);
    if (in && in.tellg() > 0) {
      in.seekg(-1, std::ios::end);
      partial_line = in.get() != '\n';
    }
  }
  out_.open(path_, append ? std::ios::app : std::ios::trunc);
  if (partial_line) out_ << "\n";
  if (!out_) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot open --metrics file '", path_, "' for writing"));
  }
  return absl::OkStatus();
}

void MetricsFile::Write(const std::string& line) {
  if (!out_.is_open()) return;
  out_ << line;
  out_.flush();
}

absl::Status MetricsFile::Close() {
  if (out_.is_open() && !out_) {
    return absl::DataLossError(absl::StrCat("writing '", path_, "' failed"));
  }
  out_.close();
  return absl::OkStatus();
}

absl::StatusOr<LossFn> ChooseLoss(const std::string& name, TrainableModel& model,
                                  bool regression) {
  if (name.empty() && model.HasOwnLoss()) {
    return LossFn([&model](const torch::Tensor& out, const torch::Tensor& y) {
      return model.OwnLoss(out, y);
    });
  }
  const std::string chosen = name.empty() ? (regression ? "mse" : "cross_entropy") : name;
  if (chosen == "mse") {
    return LossFn([](const torch::Tensor& out, const torch::Tensor& y) {
      return (out - y).pow(2).mean();
    });
  }
  if (chosen == "cross_entropy") {
    if (regression) {
      return absl::InvalidArgumentError(
          "--loss=cross_entropy needs int64 class labels; this data has float targets (use "
          "--loss=mse)");
    }
    return LossFn([](const torch::Tensor& out, const torch::Tensor& y) {
      return torch::nn::functional::cross_entropy(out, y);
    });
  }
  if (chosen == "logistic") {  // the toy problem's: labels in {-1, 1}
    return LossFn([](const torch::Tensor& out, const torch::Tensor& y) {
      return torch::nn::functional::softplus(-out * y).mean();
    });
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--loss must be cross_entropy or mse, got '", name, "'"));
}

Evaluation Evaluate(TrainableModel& model, const LossFn& loss, const torch::Tensor& x,
                    const torch::Tensor& y, bool classification) {
  torch::NoGradGuard no_grad;
  model.SetTraining(false);
  double total_loss = 0, correct = 0;
  const int64_t n = x.size(0);
  for (int64_t start = 0; start < n; start += 1000) {
    const int64_t end = std::min(n, start + 1000);
    torch::Tensor out = model.Forward(x.slice(0, start, end));
    torch::Tensor yb = y.slice(0, start, end);
    total_loss += ToFloat(loss(out, yb)) * static_cast<double>(end - start);
    if (classification) correct += out.argmax(1).eq(yb).sum().item<int64_t>();
  }
  model.SetTraining(true);
  Evaluation e;
  e.loss = total_loss / static_cast<double>(n);
  e.accuracy = classification ? correct / static_cast<double>(n) : NAN;
  return e;
}

torch::Tensor FeaturesOf(const Dataset& d) {
  std::vector<int64_t> shape{static_cast<int64_t>(d.num_examples)};
  shape.insert(shape.end(), d.example_shape.begin(), d.example_shape.end());
  return torch::from_blob(const_cast<float*>(d.features.data()), shape, torch::kFloat).clone();
}

torch::Tensor TargetsOf(const Dataset& d) {
  const int64_t n = static_cast<int64_t>(d.num_examples);
  if (!d.is_regression()) {
    return torch::from_blob(const_cast<int64_t*>(d.labels.data()), {n}, torch::kLong).clone();
  }
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), d.target_shape.begin(), d.target_shape.end());
  return torch::from_blob(const_cast<float*>(d.targets.data()), shape, torch::kFloat).clone();
}

BatchOrder::BatchOrder(uint64_t seed, uint32_t worker, int64_t n, int64_t batch)
    : seed_(seed), worker_(worker), n_(n), batch_(std::min(batch, n)),
      per_epoch_(static_cast<uint64_t>(n / std::min(batch, n))), perm_(n) {}

const int64_t* BatchOrder::Rows(uint64_t round) {
  const uint64_t epoch = round / per_epoch_;
  if (epoch != epoch_) {
    // Fisher-Yates with SplitMix64, seeded by (seed, worker, epoch).
    uint64_t state =
        seed_ * 0x9e3779b97f4a7c15ull ^ (uint64_t{worker_} << 40) ^ (epoch * 0xd1b54a32d192ed03ull);
    std::iota(perm_.begin(), perm_.end(), 0);
    for (int64_t i = n_ - 1; i > 0; --i) {
      std::swap(perm_[i], perm_[UniformBelow(state, static_cast<uint64_t>(i) + 1)]);
    }
    epoch_ = epoch;
  }
  return perm_.data() + (round % per_epoch_) * batch_;
}

absl::Status RunWorker(const TrainerOptions& o) {
  REGTOPK_RETURN_IF_ERROR(o.Validate());
  GrpcClientOptions co;
  co.target = o.server;
  co.rpc_timeout = o.rpc_timeout;
  co.push_timeout = o.push_timeout;
  co.tls_ca = o.tls_ca;
  co.tls_cert = o.tls_cert;
  co.tls_key = o.tls_key;
  co.tls_server_name = o.tls_server_name;
  co.worker_id = o.worker_id;
  if (!o.job_secret_file.empty()) {
    REGTOPK_ASSIGN_OR_RETURN(co.job_secret, ReadJobSecret(o.job_secret_file));
  }
  REGTOPK_ASSIGN_OR_RETURN(std::unique_ptr<ServerClient> client, CreateGrpcServerClient(co));
  MetricsFile metrics(o.metrics_path);
  REGTOPK_RETURN_IF_ERROR(metrics.Probe());
  auto log = [&o](const std::string& line) {
    std::cerr << "regtopk-worker " << o.worker_id << ": " << line << std::endl;
  };

  MetricsRegistry registry;
  WorkerMetrics prometheus(&registry);
  std::unique_ptr<MetricsHttpExporter> exporter;
  if (o.metrics_port >= 0) {
    REGTOPK_ASSIGN_OR_RETURN(exporter,
                             MetricsHttpExporter::Start(o.metrics_host, o.metrics_port, &registry));
    log(absl::StrCat("metrics on http://", o.metrics_host, ":", exporter->port(), "/metrics"));
  }

  return TorchCall("worker", [&]() -> absl::Status {
    torch::manual_seed(o.seed);
    torch::Device device(torch::kCPU);
    if (o.device == "cuda" || (o.device == "auto" && torch::cuda::is_available())) {
      if (!torch::cuda::is_available()) {
        return absl::FailedPreconditionError(
            "--device=cuda, but this LibTorch build has no CUDA or no GPU is visible");
      }
      device = torch::Device(torch::kCUDA);
    }

    // Files are read before joining, so that a bad path fails before the server counts this
    // worker in.
    REGTOPK_ASSIGN_OR_RETURN(std::unique_ptr<DataSource> source,
                             CreateDataSource(o.SourceOptions()));
    REGTOPK_RETURN_IF_ERROR(source->Load());
    const bool synthetic = o.dataset == "linreg" || o.dataset == "toy";
    if (synthetic && o.model != (o.dataset == "linreg" ? "linear" : "logistic")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--dataset=", o.dataset,
                       " needs --model=", o.dataset == "linreg" ? "linear" : "logistic"));
    }
    REGTOPK_ASSIGN_OR_RETURN(
        std::unique_ptr<TrainableModel> model,
        CreateTrainableModel(o.model, source->example_shape(), source->num_classes()));
    const bool regression = source->num_classes() == 0;
    REGTOPK_ASSIGN_OR_RETURN(LossFn loss_of,
                             ChooseLoss(o.dataset == "toy" ? "logistic" : o.loss, *model,
                                        regression));
    const int64_t dim = NumParameters(*model);
    const uint64_t layout_digest = DigestBytes(LayoutString(*model));

    WorkerSessionOptions so;
    so.worker_id = o.worker_id;
    so.layout_digest = layout_digest;
    so.start_timeout = o.start_timeout;
    so.reconnect_timeout = o.reconnect_timeout;
    so.state_dir = o.state_dir;
    so.allow_fresh_state = o.allow_fresh_state;
    so.threads = o.threads;
    so.log = log;
    // The job's size first (the data split depends on the number of workers).
    REGTOPK_ASSIGN_OR_RETURN(JoinReply job, WorkerSession::Probe(client.get(), so, dim));
    REGTOPK_ASSIGN_OR_RETURN(WorkerData data,
                             source->Split(static_cast<int>(job.config.num_workers), o.worker_id,
                                           job.config.seed));
    source.reset();  // the whole training set is no longer needed
    const torch::Tensor train_x = FeaturesOf(data.train), train_y = TargetsOf(data.train);
    torch::Tensor test_x, test_y;
    if (data.test.num_examples > 0) {
      test_x = FeaturesOf(data.test).to(device);
      test_y = TargetsOf(data.test).to(device);
    }
    model->To(device);

    std::vector<float> initial(dim);
    if (!data.initial.empty()) {
      initial = data.initial;
    } else {
      REGTOPK_RETURN_IF_ERROR(CopyParametersTo(*model, absl::MakeSpan(initial)));
    }
    so.num_samples = data.train.num_examples;
    so.partition_digest = data.partition_digest;
    // BatchNorm statistics and other buffers: saved with the worker's state, so that a resumed
    // worker's model (and what --save-model writes) is the uninterrupted run's.
    // The trainer runs round R's forward pass (which updates BatchNorm's statistics) before the
    // session saves the state before round R, so the buffers are captured before that pass.
    std::string buffers_before_round;
    so.save_extra = [&buffers_before_round] { return buffers_before_round; };
    so.restore_extra = [&model](absl::string_view bytes) { return RestoreBuffers(*model, bytes); };
    REGTOPK_ASSIGN_OR_RETURN(std::unique_ptr<WorkerSession> session,
                             WorkerSession::Start(client.get(), so, std::move(initial)));
    REGTOPK_RETURN_IF_ERROR(metrics.Open(session->resumed()));
    auto save_model = [&](uint64_t round) -> absl::Status {
      if (o.save_model.empty()) return absl::OkStatus();
      REGTOPK_RETURN_IF_ERROR(SaveStateDict(*model, o.save_model));
      log(absl::StrCat("saved the model after round ", round, " to ", o.save_model));
      return absl::OkStatus();
    };

    CopyParametersFrom(*model, session->parameters());
    const int64_t local_n = train_x.size(0);
    std::vector<float> grad(dim);
    uint64_t bytes_pushed_total = 0;
    BatchOrder batches(o.seed, o.worker_id, local_n, o.batch_size);
    model->SetTraining(true);
    const uint64_t local_steps = static_cast<uint64_t>(o.local_steps);
    while (!session->finished()) {
      const absl::Time t0 = absl::Now();
      if (session->config().IsCheckpointRound(session->round()) && !o.state_dir.empty()) {
        buffers_before_round = SerializeBuffers(*model);
      }
      // Mini-batch s of round r is the batch order's step r * L + s: a function of the round
      // alone, so a resumed or rolled-back worker sees the same batches.
      double train_loss = 0;
      for (uint64_t s = 0; s < local_steps; ++s) {
        torch::Tensor x = train_x, y = train_y;
        if (!data.full_batch) {
          torch::Tensor idx = torch::from_blob(
              const_cast<int64_t*>(batches.Rows(session->round() * local_steps + s)),
              {batches.batch()}, torch::kLong);
          x = train_x.index_select(0, idx);
          y = train_y.index_select(0, idx);
        }
        x = x.to(device);
        y = y.to(device);
        for (auto& [name, p] : model->Parameters()) p.mutable_grad() = torch::Tensor();
        torch::Tensor loss = loss_of(model->Forward(x), y);
        loss.backward();
        if (s + 1 < local_steps) {
          LocalSgdStep(*model, session->config().optimizer.LearningRate(session->round()));
        } else {
          train_loss = ToFloat(loss);
        }
      }
      CopyGradientsTo(*model, absl::MakeSpan(grad));
      const absl::Time t1 = absl::Now();
      REGTOPK_ASSIGN_OR_RETURN(StepStats stats, session->Step(grad));
      const absl::Time t2 = absl::Now();
      CopyParametersFrom(*model, session->parameters());
      if (stats.rolled_back) {
        // Nothing completed: the session is back at a committed round; redo from there.
        metrics.Write(
            absl::StrFormat("{\"rollback_to\":%d,\"worker\":%d}\n", stats.round, o.worker_id));
        continue;
      }
      bytes_pushed_total += stats.bytes_pushed;
      if (o.log_every > 0 && (stats.round + 1) % o.log_every == 0) {
        log(absl::StrFormat("round %d%s, loss %.4f, sent %.2f MB", stats.round + 1,
                            session->config().total_rounds
                                ? absl::StrCat("/", session->config().total_rounds)
                                : std::string(),
                            train_loss, bytes_pushed_total / 1e6));
      }
      const double compute_seconds =
          absl::ToDoubleSeconds(t1 - t0) + absl::ToDoubleSeconds(absl::Now() - t2);

      std::string line = absl::StrFormat(
          "{\"round\":%d,\"worker\":%d,\"train_loss\":%.6g,\"bytes_pushed\":%d,"
          "\"bytes_received\":%d,\"dense_bytes\":%d,\"entries_sent\":%d,\"compute_s\":%.6f,"
          "\"sparsify_s\":%.6f,\"communicate_s\":%.6f,\"wait_s\":%.6f,\"apply_s\":%.6f",
          stats.round, o.worker_id, train_loss, stats.bytes_pushed, stats.bytes_received, 4 * dim,
          stats.entries_sent, compute_seconds, stats.compress_seconds, stats.communicate_seconds,
          stats.wait_seconds, stats.apply_seconds);
      if (stats.mask) {
        absl::StrAppendFormat(&line, ",\"not_topk\":%.6g,\"topk_repeat\":%.6g",
                              stats.mask->not_topk_fraction(),
                              stats.mask->topk_repeat_fraction());
      }
      prometheus.RecordRound(stats, compute_seconds, train_loss, dim);
      if (data.problem) {
        absl::StrAppendFormat(&line, ",\"%s\":%.9g", data.problem->metric_name(),
                              data.problem->Metric(session->parameters()));
      }
      const bool last = session->finished();
      if (o.evaluate && test_x.defined() &&
          ((o.eval_every > 0 && (stats.round + 1) % o.eval_every == 0) || last)) {
        const Evaluation e = Evaluate(*model, loss_of, test_x, test_y, !regression);
        absl::StrAppendFormat(&line, ",\"test_loss\":%.6g", e.loss);
        if (!regression) {
          prometheus.RecordAccuracy(e.accuracy);
          absl::StrAppendFormat(&line, ",\"test_accuracy\":%.6g", e.accuracy);
        }
      }
      if (last) {
        absl::StrAppendFormat(&line, ",\"final\":true,\"param_digest\":\"%016x\"",
                              DigestFloats(session->parameters()));
      }
      if (stats.resynced) absl::StrAppend(&line, ",\"resynced\":true");
      line += "}\n";
      metrics.Write(line);
      if (last || session->config().IsCheckpointRound(stats.round + 1)) {
        REGTOPK_RETURN_IF_ERROR(save_model(stats.round + 1));
      }
    }
    return metrics.Close();
  });
}

}  // namespace regtopk
