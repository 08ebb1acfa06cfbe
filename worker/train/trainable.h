// TrainableModel: the seam between the training loop and a model, with the built-in models
// (models.h) and the user's TorchScript modules behind it. Parameters, in their order, form the
// flat vector the job trains; buffers (BatchNorm statistics) stay local to each worker and are
// written out with the parameters. Thread-compatible.
#ifndef REGTOPK_WORKER_TRAIN_TRAINABLE_H_
#define REGTOPK_WORKER_TRAIN_TRAINABLE_H_

#include <torch/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace regtopk {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

class TrainableModel {
 public:
  virtual ~TrainableModel() = default;
  // In a fixed order: the trained parameters as named_parameters() lists them (for a TorchScript
  // module, those with requires_grad: frozen ones stay out of the flat vector); buffers likewise.
  virtual NamedTensors Parameters() = 0;
  // Parameters a TorchScript module froze (requires_grad=False): never sent, never updated, and
  // saved with the model. Every worker loads them from the same file.
  virtual NamedTensors FrozenParameters() { return {}; }
  virtual NamedTensors Buffers() = 0;
  virtual torch::Tensor Forward(const torch::Tensor& x) = 0;
  // The module's own loss(output, target), when it defines one.
  virtual bool HasOwnLoss() { return false; }
  virtual torch::Tensor OwnLoss(const torch::Tensor& output, const torch::Tensor& target);
  virtual void SetTraining(bool on) = 0;
  virtual void To(torch::Device device) = 0;
};

// `name` is a built-in model (linear, logistic, mlp, cnn, resnet18) or a path ending in .pt to a
// module saved with torch.jit.script(...).save() or torch.jit.trace(...).save(). Errors name
// the file (one that does not load, or that has no parameters) or the bad shape.
absl::StatusOr<std::unique_ptr<TrainableModel>> CreateTrainableModel(
    const std::string& name, const std::vector<int64_t>& example_shape, int num_classes);

// "name:AxB;" per parameter: what the layout digest covers.
std::string LayoutString(TrainableModel& model);
int64_t NumParameters(TrainableModel& model);

// Copies between the parameters (on any device) and a flat float32 vector.
absl::Status CopyParametersTo(TrainableModel& model, absl::Span<float> flat);
void CopyParametersFrom(TrainableModel& model, absl::Span<const float> flat);
// The parameters' gradients, flat; zeros for a parameter without one.
void CopyGradientsTo(TrainableModel& model, absl::Span<float> flat);
// p -= lr * p.grad for every trained parameter with a gradient: one local step of the
// --local-steps loop, on the worker's own copy.
void LocalSgdStep(TrainableModel& model, double lr);

// The buffers' raw bytes, in Buffers() order (for the worker's saved state), and back: the
// restore is INVALID_ARGUMENT unless the bytes have exactly the buffers' sizes.
std::string SerializeBuffers(TrainableModel& model);
absl::Status RestoreBuffers(TrainableModel& model, absl::string_view bytes);

// Writes the parameters and buffers as a state_dict that Python reads with torch.load(path)
// and loads with module.load_state_dict(...): keys are the model's own names. Written to
// path.tmp and renamed, so a reader never sees half a file.
absl::Status SaveStateDict(TrainableModel& model, const std::string& path);

}  // namespace regtopk

#endif  // REGTOPK_WORKER_TRAIN_TRAINABLE_H_
