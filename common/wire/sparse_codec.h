// SparseCodec: the lossless byte encoding of a sparse float32 vector used on the wire both ways
// (worker pushes and the server's aggregate). Stateless functions; thread-safe.
//
// Layout: one format byte, varint dim, varint nnz, then
//   kSparse: nnz varint gaps (first index, then idx[i] - idx[i-1] - 1), nnz float32 values;
//   kBitmap: ceil(dim / 8) bitmap bytes (bit j of byte j/8, LSB first), nnz float32 values;
//   kDense:  dim float32 values (nnz == dim; absent entries are written as 0).
// Floats are IEEE-754 little-endian, bit for bit. The gap coding makes unsorted or duplicate
// indices unrepresentable; the decoder checks everything else.
#ifndef REGTOPK_COMMON_WIRE_SPARSE_CODEC_H_
#define REGTOPK_COMMON_WIRE_SPARSE_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/sparse/sparse_vector.h"

namespace regtopk {

class TaskPool;

enum class SparseFormat : uint8_t { kSparse = 1, kBitmap = 2, kDense = 3 };

// Encoded size of `v` in `format`, in bytes.
size_t EncodedSize(SparseView v, size_t dim, SparseFormat format);

// The format with the smallest encoding of `v` (ties: sparse, then bitmap).
SparseFormat SmallestFormat(SparseView v, size_t dim);

// Appends the encoding of `v` to `*out` (cleared first). Preconditions: ValidateSparse(v, dim,
// ...) is OK; dim < 2^32. With a `pool`, the work (the gaps' sizes, the varints, the bitmap,
// the values) is split over its threads by entry or byte range; the bytes are the same.
void EncodeSparse(SparseView v, size_t dim, SparseFormat format, std::string* out,
                  TaskPool* pool = nullptr);
// EncodeSparse with SmallestFormat.
void EncodeSparseSmallest(SparseView v, size_t dim, std::string* out, TaskPool* pool = nullptr);

// Decodes `bytes` into `*out`, checking that it is a complete, well-formed encoding of a vector
// of dimension `dim` with at most `max_nnz` entries (kDense counts as dim entries), every value
// finite. InvalidArgument naming the problem otherwise; `*out` is unspecified then.
absl::Status DecodeSparse(absl::string_view bytes, size_t dim, size_t max_nnz, SparseVector* out);

// Reads only the header: format, dim and nnz. InvalidArgument if truncated or unknown.
struct SparseHeader {
  SparseFormat format;
  uint64_t dim;
  uint64_t nnz;
  size_t size;  // bytes of the header as read (format byte and both varints)
};
absl::Status PeekSparseHeader(absl::string_view bytes, SparseHeader* header);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_WIRE_SPARSE_CODEC_H_
