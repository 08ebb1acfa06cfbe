#include "common/checkpoint/state_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace regtopk {
namespace {

constexpr char kMagic[8] = {'R', 'T', 'K', 'S', 'T', 'A', 'T', 'E'};
constexpr size_t kBufferBytes = 1 << 16;

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " '", path, "': ", std::strerror(errno)));
}

template <typename T>
std::string Le(T v) {  // little-endian hosts only (the wire format assumes the same)
  std::string s(sizeof(T), '\0');
  std::memcpy(s.data(), &v, sizeof(T));
  return s;
}

absl::Status SyncDirectory(const std::string& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return ErrnoError("cannot open directory", dir);
  const int rc = fsync(fd);
  close(fd);
  if (rc != 0) return ErrnoError("cannot fsync directory", dir);
  return absl::OkStatus();
}

template <typename T>
absl::StatusOr<std::vector<T>> Array(const StateFile& f, absl::string_view key) {
  auto bytes = f.Bytes(key);
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() % sizeof(T) != 0) {
    return absl::DataLossError(absl::StrCat("state file '", f.path(), "': section '", key,
                                            "' has ", bytes->size(), " bytes, not a multiple of ",
                                            sizeof(T)));
  }
  std::vector<T> out(bytes->size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), bytes->data(), bytes->size());
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<StateFileWriter>> StateFileWriter::Create(const std::string& dir,
                                                                         const std::string& name,
                                                                         absl::string_view kind) {
  const std::string tmp = dir + "/." + name + ".tmp";
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  std::unique_ptr<StateFileWriter> w(new StateFileWriter(dir, name, fd));
  std::string header(kMagic, sizeof(kMagic));
  header += Le<uint32_t>(kStateFileVersion);
  header += Le<uint32_t>(static_cast<uint32_t>(kind.size()));
  header.append(kind.data(), kind.size());
  if (absl::Status s = w->Write(header); !s.ok()) return s;
  return w;
}

StateFileWriter::StateFileWriter(std::string dir, std::string name, int fd)
    : dir_(std::move(dir)), name_(std::move(name)), tmp_path_(dir_ + "/." + name_ + ".tmp"),
      fd_(fd) {}

StateFileWriter::~StateFileWriter() {
  if (fd_ >= 0) close(fd_);
  if (!committed_) unlink(tmp_path_.c_str());
}

absl::Status StateFileWriter::WriteOut(const char* p, size_t left) {
  while (left > 0) {
    size_t n = left;
    if (kill_after_bytes_ != 0 && written_ < kill_after_bytes_ && written_ + n >= kill_after_bytes_) {
      n = kill_after_bytes_ - written_;  // write up to the mark, then die as a crash would
      if (n == 0) raise(SIGKILL);
    }
    const ssize_t w = write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", tmp_path_);
    }
    p += w;
    left -= static_cast<size_t>(w);
    written_ += static_cast<uint64_t>(w);
    if (kill_after_bytes_ != 0 && written_ >= kill_after_bytes_) raise(SIGKILL);
  }
  return absl::OkStatus();
}

absl::Status StateFileWriter::Flush() {
  absl::Status s = WriteOut(buffer_.data(), buffer_.size());
  buffer_.clear();
  return s;
}

absl::Status StateFileWriter::Write(absl::string_view bytes) {
  digest_.Update(bytes);
  if (buffer_.size() + bytes.size() > kBufferBytes) {
    if (absl::Status s = Flush(); !s.ok()) return s;
  }
  // Large sections (the parameters) go straight from the caller's memory to the file: no copy.
  if (bytes.size() >= kBufferBytes) return WriteOut(bytes.data(), bytes.size());
  buffer_.append(bytes.data(), bytes.size());
  return absl::OkStatus();
}

absl::Status StateFileWriter::Section(absl::string_view key, absl::string_view bytes) {
  std::string head = Le<uint32_t>(static_cast<uint32_t>(key.size()));
  head.append(key.data(), key.size());
  head += Le<uint64_t>(bytes.size());
  if (absl::Status s = Write(head); !s.ok()) return s;
  return Write(bytes);
}

absl::Status StateFileWriter::AddBytes(absl::string_view key, absl::string_view bytes) {
  return Section(key, bytes);
}
absl::Status StateFileWriter::AddU64(absl::string_view key, uint64_t value) {
  return Section(key, Le<uint64_t>(value));
}
absl::Status StateFileWriter::AddFloats(absl::string_view key, absl::Span<const float> v) {
  return Section(key, absl::string_view(reinterpret_cast<const char*>(v.data()), 4 * v.size()));
}
absl::Status StateFileWriter::AddU32s(absl::string_view key, absl::Span<const uint32_t> v) {
  return Section(key, absl::string_view(reinterpret_cast<const char*>(v.data()), 4 * v.size()));
}
absl::Status StateFileWriter::AddU64s(absl::string_view key, absl::Span<const uint64_t> v) {
  return Section(key, absl::string_view(reinterpret_cast<const char*>(v.data()), 8 * v.size()));
}

absl::Status StateFileWriter::Commit() {
  // The end marker (an empty key) and the checksum of everything before the checksum.
  if (absl::Status s = Write(Le<uint32_t>(0)); !s.ok()) return s;
  const uint64_t sum = digest_.Finish();
  buffer_ += Le<uint64_t>(sum);
  if (absl::Status s = Flush(); !s.ok()) return s;
  if (fsync(fd_) != 0) return ErrnoError("cannot fsync", tmp_path_);
  close(fd_);
  fd_ = -1;
  absl::Status s = RenameDurably(dir_, "." + name_ + ".tmp", name_);
  committed_ = s.ok();
  return s;
}

