// The models regtopk trains: linear and logistic regression (the paper's synthetic problems),
// an MLP and a small CNN for 28x28 images, and ResNet-18 in its CIFAR variant (3x3 stem, no
// max-pool) for 32x32x3. Modules are thread-compatible, like any torch::nn::Module.
#ifndef REGTOPK_WORKER_TRAIN_MODELS_H_
#define REGTOPK_WORKER_TRAIN_MODELS_H_

#include <torch/nn/module.h>
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace regtopk {

class Model : public torch::nn::Module {
 public:
  // Logits (classification) or predictions (regression) for a batch shaped {B, example...}.
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
};

// "linear" (no bias, 1 output), "logistic" (no bias, 1 logit), "mlp", "cnn", "resnet18".
// INVALID_ARGUMENT for an unknown name or a shape the model does not take (e.g. cnn needs
// {1, 28, 28}; resnet18 needs {3, 32, 32}).
absl::StatusOr<std::shared_ptr<Model>> CreateModel(const std::string& name,
                                                   const std::vector<int64_t>& example_shape,
                                                   int num_classes);

}  // namespace regtopk

#endif  // REGTOPK_WORKER_TRAIN_MODELS_H_
