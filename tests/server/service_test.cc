// The parameter server through real gRPC on 127.0.0.1: exact aggregation, replicas that stay
// equal to the server, rejection of every kind of bad push, and a 100 M-parameter job.
#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "common/sparse/aggregate.h"
#include "common/wire/digest.h"
#include "common/wire/sparse_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/test_server.h"
#include "tests/testing/random_sparse.h"
#include "worker/worker_session.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

CoordinatorOptions Options(uint32_t workers, Algorithm algorithm, double density) {
  CoordinatorOptions o;
  o.job.num_workers = workers;
  o.job.algorithm = algorithm;
  o.job.density = density;
  o.job.mu = 2.0;
  o.job.sgd.lr = 0.1f;
  o.job.digest_every = 3;
  return o;
}

std::string Encode(const SparseVector& v, size_t dim) {
  std::string s;
  EncodeSparseSmallest(v, dim, &s);
  return s;
}

// Joins `n` workers and uploads zero parameters of length `dim`; returns one client per worker.
std::vector<std::unique_ptr<ServerClient>> JoinAll(TestServer& server, uint32_t n, size_t dim) {
  std::vector<std::unique_ptr<ServerClient>> clients;
  for (uint32_t w = 0; w < n; ++w) {
    clients.push_back(server.NewClient());
    auto join = clients.back()->Join(w, 100, dim, 42);
    EXPECT_TRUE(join.ok()) << join.status();
    if (w == 0) {
      EXPECT_TRUE(join->upload_parameters);
      EXPECT_TRUE(clients[0]->UploadParameters(0, std::vector<float>(dim, 0.0f)).ok());
    }
  }
  return clients;
}

