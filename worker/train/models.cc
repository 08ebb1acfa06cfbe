#include "worker/train/models.h"

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace regtopk {
namespace {

namespace F = torch::nn::functional;

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

class LinearModel final : public Model {
 public:
  explicit LinearModel(int64_t in)
      : fc_(register_module("fc", torch::nn::Linear(torch::nn::LinearOptions(in, 1).bias(false)))) {
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    return fc_(x.reshape({x.size(0), -1})).squeeze(1);
  }

 private:
  torch::nn::Linear fc_;
};

class Mlp final : public Model {
 public:
  Mlp(int64_t in, int classes)
      : fc1_(register_module("fc1", torch::nn::Linear(in, 256))),
        fc2_(register_module("fc2", torch::nn::Linear(256, 128))),
        fc3_(register_module("fc3", torch::nn::Linear(128, classes))) {}
  torch::Tensor forward(const torch::Tensor& x) override {
    torch::Tensor h = F::relu(fc1_(x.reshape({x.size(0), -1})));
    return fc3_(F::relu(fc2_(h)));
  }

 private:
  torch::nn::Linear fc1_, fc2_, fc3_;
};

class Cnn final : public Model {
 public:
  explicit Cnn(int classes)
      : conv1_(register_module("conv1",
                               torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 5).padding(2)))),
        conv2_(register_module("conv2",
                               torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 5).padding(2)))),
        fc1_(register_module("fc1", torch::nn::Linear(64 * 7 * 7, 128))),
        fc2_(register_module("fc2", torch::nn::Linear(128, classes))) {}
  torch::Tensor forward(const torch::Tensor& x) override {
    torch::Tensor h = F::max_pool2d(F::relu(conv1_(x)), F::MaxPool2dFuncOptions(2));
    h = F::max_pool2d(F::relu(conv2_(h)), F::MaxPool2dFuncOptions(2));
    return fc2_(F::relu(fc1_(h.reshape({h.size(0), -1}))));
  }

 private:
  torch::nn::Conv2d conv1_, conv2_;
  torch::nn::Linear fc1_, fc2_;
};

torch::nn::Conv2d Conv3x3(int64_t in, int64_t out, int64_t stride) {
  return torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1).bias(false));
}

class BasicBlock final : public torch::nn::Module {
 public:
  BasicBlock(int64_t in, int64_t out, int64_t stride)
      : conv1_(register_module("conv1", Conv3x3(in, out, stride))),
        bn1_(register_module("bn1", torch::nn::BatchNorm2d(out))),
        conv2_(register_module("conv2", Conv3x3(out, out, 1))),
        bn2_(register_module("bn2", torch::nn::BatchNorm2d(out))) {
    if (stride != 1 || in != out) {
      shortcut_ = register_module(
          "shortcut",
          torch::nn::Sequential(
              torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1).stride(stride).bias(false)),
              torch::nn::BatchNorm2d(out)));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = F::relu(bn1_(conv1_(x)));
    h = bn2_(conv2_(h));
    return F::relu(h + (shortcut_ ? shortcut_->forward(x) : x));
  }

 private:
  torch::nn::Conv2d conv1_, conv2_;
  torch::nn::BatchNorm2d bn1_, bn2_;
  torch::nn::Sequential shortcut_{nullptr};
};

class ResNet18 final : public Model {
 public:
  explicit ResNet18(int classes)
      : stem_(register_module("stem", Conv3x3(3, 64, 1))),
        bn_(register_module("bn", torch::nn::BatchNorm2d(64))),
        fc_(register_module("fc", torch::nn::Linear(512, classes))) {
    int64_t in = 64;
    int index = 0;
    for (int64_t out : {64, 128, 256, 512}) {
      for (int b = 0; b < 2; ++b) {
        const int64_t stride = (b == 0 && out != 64) ? 2 : 1;
        blocks_.push_back(register_module(absl::StrCat("block", index++),
                                          std::make_shared<BasicBlock>(in, out, stride)));
        in = out;
      }
    }
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    torch::Tensor h = F::relu(bn_(stem_(x)));
    for (auto& block : blocks_) h = block->forward(h);
    h = F::adaptive_avg_pool2d(h, F::AdaptiveAvgPool2dFuncOptions(1));
    return fc_(h.reshape({h.size(0), -1}));
  }

 private:
  torch::nn::Conv2d stem_;
  torch::nn::BatchNorm2d bn_;
  torch::nn::Linear fc_;
  std::vector<std::shared_ptr<BasicBlock>> blocks_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<Model>> CreateModel(const std::string& name,
                                                   const std::vector<int64_t>& shape,
                                                   int num_classes) {
  const std::string got = absl::StrJoin(shape, "x");
  if (name == "linear" || name == "logistic")
    return std::shared_ptr<Model>(new LinearModel(Numel(shape)));
  if (name == "mlp") {
    if (num_classes < 2) return absl::InvalidArgumentError("mlp needs a classification data set");
    return std::shared_ptr<Model>(new Mlp(Numel(shape), num_classes));
  }
  if (name == "cnn") {
    if (shape != std::vector<int64_t>{1, 28, 28} || num_classes < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("cnn takes 1x28x28 images with class labels, the data set has ", got));
    }
    return std::shared_ptr<Model>(new Cnn(num_classes));
  }
  if (name == "resnet18") {
    if (shape != std::vector<int64_t>{3, 32, 32} || num_classes < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("resnet18 takes 3x32x32 images with class labels, the data set has ", got));
    }
    return std::shared_ptr<Model>(new ResNet18(num_classes));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model '", name, "'; expected linear, logistic, mlp, cnn or resnet18"));
}

}  // namespace regtopk