absl::Status RenameDurably(const std::string& dir, const std::string& from, const std::string& to) {
  const std::string source = dir + "/" + from, target = dir + "/" + to;
  if (rename(source.c_str(), target.c_str()) != 0) {
    return ErrnoError(absl::StrCat("cannot rename '", source, "' to"), target);
  }
  return SyncDirectory(dir);
}

absl::StatusOr<StateFile> StateFile::Read(const std::string& path, absl::string_view kind) {
  StateFile f;
  f.path_ = path;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open state file '", path, "'"));
    std::ostringstream s;
    s << in.rdbuf();
    f.data_ = std::move(s).str();
  }
  const std::string& d = f.data_;
  auto corrupt = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("state file '", path, "' is corrupt or truncated: ", why));
  };
  if (d.size() < sizeof(kMagic) + 8 + 4 + 8 || std::memcmp(d.data(), kMagic, sizeof(kMagic)) != 0) {
    return corrupt("no regtopk state header");
  }
  size_t at = sizeof(kMagic);
  auto take = [&](size_t n) -> const char* {
    if (n > d.size() - 8 - at) return nullptr;
    const char* p = d.data() + at;
    at += n;
    return p;
  };
  uint32_t version, kind_len;
  const char* p = take(4);
  if (!p) return corrupt("short header");
  std::memcpy(&version, p, 4);
  if (version != kStateFileVersion) {
    return absl::FailedPreconditionError(absl::StrCat("state file '", path, "' has format version ",
                                                      version, "; this build reads version ",
                                                      kStateFileVersion));
  }
  // The version first: a file of another version may checksum differently (version 1 used an
  // older digest), and "written by another version" is the error that helps.
  uint64_t stored;
  std::memcpy(&stored, d.data() + d.size() - 8, 8);
  if (DigestBytes(absl::string_view(d.data(), d.size() - 8)) != stored) {
    return corrupt("checksum mismatch");
  }
  if (!(p = take(4))) return corrupt("short header");
  std::memcpy(&kind_len, p, 4);
  if (!(p = take(kind_len))) return corrupt("short header");
  if (absl::string_view(p, kind_len) != kind) {
    return absl::FailedPreconditionError(absl::StrCat("state file '", path, "' holds a ",
                                                      absl::string_view(p, kind_len), ", not a ",
                                                      kind));
  }
  while (true) {
    uint32_t key_len;
    if (!(p = take(4))) return corrupt("section framing");
    std::memcpy(&key_len, p, 4);
    if (key_len == 0) break;
    const char* key = take(key_len);
    uint64_t len;
    if (!key || !(p = take(8))) return corrupt("section framing");
    std::memcpy(&len, p, 8);
    const char* bytes = take(len);
    if (!bytes) return corrupt("section length overruns the file");
    f.sections_[std::string(key, key_len)] = absl::string_view(bytes, len);
  }
  if (at != d.size() - 8) return corrupt("bytes after the end marker");
  return f;
}

absl::StatusOr<absl::string_view> StateFile::Bytes(absl::string_view key) const {
  auto it = sections_.find(std::string(key));
  if (it == sections_.end()) {
    return absl::DataLossError(absl::StrCat("state file '", path_, "' has no section '", key, "'"));
  }
  return it->second;
}

absl::StatusOr<uint64_t> StateFile::U64(absl::string_view key) const {
  auto b = Bytes(key);
  if (!b.ok()) return b.status();
  if (b->size() != 8) {
    return absl::DataLossError(absl::StrCat("state file '", path_, "': section '", key, "' is not a u64"));
  }
  uint64_t v;
  std::memcpy(&v, b->data(), 8);
  return v;
}

absl::StatusOr<std::vector<float>> StateFile::Floats(absl::string_view key) const {
  return Array<float>(*this, key);
}
absl::StatusOr<std::vector<uint32_t>> StateFile::U32s(absl::string_view key) const {
  return Array<uint32_t>(*this, key);
}
absl::StatusOr<std::vector<uint64_t>> StateFile::U64s(absl::string_view key) const {
  return Array<uint64_t>(*this, key);
}

std::string RoundFileName(absl::string_view prefix, uint64_t round, absl::string_view suffix) {
  return absl::StrFormat("%s%012d%s", prefix, round, suffix);
}

std::vector<uint64_t> ListRoundFiles(const std::string& dir, absl::string_view prefix,
                                     absl::string_view suffix) {
  std::vector<uint64_t> rounds;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return rounds;
  while (dirent* e = readdir(d)) {
    absl::string_view name = e->d_name;
    if (!absl::ConsumePrefix(&name, prefix) || !absl::ConsumeSuffix(&name, suffix)) continue;
    uint64_t r;
    if (name.size() == 12 && absl::SimpleAtoi(name, &r)) rounds.push_back(r);
  }
  closedir(d);
  std::sort(rounds.begin(), rounds.end());
  return rounds;
}

absl::Status EnsureDirectory(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create directory '", dir, "': ", ec ? ec.message() : "not a directory"));
  }
  return absl::OkStatus();
}

void RemoveFileIfPresent(const std::string& dir, const std::string& name) {
  unlink((dir + "/" + name).c_str());
}

}  // namespace regtopk
