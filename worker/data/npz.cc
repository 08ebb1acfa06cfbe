#include "worker/data/npz.h"

#include <zlib.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status/status_macros.h"

namespace regtopk {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr uint32_t kLocalHeader = 0x04034b50, kCentralHeader = 0x02014b50,
                   kEndOfCentral = 0x06054b50, kZip64End = 0x06064b50,
                   kZip64Locator = 0x07064b50;

uint64_t Le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

void PutLe(std::string* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

size_t ElementSize(absl::string_view descr) {
  if (descr.size() < 3) return 0;
  size_t n = 0;
  return absl::SimpleAtoi(descr.substr(2), &n) ? n : 0;
}

// The value of `key` in the header dict, up to the next top-level comma or brace.
absl::StatusOr<std::string> HeaderValue(absl::string_view header, absl::string_view key,
                                        absl::string_view name) {
  for (const char* quote : {"'", "\""}) {
    const std::string k = absl::StrCat(quote, key, quote);
    const size_t at = header.find(k);
    if (at == absl::string_view::npos) continue;
    size_t i = header.find(':', at + k.size());
    if (i == absl::string_view::npos) break;
    ++i;
    int depth = 0;
    size_t end = i;
    for (; end < header.size(); ++end) {
      const char c = header[end];
      if (c == '(' || c == '[') ++depth;
      if (c == ')' || c == ']') --depth;
      if (depth == 0 && (c == ',' || c == '}')) break;
      if (depth < 0) break;
    }
    return std::string(absl::StripAsciiWhitespace(header.substr(i, end - i)));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": .npy header has no '", key, "': ", header));
}

std::string Unquote(absl::string_view v) {
  if (v.size() >= 2 && (v.front() == '\'' || v.front() == '"') && v.back() == v.front()) {
    v = v.substr(1, v.size() - 2);
  }
  return std::string(v);
}

absl::Status Corrupt(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("'", path, "' is not a readable .npz (a zip of .npy files): ", what));
}

// The file, with positioned reads.
class File {
 public:
  explicit File(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    if (in_) {
      in_.seekg(0, std::ios::end);
      size_ = static_cast<uint64_t>(in_.tellg());
    }
  }
  bool ok() const { return static_cast<bool>(in_); }
  uint64_t size() const { return size_; }
  absl::StatusOr<std::string> Read(uint64_t offset, uint64_t n) {
    if (offset > size_ || n > size_ - offset) return Corrupt(path_, "truncated");
    std::string out(n, '\0');
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(out.data(), static_cast<std::streamsize>(n));
    if (!in_) return Corrupt(path_, "read failed");
    return out;
  }

 private:
  const std::string path_;
  std::ifstream in_;
  uint64_t size_ = 0;
};

absl::StatusOr<std::string> Inflate(const std::string& in, uint64_t size, const std::string& what) {
  std::string out(size, '\0');
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return absl::InternalError("zlib inflateInit2 failed");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  size_t in_left = in.size(), out_at = 0;
  int rc = Z_OK;
  while (rc == Z_OK) {
    const uInt in_chunk = static_cast<uInt>(std::min<size_t>(in_left, 1u << 30));
    const uInt out_chunk = static_cast<uInt>(std::min<size_t>(size - out_at, 1u << 30));
    z.avail_in = in_chunk;
    z.next_out = reinterpret_cast<Bytef*>(out.data() + out_at);
    z.avail_out = out_chunk;
    rc = inflate(&z, Z_NO_FLUSH);
    in_left -= in_chunk - z.avail_in;
    out_at += out_chunk - z.avail_out;
    if (rc == Z_OK && in_chunk == z.avail_in && out_chunk == z.avail_out) break;  // no progress
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END || out_at != size) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": corrupt deflate data"));
  }
  return out;
}

// zip64 extended information (extra field 0x0001): the 64-bit values of the fields that the
// fixed header marks with 0xffffffff, in this order.
void ApplyZip64(absl::string_view extra, uint64_t* size, uint64_t* compressed, uint64_t* offset) {
  size_t at = 0;
  while (at + 4 <= extra.size()) {
    const uint64_t id = Le(extra.data() + at, 2), len = Le(extra.data() + at + 2, 2);
    if (at + 4 + len > extra.size()) return;
    if (id == 1) {
      size_t p = at + 4;
      for (uint64_t* field : {size, compressed, offset}) {
        if (*field == 0xffffffffu && p + 8 <= at + 4 + len) {
          *field = Le(extra.data() + p, 8);
          p += 8;
        }
      }
      return;
    }
    at += 4 + len;
  }
}

}  // namespace

int64_t NpyArray::num_elements() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

