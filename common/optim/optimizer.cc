#include "common/optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace regtopk {
namespace {

// base^n by repeated squaring: only multiplications, so the same bits on every IEEE host.
double Power(double base, uint64_t n) {
  double result = 1.0;
  while (n != 0) {
    if (n & 1) result *= base;
    base *= base;
    n >>= 1;
  }
  return result;
}

// Below these sizes a step runs on the calling thread alone: waking the pool's threads costs
// tens of microseconds.
constexpr size_t kSplitDim = size_t{1} << 16;      // entries of a walk over every parameter
constexpr size_t kSplitEntries = size_t{1} << 15;  // gradient entries of plain SGD's update

constexpr std::pair<OptimizerKind, absl::string_view> kKinds[] = {
    {OptimizerKind::kSgd, "sgd"}, {OptimizerKind::kAdam, "adam"}, {OptimizerKind::kAdamW, "adamw"}};
constexpr std::pair<LrSchedule, absl::string_view> kSchedules[] = {
    {LrSchedule::kConstant, "constant"}, {LrSchedule::kStep, "step"}, {LrSchedule::kCosine, "cosine"}};

}  // namespace

absl::StatusOr<OptimizerKind> ParseOptimizerKind(absl::string_view name) {
  for (const auto& [kind, text] : kKinds) {
    if (text == name) return kind;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("optimizer must be sgd, adam or adamw, got '", name, "'"));
}

absl::string_view OptimizerKindName(OptimizerKind kind) {
  for (const auto& [k, text] : kKinds) {
    if (k == kind) return text;
  }
  return "unknown";
}

absl::StatusOr<LrSchedule> ParseLrSchedule(absl::string_view name) {
  for (const auto& [schedule, text] : kSchedules) {
    if (text == name) return schedule;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("lr schedule must be constant, step or cosine, got '", name, "'"));
}

absl::string_view LrScheduleName(LrSchedule schedule) {
  for (const auto& [s, text] : kSchedules) {
    if (s == schedule) return text;
  }
  return "unknown";
}

absl::Status OptimizerOptions::Validate() const {
  if (!(lr > 0.0f && std::isfinite(lr))) {
    return absl::InvalidArgumentError(absl::StrCat("learning rate must be > 0, got ", lr));
  }
  if (!(weight_decay >= 0.0f && std::isfinite(weight_decay))) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight decay must be >= 0, got ", weight_decay));
  }
  if (kind == OptimizerKind::kSgd) {
    if (!(momentum >= 0.0f && momentum < 1.0f)) {
      return absl::InvalidArgumentError(
          absl::StrCat("momentum must be in [0, 1), got ", momentum));
    }
    if (nesterov && momentum == 0.0f) {
      return absl::InvalidArgumentError("nesterov requires momentum > 0");
    }
  } else {
    if (momentum != 0.0f || nesterov) {
      return absl::InvalidArgumentError(absl::StrCat(
          "momentum and nesterov are SGD's; ", OptimizerKindName(kind), " uses beta1 and beta2"));
    }
    if (!(beta1 >= 0.0f && beta1 < 1.0f)) {
      return absl::InvalidArgumentError(absl::StrCat("beta1 must be in [0, 1), got ", beta1));
    }
    if (!(beta2 >= 0.0f && beta2 < 1.0f)) {
      return absl::InvalidArgumentError(absl::StrCat("beta2 must be in [0, 1), got ", beta2));
    }
    if (!(eps > 0.0f && std::isfinite(eps))) {
      return absl::InvalidArgumentError(absl::StrCat("eps must be > 0, got ", eps));
    }
  }
  switch (schedule) {
    case LrSchedule::kConstant:
      break;
    case LrSchedule::kStep:
      if (step_rounds == 0) {
        return absl::InvalidArgumentError("the step schedule needs lr step rounds > 0");
      }
      if (!(step_gamma > 0.0f && step_gamma <= 1.0f)) {
        return absl::InvalidArgumentError(
            absl::StrCat("lr step gamma must be in (0, 1], got ", step_gamma));
      }
      break;
    case LrSchedule::kCosine:
      if (decay_rounds == 0) {
        return absl::InvalidArgumentError(
            "the cosine schedule needs decay rounds > 0 (or a job with a number of rounds)");
      }
      if (!(min_lr >= 0.0f && min_lr <= lr)) {
        return absl::InvalidArgumentError(
            absl::StrCat("min lr must be in [0, lr], got ", min_lr));
      }
      break;
  }
  return absl::OkStatus();
}

