// Dataset: an in-memory labelled data set with float32 features, plus the readers for the
// formats regtopk trains on: IDX (MNIST / Fashion-MNIST, gzip-compressed or not), CIFAR-10
// binary batches, and the paper's synthetic problems. No LibTorch. Plain value; thread-compatible.
#ifndef REGTOPK_WORKER_DATA_DATASET_H_
#define REGTOPK_WORKER_DATA_DATASET_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace regtopk {

struct Dataset {
  // Shape of one example, e.g. {1, 28, 28} or {3, 32, 32} or {100}.
  std::vector<int64_t> example_shape;
  size_t num_examples = 0;
  // num_examples * prod(example_shape) values, example after example.
  std::vector<float> features;
  // Classification: labels in [0, num_classes). Regression: targets (num_classes == 0).
  std::vector<int64_t> labels;
  std::vector<float> targets;
  std::vector<int64_t> target_shape;  // regression: the shape of one target; {} for a scalar
  int num_classes = 0;

  size_t example_size() const;
  bool is_regression() const { return num_classes == 0; }
};

// Reads an IDX image file (magic 0x00000803) and label file (0x00000801), each gzip-compressed
// or plain (zlib reads both). Pixels are scaled to [0, 1] and then standardised with `mean` and
// `stddev`. INVALID_ARGUMENT / NOT_FOUND naming the file for a missing, truncated or corrupt
// file, or counts that disagree.
absl::StatusOr<Dataset> ReadIdx(const std::string& images_path, const std::string& labels_path,
                                float mean, float stddev);

// Fashion-MNIST from `dir` (train-images-idx3-ubyte.gz etc.; Debian's dataset-fashion-mnist
// installs them in /usr/share/datasets/fashion-mnist).
absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, bool train);

// CIFAR-10 binary version from `dir`: data_batch_1.bin .. data_batch_5.bin (train) or
// test_batch.bin; 3073-byte records (label, 3x32x32 channel-major pixels), per-channel
// standardised. A missing or wrongly sized file is an error naming it.
absl::StatusOr<Dataset> LoadCifar10(const std::string& dir, bool train);

// Writes CIFAR-10-format records (for tests and smoke runs): `labels.size()` records with
// `pixels` holding 3072 bytes per record.
absl::Status WriteCifar10File(const std::string& path, const std::vector<uint8_t>& labels,
                              const std::vector<uint8_t>& pixels);

}  // namespace regtopk

#endif  // REGTOPK_WORKER_DATA_DATASET_H_
