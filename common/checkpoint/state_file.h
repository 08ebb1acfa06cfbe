// State files: the on-disk form of a server checkpoint and of a worker's state. A file is a
// kind (what it holds), a format version, named sections of bytes, and a 64-bit checksum of
// everything before it (common/wire/digest.h). StateFileWriter writes DIR/.NAME.tmp, fsyncs
// it, renames it to DIR/NAME and fsyncs DIR, so a reader sees the old file or the whole new
// one, never a part; StateFile::Read refuses a file whose checksum, version, kind or framing is
// wrong, naming the file. Thread-compatible.
#ifndef REGTOPK_COMMON_CHECKPOINT_STATE_FILE_H_
#define REGTOPK_COMMON_CHECKPOINT_STATE_FILE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/wire/digest.h"

namespace regtopk {

// 2: the checksum is the vectorized digest (common/wire/digest.h); 1 used the older one.
inline constexpr uint32_t kStateFileVersion = 2;

class StateFileWriter {
 public:
  // Creates DIR/.NAME.tmp (DIR must exist). `kind` names what the file holds ("server
  // checkpoint", "worker state"); Read checks it.
  static absl::StatusOr<std::unique_ptr<StateFileWriter>> Create(const std::string& dir,
                                                                 const std::string& name,
                                                                 absl::string_view kind);
  // Removes the temporary file unless Commit succeeded.
  ~StateFileWriter();

  // Sections, each under a unique key. Errors: the write's (disk full, I/O).
  absl::Status AddBytes(absl::string_view key, absl::string_view bytes);
  absl::Status AddU64(absl::string_view key, uint64_t value);
  absl::Status AddFloats(absl::string_view key, absl::Span<const float> values);
  absl::Status AddU32s(absl::string_view key, absl::Span<const uint32_t> values);
  absl::Status AddU64s(absl::string_view key, absl::Span<const uint64_t> values);

  // Appends the checksum, fsyncs, renames to DIR/NAME, fsyncs DIR. After an error the target
  // is untouched.
  absl::Status Commit();

  // Fault injection for tests of crash safety: the process SIGKILLs itself once this many
  // bytes of the file have been written (0 = never).
  void set_kill_after_bytes(uint64_t bytes) { kill_after_bytes_ = bytes; }

 private:
  StateFileWriter(std::string dir, std::string name, int fd);
  absl::Status Write(absl::string_view bytes);
  absl::Status Flush();
  absl::Status WriteOut(const char* p, size_t n);
  absl::Status Section(absl::string_view key, absl::string_view bytes);

  const std::string dir_, name_, tmp_path_;
  int fd_;
  bool committed_ = false;
  std::string buffer_;
  StreamingDigest digest_;
  uint64_t written_ = 0;
  uint64_t kill_after_bytes_ = 0;
};

class StateFile {
 public:
  // Reads and verifies PATH. DATA_LOSS naming the file for a truncated or corrupt file (bad
  // checksum or framing); FAILED_PRECONDITION for another kind or version; NOT_FOUND.
  static absl::StatusOr<StateFile> Read(const std::string& path, absl::string_view kind);

  bool Has(absl::string_view key) const { return sections_.count(std::string(key)) > 0; }
  // DATA_LOSS (naming file and key) when the section is missing or has the wrong size.
  absl::StatusOr<absl::string_view> Bytes(absl::string_view key) const;
  absl::StatusOr<uint64_t> U64(absl::string_view key) const;
  absl::StatusOr<std::vector<float>> Floats(absl::string_view key) const;
  absl::StatusOr<std::vector<uint32_t>> U32s(absl::string_view key) const;
  absl::StatusOr<std::vector<uint64_t>> U64s(absl::string_view key) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string data_;
  std::map<std::string, absl::string_view> sections_;
};

// Rounds R of the files DIR/PREFIX<R>SUFFIX (R as written by RoundFileName), ascending.
std::vector<uint64_t> ListRoundFiles(const std::string& dir, absl::string_view prefix,
                                     absl::string_view suffix);
// PREFIX, R zero-padded to 12 digits, SUFFIX: names sort in round order.
std::string RoundFileName(absl::string_view prefix, uint64_t round, absl::string_view suffix);
// Creates DIR and its parents if missing; INVALID_ARGUMENT naming it if that fails.
absl::Status EnsureDirectory(const std::string& dir);
// Renames DIR/FROM to DIR/TO and fsyncs DIR, so the rename survives a crash.
absl::Status RenameDurably(const std::string& dir, const std::string& from, const std::string& to);
// Removes DIR/NAME if present (errors ignored: retention is best effort).
void RemoveFileIfPresent(const std::string& dir, const std::string& name);

}  // namespace regtopk

#endif  // REGTOPK_COMMON_CHECKPOINT_STATE_FILE_H_
