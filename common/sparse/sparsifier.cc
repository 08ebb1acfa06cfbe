#include "common/sparse/sparsifier.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/random/splitmix64.h"
#include "common/sparse/select.h"

namespace regtopk {

absl::string_view AlgorithmName(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::kDense:
      return "dense";
    case Algorithm::kTopK:
      return "topk";
    case Algorithm::kRandK:
      return "randk";
    case Algorithm::kRegTopK:
      return "regtopk";
  }
  return "unknown";
}

absl::StatusOr<Algorithm> ParseAlgorithm(absl::string_view name) {
  for (Algorithm a :
       {Algorithm::kDense, Algorithm::kTopK, Algorithm::kRandK, Algorithm::kRegTopK}) {
    if (name == AlgorithmName(a)) return a;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown algorithm '", name, "'; expected dense, topk, randk or regtopk"));
}

absl::Status ValidateDensity(double density) {
  if (!(density > 0.0 && density <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("density must be in (0, 1], got ", density));
  }
  return absl::OkStatus();
}

absl::Status ValidateMu(double mu) {
  if (!(mu > 0.0 && std::isfinite(mu))) {
    return absl::InvalidArgumentError(absl::StrCat("mu must be > 0 and finite, got ", mu));
  }
  return absl::OkStatus();
}

size_t EntriesPerRound(Algorithm algorithm, double density, size_t dim) {
  return algorithm == Algorithm::kDense ? dim : KFromDensity(density, dim);
}

size_t KFromDensity(double density, size_t dim) {
  const double product = density * static_cast<double>(dim);
  const double nearest = std::round(product);
  double k =
      std::fabs(product - nearest) <= 1e-9 * std::max(1.0, product) ? nearest : std::ceil(product);
  k = std::min(k, static_cast<double>(dim));
  return std::max<size_t>(1, static_cast<size_t>(k));
}

absl::Status SparsifierOptions::Validate() const {
  if (dim == 0 || dim > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("dimension must be in [1, 2^32 - 1], got ", dim));
  }
  if (absl::Status s = ValidateDensity(density); !s.ok()) return s;
  if (absl::Status s = ValidateMu(mu); !s.ok()) return s;
  if (!(weight > 0.0f && weight <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("weight must be in (0, 1], got ", weight));
  }
  return absl::OkStatus();
}

size_t SparsifierOptions::k() const { return EntriesPerRound(algorithm, density, dim); }

namespace {

absl::Status CheckLength(absl::Span<const float> gradient, size_t dim) {
  if (gradient.size() != dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("gradient has length ", gradient.size(), ", expected ", dim));
  }
  return absl::OkStatus();
}

absl::Status NonFiniteError(absl::Span<const float> gradient, size_t pos, bool in_gradient) {
  if (in_gradient) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gradient entry ", pos, " is not finite: ", gradient[pos], "; nothing was sent"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "gradient + error feedback overflows float32 at entry ", pos, "; nothing was sent"));
}

class DenseSparsifier final : public Sparsifier {
 public:
  explicit DenseSparsifier(size_t dim) : dim_(dim) {}

  absl::Status Compress(absl::Span<const float> gradient, SparseVector* out) override {
    if (absl::Status s = CheckLength(gradient, dim_); !s.ok()) return s;
    const size_t bad = FindNonFinite(gradient);
    if (bad != dim_) return NonFiniteError(gradient, bad, true);
    if (out->indices.size() != dim_) {
      out->indices.resize(dim_);
      std::iota(out->indices.begin(), out->indices.end(), 0u);
    }
    out->values.assign(gradient.begin(), gradient.end());
    return absl::OkStatus();
  }
  absl::Status ObserveAggregate(SparseView) override { return absl::OkStatus(); }
  SparsifierState ExportState() const override { return {}; }
  absl::Status ImportState(const SparsifierState& s) override {
    if (!s.error.empty()) return absl::InvalidArgumentError("dense keeps no error feedback");
    return absl::OkStatus();
  }
  Algorithm algorithm() const override { return Algorithm::kDense; }
  size_t dim() const override { return dim_; }
  size_t k() const override { return dim_; }
  absl::Span<const float> error() const override { return {}; }

