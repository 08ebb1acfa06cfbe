// The parts RunWorker is made of, each with its own tests: the metrics file (appended to on a
// resume), the loss and evaluation. Thread-compatible.
#ifndef REGTOPK_WORKER_TRAIN_TRAINER_PARTS_H_
#define REGTOPK_WORKER_TRAIN_TRAINER_PARTS_H_

#include <torch/types.h>

#include <fstream>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/server_client.h"
#include "worker/data/dataset.h"
#include "worker/train/trainable.h"

namespace regtopk {

// One JSON line per round. Opened once the worker knows whether it resumes: then lines are
// appended, after terminating a line that a killed process left unfinished.
class MetricsFile {
 public:
  explicit MetricsFile(std::string path) : path_(std::move(path)) {}
  // Before joining: fails fast (INVALID_ARGUMENT naming it) on an unwritable path, without
  // truncating a resumed run's file.
  absl::Status Probe() const;
  absl::Status Open(bool append);
  void Write(const std::string& line);  // line ends with '\n'
  // DATA_LOSS naming the file if a write failed.
  absl::Status Close();

 private:
  const std::string path_;
  std::ofstream out_;
};

// The training loss: "cross_entropy" (class labels), "mse" (float targets), or "" for the
// model's own loss() if it has one, else by the kind of target. INVALID_ARGUMENT for an unknown
// name or cross_entropy on float targets.
using LossFn = std::function<torch::Tensor(const torch::Tensor& output, const torch::Tensor& y)>;
absl::StatusOr<LossFn> ChooseLoss(const std::string& name, TrainableModel& model,
                                  bool regression);

// Mean loss over the test set, and accuracy (classification; NaN otherwise), in eval mode, in
// batches of 1000; the model is back in train mode after.
struct Evaluation {
  double loss = 0;
  double accuracy = 0;
};
Evaluation Evaluate(TrainableModel& model, const LossFn& loss, const torch::Tensor& x,
                    const torch::Tensor& y, bool classification);

// The data set as tensors: features {n, example...}; labels (int64) or targets (float32).
torch::Tensor FeaturesOf(const Dataset& d);
torch::Tensor TargetsOf(const Dataset& d);


}  // namespace regtopk

#endif  // REGTOPK_WORKER_TRAIN_TRAINER_PARTS_H_
