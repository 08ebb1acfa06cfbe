#include "common/parallel/task_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace regtopk {

absl::Status ValidateThreadCount(int threads, absl::string_view what) {
  if (threads >= 1 && threads <= kMaxThreads) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " must be in [1, ", kMaxThreads, "], got ", threads));
}

TaskPool::TaskPool(int threads) : threads_(std::max(1, threads)) {
  for (int t = 1; t < threads_; ++t) helpers_.emplace_back([this, t] { HelperLoop(t); });
}

TaskPool::~TaskPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    start_.SignalAll();
  }
  for (std::thread& helper : helpers_) helper.join();
}

void TaskPool::Run(absl::FunctionRef<void(int)> fn) {
  if (threads_ == 1) {
    fn(0);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    job_ = &fn;
    running_ = threads_ - 1;
    ++generation_;
    start_.SignalAll();
  }
  fn(0);
  absl::MutexLock lock(&mu_);
  while (running_ > 0) done_.Wait(&mu_);
  job_ = nullptr;
}

void TaskPool::HelperLoop(int t) {
  uint64_t seen = 0;
  while (true) {
    const absl::FunctionRef<void(int)>* job;
    {
      absl::MutexLock lock(&mu_);
      while (!stopping_ && generation_ == seen) start_.Wait(&mu_);
      if (stopping_) return;
      seen = generation_;
      job = job_;
    }
    (*job)(t);
    absl::MutexLock lock(&mu_);
    if (--running_ == 0) done_.Signal();
  }
}

void TaskPool::Share(size_t n, size_t align, int parts, int t, size_t* begin, size_t* end) {
  const size_t units = (n + align - 1) / align;
  *begin = std::min(n, units * static_cast<size_t>(t) / static_cast<size_t>(parts) * align);
  *end = std::min(n, units * static_cast<size_t>(t + 1) / static_cast<size_t>(parts) * align);
}

}  // namespace regtopk