 private:
  const size_t dim_;
};

// The error-feedback loop shared by Top-k, Rand-k and RegTop-k: a = g + e, pick k positions of
// a (the subclass's rule), send a there, e = a with the sent entries zeroed.
class ErrorFeedbackSparsifier : public Sparsifier {
 public:
  explicit ErrorFeedbackSparsifier(const SparsifierOptions& options)
      : options_(options),
        k_(options.k()),
        error_(options.dim, 0.0f),
        acc_(options.dim),
        block_max_((options.dim + kSelectBlock - 1) / kSelectBlock) {}

  absl::Status Compress(absl::Span<const float> gradient, SparseVector* out) final {
    const size_t d = options_.dim;
    if (absl::Status s = CheckLength(gradient, d); !s.ok()) return s;
    if (absl::Status s = BeforeCompress(); !s.ok()) return s;
    // Accumulate into a scratch buffer, not into e: if a value turns out non-finite, e is left
    // untouched. Testing a = g + e (an integer test on the exponent bits) catches a non-finite
    // g and an overflow of g + e alike.
    const float* g = gradient.data();
    const float* e = error_.data();
    float* a = acc_.data();
    int32_t* block_max = block_max_.data();
    constexpr size_t kChunk = 64 * kSelectBlock;
    for (size_t base = 0; base < d; base += kChunk) {
      const size_t chunk_end = std::min(d, base + kChunk);
      int32_t any_bad = 0;
      // Same memory traffic as a bare a = g + e; the finiteness flag and the per-block magnitude
      // maxima (which spare the selector a pass over a) ride along in registers.
      for (size_t block = base; block < chunk_end; block += kSelectBlock) {
        const size_t block_end = std::min(chunk_end, block + kSelectBlock);
        int32_t max_bits = 0;
        for (size_t j = block; j < block_end; ++j) {
          const float x = g[j] + e[j];
          a[j] = x;
          const int32_t m = MagnitudeBits(x);
          any_bad |= static_cast<int32_t>(m >= 0x7f800000);
          max_bits = std::max(max_bits, m);
        }
        block_max[block / kSelectBlock] = max_bits;
      }
      if (any_bad) {
        const size_t pos = base + FindNonFinite(absl::MakeConstSpan(a + base, chunk_end - base));
        return NonFiniteError(gradient, pos, !std::isfinite(g[pos]));
      }
    }
    Choose(acc_, block_max_, &out->indices);
    out->values.resize(k_);
    for (size_t i = 0; i < k_; ++i) out->values[i] = a[out->indices[i]];
    // e = a with the sent entries zeroed; the old e becomes next round's scratch.
    std::swap(error_, acc_);
    for (uint32_t j : out->indices) error_[j] = 0.0f;
    AfterCompress(*out);
    return absl::OkStatus();
  }

  absl::Status ObserveAggregate(SparseView) override { return absl::OkStatus(); }
  Algorithm algorithm() const override { return options_.algorithm; }
  size_t dim() const override { return options_.dim; }
  size_t k() const override { return k_; }
  absl::Span<const float> error() const override { return error_; }

  SparsifierState ExportState() const final {
    SparsifierState s;
    s.error = error_;
    ExportExtra(&s);
    return s;
  }
  absl::Status ImportState(const SparsifierState& s) final {
    if (s.error.size() != options_.dim) {
      return absl::InvalidArgumentError(absl::StrCat("saved error feedback has ", s.error.size(),
                                                     " entries, the model has ", options_.dim));
    }
    if (absl::Status st = CheckExtra(s); !st.ok()) return st;
    error_ = s.error;
    ImportExtra(s);
    return absl::OkStatus();
  }

