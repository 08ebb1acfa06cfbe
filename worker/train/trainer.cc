#include "worker/train/trainer.h"

#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/metrics/http_exporter.h"
#include "common/metrics/registry.h"
#include "common/random/splitmix64.h"
#include "common/sim/problem.h"
#include "common/status/status_macros.h"
#include "common/wire/digest.h"
#include "worker/data/dataset.h"
#include "worker/data/partition.h"
#include "client/server_client.h"
#include "worker/train/models.h"
#include "worker/worker_metrics.h"
#include "worker/worker_session.h"

namespace regtopk {

absl::Status TrainerOptions::Validate() const {
  if (server.empty()) return absl::InvalidArgumentError("--server is required (host:port)");
  if (batch_size < 1) return absl::InvalidArgumentError("--batch-size must be >= 1");
  if (eval_every < 0) return absl::InvalidArgumentError("--eval-every must be >= 0");
  if (device != "auto" && device != "cpu" && device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be auto, cpu or cuda, got '", device, "'"));
  }
  if (dataset != "fashion-mnist" && dataset != "cifar10" && dataset != "linreg" &&
      dataset != "toy") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dataset must be fashion-mnist, cifar10, linreg or toy, got '", dataset, "'"));
  }
  REGTOPK_RETURN_IF_ERROR(ParsePartition(partition).status());
  return absl::OkStatus();
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

// The training data of this worker and the test data, as tensors on the CPU.
struct WorkerData {
  torch::Tensor train_x, train_y;  // this worker's part only
  torch::Tensor test_x, test_y;    // empty for the synthetic problems
  std::vector<int64_t> example_shape;
  int num_classes = 0;
  bool full_batch = false;
  std::unique_ptr<Problem> problem;  // synthetic: computes the paper's metric
  std::vector<float> initial;        // synthetic: the prescribed initial parameters
};

torch::Tensor FeaturesTensor(const Dataset& d, const std::vector<size_t>& rows) {
  std::vector<int64_t> shape{static_cast<int64_t>(rows.size())};
  shape.insert(shape.end(), d.example_shape.begin(), d.example_shape.end());
  torch::Tensor t = torch::empty(shape, torch::kFloat);
  const size_t e = d.example_size();
  float* out = t.data_ptr<float>();
  for (size_t i = 0; i < rows.size(); ++i) {
    std::memcpy(out + i * e, d.features.data() + rows[i] * e, e * sizeof(float));
  }
  return t;
}

torch::Tensor LabelsTensor(const Dataset& d, const std::vector<size_t>& rows) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(rows.size())}, torch::kLong);
  int64_t* out = t.data_ptr<int64_t>();
  for (size_t i = 0; i < rows.size(); ++i) out[i] = d.labels[rows[i]];
  return t;
}

std::vector<size_t> AllRows(size_t n) {
  std::vector<size_t> r(n);
  std::iota(r.begin(), r.end(), 0);
  return r;
}

absl::StatusOr<Dataset> LoadImages(const TrainerOptions& o, bool train) {
  return o.dataset == "cifar10" ? LoadCifar10(o.data_dir, train)
                                : LoadFashionMnist(o.data_dir, train);
}

