#include "common/sparse/downlink.h"

#include <cassert>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace regtopk {

DownlinkCompressor::DownlinkCompressor(size_t dim, size_t k) : k_(k), error_(dim, 0.0f) {
  assert(k >= 1 && k <= dim);
}

absl::Status DownlinkCompressor::Compress(SparseVector* aggregate) {
  // c = agg + e, in place in e: only the aggregate's support changes.
  for (size_t i = 0; i < aggregate->nnz(); ++i) {
    const uint32_t j = aggregate->indices[i];
    const float c = error_[j] + aggregate->values[i];
    if (!std::isfinite(c)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the compressed downlink's carried error overflowed at parameter ", j));
    }
    error_[j] = c;
  }
  selector_.Select(error_, 1.0f, {}, k_, &selected_);
  // Selected entries that hold 0 (fewer than k non-zeros in c) are not sent: adding 0 changes
  // nothing, and leaving them in e changes nothing either.
  aggregate->clear();
  for (uint32_t j : selected_) {
    if (error_[j] == 0.0f) continue;
    aggregate->indices.push_back(j);
    aggregate->values.push_back(error_[j]);
    error_[j] = 0.0f;
  }
  return absl::OkStatus();
}

absl::Status DownlinkCompressor::SetError(absl::Span<const float> error) {
  if (error.size() != error_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("downlink error of ", error.size(),
                                                   " entries, the model has ", error_.size()));
  }
  if (const size_t bad = FindNonFinite(error); bad != error.size()) {
    return absl::InvalidArgumentError(absl::StrCat("downlink error entry ", bad, " is not finite"));
  }
  error_.assign(error.begin(), error.end());
  return absl::OkStatus();
}

}  // namespace regtopk