absl::StatusOr<NpyArray> ParseNpy(std::string data, absl::string_view name) {
  if (data.size() < 10 || data.compare(0, 6, kMagic, 6) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not a .npy array (bad magic)"));
  }
  const int major = static_cast<uint8_t>(data[6]);
  size_t header_len, header_at;
  if (major == 1) {
    header_len = Le(data.data() + 8, 2);
    header_at = 10;
  } else if (major == 2 || major == 3) {
    if (data.size() < 12) return absl::InvalidArgumentError(absl::StrCat(name, ": truncated"));
    header_len = Le(data.data() + 8, 4);
    header_at = 12;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": unsupported .npy format version ", major));
  }
  if (header_len > data.size() - header_at) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": truncated .npy header"));
  }
  const absl::string_view header(data.data() + header_at, header_len);
  NpyArray a;
  REGTOPK_ASSIGN_OR_RETURN(std::string descr, HeaderValue(header, "descr", name));
  a.descr = Unquote(descr);
  REGTOPK_ASSIGN_OR_RETURN(std::string fortran, HeaderValue(header, "fortran_order", name));
  if (fortran != "False") {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": Fortran-ordered array; save numpy.ascontiguousarray(a) instead"));
  }
  REGTOPK_ASSIGN_OR_RETURN(std::string shape, HeaderValue(header, "shape", name));
  if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')') {
    return absl::InvalidArgumentError(absl::StrCat(name, ": bad shape '", shape, "'"));
  }
  int64_t elements = 1;
  for (absl::string_view part : absl::StrSplit(shape.substr(1, shape.size() - 2), ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) continue;
    int64_t s;
    if (!absl::SimpleAtoi(part, &s) || s < 0) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": bad shape '", shape, "'"));
    }
    if (s != 0 && elements > std::numeric_limits<int64_t>::max() / 16 / s) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": shape '", shape, "' is too large"));
    }
    elements *= s;
    a.shape.push_back(s);
  }
  const size_t element_size = ElementSize(a.descr);
  if (element_size == 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": unsupported dtype '", a.descr, "'"));
  }
  const size_t at = header_at + header_len;
  const uint64_t expected = static_cast<uint64_t>(elements) * element_size;
  if (data.size() - at != expected) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": holds ", data.size() - at,
                                                   " bytes of data, but its header (shape ",
                                                   shape, ", dtype ", a.descr, ") needs ",
                                                   expected));
  }
  data.erase(0, at);
  a.data = std::move(data);
  return a;
}

