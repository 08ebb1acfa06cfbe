// Digests: fast, portable 64-bit fingerprints of parameter buffers and model layouts, used to
// detect a worker whose replica drifted from the server. Not cryptographic. Thread-safe.
#ifndef REGTOPK_COMMON_WIRE_DIGEST_H_
#define REGTOPK_COMMON_WIRE_DIGEST_H_

#include <cstdint>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace regtopk {

// Fingerprint of the bytes; identical on every little-endian host.
uint64_t DigestBytes(absl::string_view bytes);

// DigestBytes over data that arrives in pieces: Update with the pieces in order, then Finish
// gives DigestBytes of their concatenation. Thread-compatible.
class StreamingDigest {
 public:
  void Update(absl::string_view bytes);
  uint64_t Finish() const;

 private:
  void Block(const char* p);
  uint64_t lane_[4] = {1, 2, 3, 4};
  char pending_[32];
  size_t pending_size_ = 0;
  uint64_t total_ = 0;
};

// Fingerprint of the float32 bit patterns of `values` (so -0 and +0 differ, as they would on
// the wire).
uint64_t DigestFloats(absl::Span<const float> values);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_WIRE_DIGEST_H_
