#include "common/sparse/sparsifier.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <numeric>
#include <utility>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "common/cpu.h"
#include "common/random/splitmix64.h"
#include "common/parallel/task_pool.h"
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
  return ValidateThreadCount(threads, "sparsifier threads");
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

// Cache-line-aligned float storage for the pass's buffers: a 32-byte load from a buffer at
// malloc's usual 16-byte offset straddles two cache lines every other time.
template <typename T>
struct CacheAlignedAllocator {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  CacheAlignedAllocator() = default;
  template <typename U>
  CacheAlignedAllocator(const CacheAlignedAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlign); }
  template <typename U>
  bool operator==(const CacheAlignedAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheAlignedAllocator<U>&) const { return false; }
};
using CacheAlignedFloats = std::vector<float, CacheAlignedAllocator<float>>;

// The pass's kernel over [begin, end) (begin a multiple of kSelectBlock): a = g + e, each
// block's largest MagnitudeBits in block_max, and, if `masks` is set, for each block a bit per
// entry whose MagnitudeBits reach `bound` (masks[0] for the first block). If `zeros` is set, e
// counts as 0 where its bit is set (zeros[0] for the first block, a bit per entry): last round's
// sent positions, whose zeros the pass never writes. Returns nonzero if some a is not finite:
// inf and NaN have the largest magnitude bits, so a block maximum at or above infinity's tells
// (which catches a non-finite g and an overflow of g + e alike). The maxima and the masks ride
// along in registers: the memory traffic is that of a bare a = g + e.
template <bool kMasks>
int32_t AccumulatePortable(const float* g, const float* e, float* a, size_t begin, size_t end,
                           int32_t* block_max, int32_t bound, uint64_t* masks,
                           const uint64_t* zeros) {
  int32_t any_bad = 0;
  for (size_t block = begin; block < end; block += kSelectBlock) {
    const size_t block_end = std::min(end, block + kSelectBlock);
    const uint64_t z = zeros != nullptr ? zeros[(block - begin) / kSelectBlock] : 0;
    int32_t max_bits = 0;
    if (z == 0) {
      for (size_t j = block; j < block_end; ++j) {
        const float x = g[j] + e[j];
        a[j] = x;
        max_bits = std::max(max_bits, MagnitudeBits(x));
      }
    } else {
      for (size_t j = block; j < block_end; ++j) {
        const float x = g[j] + (((z >> (j - block)) & 1) != 0 ? 0.0f : e[j]);
        a[j] = x;
        max_bits = std::max(max_bits, MagnitudeBits(x));
      }
    }
    // Inf and NaN have the largest magnitude bits: the block's maximum tells.
    any_bad |= static_cast<int32_t>(max_bits >= 0x7f800000);
    block_max[block / kSelectBlock] = max_bits;
    if (kMasks) {
      masks[(block - begin) / kSelectBlock] =
          max_bits >= bound ? BoundMask(a + block, block_end - block, bound) : 0;
    }
  }
  return any_bad;
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same with AVX2 (chosen at run time where the CPU has it): the baseline SSE2 has neither
// an integer max nor an 8-wide movemask, and emulating them costs more than the pass's loads.
// With kStream, a is written with non-temporal stores (the caller fences them).
template <bool kMasks, bool kStream>
__attribute__((target("avx2"))) int32_t AccumulateAvx2(const float* g, const float* e, float* a,
                                                        size_t begin, size_t end,
                                                        int32_t* block_max, int32_t bound,
                                                        uint64_t* masks, const uint64_t* zeros) {
  const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
  const __m256i below_bound = _mm256_set1_epi32(bound - 1);
  const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  int32_t any_bad = 0;
  size_t block = begin;
  for (; block + kSelectBlock <= end; block += kSelectBlock) {
    __m256i max_bits = _mm256_setzero_si256();
    uint64_t mask = 0;
    const uint64_t z = zeros != nullptr ? zeros[(block - begin) / kSelectBlock] : 0;
    for (size_t v = 0; v < kSelectBlock; v += 8) {
      // Lanes whose bit is set read e as 0. Branch-free: at 1 % about half the blocks hold a
      // zero, at random, and a mispredicted branch here stalls the loads in flight.
      const __m256i bits =
          _mm256_and_si256(_mm256_set1_epi32(static_cast<int>((z >> v) & 0xff)), lane_bit);
      const __m256 ev = _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(bits, lane_bit)),
                                         _mm256_loadu_ps(e + block + v));
      const __m256 x = _mm256_add_ps(_mm256_loadu_ps(g + block + v), ev);
      if (kStream) {
        _mm256_stream_ps(a + block + v, x);  // a + block is 256-byte aligned
      } else {
        _mm256_storeu_ps(a + block + v, x);
      }
      const __m256i m = _mm256_and_si256(_mm256_castps_si256(x), magnitude);
      max_bits = _mm256_max_epi32(max_bits, m);
      if (kMasks) {
        const int hits = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(m, below_bound)));
        mask |= static_cast<uint64_t>(static_cast<uint32_t>(hits)) << v;
      }
    }
    __m128i h = _mm_max_epi32(_mm256_castsi256_si128(max_bits),
                              _mm256_extracti128_si256(max_bits, 1));
    h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0xb1));
    const int32_t block_bits = _mm_cvtsi128_si32(h);
    block_max[block / kSelectBlock] = block_bits;
    any_bad |= static_cast<int32_t>(block_bits >= 0x7f800000);  // inf and NaN are the largest
    if (kMasks) masks[(block - begin) / kSelectBlock] = mask;
  }
  if (block < end) {  // a short last block
    const size_t at = (block - begin) / kSelectBlock;
    any_bad |= AccumulatePortable<kMasks>(g, e, a, block, end, block_max, bound,
                                          kMasks ? masks + at : nullptr,
                                          zeros != nullptr ? zeros + at : nullptr);
  }
  return any_bad;
}
#endif