 protected:
  // The subclass's own part of the state (RegTop-k's history, Rand-k's generator).
  virtual void ExportExtra(SparsifierState* s) const {}
  virtual absl::Status CheckExtra(const SparsifierState& s) const { return absl::OkStatus(); }
  virtual void ImportExtra(const SparsifierState& s) {}

  // Writes the k chosen positions of `a` in increasing order. `block_max` holds the
  // TopKSelector block maxima of `a`.
  virtual void Choose(absl::Span<const float> a, absl::Span<const int32_t> block_max,
                      std::vector<uint32_t>* indices) = 0;
  virtual absl::Status BeforeCompress() { return absl::OkStatus(); }
  virtual void AfterCompress(const SparseVector& sent) {}

  const SparsifierOptions options_;
  const size_t k_;

 private:
  std::vector<float> error_;
  std::vector<float> acc_;
  std::vector<int32_t> block_max_;
};

// Entries two sorted index lists share.
size_t CountCommon(absl::Span<const uint32_t> x, absl::Span<const uint32_t> y) {
  size_t common = 0;
  for (size_t i = 0, j = 0; i < x.size() && j < y.size();) {
    if (x[i] < y[j]) {
      ++i;
    } else if (y[j] < x[i]) {
      ++j;
    } else {
      ++common, ++i, ++j;
    }
  }
  return common;
}

class TopKSparsifier final : public ErrorFeedbackSparsifier {
 public:
  explicit TopKSparsifier(const SparsifierOptions& options)
      : ErrorFeedbackSparsifier(options), selector_(options.seed) {}

  std::optional<MaskDiagnostic> last_diagnostic() const override { return diagnostic_; }

 protected:
  void Choose(absl::Span<const float> a, absl::Span<const int32_t> block_max,
              std::vector<uint32_t>* indices) override {
    selector_.Select(a, 1.0f, ScoreOverrides{}, k_, indices, block_max);
  }
  void AfterCompress(const SparseVector& sent) override {
    // The mask is plain Top-k's by definition; what repeats is the diagnostic. Before the first
    // round prev_indices_ is empty (nothing repeats); after a restore it is unknown.
    if (!options_.mask_diagnostic) return;
    diagnostic_.reset();
    if (prev_known_) diagnostic_ = MaskDiagnostic{k_, 0, CountCommon(sent.indices, prev_indices_)};
    prev_indices_ = sent.indices;
    prev_known_ = true;
  }
  void ImportExtra(const SparsifierState&) override {
    // The state carries no previous mask: the next round's repeats are unknown.
    prev_known_ = false;
    diagnostic_.reset();
  }

 private:
  TopKSelector selector_;
  std::vector<uint32_t> prev_indices_;
  bool prev_known_ = true;
  std::optional<MaskDiagnostic> diagnostic_;
};

class RandKSparsifier final : public ErrorFeedbackSparsifier {
 public:
  explicit RandKSparsifier(const SparsifierOptions& options)
      : ErrorFeedbackSparsifier(options),
        rng_state_(options.seed),
        marks_((options.dim + 63) / 64) {}

 protected:
  void Choose(absl::Span<const float> a, absl::Span<const int32_t>,
              std::vector<uint32_t>* indices) override {
    // Uniform k-subset by rejection into a bitmap; when k > d/2 the complement is drawn instead
    // so the expected number of draws stays below 2k. The bitmap read in order gives sorted
    // indices for free.
    const size_t d = options_.dim;
    const bool complement = k_ > d / 2;
    const size_t draws = complement ? d - k_ : k_;
    std::fill(marks_.begin(), marks_.end(), 0ull);
    for (size_t got = 0; got < draws;) {
      const uint64_t j = UniformBelow(rng_state_, d);
      uint64_t& word = marks_[j >> 6];
      const uint64_t bit = 1ull << (j & 63);
      if (!(word & bit)) {
        word |= bit;
        ++got;
      }
    }
    indices->clear();
    indices->reserve(k_);
    for (size_t w = 0; w < marks_.size(); ++w) {
      uint64_t word = complement ? ~marks_[w] : marks_[w];
      while (word) {
        const size_t j = w * 64 + __builtin_ctzll(word);
        if (j >= d) break;
        indices->push_back(static_cast<uint32_t>(j));
        word &= word - 1;
      }
    }
  }

