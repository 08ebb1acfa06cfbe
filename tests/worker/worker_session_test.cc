// WorkerSession against a real server on 127.0.0.1: replicas that stay bit-identical to the
// server's parameters, a drifted replica caught by the digest, a lost reply recovered by retry,
// and a 100 M-parameter job. Faults are injected through the ServerClient seam.
#include <atomic>
#include <cstring>
#include <map>
#include <utility>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/wire/digest.h"
#include "common/wire/sparse_codec.h"
#include "gtest/gtest.h"
#include "tests/testing/forwarding_client.h"
#include "tests/testing/test_server.h"
#include "worker/worker_session.h"

namespace regtopk {
namespace {

// Runs one WorkerSession per client to the end of the job, each worker on its own thread with
// seeded random gradients; returns the sessions and every step's stats by worker.
struct SessionRun {
  std::vector<std::unique_ptr<WorkerSession>> sessions;
  std::vector<std::vector<StepStats>> steps;
};
// threads: each worker's sparsification threads (empty: 1 for all).
SessionRun RunSessions(const std::vector<ServerClient*>& clients, const std::vector<float>& init,
                       const std::vector<int>& threads_of = {}) {
  const size_t n = clients.size();
  SessionRun run;
  run.sessions.resize(n);
  run.steps.resize(n);
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < n; ++w) {
    threads.emplace_back([&, w] {
      WorkerSessionOptions so;
      so.worker_id = w;
      if (!threads_of.empty()) so.threads = threads_of[w];
      auto s = WorkerSession::Start(clients[w], so, init);
      ASSERT_TRUE(s.ok()) << s.status();
      run.sessions[w] = std::move(*s);
      std::mt19937 rng(100 + w);
      std::normal_distribution<float> normal;
      std::vector<float> g(init.size());
      while (!run.sessions[w]->finished()) {
        for (float& x : g) x = normal(rng);
        auto stats = run.sessions[w]->Step(g);
        ASSERT_TRUE(stats.ok()) << stats.status();
        run.steps[w].push_back(*stats);
      }
    });
  }
  for (auto& t : threads) t.join();
  return run;
}

TEST(WorkerSession, ReplicasEqualTheServerAfterRounds) {
  const size_t dim = 20000;
  for (Algorithm algorithm : {Algorithm::kRegTopK, Algorithm::kRandK, Algorithm::kDense}) {
   for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdam, OptimizerKind::kAdamW}) {
    CoordinatorOptions o = Options(3, algorithm, 0.01);
    o.job.optimizer.kind = kind;
    if (kind == OptimizerKind::kSgd) {
      o.job.optimizer.momentum = 0.9f;  // exercises the dense optimizer path on both sides
    } else {
      o.job.optimizer.schedule = LrSchedule::kCosine;  // and a schedule that changes every round
      o.job.optimizer.warmup_rounds = 2;
      o.job.optimizer.decay_rounds = 5;
    }
    o.job.optimizer.weight_decay = 1e-3f;
    o.job.total_rounds = 7;
    TestServer server(o);
    std::mt19937 init_rng(9);
    std::vector<float> init(dim);
    for (float& x : init) x = std::normal_distribution<float>()(init_rng);
    std::vector<std::unique_ptr<ServerClient>> clients;
    for (uint32_t w = 0; w < 3; ++w) clients.push_back(server.NewClient());
    SessionRun run = RunSessions({clients[0].get(), clients[1].get(), clients[2].get()}, init);
    auto& sessions = run.sessions;
    for (auto& s : sessions) ASSERT_TRUE(s);
    for (const auto& steps : run.steps) {
      for (const StepStats& st : steps) EXPECT_FALSE(st.resynced);
    }
    auto pulled = clients[0]->PullParameters(0);
    ASSERT_TRUE(pulled.ok()) << pulled.status();
    EXPECT_EQ(pulled->round, 7u);
    EXPECT_EQ(pulled->digest, DigestFloats(pulled->values));
    for (uint32_t w = 0; w < 3; ++w) {
      ASSERT_EQ(sessions[w]->parameters().size(), dim);
      EXPECT_EQ(std::memcmp(sessions[w]->parameters().data(), pulled->values.data(), 4 * dim), 0)
          << AlgorithmName(algorithm) << " " << OptimizerKindName(kind) << " worker " << w;
      EXPECT_EQ(sessions[w]->resyncs(), 0u);
    }
    EXPECT_NE(std::memcmp(init.data(), pulled->values.data(), 4 * dim), 0);
   }
  }
}

