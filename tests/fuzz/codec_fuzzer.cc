// libFuzzer target: the sparse codec's decoder on arbitrary bytes (what a hostile push or a
// corrupted aggregate delivers). Whatever it accepts must be a valid sparse vector for the
// dimension, and must re-encode to bytes that decode to the same vector.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/sparse/sparse_vector.h"
#include "common/wire/sparse_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // The first two bytes choose the dimension (1..65536), the rest is the encoding.
  const size_t dim = 1 + (static_cast<size_t>(data[0]) << 8 | data[1]);
  const std::string bytes(reinterpret_cast<const char*>(data + 2), size - 2);
  regtopk::SparseVector v;
  if (!regtopk::DecodeSparse(bytes, dim, dim, &v).ok()) return 0;
  if (!regtopk::ValidateSparse(v, dim, dim).ok()) __builtin_trap();
  std::string again;
  regtopk::EncodeSparseSmallest(v, dim, &again);
  regtopk::SparseVector back;
  if (!regtopk::DecodeSparse(again, dim, dim, &back).ok() || back.indices != v.indices ||
      back.values.size() != v.values.size() ||
      (!v.values.empty() &&
       std::memcmp(back.values.data(), v.values.data(), 4 * v.values.size()) != 0)) {
    __builtin_trap();
  }
  return 0;
}