float OptimizerOptions::LearningRate(uint64_t round) const {
  if (round < warmup_rounds) {
    return static_cast<float>(static_cast<double>(lr) * static_cast<double>(round + 1) /
                              static_cast<double>(warmup_rounds));
  }
  const uint64_t t = round - warmup_rounds;
  switch (schedule) {
    case LrSchedule::kConstant:
      return lr;
    case LrSchedule::kStep:
      return static_cast<float>(static_cast<double>(lr) * Power(step_gamma, t / step_rounds));
    case LrSchedule::kCosine: {
      if (t >= decay_rounds) return min_lr;
      const double kPi = 3.14159265358979323846;
      const double c = std::cos(kPi * static_cast<double>(t) / static_cast<double>(decay_rounds));
      return static_cast<float>(min_lr + (static_cast<double>(lr) - min_lr) * 0.5 * (1.0 + c));
    }
  }
  return lr;
}

size_t OptimizerOptions::StateSlots() const {
  if (kind != OptimizerKind::kSgd) return 2;
  return momentum > 0.0f ? 1 : 0;
}

Optimizer::Optimizer(const OptimizerOptions& options, size_t dim)
    : options_(options), dim_(dim), state_(options.StateSlots() * dim, 0.0f) {}

template <bool kWrite, typename Grad>
size_t Optimizer::Walk(float* params, uint64_t round, size_t begin, size_t end,
                       Grad grad_at) const {
  const float lr = options_.LearningRate(round);
  const float wd = options_.weight_decay;
  if (options_.kind == OptimizerKind::kSgd) {
    const float mom = options_.momentum;
    float* b = state_.empty() ? nullptr : state_.data();
    for (size_t j = begin; j < end; ++j) {
      float d = grad_at(j);
      if (wd != 0.0f) d = d + wd * params[j];
      float bj = 0.0f;
      if (b != nullptr) {
        bj = mom * b[j] + d;
        d = options_.nesterov ? d + mom * bj : bj;
      }
      const float p = params[j] - lr * d;
      if constexpr (kWrite) {
        if (b != nullptr) b[j] = bj;
        params[j] = p;
      } else {
        if (!std::isfinite(p) || !std::isfinite(bj)) return j;
      }
    }
    return end;
  }
  const float b1 = options_.beta1, b2 = options_.beta2;
  const double bias1 = 1.0 - Power(b1, round + 1);
  const double bias2 = 1.0 - Power(b2, round + 1);
  const float step_size = static_cast<float>(static_cast<double>(lr) / bias1);
  const float bias2_sqrt = static_cast<float>(std::sqrt(bias2));
  const float decay = options_.kind == OptimizerKind::kAdamW ? 1.0f - lr * wd : 1.0f;
  const bool l2 = options_.kind == OptimizerKind::kAdam && wd != 0.0f;
  const float eps = options_.eps;
  float* m = state_.data();
  float* v = state_.data() + dim_;
  for (size_t j = begin; j < end; ++j) {
    float p = params[j];
    float g = grad_at(j);
    if (l2) g = g + wd * p;
    if (decay != 1.0f) p = p * decay;
    const float mj = b1 * m[j] + (1.0f - b1) * g;
    const float vj = b2 * v[j] + (1.0f - b2) * g * g;
    const float denom = std::sqrt(vj) / bias2_sqrt + eps;
    p = p - step_size * (mj / denom);
    if constexpr (kWrite) {
      m[j] = mj;
      v[j] = vj;
      params[j] = p;
    } else {
      if (!std::isfinite(p) || !std::isfinite(mj) || !std::isfinite(vj)) return j;
    }
  }
  return end;
}

