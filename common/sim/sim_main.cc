// regtopk-sim: the paper's synthetic problems with N virtual workers in one process, using
// exactly the sparsifier, aggregation and optimizer code of the distributed system.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/cli/flags.h"
#include "common/sim/problem.h"
#include "common/sim/simulator.h"

ABSL_FLAG(std::string, problem, "linreg",
          "toy (the paper's 2-worker logistic regression) or linreg (N-worker linear regression)");
ABSL_FLAG(std::string, algorithm, "regtopk", "dense, topk, randk or regtopk");
ABSL_FLAG(double, density, -1,
          "fraction of entries each worker sends, in (0, 1]; default: the problem's (toy 0.5, "
          "linreg 0.6)");
ABSL_FLAG(double, mu, -1, "RegTop-k's mu > 0; default: the problem's (toy 1, linreg 4)");
ABSL_FLAG(int, rounds, -1, "rounds to run; default: the problem's (toy 150, linreg 2500)");
ABSL_FLAG(int, workers, -1, "workers (linreg only; default 20; the toy has exactly 2)");
ABSL_FLAG(double, lr, -1, "learning rate; default: the problem's (toy 0.9, linreg 0.01)");
ABSL_FLAG(uint64_t, seed, 1, "seed of the data (linreg) and of every sparsifier");
ABSL_FLAG(std::string, output, "", "write one JSON line per round to this file (- for stdout)");
ABSL_FLAG(std::string, precision, "float32",
          "float32 (the system's own code) or float64 (a plain reference implementation of the "
          "same loop; dense, topk and regtopk only)");
ABSL_FLAG(double, step_guard, 0,
          "skip an aggregate whose squared norm is >= this many times the last applied one "
          "(the authors' linear-regression safeguard); 0 = off");

namespace regtopk {
namespace {

int Fail(const std::string& message) {
  std::cerr << "regtopk-sim: " << message << "\n";
  return 2;
}

int Main() {
  const std::string problem_name = absl::GetFlag(FLAGS_problem);
  const bool toy = problem_name == "toy";
  if (!toy && problem_name != "linreg") {
    return Fail(absl::StrCat("--problem must be toy or linreg, got '", problem_name, "'"));
  }
  auto algorithm = ParseAlgorithm(absl::GetFlag(FLAGS_algorithm));
  if (!algorithm.ok()) return Fail(absl::StrCat("--algorithm: ", algorithm.status().message()));

  auto or_default = [](double v, double d) { return v == -1 ? d : v; };
  SimulationOptions options;
  options.algorithm = *algorithm;
  options.density = or_default(absl::GetFlag(FLAGS_density), toy ? 0.5 : 0.6);
  options.mu = or_default(absl::GetFlag(FLAGS_mu), toy ? 1.0 : 4.0);
  options.rounds = static_cast<int>(or_default(absl::GetFlag(FLAGS_rounds), toy ? 150 : 2500));
  options.optimizer.lr = static_cast<float>(or_default(absl::GetFlag(FLAGS_lr), toy ? 0.9 : 0.01));
  options.seed = absl::GetFlag(FLAGS_seed);
  options.step_guard = absl::GetFlag(FLAGS_step_guard);
  if (!(options.step_guard >= 0)) return Fail("--step-guard must be >= 0");
  const std::string precision = absl::GetFlag(FLAGS_precision);
  if (precision != "float32" && precision != "float64") {
    return Fail(absl::StrCat("--precision must be float32 or float64, got '", precision, "'"));
  }
  const int workers = absl::GetFlag(FLAGS_workers);

  for (const absl::Status& s : {ValidateDensity(options.density), ValidateMu(options.mu)}) {
    if (!s.ok()) return Fail(absl::StrCat("--", s.message()));
  }
  if (options.rounds < 0) return Fail(absl::StrCat("--rounds must be >= 0"));
  if (absl::Status s = options.optimizer.Validate(); !s.ok()) return Fail(std::string(s.message()));

  std::unique_ptr<Problem> problem;
  if (toy) {
    if (workers != -1 && workers != 2) return Fail("--workers: the toy problem has exactly 2");
    problem = MakeToyProblem();
  } else {
    LinRegOptions lo;
    lo.workers = workers == -1 ? 20 : workers;
    lo.seed = options.seed;
    auto p = MakeLinRegProblem(lo);
    if (!p.ok()) return Fail(std::string(p.status().message()));
    problem = std::move(*p);
  }

  std::ofstream file;
  std::ostream* out = nullptr;
  const std::string output = absl::GetFlag(FLAGS_output);
  if (output == "-") {
    out = &std::cout;
  } else if (!output.empty()) {
    file.open(output);
    if (!file) return Fail(absl::StrCat("cannot open --output file '", output, "' for writing"));
    out = &file;
  }
  const std::string metric = problem->metric_name();
  const absl::Time start = absl::Now();
  auto write = [&](const RoundRecord& r) {
    if (out) {
      *out << absl::StrFormat("{\"round\":%d,\"%s\":%.9g,\"nnz_sent\":%d,\"nnz_aggregate\":%d%s}\n",
                              r.round, metric, r.metric, r.nnz_sent, r.nnz_aggregate,
                              r.skipped ? ",\"skipped\":true" : "");
    }
  };
  absl::StatusOr<std::vector<RoundRecord>> records;
  if (precision == "float64") {
    records = RunReferenceSimulation<double>(*problem, options);
    if (records.ok()) {
      for (const RoundRecord& r : *records) write(r);
    }
  } else {
    records = RunSimulation(*problem, options, write);
  }
  if (!records.ok()) return Fail(std::string(records.status().message()));
  if (out) out->flush();
  if (file.is_open() && !file) return Fail(absl::StrCat("writing '", output, "' failed"));
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);

