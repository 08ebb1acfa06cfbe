// DataSource: where a worker's training and test data come from, behind one seam for the
// built-in data sets (Fashion-MNIST, CIFAR-10, the paper's synthetic linear regression and toy
// problem) and the user's own (.npz files). No LibTorch.
//
// Two steps, because the split depends on the job: Load() reads what does not (files, so that
// a bad path fails before the worker joins), Split() then computes this worker's part for the
// job's number of workers and seed. Every worker computes the whole split and keeps its part;
// the partition digest (of every worker's indices) lets the server refuse a worker whose split
// differs. Thread-compatible.
#ifndef REGTOPK_WORKER_DATA_DATA_SOURCE_H_
#define REGTOPK_WORKER_DATA_DATA_SOURCE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/sim/problem.h"
#include "worker/data/dataset.h"

namespace regtopk {

struct DataSourceOptions {
  // fashion-mnist, cifar10, linreg, toy; or npz (then train_path / test_path).
  std::string dataset = "fashion-mnist";
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string train_path;  // npz: PATH.npz with x and y
  std::string test_path;   // npz: optional
  std::string partition = "iid";  // iid, dirichlet:ALPHA, quantity[:RATIO]
  size_t max_eval_examples = 0;   // 0 = the whole test set
};

// One worker's data for one job.
struct WorkerData {
  Dataset train;  // this worker's part only
  Dataset test;   // num_examples == 0 when there is none
  // Digest of the whole split; 0 when the data is not split by regtopk (synthetic per-worker
  // data).
  uint64_t partition_digest = 0;
  // Synthetic problems: the full batch every round, the paper's metric and the prescribed
  // initial parameters.
  bool full_batch = false;
  std::unique_ptr<Problem> problem;
  std::vector<float> initial;
};

class DataSource {
 public:
  virtual ~DataSource() = default;
  // Reads the files. Errors name the file.
  virtual absl::Status Load() = 0;
  // After Load: the shape of one example, the number of classes (0 = regression) and the
  // shape of one regression target ({} for a scalar).
  virtual std::vector<int64_t> example_shape() const = 0;
  virtual int num_classes() const = 0;
  virtual std::vector<int64_t> target_shape() const { return {}; }
  // After Load: worker `worker`'s data in a job of `num_workers` with `seed`. FAILED_PRECONDITION
  // when the job does not fit the data (e.g. the toy problem needs 2 workers).
  virtual absl::StatusOr<WorkerData> Split(int num_workers, uint32_t worker, uint64_t seed) = 0;
};

// INVALID_ARGUMENT naming the bad option (unknown data set, npz without a train path, bad
// partition).
absl::StatusOr<std::unique_ptr<DataSource>> CreateDataSource(const DataSourceOptions& options);

// The digest of a split: every worker's index list, in order.
uint64_t PartitionDigest(const std::vector<std::vector<size_t>>& parts);

}  // namespace regtopk

#endif  // REGTOPK_WORKER_DATA_DATA_SOURCE_H_
