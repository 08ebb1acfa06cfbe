// Digests: fast, portable 64-bit fingerprints of parameter buffers, model layouts and state
// files, used to detect a worker whose replica drifted from the server and a damaged file. Not
// cryptographic. Thread-safe.
#ifndef REGTOPK_COMMON_WIRE_DIGEST_H_
#define REGTOPK_COMMON_WIRE_DIGEST_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace regtopk {

// Fingerprint of the bytes; identical on every little-endian host (integer arithmetic only;
// where the CPU has AVX2 the same arithmetic runs on vectors).
uint64_t DigestBytes(absl::string_view bytes);

// DigestBytes over data that arrives in pieces: Update with the pieces in order, then Finish
// gives DigestBytes of their concatenation. Thread-compatible.
//
// The construction: the input is cut into 64-byte stripes of eight 8-byte words; word l of
// stripe s is mixed into accumulator l as acc += w + lo32(x) * hi32(x), x = w ^ (key[l] +
// salt(s)), where salt(s) depends on the stripe's place in its 1 KiB block (so stripes cannot
// trade places); after every block each accumulator is scrambled (xor-shift, 64-bit multiply),
// so blocks cannot either. The 32 x 32 -> 64-bit multiplies vectorize (one pass at memory
// speed); the tail and the length are folded in at the end.
class StreamingDigest {
 public:
  static constexpr size_t kStripeBytes = 64;
  static constexpr size_t kStripesPerBlock = 16;

  void Update(absl::string_view bytes);
  uint64_t Finish() const;

 private:
  void Stripe(const char* p);
  uint64_t acc_[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  char pending_[kStripeBytes];
  size_t pending_size_ = 0;
  size_t stripe_ = 0;  // the next stripe's place in its block
  uint64_t total_ = 0;
};

// Fingerprint of the float32 bit patterns of `values` (so -0 and +0 differ, as they would on
// the wire).
uint64_t DigestFloats(absl::Span<const float> values);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_WIRE_DIGEST_H_
