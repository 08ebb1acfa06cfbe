#include "common/job_config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status/status_macros.h"

namespace regtopk {

absl::Status JobConfig::Validate() const {
  REGTOPK_RETURN_IF_ERROR(ValidateDensity(density));
  REGTOPK_RETURN_IF_ERROR(ValidateMu(mu));
  if (num_workers < 1 || num_workers > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("workers must be in [1, 4096], got ", num_workers));
  }
  REGTOPK_RETURN_IF_ERROR(optimizer.Validate());
  if (!(clip_norm >= 0 && std::isfinite(clip_norm))) {
    return absl::InvalidArgumentError(absl::StrCat("clip norm must be >= 0, got ", clip_norm));
  }
  if (!(max_abs_value >= 0 && std::isfinite(max_abs_value))) {
    return absl::InvalidArgumentError(
        absl::StrCat("max abs value must be >= 0, got ", max_abs_value));
  }
  if (downlink_density != 0) {
    if (absl::Status s = ValidateDensity(downlink_density); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("downlink density must be 0 (lossless) or in (0, 1]: ", s.message()));
    }
  }
  if (!(round_timeout_seconds >= 0 && std::isfinite(round_timeout_seconds))) {
    return absl::InvalidArgumentError(absl::StrCat("round timeout must be >= 0 seconds, got ",
                                                   round_timeout_seconds));
  }
  return absl::OkStatus();
}

size_t JobConfig::MaxEntries(size_t dim) const {
  return EntriesPerRound(algorithm, density, dim);
}

size_t JobConfig::DownlinkEntries(size_t dim) const {
  return downlink_density == 0 ? 0 : KFromDensity(downlink_density, dim);
}

}  // namespace regtopk
