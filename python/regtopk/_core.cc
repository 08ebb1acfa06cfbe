// regtopk._core: the Python binding of the C++ worker session (sparsifier, codec, optimizer and
// gRPC client), so that a PyTorch script trains in a regtopk job with the same code as the C++
// worker: no second implementation. Takes and returns flat float32 NumPy buffers; does not
// link LibTorch (Debian's python3-torch does the model's side). Every blocking call releases
// the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/server_client.h"
#include "common/auth/worker_token.h"
#include "common/job_config.h"
#include "common/optim/optimizer.h"
#include "common/sim/problem.h"
#include "common/sparse/sparsifier.h"
#include "common/wire/digest.h"
#include "worker/worker_session.h"

namespace py = pybind11;

namespace regtopk {
namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// A failed status becomes a Python exception carrying its message: ValueError for bad input,
// TimeoutError, ConnectionError for an unreachable server, RuntimeError otherwise.
[[noreturn]] void Raise(const absl::Status& s) {
  const std::string m = std::string(absl::StatusCodeToString(s.code())) + ": " +
                        std::string(s.message());
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      throw py::value_error(m);
    case absl::StatusCode::kDeadlineExceeded:
      PyErr_SetString(PyExc_TimeoutError, m.c_str());
      throw py::error_already_set();
    case absl::StatusCode::kUnavailable:
      PyErr_SetString(PyExc_ConnectionError, m.c_str());
      throw py::error_already_set();
    default:
      throw std::runtime_error(m);
  }
}

template <typename T>
T OrRaise(absl::StatusOr<T> v) {
  if (!v.ok()) Raise(v.status());
  return std::move(*v);
}

py::dict ConfigDict(const JobConfig& c) {
  py::dict d;
  d["algorithm"] = std::string(AlgorithmName(c.algorithm));
  d["density"] = c.density;
  d["mu"] = c.mu;
  d["num_workers"] = c.num_workers;
  d["total_rounds"] = c.total_rounds;
  d["seed"] = c.seed;
  d["digest_every"] = c.digest_every;
  d["checkpoint_every"] = c.checkpoint_every;
  d["optimizer"] = std::string(OptimizerKindName(c.optimizer.kind));
  d["lr"] = c.optimizer.lr;
  d["momentum"] = c.optimizer.momentum;
  d["nesterov"] = c.optimizer.nesterov;
  d["weight_decay"] = c.optimizer.weight_decay;
  d["beta1"] = c.optimizer.beta1;
  d["beta2"] = c.optimizer.beta2;
  d["eps"] = c.optimizer.eps;
  d["lr_schedule"] = std::string(LrScheduleName(c.optimizer.schedule));
  d["warmup_rounds"] = c.optimizer.warmup_rounds;
  return d;
}

// Transport security and identity, as the C++ worker's --tls-* and --job-secret-file flags.
struct Security {
  std::string tls_ca, tls_cert, tls_key, tls_server_name, job_secret_file;
};

std::unique_ptr<ServerClient> Connect(const std::string& server, uint32_t worker_id,
                                      double rpc_timeout, double push_timeout,
                                      const Security& sec) {
  GrpcClientOptions co;
  co.target = server;
  co.worker_id = worker_id;
  co.tls_ca = sec.tls_ca;
  co.tls_cert = sec.tls_cert;
  co.tls_key = sec.tls_key;
  co.tls_server_name = sec.tls_server_name;
  if (!sec.job_secret_file.empty()) co.job_secret = OrRaise(ReadJobSecret(sec.job_secret_file));
  co.rpc_timeout = absl::Seconds(rpc_timeout);
  co.push_timeout = absl::Seconds(push_timeout);
  return OrRaise(CreateGrpcServerClient(co));
}

// One worker's session: owns its gRPC client.
class Session {
 public:
  Session(const std::string& server, uint32_t worker_id, FloatArray initial,
          const std::string& layout, uint64_t num_samples, const std::string& state_dir,
          bool allow_fresh_state, uint64_t partition_digest, double rpc_timeout,
          double push_timeout, double start_timeout, double reconnect_timeout, int threads,
          const Security& security) {
    if (initial.ndim() != 1 || initial.size() == 0) {
      throw py::value_error("initial parameters must be a non-empty flat float32 array");
    }
    client_ = Connect(server, worker_id, rpc_timeout, push_timeout, security);
    WorkerSessionOptions so;
    so.worker_id = worker_id;
    so.num_samples = num_samples;
    so.layout_digest = DigestBytes(layout);
    so.partition_digest = partition_digest;
    so.state_dir = state_dir;
    so.allow_fresh_state = allow_fresh_state;
    so.start_timeout = absl::Seconds(start_timeout);
    so.reconnect_timeout = absl::Seconds(reconnect_timeout);
    so.threads = threads;
    so.log = [worker_id](const std::string& line) {
      py::gil_scoped_acquire gil;
      py::print(absl::StrCat("regtopk worker ", worker_id, ": ", line),
                py::arg("file") = py::module_::import("sys").attr("stderr"));
    };
    std::vector<float> init(initial.data(), initial.data() + initial.size());
    absl::StatusOr<std::unique_ptr<WorkerSession>> s;
    {
      py::gil_scoped_release release;
      s = WorkerSession::Start(client_.get(), so, std::move(init));
    }
    session_ = OrRaise(std::move(s));
  }

