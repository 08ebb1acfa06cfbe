#include "worker/train/trainable.h"

#include <torch/csrc/jit/serialization/import.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/script.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint/state_file.h"
#include "worker/train/models.h"

namespace regtopk {
namespace {

class BuiltInModel final : public TrainableModel {
 public:
  explicit BuiltInModel(std::shared_ptr<Model> m) : m_(std::move(m)) {}
  NamedTensors Parameters() override {
    NamedTensors out;
    for (const auto& p : m_->named_parameters()) out.emplace_back(p.key(), p.value());
    return out;
  }
  NamedTensors Buffers() override {
    NamedTensors out;
    for (const auto& b : m_->named_buffers()) out.emplace_back(b.key(), b.value());
    return out;
  }
  torch::Tensor Forward(const torch::Tensor& x) override { return m_->forward(x); }
  void SetTraining(bool on) override { m_->train(on); }
  void To(torch::Device device) override { m_->to(device); }

 private:
  std::shared_ptr<Model> m_;
};

class ScriptedModel final : public TrainableModel {
 public:
  explicit ScriptedModel(torch::jit::Module m) : m_(std::move(m)) {
    has_loss_ = m_.find_method("loss").has_value();
  }
  NamedTensors Parameters() override { return Named(/*trained=*/true); }
  NamedTensors FrozenParameters() override { return Named(/*trained=*/false); }
  NamedTensors Buffers() override {
    NamedTensors out;
    for (const auto& b : m_.named_buffers(/*recurse=*/true)) out.emplace_back(b.name, b.value);
    return out;
  }
  torch::Tensor Forward(const torch::Tensor& x) override { return m_.forward({x}).toTensor(); }
  bool HasOwnLoss() override { return has_loss_; }
  torch::Tensor OwnLoss(const torch::Tensor& output, const torch::Tensor& target) override {
    return m_.get_method("loss")({output, target}).toTensor();
  }
  void SetTraining(bool on) override { m_.train(on); }
  void To(torch::Device device) override { m_.to(device); }

 private:
  NamedTensors Named(bool trained) {
    NamedTensors out;
    for (const auto& p : m_.named_parameters(/*recurse=*/true)) {
      if (p.value.requires_grad() == trained) out.emplace_back(p.name, p.value);
    }
    return out;
  }

  torch::jit::Module m_;
  bool has_loss_ = false;
};

}  // namespace

torch::Tensor TrainableModel::OwnLoss(const torch::Tensor&, const torch::Tensor&) {
  TORCH_CHECK(false, "this model has no loss method");
}

absl::StatusOr<std::unique_ptr<TrainableModel>> CreateTrainableModel(
    const std::string& name, const std::vector<int64_t>& example_shape, int num_classes) {
  if (absl::EndsWith(name, ".pt")) {
    if (!std::ifstream(name)) {
      return absl::NotFoundError(absl::StrCat("--model: cannot open TorchScript file '", name, "'"));
    }
    torch::jit::Module m;
    try {
      m = torch::jit::load(name, torch::kCPU);
    } catch (const c10::Error& e) {
      std::string why = e.what_without_backtrace();
      if (why.size() > 300) why = why.substr(0, 300) + "...";
      return absl::InvalidArgumentError(absl::StrCat(
          "--model: '", name, "' is not a TorchScript module (save it with "
          "torch.jit.script(model).save(path)): ", why));
    }
    auto model = std::make_unique<ScriptedModel>(std::move(m));
    if (model->Parameters().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--model: TorchScript module '", name, "' has no parameters to train",
                       model->FrozenParameters().empty() ? "" : " (all are requires_grad=False)"));
    }
    for (const auto& [pname, p] : model->Parameters()) {
      if (p.scalar_type() != torch::kFloat) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--model: parameter '", pname, "' of '", name, "' is ", c10::toString(p.scalar_type()),
            "; regtopk trains float32 parameters (call model.float() before scripting)"));
      }
    }
    return std::unique_ptr<TrainableModel>(std::move(model));
  }
  auto m = CreateModel(name, example_shape, num_classes);
  if (!m.ok()) return m.status();
  return std::unique_ptr<TrainableModel>(new BuiltInModel(std::move(*m)));
}