// `stream` (only where CpuHasAvx2()): a is written past the caches; the caller fences the stores
// (StoreFence) before anything else reads a, and reads this thread's a only where it must.
int32_t AccumulateBlocks(const float* g, const float* e, float* a, size_t begin, size_t end,
                         int32_t* block_max, int32_t bound, uint64_t* masks,
                         const uint64_t* zeros, bool stream) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (CpuHasAvx2()) {
    if (stream) {
      return masks != nullptr
                 ? AccumulateAvx2<true, true>(g, e, a, begin, end, block_max, bound, masks, zeros)
                 : AccumulateAvx2<false, true>(g, e, a, begin, end, block_max, bound, masks,
                                               zeros);
    }
    return masks != nullptr
               ? AccumulateAvx2<true, false>(g, e, a, begin, end, block_max, bound, masks, zeros)
               : AccumulateAvx2<false, false>(g, e, a, begin, end, block_max, bound, masks, zeros);
  }
#endif
  return masks != nullptr
             ? AccumulatePortable<true>(g, e, a, begin, end, block_max, bound, masks, zeros)
             : AccumulatePortable<false>(g, e, a, begin, end, block_max, bound, masks, zeros);
}

// Orders this thread's streaming stores before its later stores (the pool's hand-back
// included), so that every thread then reads them.
void StoreFence() {
#if defined(__x86_64__) && defined(__GNUC__)
  _mm_sfence();
#endif
}

// The error-feedback loop shared by Top-k, Rand-k and RegTop-k: a = g + e, pick k positions of
// a (the subclass's rule), send a there, e = a with the sent entries zeroed.
//
// One pass over memory does nearly all the work, split into contiguous shares over the
// options' threads and, within a share, into chunks small enough to stay in cache. For each
// chunk it
//   1. writes a = g + e, reading e as 0 at last round's sent positions (whose zeros are never
//      written: they would be stores to lines the stream has not reached, a miss each, and e
//      is scratch after the round), with each 64-entry block's largest magnitude (which also
//      tells a non-finite value) and reach mask riding along in registers,
//   2. copies a at last round's sent positions (RegTop-k's regularised entries), and
//   3. appends the entries whose score reaches a predicted threshold (last round's, adjusted;
//      Top-k and RegTop-k) to the share's candidate list, while the chunk is still in cache.
// Steps 2 and 3 recompute a from g and e (the same float sum, so the same bits), which the
// chunk's loads left in cache: a itself is written with streaming stores where the buffers
// are large (SparsifierOptions::stores), and those leave it out of the caches.
// The selection then needs no further pass over a unless the prediction left fewer than k
// candidates (or far too many): then a sampled threshold and a filter over the block maxima
// (also split over the threads) find them, as in the first round. Either way the candidates
// hold every entry at or above the threshold, so the result is the same exact top k: the
// threshold and the thread count change the speed, never a mask or a value.
class ErrorFeedbackSparsifier : public Sparsifier {
 public:
  explicit ErrorFeedbackSparsifier(const SparsifierOptions& options)
      : options_(options),
        k_(options.k()),
        selector_(options.seed),
        pool_(options.threads),
        lanes_(static_cast<size_t>(pool_.threads())),
        error_(options.dim, 0.0f),
        acc_(options.dim),
        block_max_((options.dim + kSelectBlock - 1) / kSelectBlock),
        stream_(CpuHasAvx2() &&
                (options.stores == SparsifierOptions::Stores::kStreaming ||
                 (options.stores == SparsifierOptions::Stores::kAuto &&
                  options.dim >= SparsifierOptions::kStreamingDim))) {}

