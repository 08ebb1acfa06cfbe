// DownlinkCompressor: the server's opt-in compressed downlink with error feedback, as in
// bidirectional compression. Every round it forms c = agg + e (e: what earlier rounds did not
// send), sends the exact top-k' of |c| (ties: the lower index wins), and carries the rest:
// e = c with the sent entries set to 0. Deterministic; thread-compatible.
//
// The invariant, bit for bit at every index: sent + e_after == fl(agg + e_before), because each
// index holds c in exactly one of the two and 0 in the other. Every worker applies the same
// sent vector as the server, so replicas stay identical to the server.
#ifndef REGTOPK_COMMON_SPARSE_DOWNLINK_H_
#define REGTOPK_COMMON_SPARSE_DOWNLINK_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/sparse/select.h"
#include "common/sparse/sparse_vector.h"

namespace regtopk {

class DownlinkCompressor {
 public:
  // Sends k entries a round (1 <= k <= dim) of a dim-parameter model; e starts at 0.
  DownlinkCompressor(size_t dim, size_t k);

  // Replaces *aggregate (sorted unique indices < dim, finite values) with the entries sent this
  // round (the top-k of c, less any that are 0), sorted, and updates e. Costs O(nnz) plus one top-k selection over d entries.
  // FAILED_PRECONDITION naming the index if agg + e overflows to a non-finite value; e is then
  // partly updated (the server stops the job, which resumes from a checkpoint).
  absl::Status Compress(SparseVector* aggregate);

  // The carried error (for checkpoints) and its restore. SetError: INVALID_ARGUMENT unless it
  // has dim finite entries.
  absl::Span<const float> error() const { return error_; }
  absl::Status SetError(absl::Span<const float> error);

  size_t dim() const { return error_.size(); }
  size_t k() const { return k_; }

 private:
  const size_t k_;
  std::vector<float> error_;
  TopKSelector selector_;
  std::vector<uint32_t> selected_;
};

}  // namespace regtopk

#endif  // REGTOPK_COMMON_SPARSE_DOWNLINK_H_
