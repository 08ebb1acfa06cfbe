#include "common/optim/sgd.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace regtopk {

absl::Status SgdOptions::Validate() const {
  if (!(lr > 0.0f && std::isfinite(lr))) {
    return absl::InvalidArgumentError(absl::StrCat("learning rate must be > 0, got ", lr));
  }
  if (!(momentum >= 0.0f && momentum < 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("momentum must be in [0, 1), got ", momentum));
  }
  if (nesterov && momentum == 0.0f) {
    return absl::InvalidArgumentError("nesterov requires momentum > 0");
  }
  if (!(weight_decay >= 0.0f && std::isfinite(weight_decay))) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight decay must be >= 0, got ", weight_decay));
  }
  return absl::OkStatus();
}

Sgd::Sgd(const SgdOptions& options, size_t dim) : options_(options) {
  if (options_.momentum > 0.0f) momentum_.assign(dim, 0.0f);
}

inline float Sgd::Update(size_t j, float p, float g) {
  float d = g;
  if (options_.weight_decay != 0.0f) d = d + options_.weight_decay * p;
  if (!momentum_.empty()) {
    float& b = momentum_[j];
    b = options_.momentum * b + d;
    d = options_.nesterov ? d + options_.momentum * b : b;
  }
  return p - options_.lr * d;
}

void Sgd::Step(absl::Span<float> params, SparseView grad) {
  if (options_.IsSparseFriendly()) {
    for (size_t i = 0; i < grad.nnz(); ++i) {
      float& p = params[grad.indices[i]];
      p = p - options_.lr * grad.values[i];
    }
    return;
  }
  // Walk every entry; the gradient's sorted support is consumed in step.
  size_t i = 0;
  const size_t nnz = grad.nnz();
  for (size_t j = 0; j < params.size(); ++j) {
    float g = 0.0f;
    if (i < nnz && grad.indices[i] == j) g = grad.values[i++];
    params[j] = Update(j, params[j], g);
  }
}

void Sgd::StepDense(absl::Span<float> params, absl::Span<const float> grad) {
  for (size_t j = 0; j < params.size(); ++j) params[j] = Update(j, params[j], grad[j]);
}

absl::Status Sgd::SetMomentum(absl::Span<const float> m) {
  if (m.size() != momentum_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("momentum buffer of ", m.size(),
                                                   " entries, expected ", momentum_.size()));
  }
  std::copy(m.begin(), m.end(), momentum_.begin());
  return absl::OkStatus();
}

}  // namespace regtopk