// The worker's threads are speed only: a job whose workers sparsify and step on 1, 2 and 3
// threads ends with parameters bit-equal to the same job on 1 thread each (a dimension of many
// 16 KiB chunks, so that every thread has a share), for RegTop-k with plain SGD and Top-k with
// momentum (whose step walks every parameter, split over the threads). A thread count outside
// [1, 256] is refused before the worker joins.
TEST(WorkerSession, SparsificationThreadsDoNotChangeTheJob) {
  const size_t dim = 300000;
  std::mt19937 init_rng(5);
  std::vector<float> init(dim);
  for (float& x : init) x = std::normal_distribution<float>()(init_rng);
  for (Algorithm algorithm : {Algorithm::kRegTopK, Algorithm::kTopK}) {
    std::vector<std::vector<float>> finals;
    for (const std::vector<int>& threads : {std::vector<int>{1, 1, 1}, std::vector<int>{1, 2, 3}}) {
      CoordinatorOptions o = Options(3, algorithm, 0.01);
      o.job.total_rounds = 6;
      if (algorithm == Algorithm::kTopK) o.job.optimizer.momentum = 0.9f;
      TestServer server(o);
      std::vector<std::unique_ptr<ServerClient>> clients;
      for (uint32_t w = 0; w < 3; ++w) clients.push_back(server.NewClient());
      SessionRun run =
          RunSessions({clients[0].get(), clients[1].get(), clients[2].get()}, init, threads);
      for (auto& s : run.sessions) ASSERT_TRUE(s);
      auto pulled = clients[0]->PullParameters(0);
      ASSERT_TRUE(pulled.ok()) << pulled.status();
      ASSERT_EQ(pulled->round, 6u);
      for (auto& s : run.sessions) {
        EXPECT_EQ(std::memcmp(s->parameters().data(), pulled->values.data(), 4 * dim), 0);
        EXPECT_EQ(s->resyncs(), 0u);  // equal by their own steps, not by a re-pull
      }
      finals.push_back(pulled->values);
    }
    EXPECT_EQ(std::memcmp(finals[0].data(), finals[1].data(), 4 * dim), 0)
        << AlgorithmName(algorithm);
    EXPECT_NE(std::memcmp(finals[0].data(), init.data(), 4 * dim), 0);
  }
  TestServer server(Options(1, Algorithm::kTopK, 0.01));
  auto client = server.NewClient();
  for (int bad : {0, 257}) {
    WorkerSessionOptions so;
    so.threads = bad;
    auto s = WorkerSession::Start(client.get(), so, init);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find("threads"), std::string::npos) << s.status();
  }
}