 protected:
  void ExportExtra(SparsifierState* s) const override { s->rng_state = rng_state_; }
  void ImportExtra(const SparsifierState& s) override { rng_state_ = s.rng_state; }

 private:
  uint64_t rng_state_;
  std::vector<uint64_t> marks_;
};

// RegTop-k (DESIGN.md section 1). Only the entries sent last round can have a score other than
// |a| * tanh(|1 + Q| / mu), so the k of them are handed to the selector as overrides and the
// other d - k share one constant factor: no per-entry tanh in the streaming pass.
class RegTopKSparsifier final : public ErrorFeedbackSparsifier {
 public:
  explicit RegTopKSparsifier(const SparsifierOptions& options)
      : ErrorFeedbackSparsifier(options),
        selector_(options.seed),
        no_evidence_scale_(static_cast<float>(std::tanh(std::fabs(1.0 + kRegTopKQ) / options.mu))) {
  }

  absl::Status ObserveAggregate(SparseView aggregate) override {
    // g_prev is only needed on last round's mask: a merge of two sorted lists.
    size_t a = 0;
    const size_t na = aggregate.indices.size();
    for (size_t i = 0; i < prev_indices_.size(); ++i) {
      const uint32_t j = prev_indices_[i];
      while (a < na && aggregate.indices[a] < j) ++a;
      prev_aggregate_[i] = (a < na && aggregate.indices[a] == j) ? aggregate.values[a] : 0.0f;
    }
    observed_ = true;
    return absl::OkStatus();
  }

 protected:
  absl::Status BeforeCompress() override {
    if (compressed_ && !observed_) {
      return absl::FailedPreconditionError(
          "RegTop-k: the previous round's aggregate was not observed (call ObserveAggregate "
          "after every Compress)");
    }
    return absl::OkStatus();
  }

  void Choose(absl::Span<const float> a, absl::Span<const int32_t> block_max,
              std::vector<uint32_t>* indices) override {
    const float w = options_.weight;
    const float mu = static_cast<float>(options_.mu);
    override_scores_.resize(prev_indices_.size());
    for (size_t i = 0; i < prev_indices_.size(); ++i) {
      const float magnitude = std::fabs(a[prev_indices_[i]]);
      const float share = w * prev_values_[i];
      if (share == 0.0f) {
        // Zero-denominator guard: v_prev == 0 (or w * v_prev underflowed) is "no evidence".
        override_scores_[i] = magnitude * no_evidence_scale_;
        continue;
      }
      const float delta = (prev_aggregate_[i] - share) / share;
      override_scores_[i] = magnitude * std::tanh(std::fabs(1.0f + delta) / mu);
    }
    selector_.Select(a, no_evidence_scale_, ScoreOverrides{prev_indices_, override_scores_}, k_,
                     indices, block_max);
    if (options_.mask_diagnostic) Diagnose(a, *indices);
  }

