// TaskPool: the fork-join shape of a data-parallel pass. Run(fn) calls fn(0) ... fn(T - 1) at
// once, fn(0) on the calling thread and the others on T - 1 threads that the pool keeps between
// calls (starting a thread costs tens of microseconds; a sparsification step at 0.1 % density
// takes a few milliseconds and makes several passes). With T = 1 it starts no thread.
//
// Thread-compatible: one caller at a time (Run is not reentrant).
#ifndef REGTOPK_COMMON_PARALLEL_TASK_POOL_H_
#define REGTOPK_COMMON_PARALLEL_TASK_POOL_H_

#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace regtopk {

// The thread counts a user may ask for (--threads of the server and of the worker).
inline constexpr int kMaxThreads = 256;
// INVALID_ARGUMENT "<what> must be in [1, 256], got <threads>" unless 1 <= threads <= 256.
absl::Status ValidateThreadCount(int threads, absl::string_view what);

class TaskPool {
 public:
  // threads >= 1 (smaller values count as 1).
  explicit TaskPool(int threads);
  ~TaskPool();
  TaskPool(const TaskPool&) = delete;
  TaskPool& operator=(const TaskPool&) = delete;

  int threads() const { return threads_; }

  // Calls fn(t) for every t in [0, threads()) concurrently and returns when all have returned.
  void Run(absl::FunctionRef<void(int)> fn);

  // The t-th of `parts` contiguous, nearly equal shares of [0, n), each starting at a multiple
  // of `align` (the last share ends at n).
  static void Share(size_t n, size_t align, int parts, int t, size_t* begin, size_t* end);

 private:
  void HelperLoop(int t);

  const int threads_;
  absl::Mutex mu_;
  // The job of the current generation: helpers run it once when `generation_` moves.
  const absl::FunctionRef<void(int)>* job_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar start_;  // generation_ moved, or stopping_
  absl::CondVar done_;   // running_ reached 0
  std::vector<std::thread> helpers_;
};

// Calls fn(t, begin, end) for each of T contiguous, nearly equal shares [begin, end) of [0, n),
// each starting at a multiple of `align`: on the pool's T threads when there is a pool and n is
// at least `min_n` (below it, waking the threads costs more than the split saves), else once,
// for all of [0, n), on the calling thread. Returns T.
template <typename F>
int ForShares(TaskPool* pool, size_t n, size_t min_n, size_t align, F fn) {
  const int parts = pool != nullptr && n >= min_n ? pool->threads() : 1;
  if (parts == 1) {
    fn(0, size_t{0}, n);
    return 1;
  }
  pool->Run([&](int t) {
    size_t begin, end;
    TaskPool::Share(n, align, parts, t, &begin, &end);
    fn(t, begin, end);
  });
  return parts;
}

}  // namespace regtopk

#endif  // REGTOPK_COMMON_PARALLEL_TASK_POOL_H_
