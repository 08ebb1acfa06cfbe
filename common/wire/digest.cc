#include "common/wire/digest.h"

#include <algorithm>
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

// Four independent lanes over 8-byte words (so the loop is not one long dependency chain),
// a tail, then a final mix with the length.
void StreamingDigest::Block(const char* p) {
  for (int l = 0; l < 4; ++l) {
    uint64_t w;
    std::memcpy(&w, p + 8 * l, 8);
    lane_[l] = (lane_[l] ^ w) * kMul;
    lane_[l] ^= lane_[l] >> 29;
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
    const size_t take = std::min(n, 32 - pending_size_);
    std::memcpy(pending_ + pending_size_, p, take);
    pending_size_ += take;
    p += take;
    n -= take;
    if (pending_size_ < 32) return;
    Block(pending_);
    pending_size_ = 0;
  }
  for (; n >= 32; p += 32, n -= 32) Block(p);
  std::memcpy(pending_, p, n);
  pending_size_ = n;
}

uint64_t StreamingDigest::Finish() const {
  uint64_t tail = 0;
  for (size_t i = 0; i < pending_size_; ++i) tail = (tail ^ static_cast<uint8_t>(pending_[i])) * kMul;
  uint64_t h = Mix(total_ * kMul ^ tail);
  for (uint64_t l : lane_) h = Mix(h ^ Mix(l));
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
