// SplitMix64 (Steele, Lea, Flood 2014): the project's one pseudo-random generator, and an
// unbiased integer draw on top of it. Everything random in regtopk goes through these, never
// through the C++ standard library's engines or distributions, whose output differs between
// implementations: two workers built differently must make the same choices for a seed.
// Header-only pure functions; the state is the caller's. The real-valued draws (normal, gamma)
// use libm's log and pow only: identical on hosts whose libm rounds those the same (glibc does).
#ifndef REGTOPK_COMMON_RANDOM_SPLITMIX64_H_
#define REGTOPK_COMMON_RANDOM_SPLITMIX64_H_

#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>

namespace regtopk {

// Advances `state` and returns the next 64 random bits.
inline uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// An unbiased integer in [0, n) (the short last block is rejected). Precondition: n > 0.
inline uint64_t UniformBelow(uint64_t& state, uint64_t n) {
  const uint64_t limit =
      std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t x;
  do x = SplitMix64(state);
  while (x >= limit);
  return x % n;
}

// A double in [0, 1) with 53 random bits.
inline double UniformDouble(uint64_t& state) {
  return static_cast<double>(SplitMix64(state) >> 11) * 0x1.0p-53;
}

// A standard normal draw: Marsaglia's polar method (one of the pair is used), so only +, *, /,
// sqrt and log touch the numbers. sqrt is exact in IEEE-754; log is the one libm call.
inline double StandardNormal(uint64_t& state) {
  double u, v, s;
  do {
    u = 2.0 * UniformDouble(state) - 1.0;
    v = 2.0 * UniformDouble(state) - 1.0;
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  return u * std::sqrt(-2.0 * std::log(s) / s);
}

// A Gamma(shape, 1) draw, shape > 0: Marsaglia and Tsang (2000), with the boost
// Gamma(a) = Gamma(a + 1) * U^(1/a) for a < 1.
inline double Gamma(uint64_t& state, double shape) {
  if (shape < 1.0) {
    const double u = UniformDouble(state);
    return Gamma(state, shape + 1.0) * std::pow(1.0 - u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    double x, v;
    do {
      x = StandardNormal(state);
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    const double u = UniformDouble(state);
    if (u < 1.0 - 0.0331 * (x * x) * (x * x)) return d * v;
    if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

// Fisher-Yates over [first, last) with UniformBelow: the same order on every standard library.
template <typename It>
void Shuffle(It first, It last, uint64_t& state) {
  const auto n = last - first;
  for (auto i = n - 1; i > 0; --i) {
    std::swap(first[i], first[UniformBelow(state, static_cast<uint64_t>(i) + 1)]);
  }
}

}  // namespace regtopk

#endif  // REGTOPK_COMMON_RANDOM_SPLITMIX64_H_
