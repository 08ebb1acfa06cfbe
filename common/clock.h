// Clock: where time comes from (LevelDB's Env, reduced to Now). Code that reasons about
// timeouts takes a Clock*, so its tests advance a FakeClock instead of sleeping.
// RealClock and FakeClock are thread-safe.
#ifndef REGTOPK_COMMON_CLOCK_H_
#define REGTOPK_COMMON_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace regtopk {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // The process-wide real clock (never null, never deleted).
  static Clock* Real();
};

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

inline Clock* Clock::Real() {
  static RealClock* clock = new RealClock;
  return clock;
}

// Time stands still until Advance; starts at the Unix epoch plus one day.
class FakeClock final : public Clock {
 public:
  absl::Time Now() const override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_) = absl::UnixEpoch() + absl::Hours(24);
};

}  // namespace regtopk

#endif  // REGTOPK_COMMON_CLOCK_H_
