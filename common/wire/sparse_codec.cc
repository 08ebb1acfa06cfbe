#include "common/wire/sparse_codec.h"

#include <cstring>

#include "absl/base/config.h"
#include "absl/strings/str_cat.h"

namespace regtopk {
namespace {

static_assert(ABSL_IS_LITTLE_ENDIAN, "the wire format is little-endian float32");

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

void PutVarint(uint64_t v, std::string* out) {
  char buf[10];
  size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out->append(buf, n);
}

enum class VarintRead { kOk, kTruncated, kNonCanonical };

// Reads a varint at *pos. Only the canonical (shortest) form is accepted: a last byte of 0
// after the first (an overlong encoding) or bits beyond 64 are kNonCanonical, so that every
// value has exactly one encoding and a reader that skips by VarintSize agrees with one that
// parses. kTruncated if the input ends inside it.
VarintRead GetVarint(absl::string_view in, size_t* pos, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= in.size()) return VarintRead::kTruncated;
    const uint8_t byte = static_cast<uint8_t>(in[(*pos)++]);
    if (shift == 63 && byte > 1) return VarintRead::kNonCanonical;  // beyond 64 bits
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if (!(byte & 0x80)) {
      if (byte == 0 && shift != 0) return VarintRead::kNonCanonical;  // overlong
      *v = result;
      return VarintRead::kOk;
    }
  }
  return VarintRead::kNonCanonical;
}

size_t HeaderSize(size_t dim, size_t nnz) { return 1 + VarintSize(dim) + VarintSize(nnz); }

absl::Status Truncated(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("sparse encoding is truncated in its ", what));
}

absl::Status BadVarint(VarintRead r, absl::string_view what) {
  if (r == VarintRead::kTruncated) return Truncated(what);
  return absl::InvalidArgumentError(
      absl::StrCat("sparse encoding has a non-canonical (overlong) varint in its ", what));
}

}  // namespace

size_t EncodedSize(SparseView v, size_t dim, SparseFormat format) {
  const size_t nnz = v.nnz();
  switch (format) {
    case SparseFormat::kSparse: {
      size_t bytes = HeaderSize(dim, nnz) + 4 * nnz;
      uint64_t prev = 0;
      for (size_t i = 0; i < nnz; ++i) {
        bytes += VarintSize(i == 0 ? v.indices[0] : v.indices[i] - prev - 1);
        prev = v.indices[i];
      }
      return bytes;
    }
    case SparseFormat::kBitmap:
      return HeaderSize(dim, nnz) + (dim + 7) / 8 + 4 * nnz;
    case SparseFormat::kDense:
      return HeaderSize(dim, dim) + 4 * dim;
  }
  return 0;
}

SparseFormat SmallestFormat(SparseView v, size_t dim) {
  const size_t bitmap = EncodedSize(v, dim, SparseFormat::kBitmap);
  const size_t dense = EncodedSize(v, dim, SparseFormat::kDense);
  // The sparse size is at least header + 5 bytes per entry; skip computing it exactly when
  // that bound already loses.
  const size_t sparse_lower_bound = HeaderSize(dim, v.nnz()) + 5 * v.nnz();
  if (sparse_lower_bound <= std::min(bitmap, dense)) {
    const size_t sparse = EncodedSize(v, dim, SparseFormat::kSparse);
    if (sparse <= bitmap && sparse <= dense) return SparseFormat::kSparse;
  }
  return bitmap <= dense ? SparseFormat::kBitmap : SparseFormat::kDense;
}

void EncodeSparse(SparseView v, size_t dim, SparseFormat format, std::string* out) {
  out->clear();
  const size_t nnz = v.nnz();
  // The exact sparse size costs a pass over the indices (SmallestFormat may just have made
  // one); a bound of 5 varint + 4 value bytes per entry is enough to reserve.
  out->reserve(format == SparseFormat::kSparse ? HeaderSize(dim, nnz) + 9 * nnz
                                               : EncodedSize(v, dim, format));
  out->push_back(static_cast<char>(format));
  PutVarint(dim, out);
  switch (format) {
    case SparseFormat::kSparse: {
      PutVarint(nnz, out);
      uint64_t prev = 0;
      for (size_t i = 0; i < nnz; ++i) {
        PutVarint(i == 0 ? v.indices[0] : v.indices[i] - prev - 1, out);
        prev = v.indices[i];
      }
      out->append(reinterpret_cast<const char*>(v.values.data()), 4 * nnz);
      break;
    }
    case SparseFormat::kBitmap: {
      PutVarint(nnz, out);
      const size_t at = out->size();
      out->append((dim + 7) / 8, '\0');
      char* bits = &(*out)[at];
      for (uint32_t j : v.indices) bits[j >> 3] = static_cast<char>(bits[j >> 3] | (1 << (j & 7)));
      out->append(reinterpret_cast<const char*>(v.values.data()), 4 * nnz);
      break;
    }
    case SparseFormat::kDense: {
      PutVarint(dim, out);
      const size_t at = out->size();
      out->append(4 * dim, '\0');
      char* values = &(*out)[at];
      for (size_t i = 0; i < nnz; ++i) std::memcpy(values + 4 * v.indices[i], &v.values[i], 4);
      break;
    }
  }
}