// The server takes one parameter upload at a time. A worker that starts while another's upload
// is in progress pulls; if that upload dies (its worker went away), the pulling worker is asked
// to upload at its next re-join, uploads its own initial parameters and starts from them.
TEST(WorkerSession, TakesOverTheUploadOfAWorkerThatWentAway) {
  const size_t dim = 300000;
  TestServer server(Options(2, Algorithm::kTopK, 0.01));
  auto c0 = server.NewClient();
  auto c1 = server.NewClient();
  ASSERT_TRUE(c0->Join(0, 1, dim, 7).ok());
  auto held = std::make_unique<HeldUpload>(server, 0, dim);
  ASSERT_TRUE(AwaitUploadOffer(server.coordinator(), 0, dim, 7, false));
  absl::Mutex mu;
  std::vector<std::string> log;
  absl::StatusOr<std::unique_ptr<WorkerSession>> session;
  std::thread starter([&] {
    WorkerSessionOptions so;
    so.worker_id = 1;
    so.layout_digest = 7;
    so.start_timeout = absl::Seconds(30);
    so.log = [&](const std::string& line) {
      absl::MutexLock lock(&mu);
      log.push_back(line);
    };
    session = WorkerSession::Start(c1.get(), so, std::vector<float>(dim, 0.25f));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // worker 1 is pulling by now
  held.reset();
  starter.join();
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_EQ((*session)->parameters()[dim - 1], 0.25f);
  auto p = server.coordinator().GetParameters();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(std::memcmp(p->values->data(), (*session)->parameters().data(), 4 * dim), 0);
  absl::MutexLock lock(&mu);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_NE(log[0].find("in place of a worker whose upload ended"), std::string::npos) << log[0];
}

// The opt-in compressed downlink: the server sends the top k' of aggregate + carried error, and
// every worker applies exactly that, as the server does: after the job the replicas equal the
// server's parameters bit for bit (and the digests every 3 rounds never asked for a re-pull),
// under SGD with momentum and under Adam; each round's aggregate holds at most k' entries.
TEST(WorkerSession, CompressedDownlinkKeepsReplicasEqualToTheServer) {
  const size_t dim = 20000;
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdam}) {
    CoordinatorOptions o = Options(3, Algorithm::kRegTopK, 0.01);
    o.job.optimizer.kind = kind;
    if (kind == OptimizerKind::kSgd) o.job.optimizer.momentum = 0.9f;
    o.job.downlink_density = 0.005;  // k' = 100, while the 3 pushes hold up to 600 entries
    o.job.total_rounds = 9;
    TestServer server(o);
    std::vector<float> init(dim, 0.5f);
    std::vector<std::unique_ptr<ServerClient>> clients;
    for (uint32_t w = 0; w < 3; ++w) clients.push_back(server.NewClient());
    SessionRun run = RunSessions({clients[0].get(), clients[1].get(), clients[2].get()}, init);
    for (auto& s : run.sessions) ASSERT_TRUE(s);
    for (const auto& steps : run.steps) {
      ASSERT_EQ(steps.size(), 9u);
      for (const StepStats& st : steps) {
        EXPECT_FALSE(st.resynced);
        EXPECT_LE(st.aggregate_nnz, 100u);
        EXPECT_GT(st.aggregate_nnz, 0u);
      }
    }
    auto pulled = clients[0]->PullParameters(0);
    ASSERT_TRUE(pulled.ok()) << pulled.status();
    EXPECT_EQ(pulled->round, 9u);
    for (uint32_t w = 0; w < 3; ++w) {
      EXPECT_EQ(std::memcmp(run.sessions[w]->parameters().data(), pulled->values.data(), 4 * dim),
                0)
          << OptimizerKindName(kind) << " worker " << w;
    }
  }
}

// Fault injection through the ServerClient seam: forwards everything, but corrupts the
// aggregate that one round's push returns, as a bit flip on the way would.
class CorruptingClient final : public ForwardingClient {
 public:
  CorruptingClient(std::unique_ptr<ServerClient> inner, uint64_t corrupt_round, size_t dim)
      : ForwardingClient(std::move(inner)), corrupt_round_(corrupt_round), dim_(dim) {}
  absl::StatusOr<PushReply> Push(uint32_t w, uint64_t round, absl::string_view e,
                                 uint64_t saved = 0) override {
    auto reply = ForwardingClient::Push(w, round, e, saved);
    if (reply.ok() && round == corrupt_round_) {
      SparseVector agg;
      EXPECT_TRUE(DecodeSparse(reply->encoded, dim_, dim_, &agg).ok());
      // Large and of the other sign: Adam's normalised step would absorb a small error into
      // its state without moving the parameter by a single ulp (the digest covers parameters).
      agg.values[0] = -1000.0f * (agg.values[0] + 1.0f);
      EncodeSparseSmallest(agg, dim_, &reply->encoded);
    }
    return reply;
  }

 private:
  const uint64_t corrupt_round_;
  const size_t dim_;
};