  absl::Status Compress(absl::Span<const float> gradient, SparseVector* out) final {
    const size_t d = options_.dim;
    if (absl::Status s = CheckLength(gradient, d); !s.ok()) return s;
    if (absl::Status s = BeforeCompress(); !s.ok()) return s;
    // Accumulate into a scratch buffer, not into e: if a value turns out non-finite, e is left
    // untouched (its deferred zeros still pending). Testing a = g + e (an integer test on the
    // exponent bits) catches a non-finite g and an overflow of g + e alike.
    sent_a_.resize(sent_.size());
    const float scale = PlainScale();
    const float threshold = scale > 0.0f ? predicted_threshold_ : 0.0f;
    pool_.Run([&](int t) { PassShare(gradient.data(), t, scale, threshold); });
    size_t bad = d;
    bool extracted = threshold > 0.0f;
    // Each share gathered every entry at or above its own final threshold (it may have raised
    // the prediction), so together they hold every entry at or above the largest.
    float gathered = threshold;
    for (const Lane& lane : lanes_) {
      bad = std::min(bad, lane.bad);
      extracted = extracted && !lane.overflow;
      gathered = std::max(gathered, lane.threshold);
    }
    if (bad != d) return NonFiniteError(gradient, bad, !std::isfinite(gradient[bad]));
    Choose(extracted ? gathered : 0.0f, out);
    AfterCompress(*out);
    // e = a with the sent entries zeroed; the old e (its zeros still unwritten) becomes next
    // round's scratch. The new zeros are read as such by the next pass, and written only if
    // error() or ExportState asks first.
    std::swap(error_, acc_);
    sent_.assign(out->indices.begin(), out->indices.end());
    sent_zeroed_ = false;
    return absl::OkStatus();
  }

  absl::Status ObserveAggregate(SparseView) override { return absl::OkStatus(); }
  Algorithm algorithm() const override { return options_.algorithm; }
  size_t dim() const override { return options_.dim; }
  size_t k() const override { return k_; }
  absl::Span<const float> error() const override {
    SettleZeros();
    return error_;
  }

  SparsifierState ExportState() const final {
    SettleZeros();
    SparsifierState s;
    s.error.assign(error_.begin(), error_.end());
    ExportExtra(&s);
    return s;
  }
  absl::Status ImportState(const SparsifierState& s) final {
    if (s.error.size() != options_.dim) {
      return absl::InvalidArgumentError(absl::StrCat("saved error feedback has ", s.error.size(),
                                                     " entries, the model has ", options_.dim));
    }
    if (absl::Status st = CheckExtra(s); !st.ok()) return st;
    error_.assign(s.error.begin(), s.error.end());
    // The saved e already holds its zeros. RegTop-k restores its mask with SetSent.
    sent_.clear();
    sent_zeroed_ = true;
    predicted_threshold_ = 0.0f;
    last_pivot_ = 0.0f;
    ImportExtra(s);
    return absl::OkStatus();
  }

 protected:
  // The subclass's own part of the state (RegTop-k's history, Rand-k's generator).
  virtual void ExportExtra(SparsifierState* s) const {}
  virtual absl::Status CheckExtra(const SparsifierState& s) const { return absl::OkStatus(); }
  virtual void ImportExtra(const SparsifierState& s) {}