  py::dict Step(FloatArray gradient) {
    if (gradient.ndim() != 1 || static_cast<size_t>(gradient.size()) != session_->dim()) {
      throw py::value_error(absl::StrCat("gradient must be a flat float32 array of ",
                                         session_->dim(), " entries, got ", gradient.size()));
    }
    absl::StatusOr<StepStats> st;
    {
      py::gil_scoped_release release;
      st = session_->Step(absl::MakeConstSpan(gradient.data(), gradient.size()));
    }
    const StepStats s = OrRaise(std::move(st));
    py::dict d;
    d["round"] = s.round;
    d["entries_sent"] = s.entries_sent;
    d["bytes_pushed"] = s.bytes_pushed;
    d["bytes_received"] = s.bytes_received;
    d["aggregate_nnz"] = s.aggregate_nnz;
    d["compress_seconds"] = s.compress_seconds;
    d["communicate_seconds"] = s.communicate_seconds;
    d["wait_seconds"] = s.wait_seconds;
    d["apply_seconds"] = s.apply_seconds;
    d["resynced"] = s.resynced;
    d["rolled_back"] = s.rolled_back;
    d["saved_state"] = s.saved_state;
    // The mask diagnostic (Top-k and RegTop-k; None otherwise): the fraction of this round's
    // picks plain Top-k would not have made, and of Top-k's picks that repeat last round's.
    d["not_topk"] = s.mask ? py::object(py::float_(s.mask->not_topk_fraction())) : py::none();
    d["topk_repeat"] = s.mask ? py::object(py::float_(s.mask->topk_repeat_fraction())) : py::none();
    return d;
  }

  // A read-only view of the replica, updated in place by every step (no copy); valid while the
  // session lives (the view keeps it alive).
  py::array Parameters(py::object self) {
    absl::Span<const float> p = session_->parameters();
    py::array a(py::dtype::of<float>(), {p.size()}, {sizeof(float)}, p.data(), self);
    py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
    return a;
  }

  uint64_t round() const { return session_->round(); }
  bool finished() const { return session_->finished(); }
  bool resumed() const { return session_->resumed(); }
  size_t dim() const { return session_->dim(); }
  uint64_t resyncs() const { return session_->resyncs(); }
  uint64_t rollbacks() const { return session_->rollbacks(); }
  float weight() const { return session_->weight(); }
  py::dict config() const { return ConfigDict(session_->config()); }
  // The job's learning rate for the round this worker computes next (the schedule applied).
  double learning_rate() const {
    return session_->config().optimizer.LearningRate(session_->round());
  }

 private:
  std::unique_ptr<ServerClient> client_;
  std::unique_ptr<WorkerSession> session_;
};

// The job's config without joining (num_samples = 0: a probe), waiting for the server.
py::dict Probe(const std::string& server, uint32_t worker_id, uint64_t dim,
               const std::string& layout, double rpc_timeout, double reconnect_timeout,
               const Security& security) {
  auto client = Connect(server, worker_id, rpc_timeout, rpc_timeout, security);
  WorkerSessionOptions so;
  so.worker_id = worker_id;
  so.layout_digest = DigestBytes(layout);
  so.reconnect_timeout = absl::Seconds(reconnect_timeout);
  absl::StatusOr<JoinReply> r;
  {
    py::gil_scoped_release release;
    r = WorkerSession::Probe(client.get(), so, dim);
  }
  return ConfigDict(OrRaise(std::move(r)).config);
}

class PyOptimizer {
 public:
  PyOptimizer(const std::string& kind, float lr, float momentum, bool nesterov,
              float weight_decay, float beta1, float beta2, float eps, size_t dim) {
    o_.kind = OrRaise(ParseOptimizerKind(kind));
    o_.lr = lr;
    o_.momentum = momentum;
    o_.nesterov = nesterov;
    o_.weight_decay = weight_decay;
    o_.beta1 = beta1;
    o_.beta2 = beta2;
    o_.eps = eps;
    if (absl::Status s = o_.Validate(); !s.ok()) Raise(s);
    opt_ = std::make_unique<Optimizer>(o_, dim);
    dim_ = dim;
  }
  void StepDense(py::array_t<float, py::array::c_style> params, FloatArray grad, uint64_t round) {
    if (static_cast<size_t>(params.size()) != dim_ || static_cast<size_t>(grad.size()) != dim_) {
      throw py::value_error(absl::StrCat("params and grad must have ", dim_, " entries"));
    }
    opt_->StepDense(absl::MakeSpan(params.mutable_data(), dim_),
                    absl::MakeConstSpan(grad.data(), dim_), round);
  }

