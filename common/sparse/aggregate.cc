#include "common/sparse/aggregate.h"

#include <algorithm>
#include <cassert>
#include <thread>

namespace regtopk {
namespace {

constexpr int kRadixBits = 11;
constexpr uint32_t kBuckets = 1u << kRadixBits;

// Stable LSD radix sort by index. Stability is what keeps the worker order among entries of
// the same index (they were appended push by push), and so the summation order of the fold.
void RadixSortByIndex(uint32_t max_index, std::vector<SparseAggregator::Entry>* a,
                      std::vector<SparseAggregator::Entry>* tmp) {
  int bits = 1;
  while (bits < 32 && (max_index >> bits) != 0) ++bits;
  tmp->resize(a->size());
  for (int shift = 0; shift < bits; shift += kRadixBits) {
    uint32_t count[kBuckets + 1] = {};
    for (const auto& e : *a) ++count[((e.index >> shift) & (kBuckets - 1)) + 1];
    // A pass whose digit is the same everywhere would only copy.
    if (std::any_of(count + 1, count + kBuckets + 1, [&](uint32_t c) { return c == a->size(); })) {
      continue;
    }
    for (uint32_t b = 0; b < kBuckets; ++b) count[b + 1] += count[b];
    for (const auto& e : *a) (*tmp)[count[(e.index >> shift) & (kBuckets - 1)]++] = e;
    std::swap(*a, *tmp);
  }
}

}  // namespace

SparseAggregator::SparseAggregator(int threads) : threads_(std::max(1, threads)) {
  parts_.resize(threads_);
}

void SparseAggregator::AggregatePart(absl::Span<const SparseView> pushes,
                                     absl::Span<const float> weights, uint32_t lo, uint64_t hi,
                                     uint32_t max_index, Part* part) {
  // Gather [lo, hi) of every push, in push order, each term already weighted: the same product
  // the sum uses.
  part->entries.clear();
  for (size_t n = 0; n < pushes.size(); ++n) {
    const SparseView& p = pushes[n];
    const float w = weights[n];
    const size_t begin = std::lower_bound(p.indices.begin(), p.indices.end(), lo) - p.indices.begin();
    for (size_t i = begin; i < p.nnz() && p.indices[i] < hi; ++i) {
      part->entries.push_back({p.indices[i], w * p.values[i]});
    }
  }
  RadixSortByIndex(max_index, &part->entries, &part->scratch);
  SparseVector& out = part->out;
  out.clear();
  for (const Entry& e : part->entries) {
    if (!out.indices.empty() && out.indices.back() == e.index) {
      out.values.back() = out.values.back() + e.value;
    } else {
      out.indices.push_back(e.index);
      out.values.push_back(e.value);
    }
  }
}

void SparseAggregator::Aggregate(absl::Span<const SparseView> pushes,
                                 absl::Span<const float> weights, SparseVector* out) {
  assert(pushes.size() == weights.size());
  out->clear();
  uint32_t max_index = 0;
  size_t total = 0, largest = 0;
  for (size_t n = 0; n < pushes.size(); ++n) {
    if (pushes[n].nnz() == 0) continue;
    max_index = std::max(max_index, pushes[n].indices.back());
    total += pushes[n].nnz();
    if (pushes[n].nnz() > pushes[largest].nnz() || pushes[largest].nnz() == 0) largest = n;
  }
  if (total == 0) return;
  // Too little work to be worth a thread: one part.
  const int parts = total < 65536 ? 1 : threads_;
  if (parts == 1) {
    AggregatePart(pushes, weights, 0, uint64_t{max_index} + 1, max_index, &parts_[0]);
    std::swap(*out, parts_[0].out);
    return;
  }
  // Cut the index range where the largest push has equal shares of its entries, so that the
  // parts hold about equal numbers of entries when the pushes look alike.
  std::vector<uint64_t> cut(parts + 1);
  cut[0] = 0;
  cut[parts] = uint64_t{max_index} + 1;
  const SparseView& big = pushes[largest];
  for (int t = 1; t < parts; ++t) {
    cut[t] = std::max<uint64_t>(cut[t - 1], big.indices[big.nnz() * t / parts]);
  }
  std::vector<std::thread> threads;
  for (int t = 1; t < parts; ++t) {
    threads.emplace_back([&, t] {
      AggregatePart(pushes, weights, static_cast<uint32_t>(cut[t]), cut[t + 1], max_index,
                    &parts_[t]);
    });
  }
  AggregatePart(pushes, weights, 0, cut[1], max_index, &parts_[0]);
  for (auto& th : threads) th.join();
  size_t nnz = 0;
  for (int t = 0; t < parts; ++t) nnz += parts_[t].out.nnz();
  out->indices.reserve(nnz);
  out->values.reserve(nnz);
  for (int t = 0; t < parts; ++t) {
    out->indices.insert(out->indices.end(), parts_[t].out.indices.begin(),
                        parts_[t].out.indices.end());
    out->values.insert(out->values.end(), parts_[t].out.values.begin(),
                       parts_[t].out.values.end());
  }
}

void AggregateSparse(absl::Span<const SparseView> pushes, absl::Span<const float> weights,
                     SparseVector* out) {
  SparseAggregator(1).Aggregate(pushes, weights, out);
}

}  // namespace regtopk