TEST(WorkerSession, DriftedReplicaIsDetectedByTheDigestAndRepulled) {
  const size_t dim = 5000;
  CoordinatorOptions o = Options(2, Algorithm::kTopK, 0.01);
  o.job.digest_every = 3;  // digests after rounds 2, 5
  o.job.total_rounds = 6;
  TestServer server(o);
  auto honest = server.NewClient();
  CorruptingClient corrupt(server.NewClient(), /*corrupt_round=*/1, dim);
  SessionRun run = RunSessions({honest.get(), &corrupt}, std::vector<float>(dim, 0.5f));
  auto& sessions = run.sessions;
  ASSERT_TRUE(sessions[0] && sessions[1]);
  // Worker 1 applied a wrong aggregate in round 1; the digest after round 2 caught it.
  std::vector<bool> resynced;
  for (const StepStats& st : run.steps[1]) resynced.push_back(st.resynced);
  EXPECT_EQ(resynced, (std::vector<bool>{false, false, true, false, false, false}));
  EXPECT_EQ(sessions[1]->resyncs(), 1u);
  EXPECT_EQ(sessions[0]->resyncs(), 0u);
  auto pulled = honest->PullParameters(0);
  ASSERT_TRUE(pulled.ok());
  for (auto& s : sessions) {
    EXPECT_EQ(std::memcmp(s->parameters().data(), pulled->values.data(), 4 * dim), 0);
  }
}

// With momentum the corrupted round also poisons the momentum buffer; the digest's repair pulls
// it with the parameters, so the replica is right from then on (one resync, not one per digest).
TEST(WorkerSession, DigestRepairPullsTheMomentumBufferToo) {
 for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdam}) {
  const size_t dim = 5000;
  CoordinatorOptions o = Options(2, Algorithm::kTopK, 0.01);
  o.job.optimizer.kind = kind;
  if (kind == OptimizerKind::kSgd) o.job.optimizer.momentum = 0.9f;  // Adam: 2d floats of state
  o.job.digest_every = 3;  // digests after rounds 2, 5, 8
  o.job.total_rounds = 9;
  TestServer server(o);
  auto honest = server.NewClient();
  CorruptingClient corrupt(server.NewClient(), /*corrupt_round=*/1, dim);
  SessionRun run = RunSessions({honest.get(), &corrupt}, std::vector<float>(dim, 0.5f));
  ASSERT_TRUE(run.sessions[0] && run.sessions[1]);
  std::vector<bool> resynced;
  for (const StepStats& st : run.steps[1]) resynced.push_back(st.resynced);
  EXPECT_EQ(resynced,
            (std::vector<bool>{false, false, true, false, false, false, false, false, false}));
  auto pulled = honest->PullParameters(0);
  ASSERT_TRUE(pulled.ok());
  for (auto& s : run.sessions) {
    EXPECT_EQ(std::memcmp(s->parameters().data(), pulled->values.data(), 4 * dim), 0)
        << OptimizerKindName(kind);
  }
 }
}

