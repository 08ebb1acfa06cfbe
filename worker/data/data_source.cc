#include "worker/data/data_source.h"

#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status/status_macros.h"
#include "common/wire/digest.h"
#include "worker/data/npz.h"
#include "worker/data/partition.h"

namespace regtopk {
namespace {

// The rows `rows` of `d` (features and labels or targets), in that order.
Dataset Subset(const Dataset& d, const std::vector<size_t>& rows) {
  Dataset out;
  out.example_shape = d.example_shape;
  out.num_classes = d.num_classes;
  out.target_shape = d.target_shape;
  out.num_examples = rows.size();
  const size_t e = d.example_size();
  out.features.resize(rows.size() * e);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::memcpy(out.features.data() + i * e, d.features.data() + rows[i] * e, e * sizeof(float));
  }
  if (!d.labels.empty()) {
    out.labels.resize(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) out.labels[i] = d.labels[rows[i]];
  }
  if (!d.targets.empty()) {
    const size_t t = d.targets.size() / d.num_examples;
    out.targets.resize(rows.size() * t);
    for (size_t i = 0; i < rows.size(); ++i) {
      std::memcpy(out.targets.data() + i * t, d.targets.data() + rows[i] * t, t * sizeof(float));
    }
  }
  return out;
}

// A labelled data set read from files (IDX, CIFAR-10 binary, .npz), split by Partition().
class FileDataSource final : public DataSource {
 public:
  explicit FileDataSource(const DataSourceOptions& o) : o_(o) {}

  absl::Status Load() override {
    if (o_.dataset == "npz") {
      REGTOPK_ASSIGN_OR_RETURN(train_, LoadNpzDataset(o_.train_path));
      if (!o_.test_path.empty()) {
        REGTOPK_ASSIGN_OR_RETURN(test_, LoadNpzDataset(o_.test_path));
        if (test_.example_shape != train_.example_shape ||
            test_.is_regression() != train_.is_regression() ||
            test_.target_shape != train_.target_shape) {
          return absl::InvalidArgumentError(absl::StrCat(
              "--test-data '", o_.test_path, "' (examples of shape (",
              absl::StrJoin(test_.example_shape, ", "), "), ",
              test_.is_regression() ? "float targets" : "int labels",
              ") does not match --train-data '", o_.train_path, "' (shape (",
              absl::StrJoin(train_.example_shape, ", "), "), ",
              train_.is_regression() ? "float targets" : "int labels", ")"));
        }
        const int classes = std::max(train_.num_classes, test_.num_classes);
        train_.num_classes = test_.num_classes = classes;
      }
    } else if (o_.dataset == "cifar10") {
      REGTOPK_ASSIGN_OR_RETURN(train_, LoadCifar10(o_.data_dir, true));
      REGTOPK_ASSIGN_OR_RETURN(test_, LoadCifar10(o_.data_dir, false));
    } else {
      REGTOPK_ASSIGN_OR_RETURN(train_, LoadFashionMnist(o_.data_dir, true));
      REGTOPK_ASSIGN_OR_RETURN(test_, LoadFashionMnist(o_.data_dir, false));
    }
    if (o_.max_eval_examples > 0 && o_.max_eval_examples < test_.num_examples) {
      std::vector<size_t> rows(o_.max_eval_examples);
      std::iota(rows.begin(), rows.end(), 0);
      test_ = Subset(test_, rows);
    }
    return absl::OkStatus();
  }

  std::vector<int64_t> example_shape() const override { return train_.example_shape; }
  int num_classes() const override { return train_.num_classes; }
  std::vector<int64_t> target_shape() const override { return train_.target_shape; }

  absl::StatusOr<WorkerData> Split(int num_workers, uint32_t worker, uint64_t seed) override {
    REGTOPK_ASSIGN_OR_RETURN(PartitionSpec spec, ParsePartition(o_.partition));
    std::vector<int64_t> labels = train_.labels;
    int classes = train_.num_classes;
    if (train_.is_regression()) {
      if (spec.kind == PartitionSpec::Kind::kDirichlet) {
        return absl::InvalidArgumentError(
            "--partition=dirichlet needs class labels; this data has float targets");
      }
      labels.assign(train_.num_examples, 0);
      classes = 1;
    }
    REGTOPK_ASSIGN_OR_RETURN(auto parts, Partition(labels, classes, spec, num_workers, seed));
    WorkerData w;
    w.partition_digest = PartitionDigest(parts);
    w.train = Subset(train_, parts[worker]);
    w.test = test_;
    return w;
  }

 private:
  const DataSourceOptions o_;
  Dataset train_, test_;
};

// The paper's synthetic problems: each worker generates its own data from the job's seed.
class SyntheticDataSource final : public DataSource {
 public:
  explicit SyntheticDataSource(const DataSourceOptions& o) : linreg_(o.dataset == "linreg") {}

  absl::Status Load() override { return absl::OkStatus(); }
  std::vector<int64_t> example_shape() const override { return {linreg_ ? 100 : 2}; }
  int num_classes() const override { return 0; }

  absl::StatusOr<WorkerData> Split(int num_workers, uint32_t worker, uint64_t seed) override {
    WorkerData w;
    w.full_batch = true;
    w.train.example_shape = example_shape();
    if (linreg_) {
      LinRegOptions lo;
      lo.workers = num_workers;
      lo.seed = seed;
      REGTOPK_ASSIGN_OR_RETURN(LinRegData lr, MakeLinRegData(lo));
      REGTOPK_ASSIGN_OR_RETURN(w.problem, MakeLinRegProblem(lo));
      w.train.num_examples = lo.samples_per_worker;
      w.train.features = std::move(lr.features[worker]);
      w.train.targets = std::move(lr.labels[worker]);
      w.initial = lr.initial;
    } else {
      if (num_workers != 2) {
        return absl::FailedPreconditionError("the toy problem needs a 2-worker job");
      }
      w.problem = MakeToyProblem();
      w.train.num_examples = 1;
      w.train.features = {worker == 0 ? 100.0f : -100.0f, 1.0f};
      w.train.targets = {1.0f};
      w.initial = w.problem->InitialTheta();
    }
    return w;
  }

 private:
  const bool linreg_;
};

}  // namespace

uint64_t PartitionDigest(const std::vector<std::vector<size_t>>& parts) {
  StreamingDigest d;
  for (const auto& p : parts) {
    const uint64_t n = p.size();
    d.Update(absl::string_view(reinterpret_cast<const char*>(&n), sizeof(n)));
    for (size_t i : p) {
      const uint64_t v = i;
      d.Update(absl::string_view(reinterpret_cast<const char*>(&v), sizeof(v)));
    }
  }
  return d.Finish();
}

absl::StatusOr<std::unique_ptr<DataSource>> CreateDataSource(const DataSourceOptions& o) {
  REGTOPK_RETURN_IF_ERROR(ParsePartition(o.partition).status());
  if (o.dataset == "linreg" || o.dataset == "toy") {
    return std::unique_ptr<DataSource>(new SyntheticDataSource(o));
  }
  if (o.dataset == "npz") {
    if (o.train_path.empty()) {
      return absl::InvalidArgumentError("--dataset=npz needs --train-data=PATH.npz");
    }
  } else if (o.dataset != "fashion-mnist" && o.dataset != "cifar10") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--dataset must be fashion-mnist, cifar10, linreg, toy or npz, got '", o.dataset, "'"));
  }
  return std::unique_ptr<DataSource>(new FileDataSource(o));
}

}  // namespace regtopk
