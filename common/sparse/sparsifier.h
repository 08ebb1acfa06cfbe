// Sparsifier: one worker's gradient compressor (DESIGN.md section 1). One stateful instance per
// worker; thread-compatible (no internal locking, not shareable between workers).
//
// Every round the owner calls Compress(gradient) and sends the result, then hands the round's
// global aggregate to ObserveAggregate before the next Compress. Implementations: dense (no
// compression), Top-k, Rand-k and RegTop-k, the last three with error feedback.
#ifndef REGTOPK_COMMON_SPARSE_SPARSIFIER_H_
#define REGTOPK_COMMON_SPARSE_SPARSIFIER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/sparse/sparse_vector.h"

namespace regtopk {

enum class Algorithm { kDense, kTopK, kRandK, kRegTopK };

// "dense", "topk", "randk", "regtopk".
absl::string_view AlgorithmName(Algorithm algorithm);
// Inverse of AlgorithmName; InvalidArgument listing the accepted names otherwise.
absl::StatusOr<Algorithm> ParseAlgorithm(absl::string_view name);

// k = max(1, ceil(density * dim)), where a product within 1e-9 (relative) of an integer counts as
// that integer: 0.55 * 100 gives 55, not 56. Precondition: density in (0, 1], dim > 0.
size_t KFromDensity(double density, size_t dim);

// InvalidArgument unless density is in (0, 1] / mu is > 0 and finite. The one check of each,
// shared by the sparsifier, the job config and the simulator's flags.
absl::Status ValidateDensity(double density);
absl::Status ValidateMu(double mu);

// Entries a worker sends per round: dim for kDense, KFromDensity(density, dim) otherwise.
size_t EntriesPerRound(Algorithm algorithm, double density, size_t dim);

// The paper's "no evidence" value of delta for entries not sent last round.
inline constexpr double kRegTopKQ = 1e8;

struct SparsifierOptions {
  Algorithm algorithm = Algorithm::kRegTopK;
  // d: length of the flat gradient. Must be > 0 and < 2^32.
  size_t dim = 0;
  // Fraction of entries sent per round, in (0, 1]. Ignored by kDense (which sends all).
  double density = 0.01;
  // RegTop-k's mu; > 0 and finite. Paper: 1 (toy), 4 (linear regression), 5 (ResNet-18).
  double mu = 1.0;
  // This worker's aggregation weight w_n, in (0, 1]. Used by RegTop-k's delta.
  float weight = 1.0f;
  // Seeds Rand-k's choices and the selector's sampling (which never changes a result).
  uint64_t seed = 0;
  // Compute the MaskDiagnostic every round (O(k); never changes a mask or a value). Off only to
  // measure what it costs (regtopk-bench).
  bool mask_diagnostic = true;
  // Threads for the pass over the gradient and the selection, in [1, 256]. The result is the
  // same for every value (bit for bit); only the speed differs.
  int threads = 1;
  // How the pass writes a = g + e. Streaming (non-temporal) stores skip the read of each line
  // before its write, a quarter of the pass's memory traffic, but leave a out of the caches:
  // they pay only where the buffers are far larger than a cache. kAuto streams where
  // dim >= kStreamingDim and the CPU has AVX2. The result is the same either way, bit for bit.
  enum class Stores { kAuto, kCached, kStreaming };
  Stores stores = Stores::kAuto;
  static constexpr size_t kStreamingDim = size_t{1} << 22;  // 16 MiB per buffer

  // InvalidArgument naming the bad field.
  absl::Status Validate() const;
  // Entries sent per round: EntriesPerRound(algorithm, density, dim).
  size_t k() const;
};

// Everything a sparsifier carries from one round to the next, for checkpoints: restoring it
// into a sparsifier of the same options gives the same masks and values, bit for bit.
struct SparsifierState {
  std::vector<float> error;          // e (empty for kDense)
  std::vector<uint32_t> prev_indices;  // RegTop-k: last round's mask s_prev
  std::vector<float> prev_values;      // RegTop-k: v_prev on s_prev
  std::vector<float> prev_aggregate;   // RegTop-k: g_prev on s_prev
  bool compressed = false, observed = false;  // RegTop-k: where in the round it stands
  uint64_t rng_state = 0;                     // Rand-k's generator
};

// How one round's mask relates to plain Top-k's mask (top k of |a| = |g + e|, ties to the lower
// index), the question a user choosing between Top-k and RegTop-k needs answered: RegTop-k only
// lowers the scores of last round's picks, so its mask can differ from Top-k's only where Top-k
// would pick one of last round's entries again.
struct MaskDiagnostic {
  size_t k = 0;
  // Of this round's k picks, how many plain Top-k would not have made (0 for Top-k itself).
  size_t not_topk = 0;
  // Of plain Top-k's k picks this round, how many were also sent last round: the only picks
  // RegTop-k can change.
  size_t topk_repeats = 0;
  double not_topk_fraction() const { return k ? static_cast<double>(not_topk) / k : 0.0; }
  double topk_repeat_fraction() const { return k ? static_cast<double>(topk_repeats) / k : 0.0; }
};

class Sparsifier {
 public:
  virtual ~Sparsifier() = default;

  // Compresses this round's local gradient (length dim()) into `out`: exactly k() entries,
  // indices strictly increasing, values the unscaled accumulated gradient (gradient + error).
  // Returns InvalidArgument if the gradient has the wrong length or a non-finite entry (or the
  // accumulation overflows); state is unchanged then. RegTop-k returns FailedPrecondition if the
  // previous round's aggregate was not observed.
  virtual absl::Status Compress(absl::Span<const float> gradient, SparseVector* out) = 0;

  // Takes the global aggregate of the round just compressed (the history RegTop-k uses).
  // `aggregate` must have passed ValidateSparse for dim(); the others ignore it.
  virtual absl::Status ObserveAggregate(SparseView aggregate) = 0;

  virtual Algorithm algorithm() const = 0;
  virtual size_t dim() const = 0;
  virtual size_t k() const = 0;
  // The error-feedback buffer e (length dim()), or an empty span for kDense, which keeps none.
  virtual absl::Span<const float> error() const = 0;
  // The last Compress's MaskDiagnostic, computed exactly from k-sized lists (O(k) per round, no
  // second pass over d). Top-k and RegTop-k only; nullopt for dense and Rand-k, before the
  // first Compress, and for Top-k in the first round after ImportState (its state carries no
  // previous mask). RegTop-k's is exact whenever tanh(|1 + Q| / mu) rounds to 1 in float
  // (mu < ~1e7): then its unregularised scores order entries exactly as |a| does.
  virtual std::optional<MaskDiagnostic> last_diagnostic() const { return std::nullopt; }

  virtual SparsifierState ExportState() const = 0;
  // INVALID_ARGUMENT (state unchanged) if `state` does not fit this sparsifier's options.
  virtual absl::Status ImportState(const SparsifierState& state) = 0;
};

// Validates `options` and builds the sparsifier it names.
absl::StatusOr<std::unique_ptr<Sparsifier>> CreateSparsifier(const SparsifierOptions& options);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_SPARSE_SPARSIFIER_H_