float ToFloat(const torch::Tensor& t) { return t.item<float>(); }

}  // namespace

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
  REGTOPK_ASSIGN_OR_RETURN(std::unique_ptr<ServerClient> client, CreateGrpcServerClient(co));

  std::ofstream metrics;
  // Opened once the session knows whether it resumes (then lines are appended).
  auto open_metrics = [&](bool append) -> absl::Status {
    if (o.metrics_path.empty()) return absl::OkStatus();
    bool partial_line = false;
    if (append) {
      // A process killed mid-line leaves it unterminated: end it, so that the lines appended
      // from now on stay whole (readers skip the broken one).
      std::ifstream in(o.metrics_path, std::ios::binary | std::ios::ate);
      if (in && in.tellg() > 0) {
        in.seekg(-1, std::ios::end);
        partial_line = in.get() != '\n';
      }
    }
    metrics.open(o.metrics_path, append ? std::ios::app : std::ios::trunc);
    if (partial_line) metrics << "\n";
    if (!metrics) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot open --metrics file '", o.metrics_path, "' for writing"));
    }
    return absl::OkStatus();
  };
  if (!o.metrics_path.empty()) {
    // Fail fast on an unwritable path, before joining, without truncating a resumed run's file.
    std::ofstream probe(o.metrics_path, std::ios::app);
    if (!probe) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot open --metrics file '", o.metrics_path, "' for writing"));
    }
  }
  auto log = [&o](const std::string& line) {
    std::cerr << "regtopk-worker " << o.worker_id << ": " << line << std::endl;
  };

  MetricsRegistry registry;
  WorkerMetrics prometheus(&registry);
  std::unique_ptr<MetricsHttpExporter> exporter;
  if (o.metrics_port >= 0) {
    REGTOPK_ASSIGN_OR_RETURN(exporter,
                             MetricsHttpExporter::Start(o.metrics_host, o.metrics_port, &registry));
    std::cerr << "regtopk-worker " << o.worker_id << ": metrics on http://" << o.metrics_host << ":"
              << exporter->port() << "/metrics" << std::endl;
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

    // Data that does not depend on the job: images are loaded before joining so that a bad
    // --data-dir fails fast, before the server counts this worker in.
    Dataset train_set, test_set;
    WorkerData data;
    const bool synthetic = o.dataset == "linreg" || o.dataset == "toy";
    if (!synthetic) {
      REGTOPK_ASSIGN_OR_RETURN(train_set, LoadImages(o, true));
      REGTOPK_ASSIGN_OR_RETURN(test_set, LoadImages(o, false));
      data.example_shape = train_set.example_shape;
      data.num_classes = train_set.num_classes;
    } else {
      data.example_shape = {o.dataset == "linreg" ? 100 : 2};
      data.full_batch = true;
    }

    REGTOPK_ASSIGN_OR_RETURN(std::shared_ptr<Model> model,
                             CreateModel(o.model, data.example_shape, data.num_classes));
    if (synthetic && o.model != (o.dataset == "linreg" ? "linear" : "logistic")) {
      return absl::InvalidArgumentError(
          absl::StrCat("--dataset=", o.dataset,
                       " needs --model=", o.dataset == "linreg" ? "linear" : "logistic"));
    }
    std::vector<torch::Tensor> params = model->parameters();
    std::string layout;
    int64_t dim = 0;
    for (const auto& named : model->named_parameters()) {
      absl::StrAppend(&layout, named.key(), ":", absl::StrJoin(named.value().sizes(), "x"), ";");
      dim += named.value().numel();
    }
    const uint64_t layout_digest = DigestBytes(layout);

    // Learn the job's size first (a probe, retried while the server is not up yet): the
    // synthetic data and the partition depend on the number of workers.
    JoinReply join;
    {
      const absl::Time start = absl::Now();
      absl::Time next_log = start + absl::Seconds(10);
      absl::Duration backoff = absl::Milliseconds(100);
      while (true) {
        absl::StatusOr<JoinReply> probe = client->Join(o.worker_id, 0, dim, layout_digest);
        if (probe.ok()) {
          join = std::move(*probe);
          break;
        }
        const absl::StatusCode code = probe.status().code();
        if ((code != absl::StatusCode::kUnavailable && code != absl::StatusCode::kDeadlineExceeded &&
             code != absl::StatusCode::kCancelled) ||
            absl::Now() - start > o.reconnect_timeout) {
          return probe.status();
        }
        if (absl::Now() >= next_log) {
          log(absl::StrCat("waiting for the server at ", o.server, ": ", probe.status().message()));
          next_log = absl::Now() + absl::Seconds(10);
        }
        absl::SleepFor(backoff);
        backoff = std::min(backoff * 2, absl::Seconds(2));
      }
    }
    const int n_workers = static_cast<int>(join.config.num_workers);
    const uint64_t data_seed = join.config.seed;
    size_t num_samples = 0;
    if (o.dataset == "linreg") {
      LinRegOptions lo;
      lo.workers = n_workers;
      lo.seed = data_seed;
      REGTOPK_ASSIGN_OR_RETURN(LinRegData lr, MakeLinRegData(lo));
      REGTOPK_ASSIGN_OR_RETURN(data.problem, MakeLinRegProblem(lo));
      const int64_t m = static_cast<int64_t>(lo.samples_per_worker);
      data.train_x =
          torch::from_blob(lr.features[o.worker_id].data(), {m, 100}, torch::kFloat).clone();
      data.train_y = torch::from_blob(lr.labels[o.worker_id].data(), {m}, torch::kFloat).clone();
      data.initial = lr.initial;
      num_samples = m;
    } else if (o.dataset == "toy") {
      if (n_workers != 2)
        return absl::FailedPreconditionError("the toy problem needs a 2-worker job");
      data.problem = MakeToyProblem();
      const float x0 = o.worker_id == 0 ? 100.0f : -100.0f;
      data.train_x = torch::tensor({x0, 1.0f}).reshape({1, 2});
      data.train_y = torch::ones({1});
      data.initial = data.problem->InitialTheta();
      num_samples = 1;
    } else {
      REGTOPK_ASSIGN_OR_RETURN(PartitionSpec spec, ParsePartition(o.partition));
      REGTOPK_ASSIGN_OR_RETURN(auto parts, Partition(train_set.labels, train_set.num_classes, spec,
                                                     n_workers, data_seed));
      const std::vector<size_t>& mine = parts[o.worker_id];
      data.train_x = FeaturesTensor(train_set, mine);
      data.train_y = LabelsTensor(train_set, mine);
      std::vector<size_t> test_rows = AllRows(test_set.num_examples);
      if (o.max_eval_examples > 0 && o.max_eval_examples < test_rows.size()) {
        test_rows.resize(o.max_eval_examples);
      }
      data.test_x = FeaturesTensor(test_set, test_rows).to(device);
      data.test_y = LabelsTensor(test_set, test_rows).to(device);
      num_samples = mine.size();
      train_set = Dataset();
    }
    model->to(device);

    std::vector<float> initial(dim);
    if (!data.initial.empty()) {
      initial = data.initial;
    } else {
      int64_t at = 0;
      for (const auto& p : params) {
        torch::Tensor cpu = p.detach().to(torch::kCPU).contiguous();
        std::memcpy(initial.data() + at, cpu.data_ptr<float>(), cpu.numel() * sizeof(float));
        at += cpu.numel();
      }
    }
    WorkerSessionOptions so;
    so.worker_id = o.worker_id;
    so.num_samples = num_samples;
    so.layout_digest = layout_digest;
    so.start_timeout = o.start_timeout;
    so.reconnect_timeout = o.reconnect_timeout;
    so.state_dir = o.state_dir;
    so.allow_fresh_state = o.allow_fresh_state;
    so.log = log;
    REGTOPK_ASSIGN_OR_RETURN(std::unique_ptr<WorkerSession> session,
                             WorkerSession::Start(client.get(), so, std::move(initial)));
    REGTOPK_RETURN_IF_ERROR(open_metrics(session->resumed()));

    auto load_parameters = [&] {
      torch::NoGradGuard no_grad;
      const float* src = session->parameters().data();
      int64_t at = 0;
      for (auto& p : params) {
        p.copy_(torch::from_blob(const_cast<float*>(src + at), p.sizes(), torch::kFloat));
        at += p.numel();
      }
    };
    auto loss_of = [&](const torch::Tensor& out, const torch::Tensor& y) {
      if (o.dataset == "linreg") return (out - y).pow(2).mean();
      if (o.dataset == "toy") return torch::nn::functional::softplus(-out * y).mean();
      return torch::nn::functional::cross_entropy(out, y);
    };
    auto evaluate = [&](double* loss, double* accuracy) {
      torch::NoGradGuard no_grad;
      model->eval();
      double total_loss = 0, correct = 0;
      const int64_t n = data.test_x.size(0);
      for (int64_t start = 0; start < n; start += 1000) {
        const int64_t end = std::min(n, start + 1000);
        torch::Tensor out = model->forward(data.test_x.slice(0, start, end));
        torch::Tensor y = data.test_y.slice(0, start, end);
        total_loss += ToFloat(torch::nn::functional::cross_entropy(
            out, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)));
        correct += out.argmax(1).eq(y).sum().item<int64_t>();
      }
      model->train();
      *loss = total_loss / n;
      *accuracy = correct / n;
    };

    load_parameters();
    const int64_t local_n = data.train_x.size(0);
    std::vector<float> grad(dim);
    uint64_t bytes_pushed_total = 0;
    BatchOrder batches(o.seed, o.worker_id, local_n, o.batch_size);
    model->train();
    while (!session->finished()) {
      const absl::Time t0 = absl::Now();
      torch::Tensor x, y;
      if (data.full_batch) {
        x = data.train_x;
        y = data.train_y;
      } else {
        torch::Tensor idx = torch::from_blob(const_cast<int64_t*>(batches.Rows(session->round())),
                                             {batches.batch()}, torch::kLong);
        x = data.train_x.index_select(0, idx);
        y = data.train_y.index_select(0, idx);
      }
      x = x.to(device);
      y = y.to(device);
      model->zero_grad();
      torch::Tensor loss = loss_of(model->forward(x), y);
      loss.backward();
      {
        int64_t at = 0;
        for (const auto& p : params) {
          torch::Tensor g = p.grad().defined() ? p.grad() : torch::zeros_like(p);
          torch::Tensor cpu = g.to(torch::kCPU).contiguous();
          std::memcpy(grad.data() + at, cpu.data_ptr<float>(), cpu.numel() * sizeof(float));
          at += cpu.numel();
        }
      }
      const double train_loss = ToFloat(loss);
      const absl::Time t1 = absl::Now();
      REGTOPK_ASSIGN_OR_RETURN(StepStats stats, session->Step(grad));
      const absl::Time t2 = absl::Now();
      load_parameters();
      if (stats.rolled_back) {
        // Nothing completed: the session is back at a committed round; redo from there.
        if (metrics.is_open()) {
          metrics << absl::StrFormat("{\"rollback_to\":%d,\"worker\":%d}\n", stats.round, o.worker_id);
          metrics.flush();
        }
        continue;
      }
      bytes_pushed_total += stats.bytes_pushed;
      if (o.log_every > 0 && (stats.round + 1) % o.log_every == 0) {
        log(absl::StrFormat("round %d%s, loss %.4f, sent %.2f MB", stats.round + 1,
                            session->config().total_rounds
                                ? absl::StrCat("/", session->config().total_rounds)
                                : std::string(),
                            ToFloat(loss), bytes_pushed_total / 1e6));
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
      prometheus.RecordRound(stats, compute_seconds, train_loss, dim);
      if (data.problem) {
        absl::StrAppendFormat(&line, ",\"%s\":%.9g", data.problem->metric_name(),
                              data.problem->Metric(session->parameters()));
      }
      const bool last = session->finished();
      if (o.evaluate && data.test_x.defined() &&
          ((o.eval_every > 0 && (stats.round + 1) % o.eval_every == 0) || last)) {
        double test_loss, accuracy;
        evaluate(&test_loss, &accuracy);
        prometheus.RecordAccuracy(accuracy);
        absl::StrAppendFormat(&line, ",\"test_loss\":%.6g,\"test_accuracy\":%.6g", test_loss,
                              accuracy);
      }
      if (last) {
        absl::StrAppendFormat(&line, ",\"final\":true,\"param_digest\":\"%016x\"",
                              DigestFloats(session->parameters()));
      }
      if (stats.resynced) absl::StrAppend(&line, ",\"resynced\":true");
      line += "}\n";
      if (metrics.is_open()) {
        metrics << line;
        metrics.flush();
      }
    }
    if (metrics.is_open() && !metrics) {
      return absl::DataLossError(absl::StrCat("writing '", o.metrics_path, "' failed"));
    }
    return absl::OkStatus();
  });
}

}  // namespace regtopk
