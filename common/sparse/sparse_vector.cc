#include "common/sparse/sparse_vector.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace regtopk {

size_t FindNonFinite(absl::Span<const float> values) {
  // Exponent bits all ones <=> Inf or NaN. Integer test so that it vectorises and stays correct
  // whatever floating-point flags a caller's translation unit uses.
  const size_t n = values.size();
  constexpr size_t kBlock = 256;
  for (size_t base = 0; base < n; base += kBlock) {
    const size_t end = std::min(n, base + kBlock);
    uint32_t any = 0;
    for (size_t i = base; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, &values[i], sizeof(bits));
      any |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (any) {
      for (size_t i = base; i < end; ++i) {
        if (!std::isfinite(values[i])) return i;
      }
    }
  }
  return n;
}

absl::Status ValidateSparse(SparseView v, size_t dim, size_t max_nnz) {
  if (v.indices.size() != v.values.size()) {
    return absl::InvalidArgumentError(absl::StrCat("sparse vector has ", v.indices.size(),
                                                   " indices but ", v.values.size(), " values"));
  }
  if (v.indices.size() > max_nnz) {
    return absl::InvalidArgumentError(absl::StrCat("sparse vector has ", v.indices.size(),
                                                   " entries, more than the limit of ", max_nnz));
  }
  const uint32_t* idx = v.indices.data();
  const size_t n = v.indices.size();
  for (size_t i = 0; i < n; ++i) {
    if (idx[i] >= dim) {
      return absl::InvalidArgumentError(absl::StrCat("index ", idx[i], " at position ", i,
                                                     " is out of range for dimension ", dim));
    }
    if (i > 0 && idx[i] <= idx[i - 1]) {
      return absl::InvalidArgumentError(
          absl::StrCat("indices are not strictly increasing at position ", i, ": ", idx[i - 1],
                       " then ", idx[i], idx[i] == idx[i - 1] ? " (duplicate)" : " (unsorted)"));
    }
  }
  const size_t bad = FindNonFinite(v.values);
  if (bad != v.values.size()) {
    return absl::InvalidArgumentError(absl::StrCat("value at position ", bad, " (index ", idx[bad],
                                                   ") is not finite: ", v.values[bad]));
  }
  return absl::OkStatus();
}

void ScatterToDense(SparseView v, absl::Span<float> out) {
  std::fill(out.begin(), out.end(), 0.0f);
  for (size_t i = 0; i < v.indices.size(); ++i) out[v.indices[i]] = v.values[i];
}

}  // namespace regtopk