  // The factor of |a| in the score of every position the subclass does not override; 0 if the
  // subclass does not select by score (then the pass gathers no candidates).
  virtual float PlainScale() const { return 0.0f; }
  // Writes the k chosen positions (increasing) and the values of a there into `out`.
  // `threshold` > 0 if the pass gathered every entry whose plain score reaches it.
  virtual void Choose(float threshold, SparseVector* out) = 0;
  virtual absl::Status BeforeCompress() { return absl::OkStatus(); }
  // Called after Choose, while sent() still holds last round's positions.
  virtual void AfterCompress(const SparseVector& sent) {}

  // a = g + e of the round being compressed, and its block maxima.
  absl::Span<const float> acc() const { return acc_; }
  // Last round's sent positions, and a at them this round (the pass copies it).
  absl::Span<const uint32_t> sent() const { return sent_; }
  absl::Span<const float> sent_a() const { return sent_a_; }

  // The exact top k by score (plain scores |a| * PlainScale(), `overrides` where given; ties
  // to the lower index): from the pass's candidates when `threshold` > 0 and they suffice, else
  // from a sampled threshold and a filter over the block maxima, lowered until it does.
  // `overrides_at(t)` gives the overrides for a selection at threshold t: an override whose
  // score is below t may carry any score below t (so a subclass can skip computing it).
  void SelectTopK(float threshold, TopKSelector::OverridesAt overrides_at, SparseVector* out) {
    const float scale = PlainScale();
    bool done = false;
    if (threshold > 0.0f) {
      done = selector_.Finish(LaneParts(), scale, overrides_at(threshold), threshold, k_, &out->indices,
                              &out->values);
    }
    if (!done) {
      selector_.SelectFromSample(
          acc_, scale, k_, [&](float t) { return FilterShares(scale, t); }, overrides_at,
          &out->indices, &out->values);
    }
    // Next round's guess: this round's suggestion, moved as far as the k-th score fell since
    // last round, or by the square root of its rise. A guess too high leaves fewer than k
    // candidates and costs a second look at a, while one too low only gathers more (and the
    // pass raises it once they pass a cap). While error feedback builds up from zero the
    // scores grow round after round by less each time (about sqrt((r + 1) / r) in round r),
    // so following the whole last rise overshoots and the square root stays under the next.
    const float pivot = selector_.pivot_score();
    float drift = 1.0f;
    if (last_pivot_ > 0.0f && pivot > 0.0f) {
      drift = std::clamp(pivot / last_pivot_, 0.67f, 1.5f);
      if (drift > 1.0f) drift = std::sqrt(drift);
    }
    last_pivot_ = pivot;
    predicted_threshold_ = selector_.suggested_threshold() * drift;
  }

  // After ImportState: last round's sent positions (validated: increasing, < dim), where e is
  // already zero.
  void SetSent(absl::Span<const uint32_t> indices) {
    sent_.assign(indices.begin(), indices.end());
    sent_zeroed_ = true;
  }

  const SparsifierOptions options_;
  const size_t k_;
  TopKSelector selector_;

 private:
  static constexpr size_t kChunk = 64 * kSelectBlock;  // 16 KiB of each buffer

  struct Lane {
    CandidateList candidates;  // in index order
    float threshold = 0.0f;    // the candidates hold every entry of the share at or above it
    size_t bad = 0;            // first non-finite position, or dim
    bool overflow = false;     // gathered too many: the candidates are incomplete
    std::vector<uint32_t> histogram;  // scratch of Raise
  };

  // The share's candidates passed their cap: raise its threshold to about the k-th best score
  // gathered so far (KthBestBracket) and drop the candidates below. The candidates still hold
  // every entry of the share at or above the threshold (whatever it is raised to, so the
  // selection stays exact); at most the k-th best, so that at least k remain and the selection
  // needs no second look at a. False if ties leave too many to make room.
  bool Raise(Lane& lane, size_t cap) {
    lane.threshold = KthBestBracket(lane.candidates.span(), lane.threshold, k_, &lane.histogram);
    lane.candidates.KeepReaching(lane.threshold);
    return lane.candidates.size() <= cap / 2;
  }

