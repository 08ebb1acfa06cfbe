#include "common/wire/digest.h"

#include <algorithm>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "common/cpu.h"

namespace regtopk {
namespace {

constexpr uint64_t kMul = 0x9e3779b97f4a7c15ull;
constexpr uint64_t kKey[8] = {0xbf58476d1ce4e5b9ull, 0x94d049bb133111ebull, 0xc2b2ae3d27d4eb4full,
                              0x165667b19e3779f9ull, 0x27d4eb2f165667c5ull, 0xff51afd7ed558ccdull,
                              0xc4ceb9fe1a85ec53ull, 0x85ebca77c2b2ae63ull};
constexpr size_t kStripe = StreamingDigest::kStripeBytes;
constexpr size_t kPerBlock = StreamingDigest::kStripesPerBlock;
constexpr size_t kBlock = kStripe * kPerBlock;

uint64_t Mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 29;
  return x;
}

// Stripe s's salt: (s + 1) * kMul, as a table (the vector kernel broadcasts it).
struct Salts {
  uint64_t v[kPerBlock];
  constexpr Salts() : v() {
    for (size_t s = 0; s < kPerBlock; ++s) v[s] = (s + 1) * kMul;
  }
};
constexpr Salts kSalts;

// One stripe at place s of its block, into the eight accumulators.
inline void MixStripe(uint64_t* acc, const char* p, size_t s) {
  for (int l = 0; l < 8; ++l) {
    uint64_t w;
    std::memcpy(&w, p + 8 * l, 8);
    const uint64_t x = w ^ (kKey[l] + kSalts.v[s]);
    acc[l] += w + (x & 0xffffffffull) * (x >> 32);
  }
}

inline void Scramble(uint64_t* acc) {
  for (int l = 0; l < 8; ++l) acc[l] = (acc[l] ^ (acc[l] >> 47)) * kMul;
}

// Whole blocks: the loop that must run at memory speed.
void BlocksPortable(uint64_t* acc, const char* p, size_t blocks) {
  for (size_t b = 0; b < blocks; ++b, p += kBlock) {
    for (size_t s = 0; s < kPerBlock; ++s) MixStripe(acc, p + s * kStripe, s);
    Scramble(acc);
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same integers with AVX2 (chosen at run time where the CPU has it): two vectors of four
// accumulators, lo32(x) * hi32(x) as one vpmuludq (the compiler emulates a full 64-bit multiply
// when it vectorizes the portable loop, at half the speed).
__attribute__((target("avx2"))) void BlocksAvx2(uint64_t* acc, const char* p, size_t blocks) {
  __m256i acc0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc));
  __m256i acc1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + 4));
  const __m256i key0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kKey));
  const __m256i key1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kKey + 4));
  for (size_t b = 0; b < blocks; ++b, p += kBlock) {
    for (size_t s = 0; s < kPerBlock; ++s) {
      const __m256i salt = _mm256_set1_epi64x(static_cast<long long>(kSalts.v[s]));
      const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + s * kStripe));
      const __m256i w1 =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + s * kStripe + 32));
      const __m256i x0 = _mm256_xor_si256(w0, _mm256_add_epi64(key0, salt));
      const __m256i x1 = _mm256_xor_si256(w1, _mm256_add_epi64(key1, salt));
      acc0 = _mm256_add_epi64(
          acc0, _mm256_add_epi64(w0, _mm256_mul_epu32(x0, _mm256_srli_epi64(x0, 32))));
      acc1 = _mm256_add_epi64(
          acc1, _mm256_add_epi64(w1, _mm256_mul_epu32(x1, _mm256_srli_epi64(x1, 32))));
    }
    // Once per KiB: the 64-bit multiply in scalar code.
    alignas(32) uint64_t a[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(a), acc0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(a + 4), acc1);
    Scramble(a);
    acc0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(a));
    acc1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(a + 4));
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc), acc0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + 4), acc1);
}
#endif

void Blocks(uint64_t* acc, const char* p, size_t blocks) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (CpuHasAvx2()) return BlocksAvx2(acc, p, blocks);
#endif
  BlocksPortable(acc, p, blocks);
}

}  // namespace

void StreamingDigest::Stripe(const char* p) {
  MixStripe(acc_, p, stripe_);
  if (++stripe_ == kPerBlock) {
    Scramble(acc_);
    stripe_ = 0;
  }
}

void StreamingDigest::Update(absl::string_view bytes) {
  // An empty piece may have a null data(): memcpy from it is undefined (found by UBSan in
  // deploy/check-sanitizers.sh).
  if (bytes.empty()) return;
  const char* p = bytes.data();
  size_t n = bytes.size();
  total_ += n;
  if (pending_size_ > 0) {
    const size_t take = std::min(n, kStripe - pending_size_);
    std::memcpy(pending_ + pending_size_, p, take);
    pending_size_ += take;
    p += take;
    n -= take;
    if (pending_size_ < kStripe) return;
    Stripe(pending_);
    pending_size_ = 0;
  }
  // Stripes up to a block boundary, then whole blocks at once, then the remaining stripes.
  while (stripe_ != 0 && n >= kStripe) {
    Stripe(p);
    p += kStripe;
    n -= kStripe;
  }
  if (stripe_ == 0 && n >= kBlock) {
    const size_t blocks = n / kBlock;
    Blocks(acc_, p, blocks);
    p += blocks * kBlock;
    n -= blocks * kBlock;
  }
  for (; n >= kStripe; p += kStripe, n -= kStripe) Stripe(p);
  std::memcpy(pending_, p, n);
  pending_size_ = n;
}

uint64_t StreamingDigest::Finish() const {
  uint64_t acc[8];
  std::memcpy(acc, acc_, sizeof(acc));
  if (pending_size_ > 0) {  // the tail, zero-padded (the length below tells the padding apart)
    char last[kStripe] = {};
    std::memcpy(last, pending_, pending_size_);
    MixStripe(acc, last, stripe_);
  }
  uint64_t h = Mix(total_ * kMul + 0x632be59bd9b4e019ull);
  for (uint64_t a : acc) h = Mix(h ^ Mix(a));
  return h;
}

uint64_t DigestBytes(absl::string_view bytes) {
  StreamingDigest d;
  d.Update(bytes);
  return d.Finish();
}

uint64_t DigestFloats(absl::Span<const float> values) {
  return DigestBytes(absl::string_view(reinterpret_cast<const char*>(values.data()),
                                       values.size() * sizeof(float)));
}

}  // namespace regtopk