absl::StatusOr<std::map<std::string, NpyArray>> ReadNpz(const std::string& path) {
  File file(path);
  if (!file.ok()) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  // The end of central directory record: the last 22 bytes, or earlier behind a comment.
  const uint64_t tail = std::min<uint64_t>(file.size(), 22 + 65535 + 20);
  REGTOPK_ASSIGN_OR_RETURN(std::string end, file.Read(file.size() - tail, tail));
  size_t eocd = std::string::npos;
  for (size_t i = end.size() >= 22 ? end.size() - 22 + 1 : 0; i-- > 0;) {
    if (Le(end.data() + i, 4) == kEndOfCentral) {
      eocd = i;
      break;
    }
  }
  if (eocd == std::string::npos) return Corrupt(path, "no end of central directory");
  uint64_t entries = Le(end.data() + eocd + 10, 2);
  uint64_t cd_size = Le(end.data() + eocd + 12, 4);
  uint64_t cd_offset = Le(end.data() + eocd + 16, 4);
  if ((entries == 0xffff || cd_offset == 0xffffffffu || cd_size == 0xffffffffu) && eocd >= 20 &&
      Le(end.data() + eocd - 20, 4) == kZip64Locator) {
    const uint64_t z64 = Le(end.data() + eocd - 20 + 8, 8);
    REGTOPK_ASSIGN_OR_RETURN(std::string rec, file.Read(z64, 56));
    if (Le(rec.data(), 4) != kZip64End) return Corrupt(path, "bad zip64 end record");
    entries = Le(rec.data() + 32, 8);
    cd_size = Le(rec.data() + 40, 8);
    cd_offset = Le(rec.data() + 48, 8);
  }
  REGTOPK_ASSIGN_OR_RETURN(std::string cd, file.Read(cd_offset, cd_size));
  std::map<std::string, NpyArray> arrays;
  size_t at = 0;
  for (uint64_t e = 0; e < entries; ++e) {
    if (at + 46 > cd.size() || Le(cd.data() + at, 4) != kCentralHeader) {
      return Corrupt(path, "bad central directory");
    }
    const char* h = cd.data() + at;
    const uint64_t method = Le(h + 10, 2);
    const uint32_t crc = static_cast<uint32_t>(Le(h + 16, 4));
    uint64_t compressed = Le(h + 20, 4), size = Le(h + 24, 4);
    const uint64_t name_len = Le(h + 28, 2), extra_len = Le(h + 30, 2), comment_len = Le(h + 32, 2);
    uint64_t offset = Le(h + 42, 4);
    if (at + 46 + name_len + extra_len + comment_len > cd.size()) {
      return Corrupt(path, "bad central directory");
    }
    std::string name(h + 46, name_len);
    ApplyZip64(absl::string_view(h + 46 + name_len, extra_len), &size, &compressed, &offset);
    at += 46 + name_len + extra_len + comment_len;
    const std::string what = absl::StrCat("'", path, "' member '", name, "'");
    if (method != 0 && method != 8) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": unsupported zip compression method ", method,
          " (numpy.savez and numpy.savez_compressed write 0 and 8)"));
    }
    REGTOPK_ASSIGN_OR_RETURN(std::string local, file.Read(offset, 30));
    if (Le(local.data(), 4) != kLocalHeader) return Corrupt(path, "bad local header");
    const uint64_t data_at = offset + 30 + Le(local.data() + 26, 2) + Le(local.data() + 28, 2);
    REGTOPK_ASSIGN_OR_RETURN(std::string bytes, file.Read(data_at, compressed));
    if (method == 8) {
      REGTOPK_ASSIGN_OR_RETURN(bytes, Inflate(bytes, size, what));
    } else if (compressed != size) {
      return Corrupt(path, absl::StrCat("member '", name, "' sizes disagree"));
    }
    uLong c = crc32(0L, Z_NULL, 0);
    for (size_t i = 0; i < bytes.size(); i += 1u << 30) {
      const size_t n = std::min<size_t>(bytes.size() - i, 1u << 30);
      c = crc32(c, reinterpret_cast<const Bytef*>(bytes.data() + i), static_cast<uInt>(n));
    }
    if (static_cast<uint32_t>(c) != crc) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": CRC mismatch (corrupt file)"));
    }
    if (absl::EndsWith(name, ".npy")) name.resize(name.size() - 4);
    REGTOPK_ASSIGN_OR_RETURN(arrays[name], ParseNpy(std::move(bytes), what));
  }
  return arrays;
}

