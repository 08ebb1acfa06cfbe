#include "worker/data/dataset.h"

#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"

namespace regtopk {

size_t Dataset::example_size() const {
  size_t n = 1;
  for (int64_t d : example_shape) n *= static_cast<size_t>(d);
  return n;
}

namespace {

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

// Reads exactly `n` bytes; false on a short read or a gzip error.
bool ReadExactly(gzFile f, void* out, size_t n) {
  char* p = static_cast<char*>(out);
  while (n > 0) {
    const unsigned chunk = static_cast<unsigned>(std::min<size_t>(n, 1u << 30));
    const int got = gzread(f, p, chunk);
    if (got <= 0) return false;
    p += got;
    n -= static_cast<size_t>(got);
  }
  return true;
}

uint32_t BigEndian32(const unsigned char* b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
}

absl::StatusOr<GzFile> Open(const std::string& path) {
  std::ifstream probe(path, std::ios::binary);
  if (!probe) return absl::NotFoundError(absl::StrCat("cannot open data file '", path, "'"));
  GzFile f(gzopen(path.c_str(), "rb"));
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open data file '", path, "'"));
  return f;
}

// Reads an IDX header: magic, then `dims` big-endian sizes.
absl::Status ReadIdxHeader(gzFile f, const std::string& path, uint32_t magic,
                           std::vector<uint32_t>* dims) {
  unsigned char b[4];
  if (!ReadExactly(f, b, 4)) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is empty or not gzip/IDX data"));
  }
  if (BigEndian32(b) != magic) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not an IDX file of the ",
                                                   "expected kind (magic ", BigEndian32(b),
                                                   ", expected ", magic, ")"));
  }
  for (uint32_t& d : *dims) {
    if (!ReadExactly(f, b, 4)) {
      return absl::InvalidArgumentError(absl::StrCat("'", path, "' has a truncated IDX header"));
    }
    d = BigEndian32(b);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Dataset> ReadIdx(const std::string& images_path, const std::string& labels_path,
                                float mean, float stddev) {
  auto images = Open(images_path);
  if (!images.ok()) return images.status();
  auto labels = Open(labels_path);
  if (!labels.ok()) return labels.status();
  std::vector<uint32_t> idims(3), ldims(1);
  if (absl::Status s = ReadIdxHeader(images->get(), images_path, 0x803, &idims); !s.ok()) return s;
  if (absl::Status s = ReadIdxHeader(labels->get(), labels_path, 0x801, &ldims); !s.ok()) return s;
  if (idims[0] != ldims[0]) {
    return absl::InvalidArgumentError(absl::StrCat("'", images_path, "' holds ", idims[0],
                                                   " images but '", labels_path, "' ", ldims[0],
                                                   " labels"));
  }
  if (idims[1] == 0 || idims[2] == 0 || idims[1] > 4096 || idims[2] > 4096 ||
      idims[0] > (1u << 26)) {
    return absl::InvalidArgumentError(absl::StrCat("'", images_path, "' has implausible sizes"));
  }
  Dataset d;
  d.example_shape = {1, idims[1], idims[2]};
  d.num_examples = idims[0];
  d.num_classes = 10;
  const size_t pixels = d.num_examples * idims[1] * idims[2];
  std::vector<unsigned char> raw(pixels);
  if (!ReadExactly(images->get(), raw.data(), pixels)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", images_path, "' is truncated or corrupt: expected ", pixels, " pixel bytes"));
  }
  d.features.resize(pixels);
  for (size_t i = 0; i < pixels; ++i) d.features[i] = (raw[i] / 255.0f - mean) / stddev;
  std::vector<unsigned char> lab(d.num_examples);
  if (!ReadExactly(labels->get(), lab.data(), lab.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", labels_path, "' is truncated or corrupt: expected ", lab.size(), " labels"));
  }
  d.labels.resize(d.num_examples);
  for (size_t i = 0; i < lab.size(); ++i) {
    if (lab[i] > 9) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", labels_path, "' has label ", int{lab[i]}, " at ", i, " (not 0-9)"));
    }
    d.labels[i] = lab[i];
  }
  return d;
}

absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  // Fashion-MNIST's training-set pixel mean and standard deviation.
  return ReadIdx(absl::StrCat(dir, "/", prefix, "-images-idx3-ubyte.gz"),
                 absl::StrCat(dir, "/", prefix, "-labels-idx1-ubyte.gz"), 0.2860f, 0.3530f);
}

absl::StatusOr<Dataset> LoadCifar10(const std::string& dir, bool train) {
  std::vector<std::string> files;
  if (train) {
    for (int i = 1; i <= 5; ++i) files.push_back(absl::StrCat(dir, "/data_batch_", i, ".bin"));
  } else {
    files.push_back(absl::StrCat(dir, "/test_batch.bin"));
  }
  constexpr size_t kRecord = 3073, kPixels = 3072;
  Dataset d;
  d.example_shape = {3, 32, 32};
  d.num_classes = 10;
  std::vector<unsigned char> raw;
  for (const std::string& path : files) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open CIFAR-10 file '", path, "'"));
    const std::streamsize size = in.tellg();
    if (size <= 0 || size % kRecord != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", path, "' has ", size, " bytes, not a multiple of the 3073-byte CIFAR-10 record"));
    }
    raw.resize(size);
    in.seekg(0);
    if (!in.read(reinterpret_cast<char*>(raw.data()), size)) {
      return absl::InvalidArgumentError(absl::StrCat("cannot read '", path, "'"));
    }
    const size_t n = size / kRecord;
    for (size_t r = 0; r < n; ++r) {
      const unsigned char* rec = &raw[r * kRecord];
      if (rec[0] > 9) {
        return absl::InvalidArgumentError(
            absl::StrCat("'", path, "' record ", r, " has label ", int{rec[0]}, " (not 0-9)"));
      }
      d.labels.push_back(rec[0]);
      for (size_t p = 0; p < kPixels; ++p) d.features.push_back(rec[1 + p] / 255.0f);
    }
    d.num_examples += n;
  }
  // CIFAR-10's per-channel training means and standard deviations.
  const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, stddev[3] = {0.2470f, 0.2435f, 0.2616f};
  for (size_t i = 0; i < d.features.size(); ++i) {
    const size_t c = (i % kPixels) / 1024;
    d.features[i] = (d.features[i] - mean[c]) / stddev[c];
  }
  return d;
}

absl::Status WriteCifar10File(const std::string& path, const std::vector<uint8_t>& labels,
                              const std::vector<uint8_t>& pixels) {
  if (pixels.size() != labels.size() * 3072) {
    return absl::InvalidArgumentError("need 3072 pixel bytes per label");
  }
  std::ofstream out(path, std::ios::binary);
  for (size_t r = 0; r < labels.size(); ++r) {
    out.put(static_cast<char>(labels[r]));
    out.write(reinterpret_cast<const char*>(&pixels[r * 3072]), 3072);
  }
  if (!out) return absl::InternalError(absl::StrCat("cannot write '", path, "'"));
  return absl::OkStatus();
}

}  // namespace regtopk
