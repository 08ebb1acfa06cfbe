#include "common/wire/sparse_codec.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

#include "absl/base/config.h"
#include "absl/strings/str_cat.h"
#include "common/parallel/task_pool.h"

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

// Writes v's varint at p; returns the byte after it.
char* PutVarintAt(uint64_t v, char* p) {
  while (v >= 0x80) {
    *p++ = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

void PutVarint(uint64_t v, std::string* out) {
  char buf[10];
  out->append(buf, PutVarintAt(v, buf) - buf);
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

// Below this many entries one thread encodes: the split would cost more than it saves.
constexpr size_t kParallelEntries = 1 << 15;

uint64_t Gap(SparseView v, size_t i) {
  return i == 0 ? v.indices[0] : uint64_t{v.indices[i]} - v.indices[i - 1] - 1;
}

// The gap varints' bytes of each share of the entries (as ForShares cuts them).
std::vector<size_t> GapBytes(SparseView v, TaskPool* pool) {
  std::vector<size_t> bytes(pool != nullptr ? static_cast<size_t>(pool->threads()) : 1, 0);
  const int parts =
      ForShares(pool, v.nnz(), kParallelEntries, 1, [&](int t, size_t begin, size_t end) {
        size_t b = 0;
        for (size_t i = begin; i < end; ++i) b += VarintSize(Gap(v, i));
        bytes[static_cast<size_t>(t)] = b;
      });
  bytes.resize(static_cast<size_t>(parts));
  return bytes;
}

size_t Sum(const std::vector<size_t>& x) { return std::accumulate(x.begin(), x.end(), size_t{0}); }

size_t FixedSize(size_t nnz, size_t dim, SparseFormat format) {
  return format == SparseFormat::kBitmap ? HeaderSize(dim, nnz) + (dim + 7) / 8 + 4 * nnz
                                         : HeaderSize(dim, dim) + 4 * dim;
}

// The format with the smallest encoding, and (if it is kSparse) its gap bytes by share.
SparseFormat Smallest(SparseView v, size_t dim, TaskPool* pool, std::vector<size_t>* gap_bytes) {
  const size_t bitmap = FixedSize(v.nnz(), dim, SparseFormat::kBitmap);
  const size_t dense = FixedSize(v.nnz(), dim, SparseFormat::kDense);
  // The sparse size is at least header + 5 bytes per entry; skip computing it exactly when
  // that bound already loses.
  const size_t sparse_lower_bound = HeaderSize(dim, v.nnz()) + 5 * v.nnz();
  if (sparse_lower_bound <= std::min(bitmap, dense)) {
    *gap_bytes = GapBytes(v, pool);
    const size_t sparse = HeaderSize(dim, v.nnz()) + Sum(*gap_bytes) + 4 * v.nnz();
    if (sparse <= bitmap && sparse <= dense) return SparseFormat::kSparse;
  }
  return bitmap <= dense ? SparseFormat::kBitmap : SparseFormat::kDense;
}

// The encoding; `gap_bytes` are GapBytes(v, pool) for kSparse, or empty (computed here).
void Encode(SparseView v, size_t dim, SparseFormat format, TaskPool* pool,
            std::vector<size_t> gap_bytes, std::string* out) {
  out->clear();
  const size_t nnz = v.nnz();
  out->push_back(static_cast<char>(format));
  PutVarint(dim, out);
  PutVarint(format == SparseFormat::kDense ? dim : nnz, out);
  const size_t header = out->size();
  switch (format) {
    case SparseFormat::kSparse: {
      if (gap_bytes.empty()) gap_bytes = GapBytes(v, pool);
      const size_t gaps = Sum(gap_bytes);
      out->resize(header + gaps + 4 * nnz);
      char* base = out->data();
      ForShares(pool, nnz, kParallelEntries, 1, [&](int t, size_t begin, size_t end) {
        size_t at = header;
        for (int s = 0; s < t; ++s) at += gap_bytes[static_cast<size_t>(s)];
        char* p = base + at;
        for (size_t i = begin; i < end; ++i) p = PutVarintAt(Gap(v, i), p);
        if (end > begin) {
          std::memcpy(base + header + gaps + 4 * begin, &v.values[begin], 4 * (end - begin));
        }
      });
      break;
    }
    case SparseFormat::kBitmap: {
      const size_t bitmap = (dim + 7) / 8;
      out->resize(header + bitmap + 4 * nnz);  // zero-filled
      char* bits = out->data() + header;
      char* values = bits + bitmap;
      // Shares of the entries; an entry's bit may share its byte with the previous share's
      // last entry, so each share sets the bits of the entries whose byte starts in it.
      ForShares(pool, nnz, kParallelEntries, 1, [&](int, size_t begin, size_t end) {
        // Move begin and end to the first entry of a byte: whole bytes per share, no races.
        auto byte_start = [&](size_t i) {
          while (i > 0 && i < nnz && (v.indices[i - 1] >> 3) == (v.indices[i] >> 3)) --i;
          return i;
        };
        const size_t from = byte_start(begin), to = end == nnz ? nnz : byte_start(end);
        for (size_t i = from; i < to; ++i) {
          const uint32_t j = v.indices[i];
          bits[j >> 3] = static_cast<char>(bits[j >> 3] | (1 << (j & 7)));
        }
        if (end > begin) std::memcpy(values + 4 * begin, &v.values[begin], 4 * (end - begin));
      });
      break;
    }
    case SparseFormat::kDense: {
      out->resize(header + 4 * dim);  // zero-filled
      char* values = out->data() + header;
      ForShares(pool, nnz, kParallelEntries, 1, [&](int, size_t begin, size_t end) {
        for (size_t i = begin; i < end; ++i) {
          std::memcpy(values + 4 * v.indices[i], &v.values[i], 4);
        }
      });
      break;
    }
  }
}

}  // namespace

size_t EncodedSize(SparseView v, size_t dim, SparseFormat format) {
  if (format == SparseFormat::kSparse) {
    return HeaderSize(dim, v.nnz()) + Sum(GapBytes(v, nullptr)) + 4 * v.nnz();
  }
  return FixedSize(v.nnz(), dim, format);
}

SparseFormat SmallestFormat(SparseView v, size_t dim) {
  std::vector<size_t> unused;
  return Smallest(v, dim, nullptr, &unused);
}

void EncodeSparse(SparseView v, size_t dim, SparseFormat format, std::string* out,
                  TaskPool* pool) {
  Encode(v, dim, format, pool, {}, out);
}

void EncodeSparseSmallest(SparseView v, size_t dim, std::string* out, TaskPool* pool) {
  std::vector<size_t> gap_bytes;
  const SparseFormat format = Smallest(v, dim, pool, &gap_bytes);
  Encode(v, dim, format, pool, std::move(gap_bytes), out);
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
