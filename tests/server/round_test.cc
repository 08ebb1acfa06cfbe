// RoundMachine without gRPC, threads or sleeps: time is a FakeClock.
#include "server/round.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"

namespace regtopk {
namespace {

using Verdict = RoundMachine::Verdict;

struct Answer {
  int calls = 0;
  absl::StatusOr<std::shared_ptr<const RoundResult>> last = absl::UnknownError("none");
};

PushCallback Into(Answer* a) {
  return [a](absl::StatusOr<std::shared_ptr<const RoundResult>> r) {
    ++a->calls;
    a->last = std::move(r);
  };
}

SparseVector One(uint32_t i) { return SparseVector{{i}, {1.0f}}; }

void AnswerAll(std::vector<PushCallback> calls, std::shared_ptr<const RoundResult> r) {
  for (auto& c : calls) c(r);
}

TEST(RoundMachine, CollectsClosesAndOpensTheNextRound) {
  FakeClock clock;
  RoundMachine m(2, &clock);
  Answer a, b;
  EXPECT_EQ(m.Classify(0, 0, 11), Verdict::kNew);
  m.Record(0, 11, One(1), false, Into(&a));
  EXPECT_EQ(m.first_push_time(), clock.Now());
  EXPECT_EQ(m.Missing(), std::vector<uint32_t>{1});
  EXPECT_FALSE(m.full());
  clock.Advance(absl::Seconds(3));
  m.Record(1, 22, One(2), false, Into(&b));
  EXPECT_EQ(m.first_push_time(), clock.Now() - absl::Seconds(3));  // the first push's time
  ASSERT_TRUE(m.full());
  std::vector<SparseVector> pushes = m.BeginClose();
  EXPECT_EQ(m.phase(), RoundPhase::kClosing);
  EXPECT_EQ(pushes[0].indices, std::vector<uint32_t>{1});
  EXPECT_EQ(m.Classify(1, 0, 33), Verdict::kDuplicate);  // slots stay taken while closing
  auto result = std::make_shared<RoundResult>();
  auto calls = m.FinishClose(result);
  EXPECT_EQ(calls.size(), 2u);
  AnswerAll(std::move(calls), result);
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(b.calls, 1);
  EXPECT_EQ(m.round(), 1u);
  EXPECT_EQ(m.phase(), RoundPhase::kCollecting);
  EXPECT_EQ(m.pushed(), 0u);
  EXPECT_FALSE(m.first_push_time().has_value());
}

TEST(RoundMachine, ClassifiesRetriesWrongRoundsAndDuplicates) {
  FakeClock clock;
  RoundMachine m(2, &clock);
  Answer a, a2, b;
  m.Record(0, 11, One(1), false, Into(&a));
  EXPECT_EQ(m.Classify(0, 0, 11), Verdict::kRetryOfOpen);
  EXPECT_EQ(m.Classify(0, 0, 12), Verdict::kDuplicate);
  EXPECT_EQ(m.Classify(1, 1, 5), Verdict::kWrongRound);
  PushCallback old = m.TakeOver(0, Into(&a2));
  old(absl::AbortedError("superseded"));
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(m.pushed(), 1u);  // counted once
  m.Record(1, 22, One(2), false, Into(&b));
  m.BeginClose();
  auto result = std::make_shared<RoundResult>();
  AnswerAll(m.FinishClose(result), result);
  EXPECT_EQ(a2.calls, 1);  // the retry got the result
  ASSERT_TRUE(a2.last.ok());
  // After the close: the same bytes for round 0 are a lost reply, other bytes a wrong round.
  EXPECT_EQ(m.Classify(0, 0, 11), Verdict::kRetryOfClosed);
  EXPECT_EQ(m.last_result(), result);
  EXPECT_EQ(m.Classify(0, 0, 99), Verdict::kWrongRound);
}

TEST(RoundMachine, TracksWhetherEveryWorkerSavedItsState) {
  FakeClock clock;
  RoundMachine m(2, &clock);
  Answer a, b;
  m.Record(0, 1, One(1), true, Into(&a));
  m.Record(1, 2, One(2), false, Into(&b));
  m.BeginClose();
  EXPECT_FALSE(m.AllSavedState());
  AnswerAll(m.FinishClose(std::make_shared<RoundResult>()), nullptr);
  m.Record(0, 3, One(1), true, Into(&a));
  m.Record(1, 4, One(2), true, Into(&b));
  m.BeginClose();
  EXPECT_TRUE(m.AllSavedState());
}

TEST(RoundMachine, AbandonDropsPushesAndKeepsTheRound) {
  FakeClock clock;
  RoundMachine m(3, &clock);
  Answer a;
  m.Record(2, 1, One(1), false, Into(&a));
  auto calls = m.Abandon();
  ASSERT_EQ(calls.size(), 1u);
  calls[0](absl::FailedPreconditionError("job failed"));
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(m.round(), 0u);
  EXPECT_EQ(m.pushed(), 0u);
  EXPECT_EQ(m.Classify(2, 0, 1), Verdict::kNew);
}

TEST(RoundMachine, ResetMovesToARoundWithItsRetryCache) {
  FakeClock clock;
  RoundMachine m(2, &clock);
  Answer a;
  m.Record(0, 1, One(1), false, Into(&a));
  auto last = std::make_shared<RoundResult>();
  last->round = 49;
  auto dropped = m.Reset(50, last, {7, 8});
  EXPECT_EQ(dropped.size(), 1u);  // the held push of the abandoned timeline
  EXPECT_EQ(m.round(), 50u);
  EXPECT_EQ(m.Classify(1, 49, 8), Verdict::kRetryOfClosed);
  EXPECT_EQ(m.Classify(1, 50, 8), Verdict::kNew);
}

}  // namespace
}  // namespace regtopk