absl::StatusOr<Dataset> LoadNpzDataset(const std::string& path) {
  REGTOPK_ASSIGN_OR_RETURN(auto arrays, ReadNpz(path));
  for (const char* key : {"x", "y"}) {
    if (!arrays.count(key)) {
      std::vector<std::string> names;
      for (const auto& [n, a] : arrays) names.push_back(n);
      return absl::InvalidArgumentError(absl::StrCat(
          "'", path, "' has no array '", key, "' (it holds: ", absl::StrJoin(names, ", "),
          "); write it with numpy.savez(path, x=features, y=labels)"));
    }
  }
  const NpyArray& x = arrays["x"];
  const NpyArray& y = arrays["y"];
  if (x.descr != "<f4") {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "': x has dtype '", x.descr, "', expected float32 ('<f4'); write x.astype(numpy.float32)"));
  }
  if (y.descr != "<i8" && y.descr != "<f4") {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "': y has dtype '", y.descr,
        "', expected int64 class labels ('<i8') or float32 targets ('<f4')"));
  }
  if (x.shape.empty() || y.shape.empty() || x.shape[0] != y.shape[0] || x.shape[0] == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "': x has shape (", absl::StrJoin(x.shape, ", "), ") and y (",
        absl::StrJoin(y.shape, ", "), "): both need the same number (> 0) of samples first"));
  }
  Dataset d;
  d.num_examples = static_cast<size_t>(x.shape[0]);
  d.example_shape.assign(x.shape.begin() + 1, x.shape.end());
  if (d.example_shape.empty()) d.example_shape = {1};
  d.features.resize(static_cast<size_t>(x.num_elements()));
  std::memcpy(d.features.data(), x.data.data(), x.data.size());
  for (size_t i = 0; i < d.features.size(); ++i) {
    if (!std::isfinite(d.features[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", path, "': x holds a non-finite value at flat index ", i));
    }
  }
  if (y.descr == "<i8") {
    if (y.shape.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", path, "': int64 labels y must be one-dimensional, got shape (",
          absl::StrJoin(y.shape, ", "), ")"));
    }
    d.labels.resize(d.num_examples);
    std::memcpy(d.labels.data(), y.data.data(), y.data.size());
    int64_t max_label = 0;
    for (size_t i = 0; i < d.labels.size(); ++i) {
      if (d.labels[i] < 0 || d.labels[i] > (1 << 24)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'", path, "': label ", d.labels[i], " of sample ", i, " is not a class index"));
      }
      max_label = std::max(max_label, d.labels[i]);
    }
    d.num_classes = static_cast<int>(max_label + 1);
  } else {
    d.target_shape.assign(y.shape.begin() + 1, y.shape.end());
    d.targets.resize(static_cast<size_t>(y.num_elements()));
    std::memcpy(d.targets.data(), y.data.data(), y.data.size());
    for (size_t i = 0; i < d.targets.size(); ++i) {
      if (!std::isfinite(d.targets[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", path, "': y holds a non-finite value at flat index ", i));
      }
    }
  }
  return d;
}

namespace {

template <typename T>
NpyArray MakeArray(const char* descr, std::vector<int64_t> shape, const std::vector<T>& values) {
  NpyArray a;
  a.descr = descr;
  a.shape = std::move(shape);
  a.data.assign(reinterpret_cast<const char*>(values.data()), sizeof(T) * values.size());
  return a;
}

}  // namespace

NpyArray MakeFloat32Array(std::vector<int64_t> shape, const std::vector<float>& values) {
  return MakeArray("<f4", std::move(shape), values);
}

NpyArray MakeInt64Array(std::vector<int64_t> shape, const std::vector<int64_t>& values) {
  return MakeArray("<i8", std::move(shape), values);
}

absl::Status WriteNpz(const std::string& path, const std::map<std::string, NpyArray>& arrays) {
  std::string zip, cd;
  for (const auto& [name, a] : arrays) {
    std::string shape = absl::StrJoin(a.shape, ", ");
    if (a.shape.size() == 1) shape += ",";
    std::string header = absl::StrCat("{'descr': '", a.descr, "', 'fortran_order': False, 'shape': (",
                                      shape, "), }");
    // Pad so that the data starts on a 64-byte boundary, ending the header with a newline.
    while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
    header.push_back('\n');
    std::string npy(kMagic, 6);
    npy.push_back(1);
    npy.push_back(0);
    PutLe(&npy, header.size(), 2);
    npy += header;
    npy += a.data;
    const std::string member = name + ".npy";
    const uint32_t crc = static_cast<uint32_t>(
        crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(npy.data()),
              static_cast<uInt>(npy.size())));
    if (npy.size() >= 0xffffffffu || zip.size() >= 0xffffffffu) {
      return absl::InvalidArgumentError("WriteNpz: arrays over 4 GiB are not supported");
    }
    const uint64_t offset = zip.size();
    PutLe(&zip, kLocalHeader, 4);
    PutLe(&zip, 20, 2);  // version needed
    PutLe(&zip, 0, 2);   // flags
    PutLe(&zip, 0, 2);   // stored
    PutLe(&zip, 0, 4);   // time, date
    PutLe(&zip, crc, 4);
    PutLe(&zip, npy.size(), 4);
    PutLe(&zip, npy.size(), 4);
    PutLe(&zip, member.size(), 2);
    PutLe(&zip, 0, 2);
    zip += member;
    zip += npy;
    PutLe(&cd, kCentralHeader, 4);
    PutLe(&cd, 20, 2);  // version made by
    PutLe(&cd, 20, 2);  // version needed
    PutLe(&cd, 0, 2);
    PutLe(&cd, 0, 2);
    PutLe(&cd, 0, 4);
    PutLe(&cd, crc, 4);
    PutLe(&cd, npy.size(), 4);
    PutLe(&cd, npy.size(), 4);
    PutLe(&cd, member.size(), 2);
    PutLe(&cd, 0, 2);  // extra
    PutLe(&cd, 0, 2);  // comment
    PutLe(&cd, 0, 2);  // disk
    PutLe(&cd, 0, 2);  // internal attributes
    PutLe(&cd, 0, 4);  // external attributes
    PutLe(&cd, offset, 4);
    cd += member;
  }
  const uint64_t cd_offset = zip.size();
  zip += cd;
  PutLe(&zip, kEndOfCentral, 4);
  PutLe(&zip, 0, 2);
  PutLe(&zip, 0, 2);
  PutLe(&zip, arrays.size(), 2);
  PutLe(&zip, arrays.size(), 2);
  PutLe(&zip, cd.size(), 4);
  PutLe(&zip, cd_offset, 4);
  PutLe(&zip, 0, 2);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(zip.data(), static_cast<std::streamsize>(zip.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing '", path, "' failed"));
  return absl::OkStatus();
}

}  // namespace regtopk
