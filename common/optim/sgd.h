// Sgd: the optimizer applied to flat float32 parameter buffers, identically by the server (to
// the authoritative parameters) and by every worker (to its replica). Thread-compatible.
//
// Semantics follow torch.optim.SGD without dampening: d = g + weight_decay * p; with momentum
// b = momentum * b + d (b starts at 0, so the first step gives b = d); d = nesterov ? d +
// momentum * b : b; p -= lr * d. Identical inputs give bit-identical outputs on any host.
#ifndef REGTOPK_COMMON_OPTIM_SGD_H_
#define REGTOPK_COMMON_OPTIM_SGD_H_

#include <cstddef>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/sparse/sparse_vector.h"

namespace regtopk {

struct SgdOptions {
  float lr = 0.01f;           // > 0, finite
  float momentum = 0.0f;      // in [0, 1)
  bool nesterov = false;      // requires momentum > 0
  float weight_decay = 0.0f;  // >= 0, finite

  // InvalidArgument naming the bad field.
  absl::Status Validate() const;
  // True when a step touches only the entries present in the gradient (plain SGD).
  bool IsSparseFriendly() const { return momentum == 0.0f && weight_decay == 0.0f; }
};

class Sgd {
 public:
  // Precondition: options.Validate() is OK.
  Sgd(const SgdOptions& options, size_t dim);

  // One step with a sparse gradient (absent entries are 0). With plain SGD only the gradient's
  // support is touched (O(nnz)); with momentum or weight decay every entry is (O(dim)).
  // Preconditions: params.size() == dim; grad passed ValidateSparse for dim.
  void Step(absl::Span<float> params, SparseView grad);

  // One step with a dense gradient of length dim.
  void StepDense(absl::Span<float> params, absl::Span<const float> grad);

  const SgdOptions& options() const { return options_; }

  // The momentum buffer (empty without momentum), for checkpoints and re-synchronisation.
  absl::Span<const float> momentum() const { return momentum_; }
  // INVALID_ARGUMENT unless `m` has the buffer's length (0 without momentum).
  absl::Status SetMomentum(absl::Span<const float> m);

 private:
  float Update(size_t j, float p, float g);

  const SgdOptions options_;
  std::vector<float> momentum_;  // empty without momentum
};

}  // namespace regtopk

#endif  // REGTOPK_COMMON_OPTIM_SGD_H_