  void PassShare(const float* g, int t, float scale, float threshold) {
    Lane& lane = lanes_[static_cast<size_t>(t)];
    const size_t d = options_.dim;
    lane.candidates.clear();
    lane.bad = d;
    lane.overflow = false;
    size_t begin, end;
    TaskPool::Share(d, kChunk, pool_.threads(), t, &begin, &end);
    size_t s = std::lower_bound(sent_.begin(), sent_.end(), begin) - sent_.begin();
    const size_t s_end = std::lower_bound(sent_.begin(), sent_.end(), end) - sent_.begin();
    bool gather = threshold > 0.0f;
    lane.threshold = threshold;
    int32_t bound = gather ? ReachBound(scale, threshold) : 0;
    // Far more candidates than a good prediction gives: raise the share's threshold (Raise),
    // and if that cannot make room stop gathering (the selection falls back to its own filter).
    // At least 2k, so that a raise (which keeps about k) makes room.
    const size_t cap = std::max((4 * k_ + 4096) * (end - begin) / d + 256, 2 * k_ + 256);
    float* e = error_.data();
    float* a = acc_.data();
    int32_t* block_max = block_max_.data();
    uint64_t masks[kChunk / kSelectBlock];
    uint64_t zeros[kChunk / kSelectBlock];
    for (size_t base = begin; base < end; base += kChunk) {
      const size_t chunk_end = std::min(end, base + kChunk);
      // Last round's sent positions read e as 0 (a bit per entry): writing the zeros into e
      // here would store to lines the stream has not reached yet, a miss each. e is scratch
      // after this round (the swap below), so they are never needed there.
      const uint64_t* chunk_zeros = nullptr;
      if (!sent_zeroed_ && s < s_end && sent_[s] < chunk_end) {
        std::fill(std::begin(zeros), std::end(zeros), uint64_t{0});
        for (size_t i = s; i < s_end && sent_[i] < chunk_end; ++i) {
          const size_t at = sent_[i] - base;
          zeros[at / kSelectBlock] |= uint64_t{1} << (at % kSelectBlock);
        }
        chunk_zeros = zeros;
      }
      const int32_t any_bad = AccumulateBlocks(g, e, a, base, chunk_end, block_max, bound,
                                               gather ? masks : nullptr, chunk_zeros, stream_);
      if (any_bad) {
        lane.bad = base + FindNonFinite(absl::MakeConstSpan(a + base, chunk_end - base));
        break;
      }
      // a_j exactly as the kernel summed it, from the g and e still in cache.
      auto a_at = [g, e, base, chunk_zeros](size_t j) {
        const size_t at = j - base;
        const bool zero = chunk_zeros != nullptr &&
                          ((chunk_zeros[at / kSelectBlock] >> (at % kSelectBlock)) & 1) != 0;
        return g[j] + (zero ? 0.0f : e[j]);
      };
      for (; s < s_end && sent_[s] < chunk_end; ++s) sent_a_[s] = a_at(sent_[s]);
      if (gather) {
        AppendMaskedBy(a_at, base, masks, (chunk_end - base + kSelectBlock - 1) / kSelectBlock,
                       scale, lane.threshold, &lane.candidates);
        if (lane.candidates.size() > cap) {
          if (Raise(lane, cap)) {
            bound = ReachBound(scale, lane.threshold);
          } else {
            lane.overflow = true;
            gather = false;
          }
        }
      }
    }
    if (stream_) StoreFence();
  }

  // Every share's candidates at `threshold` (all positions if it is 0).
  absl::Span<const absl::Span<ScoredEntry>> FilterShares(float scale, float threshold) {
    const size_t d = options_.dim;
    pool_.Run([&](int t) {
      CandidateList& out = lanes_[static_cast<size_t>(t)].candidates;
      out.clear();
      size_t begin, end;
      TaskPool::Share(d, kChunk, pool_.threads(), t, &begin, &end);
      const float* a = acc_.data();
      if (threshold <= 0.0f) {
        AppendAll(a, begin, end, scale, &out);
      } else if (scale > 0.0f) {
        AppendReaching(a, begin, end, block_max_.data(), scale, threshold, &out);
      }
    });
    return LaneParts();
  }

  // The shares' candidate lists, in index order.
  absl::Span<const absl::Span<ScoredEntry>> LaneParts() {
    parts_.clear();
    for (Lane& lane : lanes_) parts_.push_back(lane.candidates.mutable_span());
    return parts_;
  }

