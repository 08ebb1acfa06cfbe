// NumPy's .npy and .npz formats, read (and, for tests and tools, written) without a new
// dependency: an .npz is a zip archive (stored or deflated members, zip64 included, which is
// what numpy.savez and numpy.savez_compressed write) of .npy files, each a small text header
// followed by the raw array. No LibTorch. Stateless functions; thread-safe.
//
// A user's data set is an .npz holding `x` (float32, any shape with the sample axis first) and
// `y` (int64 class labels, or float32 regression targets of any shape with the same first
// axis). One line of NumPy writes it: numpy.savez("train.npz", x=x, y=y).
#ifndef REGTOPK_WORKER_DATA_NPZ_H_
#define REGTOPK_WORKER_DATA_NPZ_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/data/dataset.h"

namespace regtopk {

struct NpyArray {
  std::string descr;           // NumPy's dtype string, e.g. "<f4", "<i8", "|u1"
  std::vector<int64_t> shape;  // () for a scalar
  std::string data;            // C order, little-endian as stored

  int64_t num_elements() const;
};

// Parses one .npy file's bytes. `name` (the file or member) prefixes every error, which is
// INVALID_ARGUMENT for a bad magic, header, Fortran order or a size that disagrees with the
// header.
absl::StatusOr<NpyArray> ParseNpy(std::string data, absl::string_view name);

// Every member of the .npz at `path`, keyed by its name without ".npy". NOT_FOUND if the file
// is missing; INVALID_ARGUMENT naming the file (and the member) if it is not a readable zip of
// .npy files, uses an unsupported compression, or fails its CRC check.
absl::StatusOr<std::map<std::string, NpyArray>> ReadNpz(const std::string& path);

// A data set from an .npz with `x` and `y` as described above. Errors name the file and say
// what is wrong: a missing array, a wrong dtype (with the NumPy fix), counts that disagree,
// negative labels, non-finite values.
absl::StatusOr<Dataset> LoadNpzDataset(const std::string& path);

// Writes `arrays` as an uncompressed .npz (what numpy.savez writes; numpy.load reads it).
absl::Status WriteNpz(const std::string& path, const std::map<std::string, NpyArray>& arrays);

// Helpers for writers.
NpyArray MakeFloat32Array(std::vector<int64_t> shape, const std::vector<float>& values);
NpyArray MakeInt64Array(std::vector<int64_t> shape, const std::vector<int64_t>& values);

}  // namespace regtopk

#endif  // REGTOPK_WORKER_DATA_NPZ_H_
