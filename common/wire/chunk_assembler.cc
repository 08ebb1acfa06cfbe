#include "common/wire/chunk_assembler.h"

#include "absl/strings/str_cat.h"
#include "common/wire/chunking.h"

namespace regtopk {

absl::Status ChunkAssembler::Start(uint32_t worker_id, uint64_t round, uint64_t total,
                                   uint64_t limit) {
  started_ = true;
  worker_id_ = worker_id;
  round_ = round;
  total_ = total;
  if (total > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("push of ", total, " bytes exceeds the limit of ", limit, " bytes for this job"));
  }
  return absl::OkStatus();
}

absl::Status ChunkAssembler::Add(uint32_t worker_id, uint64_t round, absl::string_view piece) {
  if (!started_) return absl::InvalidArgumentError("push chunk before the first");
  if (worker_id != worker_id_ || round != round_) {
    return absl::InvalidArgumentError("push chunks disagree on worker id or round");
  }
  if (piece.size() > kChunkBytes || piece.size() > total_ - payload_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("push chunk of ", piece.size(),
                                                   " bytes overruns the announced ", total_));
  }
  payload_.append(piece.data(), piece.size());
  return absl::OkStatus();
}

absl::Status ChunkAssembler::Finish() const {
  if (!started_) return absl::InvalidArgumentError("push carried no chunks");
  if (payload_.size() != total_) {
    return absl::InvalidArgumentError(
        absl::StrCat("push ended after ", payload_.size(), " of ", total_, " announced bytes"));
  }
  return absl::OkStatus();
}

}  // namespace regtopk
