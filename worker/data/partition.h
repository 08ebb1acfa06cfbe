// Partitioning a data set across workers: disjoint index sets, the same on every worker for a
// given seed (each worker computes the whole partition and keeps its own part). Stateless
// functions; thread-safe.
#ifndef REGTOPK_WORKER_DATA_PARTITION_H_
#define REGTOPK_WORKER_DATA_PARTITION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace regtopk {

struct PartitionSpec {
  enum class Kind { kIid, kDirichlet, kQuantity };
  Kind kind = Kind::kIid;
  // kDirichlet: label-skew concentration (smaller = more skewed), > 0.
  double alpha = 0.5;
  // kQuantity: largest share / smallest share, >= 1. The default leaves room for rounding so
  // that the realised skew is at least 5, as in the paper.
  double ratio = 5.5;
};

// "iid", "dirichlet:ALPHA" or "quantity" / "quantity:RATIO". INVALID_ARGUMENT otherwise.
absl::StatusOr<PartitionSpec> ParsePartition(absl::string_view text);

// Returns, for every worker, its example indices (sorted). Every example goes to exactly one
// worker; every worker gets at least one example. `labels` (values in [0, num_classes)) drive
// the Dirichlet split. INVALID_ARGUMENT if there are fewer examples than workers.
absl::StatusOr<std::vector<std::vector<size_t>>> Partition(const std::vector<int64_t>& labels,
                                                           int num_classes,
                                                           const PartitionSpec& spec,
                                                           int num_workers, uint64_t seed);

}  // namespace regtopk

#endif  // REGTOPK_WORKER_DATA_PARTITION_H_