  // Plain Top-k's mask T, from R (this round's picks) and P (last round's) alone. Every entry
  // outside R and P has |a| no larger than any entry of R (its unregularised score lost to every
  // pick, and a regularised pick's |a| is at least its score), with ties to the lower index; so
  // the top k of R u P by (|a|, lower index) is T. Then not_topk = k - |T n R|, repeats = |T n P|.
  void Diagnose(absl::Span<const float> a, absl::Span<const uint32_t> picks) {
    diagnosis_.clear();
    size_t p = 0;
    for (uint32_t j : picks) {
      for (; p < prev_indices_.size() && prev_indices_[p] < j; ++p) {
        diagnosis_.push_back({std::fabs(a[prev_indices_[p]]), prev_indices_[p], false, true});
      }
      const bool also_prev = p < prev_indices_.size() && prev_indices_[p] == j;
      if (also_prev) ++p;
      diagnosis_.push_back({std::fabs(a[j]), j, true, also_prev});
    }
    for (; p < prev_indices_.size(); ++p) {
      diagnosis_.push_back({std::fabs(a[prev_indices_[p]]), prev_indices_[p], false, true});
    }
    const size_t k = picks.size();
    auto before = [](const Diagnosed& x, const Diagnosed& y) {
      return x.magnitude > y.magnitude || (x.magnitude == y.magnitude && x.index < y.index);
    };
    if (diagnosis_.size() > k) {
      std::nth_element(diagnosis_.begin(), diagnosis_.begin() + (k - 1), diagnosis_.end(), before);
    }
    MaskDiagnostic d{k, k, 0};
    for (size_t i = 0; i < k; ++i) {
      d.not_topk -= diagnosis_[i].picked;
      d.topk_repeats += diagnosis_[i].previous;
    }
    diagnostic_ = d;
  }

 public:
  std::optional<MaskDiagnostic> last_diagnostic() const override { return diagnostic_; }

 protected:
  void ExportExtra(SparsifierState* s) const override {
    s->prev_indices = prev_indices_;
    s->prev_values = prev_values_;
    s->prev_aggregate = prev_aggregate_;
    s->compressed = compressed_;
    s->observed = observed_;
  }
  absl::Status CheckExtra(const SparsifierState& s) const override {
    const size_t n = s.prev_indices.size();
    if (s.prev_values.size() != n || s.prev_aggregate.size() != n || n > k_) {
      return absl::InvalidArgumentError("saved RegTop-k history is inconsistent");
    }
    for (size_t i = 0; i < n; ++i) {
      if (s.prev_indices[i] >= options_.dim || (i > 0 && s.prev_indices[i] <= s.prev_indices[i - 1])) {
        return absl::InvalidArgumentError("saved RegTop-k mask is out of range or unsorted");
      }
    }
    return absl::OkStatus();
  }
  void ImportExtra(const SparsifierState& s) override {
    prev_indices_ = s.prev_indices;
    prev_values_ = s.prev_values;
    prev_aggregate_ = s.prev_aggregate;
    compressed_ = s.compressed;
    observed_ = s.observed;
  }

  void AfterCompress(const SparseVector& sent) override {
    prev_indices_ = sent.indices;
    prev_values_ = sent.values;
    prev_aggregate_.assign(sent.nnz(), 0.0f);
    compressed_ = true;
    observed_ = false;
  }

 private:
  TopKSelector selector_;
  const float no_evidence_scale_;  // tanh(|1 + Q| / mu)
  // Last round's mask s_prev (sorted), the values sent there (v_prev) and the aggregate there.
  std::vector<uint32_t> prev_indices_;
  std::vector<float> prev_values_;
  std::vector<float> prev_aggregate_;
  std::vector<float> override_scores_;
  struct Diagnosed {
    float magnitude;
    uint32_t index;
    bool picked, previous;
  };
  std::vector<Diagnosed> diagnosis_;  // scratch of Diagnose
  std::optional<MaskDiagnostic> diagnostic_;
  bool compressed_ = false;
  bool observed_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Sparsifier>> CreateSparsifier(const SparsifierOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  switch (options.algorithm) {
    case Algorithm::kDense:
      return std::unique_ptr<Sparsifier>(new DenseSparsifier(options.dim));
    case Algorithm::kTopK:
      return std::unique_ptr<Sparsifier>(new TopKSparsifier(options));
    case Algorithm::kRandK:
      return std::unique_ptr<Sparsifier>(new RandKSparsifier(options));
    case Algorithm::kRegTopK:
      return std::unique_ptr<Sparsifier>(new RegTopKSparsifier(options));
  }
  return absl::InvalidArgumentError("unknown algorithm");
}

}  // namespace regtopk
