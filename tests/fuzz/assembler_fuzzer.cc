// libFuzzer target: the push chunk assembler on arbitrary chunk sequences. Each chunk is
// (worker byte, round byte, piece length byte, piece); the first also announces a total. The
// assembler must never hold more than the announced total nor the limit, and must only
// report a complete push when exactly the announced bytes arrived.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/wire/chunk_assembler.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  constexpr uint64_t kLimit = 4096;
  regtopk::ChunkAssembler a;
  const uint64_t total = (static_cast<uint64_t>(data[0]) << 8 | data[1]) * 3;
  const bool started = a.Start(data[2] % 4, 0, total, kLimit).ok();
  size_t pos = 3;
  while (started && pos + 3 <= size) {
    const uint32_t worker = data[pos] % 4;
    const uint64_t round = data[pos + 1] % 2;
    const size_t len = std::min<size_t>(data[pos + 2] * 4, size - pos - 3);
    pos += 3;
    (void)a.Add(worker, round, std::string(reinterpret_cast<const char*>(data + pos), len));
    pos += len;
    if (a.payload().size() > total || a.payload().size() > kLimit) __builtin_trap();
  }
  if (a.Finish().ok() && a.payload().size() != total) __builtin_trap();
  return 0;
}