// Pulls taken while rounds close must carry the round their parameters belong to: every
// snapshot's digest equals the server's own digest of the parameters after round - 1 (the step
// and the round's advance are one critical section; they once were two).
TEST(WorkerSession, APulledSnapshotIsLabelledWithItsRound) {
  const size_t dim = 200000;
  CoordinatorOptions o = Options(2, Algorithm::kTopK, 0.01);
  o.job.optimizer.momentum = 0.9f;  // a dense step: long enough for a pull to land inside it
  o.job.digest_every = 1;
  o.job.total_rounds = 60;
  absl::Mutex mu;
  std::map<uint64_t, uint64_t> after;  // round -> digest of the parameters after it
  o.on_round_closed = [&](const RoundResult& r) {
    absl::MutexLock lock(&mu);
    after[r.round] = r.digest;
  };
  TestServer server(o);
  std::vector<std::unique_ptr<ServerClient>> clients;
  for (int w = 0; w < 2; ++w) clients.push_back(server.NewClient());
  const std::vector<float> init(dim, 0.25f);
  std::atomic<bool> stop{false};
  std::vector<std::pair<uint64_t, uint64_t>> pulls;  // (round, digest)
  std::thread puller([&] {
    auto client = server.NewClient();
    while (!stop) {
      auto p = client->PullParameters(0);
      if (p.ok()) pulls.emplace_back(p->round, p->digest);
    }
  });
  SessionRun run = RunSessions({clients[0].get(), clients[1].get()}, init);
  stop = true;
  puller.join();
  ASSERT_GT(pulls.size(), 5u);
  absl::MutexLock lock(&mu);
  int checked = 0;
  for (const auto& [round, digest] : pulls) {
    if (round == 0) {
      EXPECT_EQ(digest, DigestFloats(init));
    } else {
      ASSERT_TRUE(after.count(round - 1)) << round;
      EXPECT_EQ(digest, after[round - 1]) << "snapshot labelled round " << round;
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

// Loses the reply of one round's push after the server answered it, as a dropped connection
// would: the session's retry must be answered from the server's cache.
class LostReplyClient final : public ForwardingClient {
 public:
  LostReplyClient(std::unique_ptr<ServerClient> inner, uint64_t lose_round)
      : ForwardingClient(std::move(inner)), lose_round_(lose_round) {}
  absl::StatusOr<PushReply> Push(uint32_t w, uint64_t round, absl::string_view e,
                                 uint64_t saved = 0) override {
    ++pushes_;
    auto reply = ForwardingClient::Push(w, round, e, saved);
    if (reply.ok() && round == lose_round_ && !lost_) {
      lost_ = true;
      return absl::UnavailableError("connection reset (injected)");
    }
    return reply;
  }
  int pushes() const { return pushes_; }

 private:
  const uint64_t lose_round_;
  bool lost_ = false;
  int pushes_ = 0;
};

TEST(WorkerSession, LostReplyIsRecoveredByRetryingThePush) {
  const size_t dim = 3000;
  CoordinatorOptions o = Options(2, Algorithm::kRegTopK, 0.01);
  o.job.total_rounds = 4;
  o.job.digest_every = 1;
  TestServer server(o);
  auto honest = server.NewClient();
  LostReplyClient flaky(server.NewClient(), /*lose_round=*/1);
  SessionRun run = RunSessions({honest.get(), &flaky}, std::vector<float>(dim, 0.1f));
  auto& sessions = run.sessions;
  ASSERT_TRUE(sessions[0] && sessions[1]);
  for (const auto& steps : run.steps) {
    for (const StepStats& st : steps) EXPECT_FALSE(st.resynced);  // the retry got the same bytes
  }
  EXPECT_EQ(flaky.pushes(), 5);  // 4 rounds + 1 retry
  EXPECT_EQ(server.coordinator().GetStatus().round, 4u);
  EXPECT_EQ(server.coordinator().GetStatus().rejected_pushes, 0u);
  EXPECT_EQ(
      std::memcmp(sessions[0]->parameters().data(), sessions[1]->parameters().data(), 4 * dim), 0);
}

TEST(WorkerSession, HundredMillionParameterJobCompletesTwoRounds) {
  const size_t dim = 100000000;
  CoordinatorOptions o = Options(2, Algorithm::kTopK, 1e-5);  // k = 1000
  o.job.total_rounds = 2;
  o.job.digest_every = 1;
  TestServer server(o);
  std::vector<float> init(dim);
  for (size_t i = 0; i < dim; ++i) init[i] = static_cast<float>(i % 1000) * 1e-3f;
  std::vector<std::unique_ptr<ServerClient>> clients;
  clients.push_back(server.NewClient());
  clients.push_back(server.NewClient());
  std::vector<std::unique_ptr<WorkerSession>> sessions(2);
  std::vector<absl::Status> results(2);
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      WorkerSessionOptions so;
      so.worker_id = w;
      auto s = WorkerSession::Start(clients[w].get(), so, init);
      if (!s.ok()) {
        results[w] = s.status();
        return;
      }
      sessions[w] = std::move(*s);
      std::vector<float> g(dim, 0.0f);
      for (int round = 0; round < 2; ++round) {
        for (size_t i = w; i < dim; i += 99991) g[i] = 1.0f + round;
        auto stats = sessions[w]->Step(g);
        if (!stats.ok()) {
          results[w] = stats.status();
          return;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& r : results) ASSERT_TRUE(r.ok()) << r;
  auto status = clients[0]->GetStatus();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->round, 2u);
  EXPECT_TRUE(status->finished);
  EXPECT_GE(status->bytes_in, 4 * dim);  // the upload went through in chunks
  for (auto& s : sessions) {
    EXPECT_EQ(s->resyncs(), 0u);  // digests matched after both rounds
    EXPECT_EQ(s->round(), 2u);
  }
  EXPECT_EQ(
      std::memcmp(sessions[0]->parameters().data(), sessions[1]->parameters().data(), 4 * dim), 0);
}

}  // namespace
}  // namespace regtopk
