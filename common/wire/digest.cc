#include "common/wire/digest.h"

#include <cstring>

namespace regtopk {
namespace {

constexpr uint64_t kMul = 0x9e3779b97f4a7c15ull;

uint64_t Mix(uint64_t x) {
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 29;
  return x;
}

}  // namespace

uint64_t DigestBytes(absl::string_view bytes) {
  // Four independent lanes over 8-byte words (so the loop is not one long dependency chain),
  // a tail, then a final mix with the length.
  uint64_t lane[4] = {1, 2, 3, 4};
  const char* p = bytes.data();
  const size_t n = bytes.size();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, p + i + 8 * l, 8);
      lane[l] = (lane[l] ^ w) * kMul;
      lane[l] ^= lane[l] >> 29;
    }
  }
  uint64_t tail = 0;
  for (; i < n; ++i) tail = (tail ^ static_cast<uint8_t>(p[i])) * kMul;
  uint64_t h = Mix(n * kMul ^ tail);
  for (uint64_t l : lane) h = Mix(h ^ Mix(l));
  return h;
}

uint64_t DigestFloats(absl::Span<const float> values) {
  return DigestBytes(absl::string_view(reinterpret_cast<const char*>(values.data()),
                                       values.size() * sizeof(float)));
}

}  // namespace regtopk
