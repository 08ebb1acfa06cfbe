#include "worker/data/partition.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include "common/random/splitmix64.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace regtopk {

absl::StatusOr<PartitionSpec> ParsePartition(absl::string_view text) {
  PartitionSpec spec;
  const auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("bad partition '", text,
                     "'; expected iid, dirichlet:ALPHA (ALPHA > 0) or quantity[:RATIO]"));
  };
  if (text == "iid") return spec;
  if (absl::StartsWith(text, "dirichlet:")) {
    spec.kind = PartitionSpec::Kind::kDirichlet;
    if (!absl::SimpleAtod(text.substr(10), &spec.alpha) || !(spec.alpha > 0) ||
        !std::isfinite(spec.alpha)) {
      return bad();
    }
    return spec;
  }
  if (text == "quantity") {
    spec.kind = PartitionSpec::Kind::kQuantity;
    return spec;
  }
  if (absl::StartsWith(text, "quantity:")) {
    spec.kind = PartitionSpec::Kind::kQuantity;
    if (!absl::SimpleAtod(text.substr(9), &spec.ratio) || !(spec.ratio >= 1) ||
        !std::isfinite(spec.ratio)) {
      return bad();
    }
    return spec;
  }
  return bad();
}

namespace {

// Splits `items` into consecutive runs with sizes proportional to `shares` (largest-remainder
// rounding), appending run w to parts[w].
void SplitByShares(const std::vector<size_t>& items, const std::vector<double>& shares,
                   std::vector<std::vector<size_t>>* parts) {
  const size_t n = items.size(), w = shares.size();
  const double total = std::accumulate(shares.begin(), shares.end(), 0.0);
  std::vector<size_t> counts(w);
  std::vector<std::pair<double, size_t>> remainders;
  size_t assigned = 0;
  for (size_t i = 0; i < w; ++i) {
    const double exact = n * shares[i] / total;
    counts[i] = static_cast<size_t>(std::floor(exact));
    assigned += counts[i];
    remainders.push_back({exact - counts[i], i});
  }
  std::sort(remainders.begin(), remainders.end(), [](auto& a, auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  for (size_t i = 0; assigned < n; ++i, ++assigned) ++counts[remainders[i % w].second];
  size_t at = 0;
  for (size_t i = 0; i < w; ++i) {
    for (size_t c = 0; c < counts[i]; ++c) (*parts)[i].push_back(items[at++]);
  }
}

}  // namespace

absl::StatusOr<std::vector<std::vector<size_t>>> Partition(const std::vector<int64_t>& labels,
                                                           int num_classes,
                                                           const PartitionSpec& spec,
                                                           int num_workers, uint64_t seed) {
  const size_t n = labels.size();
  if (num_workers < 1 || n < static_cast<size_t>(num_workers)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot split ", n, " examples across ", num_workers, " workers"));
  }
  uint64_t rng = seed;  // SplitMix64 state: the same split on any standard library
  std::vector<std::vector<size_t>> parts(num_workers);
  std::vector<size_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  Shuffle(all.begin(), all.end(), rng);
  switch (spec.kind) {
    case PartitionSpec::Kind::kIid:
      SplitByShares(all, std::vector<double>(num_workers, 1.0), &parts);
      break;
    case PartitionSpec::Kind::kQuantity: {
      // Shares in geometric progression from 1 to `ratio`, assigned to workers in a random order.
      std::vector<double> shares(num_workers, 1.0);
      for (int i = 0; i < num_workers && num_workers > 1; ++i) {
        shares[i] = std::pow(spec.ratio, static_cast<double>(i) / (num_workers - 1));
      }
      Shuffle(shares.begin(), shares.end(), rng);
      SplitByShares(all, shares, &parts);
      break;
    }
    case PartitionSpec::Kind::kDirichlet: {
      // Per class, proportions over workers drawn from Dirichlet(alpha) (normalised gammas).
      std::vector<std::vector<size_t>> by_class(num_classes);
      for (size_t i : all) by_class[labels[i]].push_back(i);
      for (const auto& items : by_class) {
        std::vector<double> shares(num_workers);
        for (double& s : shares) s = Gamma(rng, spec.alpha) + 1e-12;
        SplitByShares(items, shares, &parts);
      }
      break;
    }
  }
  // A worker left empty (possible under strong skew) takes one example from the largest part.
  for (auto& p : parts) {
    if (!p.empty()) continue;
    auto largest = std::max_element(parts.begin(), parts.end(),
                                    [](auto& a, auto& b) { return a.size() < b.size(); });
    p.push_back(largest->back());
    largest->pop_back();
  }
  for (auto& p : parts) std::sort(p.begin(), p.end());
  return parts;
}

}  // namespace regtopk