 private:
  OptimizerOptions o_;
  std::unique_ptr<Optimizer> opt_;
  size_t dim_ = 0;
};

}  // namespace
}  // namespace regtopk

PYBIND11_MODULE(_core, m) {
  using namespace regtopk;
  m.doc() = "regtopk's C++ worker session for Python (see regtopk.torch)";
  py::class_<Security>(m, "Security")
      .def(py::init([](std::string ca, std::string cert, std::string key, std::string name,
                       std::string secret) {
             return Security{std::move(ca), std::move(cert), std::move(key), std::move(name),
                             std::move(secret)};
           }),
           py::arg("tls_ca") = "", py::arg("tls_cert") = "", py::arg("tls_key") = "",
           py::arg("tls_server_name") = "", py::arg("job_secret_file") = "");
  py::class_<Session>(m, "Session")
      .def(py::init<const std::string&, uint32_t, FloatArray, const std::string&, uint64_t,
                    const std::string&, bool, uint64_t, double, double, double, double, int,
                    const Security&>(),
           py::arg("server"), py::arg("worker_id"), py::arg("initial"), py::arg("layout"),
           py::arg("num_samples") = 1, py::arg("state_dir") = "",
           py::arg("allow_fresh_state") = false, py::arg("partition_digest") = 0,
           py::arg("rpc_timeout") = 30.0, py::arg("push_timeout") = 900.0,
           py::arg("start_timeout") = 300.0, py::arg("reconnect_timeout") = 300.0,
           py::arg("threads") = 1, py::arg("security") = Security{})
      .def("step", &Session::Step, py::arg("gradient"))
      .def("parameters", [](py::object self) { return self.cast<Session&>().Parameters(self); })
      .def_property_readonly("round", &Session::round)
      .def_property_readonly("finished", &Session::finished)
      .def_property_readonly("resumed", &Session::resumed)
      .def_property_readonly("dim", &Session::dim)
      .def_property_readonly("resyncs", &Session::resyncs)
      .def_property_readonly("rollbacks", &Session::rollbacks)
      .def_property_readonly("weight", &Session::weight)
      .def_property_readonly("config", &Session::config)
      .def_property_readonly("learning_rate", &Session::learning_rate);
  m.def("probe", &Probe, py::arg("server"), py::arg("worker_id"), py::arg("dim"),
        py::arg("layout"), py::arg("rpc_timeout") = 30.0, py::arg("reconnect_timeout") = 300.0,
        py::arg("security") = Security{},
        "The job's config (a probe join that registers nothing), waiting for the server.");
  m.def("digest_floats", [](FloatArray a) {
    return DigestFloats(absl::MakeConstSpan(a.data(), a.size()));
  });
  m.def("digest_bytes", [](const std::string& s) { return DigestBytes(s); });
  py::class_<PyOptimizer>(m, "Optimizer")
      .def(py::init<const std::string&, float, float, bool, float, float, float, float, size_t>(),
           py::arg("kind"), py::arg("lr"), py::arg("momentum") = 0.0f,
           py::arg("nesterov") = false, py::arg("weight_decay") = 0.0f,
           py::arg("beta1") = 0.9f, py::arg("beta2") = 0.999f, py::arg("eps") = 1e-8f,
           py::arg("dim"))
      .def("step_dense", &PyOptimizer::StepDense, py::arg("params"), py::arg("grad"),
           py::arg("round"));
  m.def(
      "linreg_data",
      [](int workers, uint64_t seed) {
        LinRegOptions lo;
        lo.workers = workers;
        lo.seed = seed;
        LinRegData d = OrRaise(MakeLinRegData(lo));
        py::list features, labels;
        for (int n = 0; n < workers; ++n) {
          features.append(py::array_t<float>({static_cast<py::ssize_t>(lo.samples_per_worker),
                                              static_cast<py::ssize_t>(lo.dim)},
                                             d.features[n].data()));
          labels.append(py::array_t<float>(d.labels[n].size(), d.labels[n].data()));
        }
        return py::make_tuple(features, labels, py::array_t<float>(d.initial.size(), d.initial.data()));
      },
      py::arg("workers"), py::arg("seed"),
      "The paper's synthetic linear regression (the C++ workers' --dataset=linreg): per-worker "
      "features and labels, and the prescribed initial parameters.");
}
