// Limits shared by both ends of a stream: how large one message's payload may be, and how large
// a whole push may be for a given model. Header-only constants and pure functions.
#ifndef REGTOPK_COMMON_WIRE_CHUNKING_H_
#define REGTOPK_COMMON_WIRE_CHUNKING_H_

#include <algorithm>
#include <cstddef>

namespace regtopk {

// Payload bytes per streamed message: well under gRPC's 4 MiB default receive limit, and large
// enough that per-message overhead is negligible.
inline constexpr size_t kChunkBytes = size_t{1} << 20;
// The receive limit both ends configure: one chunk plus generous room for the envelope.
inline constexpr int kMaxMessageBytes = 4 << 20;

// Upper bound on the SparseCodec encoding of at most `max_entries` entries of a `dim`-vector
// (header <= 21 bytes; a uint32 gap is at most 5 varint bytes; dense only if max_entries == dim).
inline size_t MaxEncodedBytes(size_t dim, size_t max_entries) {
  size_t bound = std::max(9 * max_entries, (dim + 7) / 8 + 4 * max_entries);
  if (max_entries >= dim) bound = std::max(bound, 4 * dim);
  return 32 + bound;
}

}  // namespace regtopk

#endif  // REGTOPK_COMMON_WIRE_CHUNKING_H_