template <bool kWrite>
size_t Optimizer::WalkSparse(float* params, SparseView grad, uint64_t round,
                             TaskPool* pool) const {
  std::vector<size_t> first_bad(pool != nullptr ? static_cast<size_t>(pool->threads()) : 1, dim_);
  ForShares(pool, dim_, kSplitDim, 64, [&](int t, size_t begin, size_t end) {
    // The gradient's sorted support is consumed in step, from this range's first entry.
    size_t i = static_cast<size_t>(
        std::lower_bound(grad.indices.begin(), grad.indices.end(), begin) -
        grad.indices.begin());
    const size_t nnz = grad.nnz();
    const size_t bad = Walk<kWrite>(params, round, begin, end, [&](size_t j) {
      if (i < nnz && grad.indices[i] == j) return grad.values[i++];
      return 0.0f;
    });
    if (bad != end) first_bad[static_cast<size_t>(t)] = bad;
  });
  return *std::min_element(first_bad.begin(), first_bad.end());
}

template <bool kWrite>
size_t Optimizer::SparseUpdate(float* params, SparseView grad, uint64_t round,
                               TaskPool* pool) const {
  const float lr = options_.LearningRate(round);
  std::vector<size_t> first_bad(pool != nullptr ? static_cast<size_t>(pool->threads()) : 1, dim_);
  ForShares(pool, grad.nnz(), kSplitEntries, 1, [&](int t, size_t begin, size_t end) {
    // The entries are scattered over d: each touch of params is a cache miss, so the loop
    // asks for its line well before it gets there.
    constexpr size_t kAhead = 16;
    for (size_t i = begin; i < end; ++i) {
      if (i + kAhead < end) __builtin_prefetch(params + grad.indices[i + kAhead], kWrite ? 1 : 0);
      const uint32_t j = grad.indices[i];
      const float p = params[j] - lr * grad.values[i];
      if constexpr (kWrite) {
        params[j] = p;
      } else if (!std::isfinite(p)) {
        first_bad[static_cast<size_t>(t)] = j;
        return;
      }
    }
  });
  return *std::min_element(first_bad.begin(), first_bad.end());
}

void Optimizer::Step(absl::Span<float> params, SparseView grad, uint64_t round, TaskPool* pool) {
  if (options_.IsSparseFriendly()) {
    SparseUpdate<true>(params.data(), grad, round, pool);
  } else {
    WalkSparse<true>(params.data(), grad, round, pool);
  }
}

void Optimizer::StepDense(absl::Span<float> params, absl::Span<const float> grad,
                          uint64_t round) {
  Walk<true>(params.data(), round, 0, dim_, [&](size_t j) { return grad[j]; });
}

std::optional<size_t> Optimizer::FirstNonFinite(absl::Span<const float> params, SparseView grad,
                                                uint64_t round, TaskPool* pool) const {
  float* p = const_cast<float*>(params.data());  // read only: kWrite = false
  const size_t bad = options_.IsSparseFriendly() ? SparseUpdate<false>(p, grad, round, pool)
                                                 : WalkSparse<false>(p, grad, round, pool);
  if (bad == dim_) return std::nullopt;
  return bad;
}

absl::Status Optimizer::SetState(absl::Span<const float> s) {
  if (s.size() != state_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("optimizer state of ", s.size(),
                                                   " entries, expected ", state_.size()));
  }
  std::copy(s.begin(), s.end(), state_.begin());
  return absl::OkStatus();
}

}  // namespace regtopk