std::string LayoutString(TrainableModel& model) {
  std::string layout;
  for (const auto& [name, p] : model.Parameters()) {
    absl::StrAppend(&layout, name, ":", absl::StrJoin(p.sizes(), "x"), ";");
  }
  return layout;
}

int64_t NumParameters(TrainableModel& model) {
  int64_t n = 0;
  for (const auto& [name, p] : model.Parameters()) n += p.numel();
  return n;
}

absl::Status CopyParametersTo(TrainableModel& model, absl::Span<float> flat) {
  size_t at = 0;
  for (const auto& [name, p] : model.Parameters()) {
    torch::Tensor cpu = p.detach().to(torch::kCPU).contiguous();
    if (at + cpu.numel() > flat.size()) return absl::InternalError("parameter buffer too small");
    std::memcpy(flat.data() + at, cpu.data_ptr<float>(), cpu.numel() * sizeof(float));
    at += cpu.numel();
  }
  return absl::OkStatus();
}

void CopyParametersFrom(TrainableModel& model, absl::Span<const float> flat) {
  torch::NoGradGuard no_grad;
  size_t at = 0;
  for (auto& [name, p] : model.Parameters()) {
    p.copy_(torch::from_blob(const_cast<float*>(flat.data() + at), p.sizes(), torch::kFloat));
    at += p.numel();
  }
}

void CopyGradientsTo(TrainableModel& model, absl::Span<float> flat) {
  size_t at = 0;
  for (const auto& [name, p] : model.Parameters()) {
    const int64_t n = p.numel();
    if (p.grad().defined()) {
      torch::Tensor cpu = p.grad().to(torch::kCPU).contiguous();
      std::memcpy(flat.data() + at, cpu.data_ptr<float>(), n * sizeof(float));
    } else {
      std::fill(flat.begin() + at, flat.begin() + at + n, 0.0f);
    }
    at += n;
  }
}

void LocalSgdStep(TrainableModel& model, double lr) {
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : model.Parameters()) {
    if (p.grad().defined()) p.add_(p.grad(), -lr);
  }
}

std::string SerializeBuffers(TrainableModel& model) {
  std::string out;
  for (const auto& [name, b] : model.Buffers()) {
    torch::Tensor cpu = b.detach().to(torch::kCPU).contiguous();
    out.append(static_cast<const char*>(cpu.data_ptr()), cpu.numel() * cpu.element_size());
  }
  return out;
}

absl::Status RestoreBuffers(TrainableModel& model, absl::string_view bytes) {
  size_t need = 0;
  for (const auto& [name, b] : model.Buffers()) need += b.numel() * b.element_size();
  if (bytes.size() != need) {
    return absl::InvalidArgumentError(absl::StrCat("saved model buffers hold ", bytes.size(),
                                                   " bytes, the model's need ", need));
  }
  torch::NoGradGuard no_grad;
  size_t at = 0;
  for (auto& [name, b] : model.Buffers()) {
    const size_t n = b.numel() * b.element_size();
    torch::Tensor src = torch::empty(b.sizes(), b.options().device(torch::kCPU));
    std::memcpy(src.data_ptr(), bytes.data() + at, n);
    b.copy_(src);
    at += n;
  }
  return absl::OkStatus();
}

absl::Status SaveStateDict(TrainableModel& model, const std::string& path) {
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& [name, t] : model.Parameters()) dict.insert(name, t.detach().to(torch::kCPU));
  for (const auto& [name, t] : model.FrozenParameters()) {
    dict.insert(name, t.detach().to(torch::kCPU));
  }
  for (const auto& [name, t] : model.Buffers()) dict.insert(name, t.detach().to(torch::kCPU));
  std::vector<char> bytes;
  try {
    bytes = torch::jit::pickle_save(c10::IValue(dict));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("--save-model: ", e.what_without_backtrace()));
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      return absl::InvalidArgumentError(absl::StrCat("--save-model: cannot write '", tmp, "'"));
    }
  }
  return RenameDurably(dir.empty() ? "/" : dir, base + ".tmp", base);
}

}  // namespace regtopk