// Pushes one round from every worker concurrently; returns each worker's reply.
std::vector<absl::StatusOr<PushReply>> PushRound(std::vector<std::unique_ptr<ServerClient>>& c,
                                                 uint64_t round,
                                                 const std::vector<std::string>& encoded) {
  std::vector<absl::StatusOr<PushReply>> replies(c.size(), absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (size_t w = 0; w < c.size(); ++w) {
    threads.emplace_back([&, w] { replies[w] = c[w]->Push(w, round, encoded[w]); });
  }
  for (auto& t : threads) t.join();
  return replies;
}

// Runs one valid round and checks the aggregate against a direct computation, bit for bit.
void ExpectExactRound(std::vector<std::unique_ptr<ServerClient>>& clients, uint64_t round,
                      size_t dim, size_t k, std::mt19937& rng) {
  const uint32_t n = clients.size();
  std::vector<SparseVector> pushes;
  std::vector<std::string> encoded;
  for (uint32_t w = 0; w < n; ++w) {
    pushes.push_back(RandomSparse(dim, k, rng));
    encoded.push_back(Encode(pushes.back(), dim));
  }
  auto replies = PushRound(clients, round, encoded);
  std::vector<SparseView> views(pushes.begin(), pushes.end());
  SparseVector expected;
  AggregateSparse(views, std::vector<float>(n, 1.0f / n), &expected);
  for (uint32_t w = 0; w < n; ++w) {
    ASSERT_TRUE(replies[w].ok()) << replies[w].status();
    EXPECT_EQ(replies[w]->encoded, replies[0]->encoded) << "every worker gets the same bytes";
    SparseVector got;
    ASSERT_TRUE(DecodeSparse(replies[w]->encoded, dim, dim, &got).ok());
    EXPECT_EQ(got.indices, expected.indices);
    ASSERT_EQ(got.values.size(), expected.values.size());
    EXPECT_EQ(std::memcmp(got.values.data(), expected.values.data(), 4 * got.nnz()), 0);
  }
}

// Forwards every call to a real client; fault-injecting clients override what they break.
class ForwardingClient : public ServerClient {
 public:
  explicit ForwardingClient(std::unique_ptr<ServerClient> inner) : inner_(std::move(inner)) {}
  absl::StatusOr<JoinReply> Join(uint32_t w, uint64_t n, uint64_t d, uint64_t l) override {
    return inner_->Join(w, n, d, l);
  }
  absl::Status UploadParameters(uint32_t w, absl::Span<const float> v) override {
    return inner_->UploadParameters(w, v);
  }
  absl::StatusOr<PulledParameters> PullParameters(uint32_t w) override {
    return inner_->PullParameters(w);
  }
  absl::StatusOr<PushReply> Push(uint32_t w, uint64_t round, absl::string_view e) override {
    return inner_->Push(w, round, e);
  }
  absl::StatusOr<ServerStatusInfo> GetStatus() override { return inner_->GetStatus(); }

 private:
  std::unique_ptr<ServerClient> inner_;
};

// Runs one WorkerSession per client to the end of the job, each worker on its own thread with
// seeded random gradients; returns the sessions and every step's stats by worker.
struct SessionRun {
  std::vector<std::unique_ptr<WorkerSession>> sessions;
  std::vector<std::vector<StepStats>> steps;
};
SessionRun RunSessions(const std::vector<ServerClient*>& clients, const std::vector<float>& init) {
  const size_t n = clients.size();
  SessionRun run;
  run.sessions.resize(n);
  run.steps.resize(n);
  std::vector<std::thread> threads;
  for (uint32_t w = 0; w < n; ++w) {
    threads.emplace_back([&, w] {
      WorkerSessionOptions so;
      so.worker_id = w;
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

TEST(ParameterServer, AggregateEqualsDirectComputationBitForBit) {
  const size_t dim = 50000, k = 500;
  TestServer server(Options(4, Algorithm::kTopK, 0.01));
  auto clients = JoinAll(server, 4, dim);
  std::mt19937 rng(1);
  for (uint64_t round = 0; round < 5; ++round) ExpectExactRound(clients, round, dim, k, rng);
  auto status = clients[0]->GetStatus();
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(status->round, 5u);
  EXPECT_EQ(status->workers_joined, 4u);
  EXPECT_GE(status->bytes_in, 4 * dim);  // the upload, then the pushes
  EXPECT_GT(status->bytes_out, 0u);
}

TEST(ParameterServer, ReplicasEqualTheServerAfterRounds) {
  const size_t dim = 20000;
  for (Algorithm algorithm : {Algorithm::kRegTopK, Algorithm::kRandK, Algorithm::kDense}) {
    CoordinatorOptions o = Options(3, algorithm, 0.01);
    o.job.sgd.momentum = 0.9f;  // exercises the dense optimizer path on both sides
    o.job.sgd.weight_decay = 1e-3f;
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
          << AlgorithmName(algorithm) << " worker " << w;
      EXPECT_EQ(sessions[w]->resyncs(), 0u);
    }
    EXPECT_NE(std::memcmp(init.data(), pulled->values.data(), 4 * dim), 0);
  }
}

// Fault injection through the ServerClient seam: forwards everything, but corrupts the
// aggregate that one round's push returns, as a bit flip on the way would.
class CorruptingClient final : public ForwardingClient {
 public:
  CorruptingClient(std::unique_ptr<ServerClient> inner, uint64_t corrupt_round, size_t dim)
      : ForwardingClient(std::move(inner)), corrupt_round_(corrupt_round), dim_(dim) {}
  absl::StatusOr<PushReply> Push(uint32_t w, uint64_t round, absl::string_view e) override {
    auto reply = ForwardingClient::Push(w, round, e);
    if (reply.ok() && round == corrupt_round_) {
      SparseVector agg;
      EXPECT_TRUE(DecodeSparse(reply->encoded, dim_, dim_, &agg).ok());
      agg.values[0] += 1.0f;
      EncodeSparseSmallest(agg, dim_, &reply->encoded);
    }
    return reply;
  }

 private:
  const uint64_t corrupt_round_;
  const size_t dim_;
};

TEST(ParameterServer, DriftedReplicaIsDetectedByTheDigestAndRepulled) {
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

// Loses the reply of one round's push after the server answered it, as a dropped connection
// would: the session's retry must be answered from the server's cache.
class LostReplyClient final : public ForwardingClient {
 public:
  LostReplyClient(std::unique_ptr<ServerClient> inner, uint64_t lose_round)
      : ForwardingClient(std::move(inner)), lose_round_(lose_round) {}
  absl::StatusOr<PushReply> Push(uint32_t w, uint64_t round, absl::string_view e) override {
    ++pushes_;
    auto reply = ForwardingClient::Push(w, round, e);
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

TEST(ParameterServer, LostReplyIsRecoveredByRetryingThePush) {
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

TEST(ParameterServer, RetryOfAHeldPushTakesOverWithoutCountingTwice) {
  const size_t dim = 100;
  TestServer server(Options(2, Algorithm::kTopK, 0.05));  // k = 5
  auto clients = JoinAll(server, 2, dim);
  auto retry_client = server.NewClient();
  const std::string payload = Encode(SparseVector{{1, 2}, {1.0f, 2.0f}}, dim);
  absl::StatusOr<PushReply> first = absl::UnknownError(""), second = absl::UnknownError("");
  std::thread a([&] { first = clients[0]->Push(0, 0, payload); });
  while (server.coordinator().GetStatus().pushes_this_round == 0) std::this_thread::yield();
  std::thread b([&] { second = retry_client->Push(0, 0, payload); });
  a.join();  // superseded by the retry
  EXPECT_EQ(first.status().code(), absl::StatusCode::kAborted) << first.status();
  EXPECT_EQ(server.coordinator().GetStatus().pushes_this_round, 1u);
  auto other = clients[1]->Push(1, 0, Encode(SparseVector{{2}, {4.0f}}, dim));
  b.join();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(second->encoded, other->encoded);
  SparseVector agg;
  ASSERT_TRUE(DecodeSparse(second->encoded, dim, dim, &agg).ok());
  EXPECT_EQ(agg.indices, (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(agg.values, (std::vector<float>{0.5f, 3.0f}));  // counted once: 0.5*2 + 0.5*4
}

TEST(ParameterServer, RoundWithADeadPeerTimesOutNamingItAndStartsOver) {
  const size_t dim = 100;
  CoordinatorOptions o = Options(3, Algorithm::kTopK, 0.05);
  o.round_timeout = absl::Milliseconds(300);
  TestServer server(o);
  auto clients = JoinAll(server, 3, dim);
  const std::string payload = Encode(SparseVector{{1}, {1.0f}}, dim);
  const absl::Time start = absl::Now();
  auto lonely = clients[0]->Push(0, 0, payload);  // workers 1 and 2 never push
  EXPECT_EQ(lonely.status().code(), absl::StatusCode::kDeadlineExceeded) << lonely.status();
  EXPECT_THAT(std::string(lonely.status().message()), HasSubstr("no push from worker(s) 1, 2"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(server.coordinator().GetStatus().round, 0u);
  EXPECT_EQ(server.coordinator().GetStatus().pushes_this_round, 0u);
  std::mt19937 rng(4);
  ExpectExactRound(clients, 0, dim, 5, rng);  // the same round, from scratch, still exact
}

TEST(ParameterServer, RejectsBadPushesAndStillAggregatesExactly) {
  const size_t dim = 1000;
  TestServer server(Options(2, Algorithm::kTopK, 0.01));  // k = 10
  auto clients = JoinAll(server, 2, dim);
  std::mt19937 rng(3);
  ExpectExactRound(clients, 0, dim, 10, rng);

  SparseVector ok = RandomSparse(dim, 10, rng);
  SparseVector nan = ok;
  nan.values[3] = NAN;
  std::string too_many = Encode(RandomSparse(dim, 11, rng), dim);
  std::string out_of_range = std::string("\x01\xe8\x07\x01\xe8\x07", 6) + std::string(4, '\0');
  std::string wrong_dim = Encode(ok, dim + 1);
  std::string truncated = Encode(ok, dim).substr(0, 20);
  struct Case {
    uint32_t worker;
    uint64_t round;
    std::string payload;
    absl::StatusCode code;
    const char* says;
  } cases[] = {
      {7, 1, Encode(ok, dim), absl::StatusCode::kFailedPrecondition, "unknown worker 7"},
      {0, 0, Encode(ok, dim), absl::StatusCode::kFailedPrecondition, "collecting round 1"},
      {0, 2, Encode(ok, dim), absl::StatusCode::kFailedPrecondition, "collecting round 1"},
      {0, 1, out_of_range, absl::StatusCode::kInvalidArgument, "out of range"},
      {0, 1, too_many, absl::StatusCode::kInvalidArgument, "more than the limit of 10"},
      {0, 1, Encode(nan, dim), absl::StatusCode::kInvalidArgument, "not finite"},
      {0, 1, wrong_dim, absl::StatusCode::kInvalidArgument, "does not match the model's 1000"},
      {0, 1, truncated, absl::StatusCode::kInvalidArgument, "truncated"},
      {0, 1, "", absl::StatusCode::kInvalidArgument, "truncated"},
      {0, 1, std::string(200000, 'x'), absl::StatusCode::kInvalidArgument, "exceeds the limit"},
  };
  for (const Case& c : cases) {
    auto r = clients[0]->Push(c.worker, c.round, c.payload);
    ASSERT_FALSE(r.ok()) << c.says;
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.says));
  }
  // A second push for the same round while the first is held.
  std::atomic<bool> done{false};
  absl::StatusOr<PushReply> held = absl::UnknownError("");
  std::thread t([&] {
    held = clients[0]->Push(0, 1, Encode(ok, dim));
    done = true;
  });
  while (server.coordinator().GetStatus().pushes_this_round == 0) std::this_thread::yield();
  SparseVector different = ok;
  different.values[0] += 1.0f;
  auto dup = clients[1]->Push(0, 1, Encode(different, dim));
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("already pushed round 1"));
  EXPECT_FALSE(done);
  SparseVector other = RandomSparse(dim, 10, rng);
  auto second = clients[1]->Push(1, 1, Encode(other, dim));
  t.join();
  ASSERT_TRUE(held.ok() && second.ok());
  SparseVector expected, got;
  std::vector<SparseView> views{ok, other};
  AggregateSparse(views, std::vector<float>{0.5f, 0.5f}, &expected);
  ASSERT_TRUE(DecodeSparse(held->encoded, dim, dim, &got).ok());
  EXPECT_EQ(got.indices, expected.indices);
  EXPECT_EQ(got.values, expected.values);
  EXPECT_EQ(server.coordinator().GetStatus().rejected_pushes, 11u);
  ExpectExactRound(clients, 2, dim, 10, rng);
}

TEST(ParameterServer, RefusesAMismatchedLayoutAndBadJoins) {
  TestServer server(Options(2, Algorithm::kTopK, 0.01));
  auto c = server.NewClient();
  ASSERT_TRUE(c->Join(0, 10, 100, 7).ok());
  auto r = c->Join(1, 10, 100, 8);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("layout"));
  EXPECT_EQ(c->Join(2, 10, 100, 7).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Join(1, 10, 0, 7).status().code(), absl::StatusCode::kInvalidArgument);
  // A probe (0 samples) registers nothing.
  ASSERT_TRUE(c->Join(1, 0, 100, 7).ok());
  EXPECT_EQ(server.coordinator().GetStatus().workers_joined, 1u);
  // Upload of the wrong length, then a non-finite one, then a good one, then a second one.
  EXPECT_EQ(c->UploadParameters(0, std::vector<float>(99, 0.0f)).code(),
            absl::StatusCode::kFailedPrecondition);
  std::vector<float> bad(100, 0.0f);
  bad[5] = INFINITY;
  EXPECT_EQ(c->UploadParameters(0, bad).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(c->UploadParameters(0, std::vector<float>(100, 1.0f)).ok());
  EXPECT_EQ(c->UploadParameters(0, std::vector<float>(100, 1.0f)).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(ParameterServer, SampleWeightsFollowSampleCounts) {
  CoordinatorOptions o = Options(2, Algorithm::kDense, 1.0);
  o.job.weighting = Weighting::kSamples;
  TestServer server(o);
  auto a = server.NewClient(), b = server.NewClient();
  auto ja = a->Join(0, 100, 4, 1);
  ASSERT_TRUE(ja.ok());
  EXPECT_FALSE(ja->weight.has_value());
  auto jb = b->Join(1, 300, 4, 1);
  ASSERT_TRUE(jb.ok());
  EXPECT_EQ(*jb->weight, 0.75f);
  EXPECT_EQ(*a->Join(0, 100, 4, 1)->weight, 0.25f);
}

TEST(ParameterServer, HundredMillionParameterJobCompletesTwoRounds) {
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

TEST(ParameterServer, ClientFailsWithinItsDeadlineWhenTheServerIsGone) {
  auto server = std::make_unique<TestServer>(Options(2, Algorithm::kTopK, 0.01));
  auto client = server->NewClient(absl::Seconds(2));
  ASSERT_TRUE(client->Join(0, 1, 100, 1).ok());
  ASSERT_TRUE(client->UploadParameters(0, std::vector<float>(100, 0.0f)).ok());
  ASSERT_TRUE(client->Join(1, 1, 100, 1).ok());
  // A push held open when the server goes away is answered UNAVAILABLE, not left hanging.
  absl::StatusOr<PushReply> held = absl::UnknownError("");
  std::thread t([&] { held = client->Push(0, 0, Encode(SparseVector{{1}, {1.0f}}, 100)); });
  while (server->coordinator().GetStatus().pushes_this_round == 0) std::this_thread::yield();
  server->Stop();
  t.join();
  EXPECT_EQ(held.status().code(), absl::StatusCode::kUnavailable) << held.status();
  server.reset();
  const absl::Time start = absl::Now();
  auto r = client->Join(0, 1, 100, 1);
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().code() == absl::StatusCode::kUnavailable ||
              r.status().code() == absl::StatusCode::kDeadlineExceeded)
      << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("127.0.0.1"));
  EXPECT_LT(took, absl::Seconds(10));  // the 2 s deadline, generously
}

}  // namespace
}  // namespace regtopk
