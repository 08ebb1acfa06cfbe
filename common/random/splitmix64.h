// SplitMix64 (Steele, Lea, Flood 2014): the project's one pseudo-random generator, and an
// unbiased integer draw on top of it. Everything random in regtopk goes through these, never
// through the C++ standard library's engines or distributions, whose output differs between
// implementations: two workers built differently must make the same choices for a seed.
// Header-only pure functions; the state is the caller's.
#ifndef REGTOPK_COMMON_RANDOM_SPLITMIX64_H_
#define REGTOPK_COMMON_RANDOM_SPLITMIX64_H_

#include <cstdint>
#include <limits>

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

}  // namespace regtopk

#endif  // REGTOPK_COMMON_RANDOM_SPLITMIX64_H_
