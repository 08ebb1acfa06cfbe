// libFuzzer target: the wire-to-domain conversions on arbitrary protobuf bytes: a JobConfig as
// a worker receives it, and a Join/Push message's fields as the server reads them. Whatever
// FromProto accepts must be a valid job (Validate) whose round trip is stable.
#include <cstddef>
#include <cstdint>

#include "common/rpc/conversions.h"
#include "regtopk/v1/parameter_server.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint64_t dim = 1 + data[0] * 997;
  regtopk::v1::JobConfig p;
  if (!p.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  auto c = regtopk::FromProto(p, dim);
  if (!c.ok()) return 0;
  if (!c->Validate().ok()) __builtin_trap();
  regtopk::v1::JobConfig again;
  regtopk::ToProto(*c, dim, &again);
  auto back = regtopk::FromProto(again, dim);
  if (!back.ok() || back->MaxEntries(dim) != c->MaxEntries(dim)) __builtin_trap();
  regtopk::v1::PushChunk chunk;
  (void)chunk.ParseFromArray(data + 1, static_cast<int>(size - 1));
  return 0;
}