void EncodeSparseSmallest(SparseView v, size_t dim, std::string* out) {
  EncodeSparse(v, dim, SmallestFormat(v, dim), out);
}

absl::Status PeekSparseHeader(absl::string_view bytes, SparseHeader* header) {
  if (bytes.empty()) return Truncated("format byte");
  const uint8_t format = static_cast<uint8_t>(bytes[0]);
  if (format < 1 || format > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown sparse encoding format ", static_cast<int>(format)));
  }
  header->format = static_cast<SparseFormat>(format);
  size_t pos = 1;
  if (VarintRead r = GetVarint(bytes, &pos, &header->dim); r != VarintRead::kOk) {
    return BadVarint(r, "dimension");
  }
  if (VarintRead r = GetVarint(bytes, &pos, &header->nnz); r != VarintRead::kOk) {
    return BadVarint(r, "entry count");
  }
  header->size = pos;
  return absl::OkStatus();
}

absl::Status DecodeSparse(absl::string_view bytes, size_t dim, size_t max_nnz, SparseVector* out) {
  SparseHeader h;
  if (absl::Status s = PeekSparseHeader(bytes, &h); !s.ok()) return s;
  if (h.dim != dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("encoded dimension ", h.dim, " does not match the model's ", dim));
  }
  if (h.nnz > max_nnz || h.nnz > dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "encoding holds ", h.nnz, " entries, more than the limit of ", std::min(max_nnz, dim)));
  }
  if (h.format == SparseFormat::kDense && h.nnz != dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("dense encoding must hold ", dim, " entries, holds ", h.nnz));
  }
  size_t pos = h.size;  // the bytes actually read
  const size_t nnz = h.nnz;
  out->indices.resize(nnz);
  out->values.resize(nnz);
  switch (h.format) {
    case SparseFormat::kSparse: {
      uint64_t index = 0;
      for (size_t i = 0; i < nnz; ++i) {
        uint64_t gap;
        if (VarintRead r = GetVarint(bytes, &pos, &gap); r != VarintRead::kOk) {
          return BadVarint(r, "indices");
        }
        index = i == 0 ? gap : index + 1 + gap;
        if (gap >= dim || index >= dim) {
          return absl::InvalidArgumentError(absl::StrCat("entry ", i, " has index ", index,
                                                         ", out of range for dimension ", dim));
        }
        out->indices[i] = static_cast<uint32_t>(index);
      }
      break;
    }
    case SparseFormat::kBitmap: {
      const size_t bitmap_bytes = (dim + 7) / 8;
      if (bytes.size() - pos < bitmap_bytes) return Truncated("bitmap");
      const uint8_t* bits = reinterpret_cast<const uint8_t*>(bytes.data() + pos);
      size_t n = 0;
      for (size_t b = 0; b < bitmap_bytes; ++b) {
        uint32_t byte = bits[b];
        while (byte) {
          const size_t j = b * 8 + __builtin_ctz(byte);
          if (j >= dim) {
            return absl::InvalidArgumentError(
                absl::StrCat("bitmap sets bit ", j, ", beyond dimension ", dim));
          }
          if (n == nnz) {
            return absl::InvalidArgumentError(
                absl::StrCat("bitmap sets more bits than its entry count ", nnz));
          }
          out->indices[n++] = static_cast<uint32_t>(j);
          byte &= byte - 1;
        }
      }
      if (n != nnz) {
        return absl::InvalidArgumentError(
            absl::StrCat("bitmap sets ", n, " bits but the entry count is ", nnz));
      }
      pos += bitmap_bytes;
      break;
    }
    case SparseFormat::kDense:
      for (size_t i = 0; i < nnz; ++i) out->indices[i] = static_cast<uint32_t>(i);
      break;
  }
  if (bytes.size() - pos < 4 * nnz) return Truncated("values");
  if (bytes.size() - pos > 4 * nnz) {
    return absl::InvalidArgumentError(
        absl::StrCat("sparse encoding has ", bytes.size() - pos - 4 * nnz, " trailing bytes"));
  }
  // memcpy with a null pointer is undefined even for 0 bytes (an empty vector's data() may be
  // null): found by tests/fuzz/codec_fuzzer.cc under UBSan.
  if (nnz != 0) std::memcpy(out->values.data(), bytes.data() + pos, 4 * nnz);
  const size_t bad = FindNonFinite(out->values);
  if (bad != nnz) {
    return absl::InvalidArgumentError(absl::StrCat("value of entry ", bad, " (index ",
                                                   out->indices[bad],
                                                   ") is not finite: ", out->values[bad]));
  }
  return absl::OkStatus();
}

}  // namespace regtopk
