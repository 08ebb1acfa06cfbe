#include "common/job_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace regtopk {

absl::Status JobConfig::Validate() const {
  if (!(density > 0.0 && density <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("density must be in (0, 1], got ", density));
  }
  if (!(mu > 0.0 && std::isfinite(mu))) {
    return absl::InvalidArgumentError(absl::StrCat("mu must be > 0 and finite, got ", mu));
  }
  if (num_workers < 1 || num_workers > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("workers must be in [1, 4096], got ", num_workers));
  }
  REGTOPK_RETURN_IF_ERROR(sgd.Validate());
  return absl::OkStatus();
}

size_t JobConfig::MaxEntries(size_t dim) const {
  return algorithm == Algorithm::kDense ? dim : KFromDensity(density, dim);
}

}  // namespace regtopk
