// JobConfig: the one description of a training job, owned by the server and handed to every
// worker at join. Plain value; thread-compatible.
#ifndef REGTOPK_COMMON_JOB_CONFIG_H_
#define REGTOPK_COMMON_JOB_CONFIG_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "common/optim/sgd.h"
#include "common/sparse/sparsifier.h"

namespace regtopk {

enum class Weighting { kUniform, kSamples };

struct JobConfig {
  Algorithm algorithm = Algorithm::kRegTopK;
  double density = 0.01;  // (0, 1]
  double mu = 1.0;        // > 0, finite
  SgdOptions sgd;
  uint32_t num_workers = 1;  // >= 1
  Weighting weighting = Weighting::kUniform;
  // 0 = unbounded.
  uint64_t total_rounds = 0;
  // A parameter digest rides with every aggregate of round r with (r + 1) % digest_every == 0;
  // 0 = never.
  uint32_t digest_every = 10;
  // Worker n's sparsifier is seeded with seed + n.
  uint64_t seed = 1;

  // InvalidArgument naming the bad field.
  absl::Status Validate() const;
  // Entries a worker may send per round for a model of `dim` parameters.
  size_t MaxEntries(size_t dim) const;
};

}  // namespace regtopk

#endif  // REGTOPK_COMMON_JOB_CONFIG_H_
