// Optimizer: the step applied to flat float32 parameter buffers, identically by the server (to
// the authoritative parameters) and by every worker (to its replica): SGD (with momentum,
// Nesterov, weight decay), Adam and AdamW, with a learning-rate schedule that is a pure
// function of the round. Thread-compatible.
//
// Semantics follow PyTorch:
//   SGD (torch.optim.SGD, no dampening): d = g + wd * p; with momentum b = m * b + d (b starts
//     at 0, so the first step gives b = d); d = nesterov ? d + m * b : b; p -= lr * d.
//   Adam (torch.optim.Adam): g += wd * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//     p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), t = round + 1.
//   AdamW (torch.optim.AdamW): p *= 1 - lr * wd first, then Adam's update without the g term.
// Identical inputs give bit-identical outputs on any IEEE-754 host: only +, *, / and sqrt touch
// the floats (b^t is computed by repeated squaring; the cosine schedule's cos runs once per
// round in double, on the server and the replicas alike, and the digest check catches a libm
// that rounds it differently).
#ifndef REGTOPK_COMMON_OPTIM_OPTIMIZER_H_
#define REGTOPK_COMMON_OPTIM_OPTIMIZER_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/parallel/task_pool.h"
#include "common/sparse/sparse_vector.h"

namespace regtopk {

enum class OptimizerKind { kSgd, kAdam, kAdamW };
enum class LrSchedule { kConstant, kStep, kCosine };

// "sgd", "adam", "adamw" / "constant", "step", "cosine"; INVALID_ARGUMENT otherwise.
absl::StatusOr<OptimizerKind> ParseOptimizerKind(absl::string_view name);
absl::string_view OptimizerKindName(OptimizerKind kind);
absl::StatusOr<LrSchedule> ParseLrSchedule(absl::string_view name);
absl::string_view LrScheduleName(LrSchedule schedule);

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::kSgd;
  float lr = 0.01f;           // peak learning rate; > 0, finite
  float weight_decay = 0.0f;  // >= 0, finite (L2 for SGD and Adam; decoupled for AdamW)
  // SGD only.
  float momentum = 0.0f;  // in [0, 1)
  bool nesterov = false;  // requires momentum > 0
  // Adam and AdamW only.
  float beta1 = 0.9f;   // in [0, 1)
  float beta2 = 0.999f;  // in [0, 1)
  float eps = 1e-8f;     // > 0
  // Learning-rate schedule, in rounds: a linear warm-up from lr / warmup_rounds to lr over the
  // first warmup_rounds rounds, then constant, step (times step_gamma every step_rounds rounds)
  // or cosine (from lr down to min_lr over decay_rounds rounds, then min_lr).
  LrSchedule schedule = LrSchedule::kConstant;
  uint64_t warmup_rounds = 0;
  uint64_t step_rounds = 0;  // step: > 0
  float step_gamma = 0.1f;   // step: in (0, 1]
  uint64_t decay_rounds = 0;  // cosine: > 0
  float min_lr = 0.0f;        // cosine: in [0, lr]

  // InvalidArgument naming the bad field.
  absl::Status Validate() const;
  // The learning rate of round `round` (0-based).
  float LearningRate(uint64_t round) const;
  // True when a step touches only the entries present in the gradient (plain SGD).
  bool IsSparseFriendly() const {
    return kind == OptimizerKind::kSgd && momentum == 0.0f && weight_decay == 0.0f;
  }
  // Floats of optimizer state per parameter: 0 (plain SGD), 1 (SGD momentum), 2 (Adam's m, v).
  size_t StateSlots() const;
};

class Optimizer {
 public:
  // Precondition: options.Validate() is OK.
  Optimizer(const OptimizerOptions& options, size_t dim);

  // The step of round `round` with a sparse gradient (absent entries are 0). With plain SGD
  // only the gradient's support is touched (O(nnz)); otherwise every entry is (O(dim)).
  // Preconditions: params.size() == dim; grad passed ValidateSparse for dim.
  // `pool` (optional) splits the work over its threads in contiguous ranges of parameters;
  // every entry's arithmetic is its own, so the result is the same bits with or without it.
  void Step(absl::Span<float> params, SparseView grad, uint64_t round, TaskPool* pool = nullptr);

  // The same with a dense gradient of length dim.
  void StepDense(absl::Span<float> params, absl::Span<const float> grad, uint64_t round);

  // A dry run of Step: the index of the first parameter or state entry that the step would make
  // non-finite (inf or NaN), or nullopt if the step keeps everything finite. Writes nothing;
  // the same arithmetic as Step, so the verdict is exact. Costs about one Step.
  std::optional<size_t> FirstNonFinite(absl::Span<const float> params, SparseView grad,
                                       uint64_t round, TaskPool* pool = nullptr) const;

  const OptimizerOptions& options() const { return options_; }

  // The state buffers, StateSlots() * dim floats, slot after slot (SGD: momentum; Adam: m then
  // v), for checkpoints and re-synchronisation. Empty for plain SGD.
  absl::Span<const float> state() const { return state_; }
  // INVALID_ARGUMENT unless `s` has the state's length.
  absl::Status SetState(absl::Span<const float> s);

 private:
  // The update of every entry in [begin, end), reading the gradient at j through grad_at(j)
  // (called for j in increasing order); with kWrite = false nothing is written and the first
  // entry whose new value (or state) is non-finite is returned (end when none).
  template <bool kWrite, typename Grad>
  size_t Walk(float* params, uint64_t round, size_t begin, size_t end, Grad grad_at) const;
  // The sparse gradient's walk of every entry, split over `pool`: the first non-finite entry
  // of the dry run (dim_ when none).
  template <bool kWrite>
  size_t WalkSparse(float* params, SparseView grad, uint64_t round, TaskPool* pool) const;
  // Plain SGD's O(nnz) update (or dry run) of the gradient's entries, split over `pool`.
  template <bool kWrite>
  size_t SparseUpdate(float* params, SparseView grad, uint64_t round, TaskPool* pool) const;

  const OptimizerOptions options_;
  const size_t dim_;
  mutable std::vector<float> state_;  // written only by Walk<true>, from the non-const steps
};

}  // namespace regtopk

#endif  // REGTOPK_COMMON_OPTIM_OPTIMIZER_H_
