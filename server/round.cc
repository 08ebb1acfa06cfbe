#include "server/round.h"

#include <utility>

namespace regtopk {

RoundMachine::RoundMachine(uint32_t workers, Clock* clock)
    : clock_(clock), slots_(workers), last_digests_(workers, 0) {}

std::vector<uint32_t> RoundMachine::Missing() const {
  std::vector<uint32_t> missing;
  for (uint32_t w = 0; w < slots_.size(); ++w) {
    if (!slots_[w].taken) missing.push_back(w);
  }
  return missing;
}

RoundMachine::Verdict RoundMachine::Classify(uint32_t worker, uint64_t round,
                                             uint64_t payload_digest) const {
  if (last_result_ && round + 1 == round_ && last_digests_[worker] == payload_digest) {
    return Verdict::kRetryOfClosed;  // its reply was lost
  }
  if (round != round_) return Verdict::kWrongRound;
  const Slot& s = slots_[worker];
  if (!s.taken) return Verdict::kNew;
  return s.digest == payload_digest ? Verdict::kRetryOfOpen : Verdict::kDuplicate;
}

void RoundMachine::Record(uint32_t worker, uint64_t payload_digest, SparseVector grad,
                          bool saved_state, PushCallback done) {
  Slot& s = slots_[worker];
  s.taken = true;
  s.digest = payload_digest;
  s.saved_state = saved_state;
  s.grad = std::move(grad);
  s.done = std::move(done);
  if (++pushed_ == 1) first_push_ = clock_->Now();
}

PushCallback RoundMachine::TakeOver(uint32_t worker, PushCallback done) {
  PushCallback old = std::move(slots_[worker].done);
  slots_[worker].done = std::move(done);
  return old;
}

std::vector<SparseVector> RoundMachine::BeginClose() {
  std::vector<SparseVector> pushes(slots_.size());
  for (size_t w = 0; w < slots_.size(); ++w) pushes[w] = std::move(slots_[w].grad);
  phase_ = RoundPhase::kClosing;
  return pushes;
}

bool RoundMachine::AllSavedState() const {
  for (const Slot& s : slots_) {
    if (!s.taken || !s.saved_state) return false;
  }
  return true;
}

std::vector<PushCallback> RoundMachine::FinishClose(std::shared_ptr<const RoundResult> result) {
  for (size_t w = 0; w < slots_.size(); ++w) last_digests_[w] = slots_[w].digest;
  last_result_ = std::move(result);
  std::vector<PushCallback> calls = DropAll();
  ++round_;
  phase_ = RoundPhase::kCollecting;
  return calls;
}

std::vector<PushCallback> RoundMachine::Abandon() { return DropAll(); }

std::vector<PushCallback> RoundMachine::Refuse() {
  phase_ = RoundPhase::kCollecting;
  return DropAll();
}

std::vector<PushCallback> RoundMachine::Reset(uint64_t round, std::shared_ptr<const RoundResult> last,
                                              std::vector<uint64_t> last_digests) {
  std::vector<PushCallback> calls = DropAll();
  round_ = round;
  last_result_ = std::move(last);
  last_digests_ = std::move(last_digests);
  last_digests_.resize(slots_.size(), 0);
  return calls;
}

std::vector<PushCallback> RoundMachine::DropAll() {
  std::vector<PushCallback> calls;
  for (Slot& s : slots_) {
    if (s.done) calls.push_back(std::move(s.done));
    s = Slot();
  }
  pushed_ = 0;
  first_push_.reset();
  return calls;
}

}  // namespace regtopk
