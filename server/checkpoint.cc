#include "server/checkpoint.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/checkpoint/state_file.h"
#include "common/rpc/conversions.h"
#include "common/sparse/sparse_vector.h"
#include "common/status/status_macros.h"

namespace regtopk {
namespace {

constexpr char kKind[] = "regtopk server checkpoint";
constexpr char kCommitted[] = "ckpt-";
constexpr char kPending[] = "pending-";
constexpr char kSuffix[] = ".rtk";

absl::StatusOr<ServerCheckpoint> Parse(const StateFile& f) {
  ServerCheckpoint c;
  REGTOPK_ASSIGN_OR_RETURN(c.round, f.U64("round"));
  REGTOPK_ASSIGN_OR_RETURN(c.dim, f.U64("dim"));
  REGTOPK_ASSIGN_OR_RETURN(c.layout_digest, f.U64("layout_digest"));
  REGTOPK_ASSIGN_OR_RETURN(absl::string_view job_bytes, f.Bytes("job"));
  v1::JobConfig job;
  if (!job.ParseFromArray(job_bytes.data(), static_cast<int>(job_bytes.size()))) {
    return absl::DataLossError(absl::StrCat("checkpoint '", f.path(), "': unreadable job config"));
  }
  REGTOPK_ASSIGN_OR_RETURN(c.job, FromProto(job, c.dim));
  REGTOPK_ASSIGN_OR_RETURN(c.num_samples, f.U64s("num_samples"));
  REGTOPK_ASSIGN_OR_RETURN(c.weights, f.Floats("weights"));
  REGTOPK_ASSIGN_OR_RETURN(c.params, f.Floats("params"));
  REGTOPK_ASSIGN_OR_RETURN(c.optimizer_state, f.Floats("optimizer_state"));
  if (c.job.downlink_density != 0) {
    REGTOPK_ASSIGN_OR_RETURN(c.downlink_error, f.Floats("downlink_error"));
    if (c.downlink_error.size() != c.dim || FindNonFinite(c.downlink_error) != c.dim) {
      return absl::DataLossError(
          absl::StrCat("checkpoint '", f.path(), "': bad downlink error section"));
    }
  }
  REGTOPK_ASSIGN_OR_RETURN(c.last_push_digests, f.U64s("last_push_digests"));
  REGTOPK_ASSIGN_OR_RETURN(uint64_t has_last, f.U64("has_last_result"));
  const uint32_t n = c.job.num_workers;
  if (c.params.size() != c.dim || c.num_samples.size() != n || c.weights.size() != n ||
      c.last_push_digests.size() != n || c.optimizer_state.size() != c.job.optimizer.StateSlots() * c.dim) {
    return absl::DataLossError(absl::StrCat("checkpoint '", f.path(), "': sections disagree on sizes"));
  }
  if (has_last) {
    auto r = std::make_shared<RoundResult>();
    r->round = c.round - 1;
    REGTOPK_ASSIGN_OR_RETURN(absl::string_view enc, f.Bytes("last_encoded"));
    r->encoded = std::string(enc);
    REGTOPK_ASSIGN_OR_RETURN(uint64_t nnz, f.U64("last_nnz"));
    r->nnz = nnz;
    REGTOPK_ASSIGN_OR_RETURN(uint64_t has_digest, f.U64("last_has_digest"));
    r->has_digest = has_digest != 0;
    REGTOPK_ASSIGN_OR_RETURN(r->digest, f.U64("last_digest"));
    REGTOPK_ASSIGN_OR_RETURN(r->committed_round, f.U64("last_committed_round"));
    c.last_result = std::move(r);
  }
  return c;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointStore>> CheckpointStore::Open(const std::string& dir) {
  REGTOPK_RETURN_IF_ERROR(EnsureDirectory(dir));
  return std::unique_ptr<CheckpointStore>(new CheckpointStore(dir));
}

absl::Status CheckpointStore::WritePending(const ServerCheckpoint& c) {
  REGTOPK_ASSIGN_OR_RETURN(std::unique_ptr<StateFileWriter> w,
                           StateFileWriter::Create(dir_, RoundFileName(kPending, c.round, kSuffix), kKind));
  if (kill_bytes_ != 0 && kill_round_ == c.round) w->set_kill_after_bytes(kill_bytes_);
  v1::JobConfig job;
  ToProto(c.job, c.dim, &job);
  REGTOPK_RETURN_IF_ERROR(w->AddU64("round", c.round));
  REGTOPK_RETURN_IF_ERROR(w->AddU64("dim", c.dim));
  REGTOPK_RETURN_IF_ERROR(w->AddU64("layout_digest", c.layout_digest));
  REGTOPK_RETURN_IF_ERROR(w->AddBytes("job", job.SerializeAsString()));
  REGTOPK_RETURN_IF_ERROR(w->AddU64s("num_samples", c.num_samples));
  REGTOPK_RETURN_IF_ERROR(w->AddFloats("weights", c.weights));
  REGTOPK_RETURN_IF_ERROR(w->AddFloats("params", c.params));
  REGTOPK_RETURN_IF_ERROR(w->AddFloats("optimizer_state", c.optimizer_state));
  if (c.job.downlink_density != 0) {
    REGTOPK_RETURN_IF_ERROR(w->AddFloats("downlink_error", c.downlink_error));
  }
  REGTOPK_RETURN_IF_ERROR(w->AddU64s("last_push_digests", c.last_push_digests));
  REGTOPK_RETURN_IF_ERROR(w->AddU64("has_last_result", c.last_result != nullptr));
  if (c.last_result) {
    const RoundResult& r = *c.last_result;
    REGTOPK_RETURN_IF_ERROR(w->AddBytes("last_encoded", r.encoded));
    REGTOPK_RETURN_IF_ERROR(w->AddU64("last_nnz", r.nnz));
    REGTOPK_RETURN_IF_ERROR(w->AddU64("last_has_digest", r.has_digest));
    REGTOPK_RETURN_IF_ERROR(w->AddU64("last_digest", r.digest));
    REGTOPK_RETURN_IF_ERROR(w->AddU64("last_committed_round", r.committed_round));
  }
  return w->Commit();
}

absl::Status CheckpointStore::Commit(uint64_t round) {
  REGTOPK_RETURN_IF_ERROR(RenameDurably(dir_, RoundFileName(kPending, round, kSuffix),
                                        RoundFileName(kCommitted, round, kSuffix)));
  std::vector<uint64_t> committed = Committed();
  for (size_t i = 0; i + 2 < committed.size(); ++i) {
    RemoveFileIfPresent(dir_, RoundFileName(kCommitted, committed[i], kSuffix));
  }
  for (uint64_t r : ListRoundFiles(dir_, kPending, kSuffix)) {
    if (r <= round) RemoveFileIfPresent(dir_, RoundFileName(kPending, r, kSuffix));
  }
  return absl::OkStatus();
}

std::vector<uint64_t> CheckpointStore::Committed() const {
  return ListRoundFiles(dir_, kCommitted, kSuffix);
}

absl::StatusOr<ServerCheckpoint> CheckpointStore::Load(uint64_t round) const {
  REGTOPK_ASSIGN_OR_RETURN(
      StateFile f, StateFile::Read(dir_ + "/" + RoundFileName(kCommitted, round, kSuffix), kKind));
  REGTOPK_ASSIGN_OR_RETURN(ServerCheckpoint c, Parse(f));
  if (c.round != round) {
    return absl::DataLossError(absl::StrCat("checkpoint '", f.path(), "' holds round ", c.round));
  }
  return c;
}

absl::StatusOr<ServerCheckpoint> CheckpointStore::LoadNewest(std::vector<std::string>* log) const {
  const std::vector<uint64_t> committed = Committed();
  if (committed.empty()) {
    return absl::NotFoundError(absl::StrCat("no committed checkpoint in '", dir_, "'"));
  }
  std::vector<std::string> failures;
  for (auto it = committed.rbegin(); it != committed.rend(); ++it) {
    absl::StatusOr<ServerCheckpoint> c = Load(*it);
    if (c.ok()) return c;
    failures.push_back(std::string(c.status().message()));
    log->push_back(absl::StrCat("checkpoint of round ", *it, " is unusable (", c.status().message(),
                                "); trying the previous one"));
  }
  return absl::DataLossError(absl::StrCat("every committed checkpoint in '", dir_,
                                          "' is unusable: ", absl::StrJoin(failures, "; ")));
}

}  // namespace regtopk
