// ChunkAssembler: reassembles a payload streamed in chunks (a push), with the checks a hostile
// sender makes necessary, before anything is decoded: the first chunk announces the total and
// its sender (worker, round), every later chunk must repeat them, no chunk may exceed
// kChunkBytes or overrun the announced total, and the total may not exceed the job's limit.
// The buffer grows with the bytes received (never reserved from the announcement beyond
// them), so a lying announcement costs the sender the bytes it actually sends. No gRPC.
// Thread-compatible.
#ifndef REGTOPK_COMMON_WIRE_CHUNK_ASSEMBLER_H_
#define REGTOPK_COMMON_WIRE_CHUNK_ASSEMBLER_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace regtopk {

class ChunkAssembler {
 public:
  // The first chunk: INVALID_ARGUMENT if `total` exceeds `limit` ("oversize").
  absl::Status Start(uint32_t worker_id, uint64_t round, uint64_t total, uint64_t limit);
  // A chunk's payload, with the ids it repeats: INVALID_ARGUMENT when they differ from the
  // first chunk's, or the piece is larger than kChunkBytes or overruns the total.
  absl::Status Add(uint32_t worker_id, uint64_t round, absl::string_view piece);
  // After the last chunk: INVALID_ARGUMENT unless exactly the announced total arrived.
  absl::Status Finish() const;

  bool started() const { return started_; }
  uint32_t worker_id() const { return worker_id_; }
  uint64_t round() const { return round_; }
  const std::string& payload() const { return payload_; }
  std::string TakePayload() { return std::move(payload_); }

 private:
  bool started_ = false;
  uint32_t worker_id_ = 0;
  uint64_t round_ = 0;
  uint64_t total_ = 0;
  std::string payload_;
};

}  // namespace regtopk

#endif  // REGTOPK_COMMON_WIRE_CHUNK_ASSEMBLER_H_