  void SettleZeros() const {
    if (sent_zeroed_) return;
    for (uint32_t j : sent_) error_[j] = 0.0f;
    sent_zeroed_ = true;
  }

  TaskPool pool_;
  std::vector<Lane> lanes_;
  std::vector<absl::Span<ScoredEntry>> parts_;
  // e, except that while !sent_zeroed_ the entries at sent_ still hold the a they were sent
  // with (error() and ExportState settle them; the next pass reads them as 0).
  mutable CacheAlignedFloats error_;
  mutable bool sent_zeroed_ = true;
  CacheAlignedFloats acc_;
  std::vector<int32_t> block_max_;
  const bool stream_;  // the pass writes acc_ with streaming stores
  std::vector<uint32_t> sent_;  // last round's sent positions (increasing)
  std::vector<float> sent_a_;   // this round's a at sent_
  // Last round's suggestion for the pass's candidate threshold; 0 = none (gather nothing).
  float predicted_threshold_ = 0.0f;
  float last_pivot_ = 0.0f;  // the k-th best score of the last round (0: none)
};

// Entries two sorted index lists share. Branch-free: at 1 % the lists interleave at random,
// and a branchy merge mispredicted about once per step (0.9 ms a round at d = 11.2 M).
size_t CountCommon(absl::Span<const uint32_t> x, absl::Span<const uint32_t> y) {
  size_t common = 0, i = 0, j = 0;
  while (i < x.size() && j < y.size()) {
    const uint32_t a = x[i], b = y[j];
    common += static_cast<size_t>(a == b);
    i += static_cast<size_t>(a <= b);
    j += static_cast<size_t>(b <= a);
  }
  return common;
}

class TopKSparsifier final : public ErrorFeedbackSparsifier {
 public:
  explicit TopKSparsifier(const SparsifierOptions& options) : ErrorFeedbackSparsifier(options) {}

  std::optional<MaskDiagnostic> last_diagnostic() const override { return diagnostic_; }

 protected:
  float PlainScale() const override { return 1.0f; }
  void Choose(float threshold, SparseVector* out) override {
    SelectTopK(threshold, [](float) { return ScoreOverrides{}; }, out);
  }
  void AfterCompress(const SparseVector& sent) override {
    // The mask is plain Top-k's by definition; what repeats is the diagnostic. Before the first
    // round nothing was sent (nothing repeats); after a restore the last mask is unknown.
    if (!options_.mask_diagnostic) return;
    diagnostic_.reset();
    if (prev_known_) diagnostic_ = MaskDiagnostic{k_, 0, Repeats(sent)};
    prev_known_ = true;
  }
  // How many of last round's positions P are in this round's mask: those whose |a| beats the
  // k-th best score. a at P is the pass's copy, so this is a scan of |P| floats rather than a
  // merge of two index lists; only a tie with the k-th best score (whose index then decides)
  // needs the merge.
  size_t Repeats(const SparseVector& sent) const {
    const float pivot = selector_.pivot_score();
    size_t above = 0;
    bool tie = false;
    for (float v : sent_a()) {
      const float score = std::fabs(v);
      above += static_cast<size_t>(score > pivot);
      tie |= score == pivot;
    }
    return tie ? CountCommon(sent.indices, this->sent()) : above;
  }
  void ImportExtra(const SparsifierState&) override {
    // The state carries no previous mask: the next round's repeats are unknown.
    prev_known_ = false;
    diagnostic_.reset();
  }

