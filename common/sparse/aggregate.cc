#include "common/sparse/aggregate.h"

#include <algorithm>
#include <cassert>
#include <thread>
#include <utility>

namespace regtopk {
namespace {

constexpr int kRadixBits = 11;
constexpr uint32_t kBuckets = 1u << kRadixBits;
// Entries per part: a part's entries and its sort scratch (2 x 8 bytes each) stay within L2.
constexpr size_t kPartEntries = 32768;
// Up to this many pushes the pairwise merge is cheaper than sorting (it does no passes over the
// index bits); above it its O(N^2 k) cost takes over.
constexpr size_t kMergeUpTo = 4;

using Entry = SparseAggregator::Entry;

// Stable LSD radix sort by index - lo, which is below 2^bits. Stability is what keeps the worker
// order among entries of the same index (they were appended push by push), and so the summation
// order of the fold.
void RadixSort(uint32_t lo, int bits, std::vector<Entry>* a, std::vector<Entry>* tmp) {
  tmp->resize(a->size());
  for (int shift = 0; shift < bits; shift += kRadixBits) {
    uint32_t count[kBuckets + 1] = {};
    for (const Entry& e : *a) ++count[(((e.index - lo) >> shift) & (kBuckets - 1)) + 1];
    for (uint32_t b = 0; b < kBuckets; ++b) count[b + 1] += count[b];
    for (const Entry& e : *a) (*tmp)[count[((e.index - lo) >> shift) & (kBuckets - 1)]++] = e;
    std::swap(*a, *tmp);
  }
}

}  // namespace

SparseAggregator::SparseAggregator(int threads) : threads_(std::max(1, threads)) {
  workers_.resize(threads_);
}

void SparseAggregator::AggregateParts(absl::Span<const SparseView> pushes,
                                      absl::Span<const float> weights,
                                      absl::Span<const uint64_t> cuts, Worker* worker) {
  // Parts in increasing index order, so each push is read front to back through a cursor.
  SparseVector& out = worker->out;
  out.clear();
  worker->cursor.resize(pushes.size());
  for (size_t n = 0; n < pushes.size(); ++n) {
    const auto& idx = pushes[n].indices;
    worker->cursor[n] = std::lower_bound(idx.begin(), idx.end(), cuts.front()) - idx.begin();
  }
  for (size_t part = 0; part + 1 < cuts.size(); ++part) {
    const uint64_t lo = cuts[part], hi = cuts[part + 1];
    // Gather [lo, hi) of every push, in push order, each term already weighted: the same
    // product the sum uses.
    std::vector<Entry>& entries = worker->entries;
    entries.clear();
    for (size_t n = 0; n < pushes.size(); ++n) {
      const SparseView& p = pushes[n];
      const float w = weights[n];
      size_t& i = worker->cursor[n];
      for (; i < p.nnz() && p.indices[i] < hi; ++i) {
        entries.push_back({p.indices[i], w * p.values[i]});
      }
    }
    if (entries.empty()) continue;
    int bits = 1;
    while (bits < 32 && ((hi - 1 - lo) >> bits) != 0) ++bits;
    RadixSort(static_cast<uint32_t>(lo), bits, &entries, &worker->scratch);
    for (const Entry& e : entries) {
      if (!out.indices.empty() && out.indices.back() == e.index) {
        out.values.back() = out.values.back() + e.value;
      } else {
        out.indices.push_back(e.index);
        out.values.push_back(e.value);
      }
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
  if (pushes.size() <= kMergeUpTo) {
    AggregateByPairwiseMerge(pushes, weights, out, &workers_[0].out);
    return;
  }
  // Cut the index range into parts of about kPartEntries entries where the largest push has
  // equal shares of its entries (so the parts are even when the pushes look alike); each thread
  // takes a contiguous run of parts, and the runs are concatenated in order.
  const SparseView& big = pushes[largest];
  const size_t parts = std::min(big.nnz(), std::max<size_t>(threads_, total / kPartEntries + 1));
  std::vector<uint64_t> cut(parts + 1);
  cut[0] = 0;
  cut[parts] = uint64_t{max_index} + 1;
  for (size_t p = 1; p < parts; ++p) {
    cut[p] = std::max<uint64_t>(cut[p - 1], big.indices[big.nnz() * p / parts]);
  }
  const size_t threads = std::min<size_t>(threads_, parts);
  auto run = [&](size_t t) {
    const size_t first = parts * t / threads, last = parts * (t + 1) / threads;
    AggregateParts(pushes, weights, absl::MakeConstSpan(cut).subspan(first, last - first + 1),
                   &workers_[t]);
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(run, t);
  run(0);
  for (auto& th : pool) th.join();
  if (threads == 1) {
    std::swap(*out, workers_[0].out);
    return;
  }
  size_t nnz = 0;
  for (size_t t = 0; t < threads; ++t) nnz += workers_[t].out.nnz();
  out->indices.reserve(nnz);
  out->values.reserve(nnz);
  for (size_t t = 0; t < threads; ++t) {
    const SparseVector& part = workers_[t].out;
    out->indices.insert(out->indices.end(), part.indices.begin(), part.indices.end());
    out->values.insert(out->values.end(), part.values.begin(), part.values.end());
  }
}

void AggregateByPairwiseMerge(absl::Span<const SparseView> pushes,
                              absl::Span<const float> weights, SparseVector* out,
                              SparseVector* merged) {
  out->clear();
  if (pushes.empty()) return;
  const SparseView& first = pushes[0];
  out->indices.assign(first.indices.begin(), first.indices.end());
  out->values.resize(first.nnz());
  for (size_t i = 0; i < first.nnz(); ++i) out->values[i] = weights[0] * first.values[i];
  for (size_t n = 1; n < pushes.size(); ++n) {
    const SparseView& p = pushes[n];
    const float w = weights[n];
    const size_t na = out->nnz(), nb = p.nnz();
    merged->indices.resize(na + nb);
    merged->values.resize(na + nb);
    size_t a = 0, b = 0, m = 0;
    while (a < na && b < nb) {
      const uint32_t ia = out->indices[a], ib = p.indices[b];
      if (ia < ib) {
        merged->indices[m] = ia;
        merged->values[m++] = out->values[a++];
      } else if (ib < ia) {
        merged->indices[m] = ib;
        merged->values[m++] = w * p.values[b++];
      } else {
        merged->indices[m] = ia;
        merged->values[m++] = out->values[a++] + w * p.values[b++];
      }
    }
    for (; a < na; ++a, ++m) {
      merged->indices[m] = out->indices[a];
      merged->values[m] = out->values[a];
    }
    for (; b < nb; ++b, ++m) {
      merged->indices[m] = p.indices[b];
      merged->values[m] = w * p.values[b];
    }
    merged->indices.resize(m);
    merged->values.resize(m);
    std::swap(*out, *merged);
  }
}

void AggregateSparse(absl::Span<const SparseView> pushes, absl::Span<const float> weights,
                     SparseVector* out) {
  SparseAggregator(1).Aggregate(pushes, weights, out);
}

}  // namespace regtopk