  // Summary: final value and the median of log10(metric) over the last 100 rounds (robust to the
  // occasional float32 error-feedback burst).
  std::vector<double> tail;
  for (size_t i = records->size() > 100 ? records->size() - 100 : 0; i < records->size(); ++i) {
    tail.push_back(std::log10(std::max((*records)[i].metric, 1e-300)));
  }
  double median = NAN;
  if (!tail.empty()) {
    std::sort(tail.begin(), tail.end());
    median = tail.size() % 2 ? tail[tail.size() / 2]
                             : 0.5 * (tail[tail.size() / 2 - 1] + tail[tail.size() / 2]);
  }
  const double final_metric =
      records->empty() ? problem->Metric(problem->InitialTheta()) : records->back().metric;
  SparsifierOptions so;
  so.algorithm = options.algorithm;
  so.dim = problem->dim();
  so.density = options.density;
  {
    std::cout << absl::StrFormat("%-8s %-8s %-8s %8s %6s %5s %7s %14s %22s %8s\n", "problem",
                                 "algo", "precision", "density", "k", "mu", "rounds",
                                 absl::StrCat("final ", metric),
                                 absl::StrCat("median log10 ", metric, " (last 100)"), "seconds");
    std::cout << absl::StrFormat("%-8s %-8s %-8s %8g %6d %5g %7d %14.6g %22.3f %8.2f\n",
                                 problem_name, AlgorithmName(options.algorithm), precision,
                                 options.density, so.k(), options.mu, options.rounds, final_metric,
                                 median, seconds);
  }
  return 0;
}

}  // namespace
}  // namespace regtopk

int main(int argc, char** argv) {
  regtopk::ParseFlagsOrExit(
      argc, argv, "regtopk-sim",
      "regtopk-sim: simulates N workers sparsifying gradients on the paper's synthetic problems.\n"
      "Example: regtopk-sim --problem=linreg --algorithm=regtopk --density=0.6 --rounds=1500");
  return regtopk::Main();
}
