// RoundMachine: one round's life on the server, as an explicit state machine with no gRPC,
// threads or locks in it (the Coordinator owns one under its mutex). Thread-compatible.
//
//   kCollecting --(every worker pushed: BeginClose)--> kClosing
//   kClosing    --(FinishClose(result))------------> kCollecting, round + 1
//   kClosing    --(Refuse: the step is unsafe)------> kCollecting, same round, no pushes
//   kCollecting --(Abandon: timeout or shutdown)---> kCollecting, same round, no pushes
//   kCollecting --(Reset(r): rollback or resume)---> kCollecting, round r, no pushes
//
// Pushes are classified before they are recorded: a new push for the open round, a retry of a
// push already held (identical bytes: the new call takes over), a retry of a push of the round
// that just closed (answered from the cached result), a wrong round, or a second, different
// push for the round. Which workers also saved their state with this round's push is tracked,
// so that the Coordinator can commit a checkpoint of the round. Time comes from a Clock.
#ifndef REGTOPK_SERVER_ROUND_H_
#define REGTOPK_SERVER_ROUND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/sparse/sparse_vector.h"

namespace regtopk {

// One closed round, shared by every push it answers.
struct RoundResult {
  uint64_t round = 0;
  std::string encoded;  // SparseCodec encoding of the aggregate
  size_t nnz = 0;
  bool has_digest = false;
  uint64_t digest = 0;  // of the parameters after this round's step
  uint64_t committed_round = 0;  // the newest committed checkpoint once this round closed
  double aggregate_seconds = 0, step_seconds = 0, encode_seconds = 0;
};

// Receives the round's result or why there is none. Called exactly once per recorded push.
using PushCallback = std::function<void(absl::StatusOr<std::shared_ptr<const RoundResult>>)>;

enum class RoundPhase { kCollecting, kClosing };

class RoundMachine {
 public:
  enum class Verdict {
    kNew,            // record it
    kRetryOfOpen,    // take over the held push's call
    kRetryOfClosed,  // answer with last_result()
    kWrongRound,
    kDuplicate,  // a different push for a round this worker already pushed
  };

  // `clock` is borrowed and must outlive the machine.
  RoundMachine(uint32_t workers, Clock* clock);

  uint64_t round() const { return round_; }
  RoundPhase phase() const { return phase_; }
  uint32_t pushed() const { return pushed_; }
  bool full() const { return pushed_ == slots_.size(); }
  // When the first push of the open round arrived; nullopt while none has.
  std::optional<absl::Time> first_push_time() const { return first_push_; }
  // Workers that have not pushed the open round, ascending.
  std::vector<uint32_t> Missing() const;
  const std::shared_ptr<const RoundResult>& last_result() const { return last_result_; }
  const std::vector<uint64_t>& last_push_digests() const { return last_digests_; }

  // `payload_digest` identifies the push's bytes. Precondition: worker < workers.
  Verdict Classify(uint32_t worker, uint64_t round, uint64_t payload_digest) const;
  // Precondition: Classify gave kNew, phase is kCollecting. `saved_state` says the worker
  // saved its state before this round.
  void Record(uint32_t worker, uint64_t payload_digest, SparseVector grad, bool saved_state,
              PushCallback done);
  // Precondition: Classify gave kRetryOfOpen. Returns the call it replaces (may be empty).
  PushCallback TakeOver(uint32_t worker, PushCallback done);

  // Precondition: full() and kCollecting. Moves the pushes out (by worker id); the slots stay
  // taken, so a second push is still refused while the round closes.
  std::vector<SparseVector> BeginClose();
  // In kClosing: whether every push of the closing round came with saved state.
  bool AllSavedState() const;
  // Precondition: kClosing. Opens round + 1; returns every call to answer with `result`.
  std::vector<PushCallback> FinishClose(std::shared_ptr<const RoundResult> result);
  // Precondition: kCollecting. Drops the open round's pushes (nothing is applied) and returns
  // their calls, to be answered with an error.
  std::vector<PushCallback> Abandon();
  // Precondition: kClosing. The closing round is not applied: drops its pushes, reopens the
  // same round and returns the calls, to be answered with an error.
  std::vector<PushCallback> Refuse();
  // Precondition: kCollecting. Drops the open round's pushes and moves to `round`, whose
  // predecessor's result and push digests are `last` / `last_digests` (may be null / empty);
  // returns the dropped calls.
  std::vector<PushCallback> Reset(uint64_t round, std::shared_ptr<const RoundResult> last,
                                  std::vector<uint64_t> last_digests);

 private:
  struct Slot {
    bool taken = false;
    uint64_t digest = 0;
    bool saved_state = false;
    SparseVector grad;
    PushCallback done;
  };
  std::vector<PushCallback> DropAll();

  Clock* const clock_;
  uint64_t round_ = 0;
  RoundPhase phase_ = RoundPhase::kCollecting;
  std::vector<Slot> slots_;
  uint32_t pushed_ = 0;
  std::optional<absl::Time> first_push_;
  std::shared_ptr<const RoundResult> last_result_;
  std::vector<uint64_t> last_digests_;  // by worker, of the round that just closed
};

}  // namespace regtopk

#endif  // REGTOPK_SERVER_ROUND_H_
