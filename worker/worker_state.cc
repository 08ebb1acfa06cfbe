#include "worker/worker_state.h"

#include "absl/strings/str_cat.h"
#include "common/checkpoint/state_file.h"
#include "common/status/status_macros.h"

namespace regtopk {
namespace {

constexpr char kKind[] = "regtopk worker state";
constexpr char kPrefix[] = "state-";
constexpr char kSuffix[] = ".rtk";

}  // namespace

absl::Status SaveWorkerState(const std::string& dir, const WorkerState& s) {
  REGTOPK_RETURN_IF_ERROR(EnsureDirectory(dir));
  REGTOPK_ASSIGN_OR_RETURN(std::unique_ptr<StateFileWriter> w,
                           StateFileWriter::Create(dir, RoundFileName(kPrefix, s.round, kSuffix), kKind));
  REGTOPK_RETURN_IF_ERROR(w->AddU64("round", s.round));
  REGTOPK_RETURN_IF_ERROR(w->AddU64("worker_id", s.worker_id));
  REGTOPK_RETURN_IF_ERROR(w->AddFloats("params", s.params));
  REGTOPK_RETURN_IF_ERROR(w->AddFloats("optimizer_state", s.optimizer_state));
  const SparsifierState& sp = s.sparsifier;
  REGTOPK_RETURN_IF_ERROR(w->AddFloats("error", sp.error));
  REGTOPK_RETURN_IF_ERROR(w->AddU32s("prev_indices", sp.prev_indices));
  REGTOPK_RETURN_IF_ERROR(w->AddFloats("prev_values", sp.prev_values));
  REGTOPK_RETURN_IF_ERROR(w->AddFloats("prev_aggregate", sp.prev_aggregate));
  REGTOPK_RETURN_IF_ERROR(w->AddU64("flags", (sp.compressed ? 1u : 0u) | (sp.observed ? 2u : 0u)));
  REGTOPK_RETURN_IF_ERROR(w->AddU64("rng_state", sp.rng_state));
  REGTOPK_RETURN_IF_ERROR(w->AddBytes("extra", s.extra));
  return w->Commit();
}

absl::StatusOr<WorkerState> LoadWorkerState(const std::string& dir, uint64_t round,
                                            uint32_t worker_id, size_t dim) {
  const std::string path = dir + "/" + RoundFileName(kPrefix, round, kSuffix);
  REGTOPK_ASSIGN_OR_RETURN(StateFile f, StateFile::Read(path, kKind));
  WorkerState s;
  REGTOPK_ASSIGN_OR_RETURN(s.round, f.U64("round"));
  REGTOPK_ASSIGN_OR_RETURN(uint64_t id, f.U64("worker_id"));
  s.worker_id = static_cast<uint32_t>(id);
  REGTOPK_ASSIGN_OR_RETURN(s.params, f.Floats("params"));
  REGTOPK_ASSIGN_OR_RETURN(s.optimizer_state, f.Floats("optimizer_state"));
  SparsifierState& sp = s.sparsifier;
  REGTOPK_ASSIGN_OR_RETURN(sp.error, f.Floats("error"));
  REGTOPK_ASSIGN_OR_RETURN(sp.prev_indices, f.U32s("prev_indices"));
  REGTOPK_ASSIGN_OR_RETURN(sp.prev_values, f.Floats("prev_values"));
  REGTOPK_ASSIGN_OR_RETURN(sp.prev_aggregate, f.Floats("prev_aggregate"));
  REGTOPK_ASSIGN_OR_RETURN(uint64_t flags, f.U64("flags"));
  sp.compressed = flags & 1;
  sp.observed = flags & 2;
  REGTOPK_ASSIGN_OR_RETURN(sp.rng_state, f.U64("rng_state"));
  if (f.Has("extra")) {
    REGTOPK_ASSIGN_OR_RETURN(absl::string_view extra, f.Bytes("extra"));
    s.extra = std::string(extra);
  }
  if (s.round != round || s.worker_id != worker_id || s.params.size() != dim) {
    return absl::DataLossError(absl::StrCat(
        "state file '", path, "' is of round ", s.round, ", worker ", s.worker_id, " and ",
        s.params.size(), " parameters; expected round ", round, ", worker ", worker_id, " and ",
        dim, " (is --state-dir another worker's?)"));
  }
  return s;
}

std::vector<uint64_t> SavedStateRounds(const std::string& dir) {
  return ListRoundFiles(dir, kPrefix, kSuffix);
}

void DropStatesBefore(const std::string& dir, uint64_t round) {
  for (uint64_t r : SavedStateRounds(dir)) {
    if (r < round) RemoveFileIfPresent(dir, RoundFileName(kPrefix, r, kSuffix));
  }
}

}  // namespace regtopk