 private:
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
  void Choose(float, SparseVector* out) override {
    std::vector<uint32_t>* indices = &out->indices;
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
    const absl::Span<const float> a = acc();
    out->values.resize(k_);
    for (size_t i = 0; i < k_; ++i) out->values[i] = a[(*indices)[i]];
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
        no_evidence_scale_(static_cast<float>(std::tanh(std::fabs(1.0 + kRegTopKQ) / options.mu))) {
  }

  absl::Status ObserveAggregate(SparseView aggregate) override {
    // g_prev is only needed on last round's mask: a merge of two sorted lists.
    const absl::Span<const uint32_t> prev = sent();
    size_t a = 0;
    const size_t na = aggregate.indices.size();
    for (size_t i = 0; i < prev.size(); ++i) {
      const uint32_t j = prev[i];
      while (a < na && aggregate.indices[a] < j) ++a;
      prev_aggregate_[i] = (a < na && aggregate.indices[a] == j) ? aggregate.values[a] : 0.0f;
    }
    observed_ = true;
    return absl::OkStatus();
  }

  std::optional<MaskDiagnostic> last_diagnostic() const override { return diagnostic_; }

 protected:
  absl::Status BeforeCompress() override {
    if (compressed_ && !observed_) {
      return absl::FailedPreconditionError(
          "RegTop-k: the previous round's aggregate was not observed (call ObserveAggregate "
          "after every Compress)");
    }
    return absl::OkStatus();
  }

  float PlainScale() const override { return no_evidence_scale_; }

  void Choose(float threshold, SparseVector* out) override {
    // The pass copied a at last round's mask (the only entries whose score is not
    // |a| * no_evidence_scale_), so the k regularised scores need no gather from a.
    const absl::Span<const uint32_t> prev = sent();
    const absl::Span<const float> prev_a = sent_a();
    const float w = options_.weight;
    const float mu = static_cast<float>(options_.mu);
    override_scores_.resize(prev.size());
    // A regularised score is at most |a| (tanh <= 1), so where |a| is below the threshold the
    // score is too, and its tanh is not needed: after a send e is 0 there, and a is one
    // round's gradient, rarely near the threshold.
    auto overrides_at = [&](float t) {
      for (size_t i = 0; i < prev.size(); ++i) {
        const float magnitude = std::fabs(prev_a[i]);
        if (magnitude < t) {
          override_scores_[i] = 0.0f;
          continue;
        }
        const float share = w * prev_values_[i];
        if (share == 0.0f) {
          // Zero-denominator guard: v_prev == 0 (or w * v_prev underflowed) is "no evidence".
          override_scores_[i] = magnitude * no_evidence_scale_;
          continue;
        }
        const float delta = (prev_aggregate_[i] - share) / share;
        override_scores_[i] = magnitude * std::tanh(std::fabs(1.0f + delta) / mu);
      }
      return ScoreOverrides{prev, override_scores_, prev_a};
    };
    SelectTopK(threshold, overrides_at, out);
    if (options_.mask_diagnostic) Diagnose(*out);
  }

  // Plain Top-k's mask T, from R (this round's picks) and P (last round's) alone. Every entry
  // outside R and P has |a| no larger than any entry of R (its unregularised score lost to every
  // pick, and a regularised pick's |a| is at least its score), with ties to the lower index; so
  // the top k of R u P by (|a|, lower index) is T. Then not_topk = k - |T n R|, repeats = |T n P|.
  // |a| on R is the sent values, on P the pass's copy: no gather from a.
  void Diagnose(const SparseVector& picks) {
    const absl::Span<const uint32_t> prev = sent();
    const absl::Span<const float> prev_a = sent_a();
    const size_t k = picks.nnz();
    // Only entries of P \ R at least as large as R's smallest |a| can displace a pick; usually
    // there are none (a is small where e was just zeroed), and then T = R.
    float weakest = std::numeric_limits<float>::infinity();
    for (float v : picks.values) weakest = std::min(weakest, std::fabs(v));
    // Which entries of P were picked, from their scores: the last selection's override scores
    // (0 where |a| was below its threshold, and the pivot is at least that) against the k-th
    // best score. A branch-free scan of |P|; only a tie with the k-th best score (whose index
    // then decides) needs the merge of the two index lists.
    // The first kFewRivals rivals' places in P are kept as the scan goes (every step writes
    // the next free slot; a rival keeps it), for DiagnoseFewRivals.
    const float pivot = selector_.pivot_score();
    size_t repeats = 0, rivals = 0;
    size_t rival_at[kFewRivals + 1];
    bool tie = false;
    for (size_t p = 0; p < prev.size(); ++p) {
      const float score = override_scores_[p];
      const bool picked = score > pivot;
      tie |= score == pivot;
      repeats += static_cast<size_t>(picked);
      rival_at[std::min(rivals, kFewRivals)] = p;
      rivals += static_cast<size_t>(!picked && std::fabs(prev_a[p]) >= weakest);
    }
    if (tie) {
      repeats = rivals = 0;
      for (size_t i = 0, p = 0; p < prev.size(); ++p) {
        while (i < k && picks.indices[i] < prev[p]) ++i;
        if (i < k && picks.indices[i] == prev[p]) {
          ++repeats;
        } else if (std::fabs(prev_a[p]) >= weakest) {
          ++rivals;
        }
      }
    }
    if (rivals == 0) {
      diagnostic_ = MaskDiagnostic{k, 0, repeats};
      return;
    }
    if (rivals <= kFewRivals && !tie) {
      DiagnoseFewRivals(picks, repeats, absl::MakeConstSpan(rival_at, rivals));
      return;
    }
    diagnosis_.clear();
    size_t p = 0;
    for (size_t i = 0; i < k; ++i) {
      const uint32_t j = picks.indices[i];
      for (; p < prev.size() && prev[p] < j; ++p) {
        diagnosis_.push_back({std::fabs(prev_a[p]), prev[p], false, true});
      }
      const bool also_prev = p < prev.size() && prev[p] == j;
      if (also_prev) ++p;
      diagnosis_.push_back({std::fabs(picks.values[i]), j, true, also_prev});
    }
    for (; p < prev.size(); ++p) diagnosis_.push_back({std::fabs(prev_a[p]), prev[p], false, true});
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

  // T is the top k of R and the m rivals (P \ R where |a| reaches R's smallest): all of them
  // but the m worst, W. So not_topk = |W n R| and topk_repeats = |R n P| - |W n R n P| +
  // |rivals \ W|, and only W needs finding: one scan of R and the rivals that keeps the m worst
  // seen (rarely replaced, since R comes in index order, not by size), instead of ranking all
  // of R and P. Ranked by (|a| descending, index ascending) through one integer key.
  static constexpr size_t kFewRivals = 64;
  void DiagnoseFewRivals(const SparseVector& picks, size_t repeats,
                         absl::Span<const size_t> rival_at) {
    const size_t m = rival_at.size();
    const absl::Span<const uint32_t> prev = sent();
    const absl::Span<const float> prev_a = sent_a();
    auto key = [](float v, uint32_t index) {  // larger is better
      return (static_cast<uint64_t>(MagnitudeBits(v)) << 32) | (0xffffffffu - index);
    };
    struct Worst {
      uint64_t key;
      bool picked;
    };
    Worst worst[kFewRivals];
    size_t n = 0, best_of_worst = 0;
    auto offer = [&](uint64_t k, bool picked) {
      if (n < m) {
        worst[n++] = Worst{k, picked};
      } else if (k < worst[best_of_worst].key) {
        worst[best_of_worst] = Worst{k, picked};
      } else {
        return;
      }
      if (n < m) return;
      best_of_worst = 0;
      for (size_t i = 1; i < m; ++i) {
        if (worst[i].key > worst[best_of_worst].key) best_of_worst = i;
      }
    };
    for (size_t i = 0; i < picks.nnz(); ++i) offer(key(picks.values[i], picks.indices[i]), true);
    for (size_t p : rival_at) offer(key(prev_a[p], prev[p]), false);
    size_t worst_picks = 0, worst_repeats = 0;
    for (size_t i = 0; i < n; ++i) {
      if (!worst[i].picked) continue;
      ++worst_picks;
      const uint32_t j = 0xffffffffu - static_cast<uint32_t>(worst[i].key);
      worst_repeats += static_cast<size_t>(std::binary_search(prev.begin(), prev.end(), j));
    }
    diagnostic_ = MaskDiagnostic{k_, worst_picks, repeats - worst_repeats + (m - (n - worst_picks))};
  }

  void ExportExtra(SparsifierState* s) const override {
    s->prev_indices.assign(sent().begin(), sent().end());
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
    SetSent(s.prev_indices);
    prev_values_ = s.prev_values;
    prev_aggregate_ = s.prev_aggregate;
    compressed_ = s.compressed;
    observed_ = s.observed;
  }

  void AfterCompress(const SparseVector& sent) override {
    prev_values_ = sent.values;
    prev_aggregate_.assign(sent.nnz(), 0.0f);
    compressed_ = true;
    observed_ = false;
  }

 private:
  const float no_evidence_scale_;  // tanh(|1 + Q| / mu)
  // On last round's mask s_prev (the base class's sent()): the values sent there (v_prev) and
  // the aggregate there (g_prev).
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
