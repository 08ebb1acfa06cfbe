// The parameter server through real gRPC on 127.0.0.1, driven by the plain client: exact
// aggregation, idempotent retries, round timeouts, rejection of every kind of bad push.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <limits>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/sparse/aggregate.h"
#include "regtopk/v1/parameter_server.grpc.pb.h"
#include "common/wire/digest.h"
#include "common/wire/sparse_codec.h"
#include "common/wire/chunking.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/test_server.h"
#include "tests/testing/random_sparse.h"

namespace regtopk {
namespace {

using ::testing::HasSubstr;

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

// Workers that split the data differently (another data set, partition or standard library)
// would train on overlapping or missing examples: the server refuses the second split.
// A pull's snapshot is shared, not copied, and immutable: one held while the next round's step
// runs keeps exactly the parameters of its own round (the step writes a copy), with its label
// and digest; the next pull gets the stepped parameters; two pulls of one round share a buffer.
TEST(ParameterServer, ASnapshotHeldAcrossAStepKeepsItsRoundsParameters) {
  constexpr size_t kDim = 1000;
  TestServer server(Options(2, Algorithm::kTopK, 0.1));
  auto clients = JoinAll(server, 2, kDim);
  std::mt19937 rng(3);
  ExpectExactRound(clients, 0, kDim, 100, rng);
  auto held = server.coordinator().GetParameters();
  ASSERT_TRUE(held.ok()) << held.status();
  auto again = server.coordinator().GetParameters();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(held->values.get(), again->values.get()) << "pulls of one round share one buffer";
  EXPECT_EQ(held->round, 1u);
  const std::vector<float> before = *held->values;
  ExpectExactRound(clients, 1, kDim, 100, rng);  // steps while `held` is in use
  EXPECT_EQ(*held->values, before) << "the step wrote into a buffer a pull still held";
  EXPECT_EQ(held->round, 1u);
  EXPECT_EQ(held->digest, DigestFloats(before));
  auto after = server.coordinator().GetParameters();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->round, 2u);
  EXPECT_NE(after->values.get(), held->values.get());
  EXPECT_NE(*after->values, before) << "round 1's step changed the parameters";
  // Through gRPC too: a pull now returns round 2's parameters exactly.
  auto pulled = clients[0]->PullParameters(0);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->round, 2u);
  EXPECT_EQ(pulled->values, *after->values);
}

// The optimizer step runs off the coordinator's lock: from inside the step (the closer's own
// thread, where a held lock would deadlock) the status is readable; the round only advances
// when the step is done, and a pull then gets the stepped parameters with the new label.
TEST(ParameterServer, TheOptimizerStepRunsOffTheLock) {
  constexpr size_t kDim = 1000;
  CoordinatorOptions o = Options(2, Algorithm::kTopK, 0.1);
  std::atomic<int> steps{0};
  Coordinator* coordinator = nullptr;
  o.before_step = [&](uint64_t round) {
    CoordinatorStatus s = coordinator->GetStatus();  // would deadlock if mu_ were held
    EXPECT_EQ(s.round, round) << "the round advances after the step, not before";
    EXPECT_EQ(s.pushes_this_round, 2u);
    ++steps;
  };
  TestServer server(o);
  coordinator = &server.coordinator();
  auto clients = JoinAll(server, 2, kDim);
  std::mt19937 rng(4);
  ExpectExactRound(clients, 0, kDim, 100, rng);
  ExpectExactRound(clients, 1, kDim, 100, rng);
  EXPECT_EQ(steps.load(), 2);
  auto pulled = clients[1]->PullParameters(1);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->round, 2u);
}

TEST(ParameterServer, RefusesAWorkerWhoseDataSplitDiffers) {
  TestServer server(Options(3, Algorithm::kTopK, 0.1));
  auto client = server.NewClient();
  JoinIdentity a;
  a.partition_digest = 0x1234;
  ASSERT_TRUE(client->Join(0, 10, 100, 7, a).ok());
  ASSERT_TRUE(client->Join(1, 10, 100, 7, a).ok());
  JoinIdentity b = a;
  b.partition_digest = 0x9999;
  auto refused = client->Join(2, 10, 100, 7, b);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              ::testing::HasSubstr("worker 2 split the training data differently from worker 0"));
  JoinIdentity none;  // not split by regtopk: not checked
  EXPECT_TRUE(client->Join(2, 10, 100, 7, none).ok());
}

TEST(ParameterServer, RetryOfAHeldPushTakesOverWithoutCountingTwice) {
  const size_t dim = 100;
  TestServer server(Options(2, Algorithm::kTopK, 0.05));  // k = 5
  auto clients = JoinAll(server, 2, dim);
  auto retry_client = server.NewClient();
  const std::string payload = Encode(SparseVector{{1, 2}, {1.0f, 2.0f}}, dim);
  absl::StatusOr<PushReply> first = absl::UnknownError(""), second = absl::UnknownError("");
  std::thread a([&] { first = clients[0]->Push(0, 0, payload); });
  ASSERT_TRUE(server.coordinator().AwaitPushes(1, absl::Seconds(30)));
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

TEST(ParameterServer, ADeadPeerNeverReplacedFailsTheJobNamingIt) {
  const size_t dim = 100;
  CoordinatorOptions o = Options(3, Algorithm::kTopK, 0.05);
  o.job.round_timeout_seconds = 0.3;
  TestServer server(o);
  auto clients = JoinAll(server, 3, dim);
  const std::string payload = Encode(SparseVector{{1}, {1.0f}}, dim);
  const absl::Time start = absl::Now();
  auto lonely = clients[0]->Push(0, 0, payload);  // workers 1 and 2 never push
  EXPECT_EQ(lonely.status().code(), absl::StatusCode::kFailedPrecondition) << lonely.status();
  EXPECT_THAT(std::string(lonely.status().message()),
              HasSubstr("the job failed: round 0 waited 300ms"));
  EXPECT_THAT(std::string(lonely.status().message()), HasSubstr("for worker(s) 1, 2"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  const CoordinatorStatus s = server.coordinator().GetStatus();
  EXPECT_EQ(s.round, 0u);
  EXPECT_EQ(s.pushes_this_round, 0u);
  EXPECT_FALSE(s.job_status.ok());
  // Everyone else learns the same: a late push and a late join are refused with the reason.
  auto late = clients[1]->Push(1, 0, payload);
  EXPECT_THAT(std::string(late.status().message()), HasSubstr("for worker(s) 1, 2"));
  auto rejoin = clients[2]->Join(2, 100, dim, 42);
  EXPECT_EQ(rejoin.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(rejoin.status().message()), HasSubstr("the job failed"));
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
  ASSERT_TRUE(server.coordinator().AwaitPushes(1, absl::Seconds(30)));
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

TEST(ParameterServer, ClientFailsWithinItsDeadlineWhenTheServerIsGone) {
  auto server = std::make_unique<TestServer>(Options(2, Algorithm::kTopK, 0.01));
  auto client = server->NewClient(absl::Seconds(2));
  ASSERT_TRUE(client->Join(0, 1, 100, 1).ok());
  ASSERT_TRUE(client->UploadParameters(0, std::vector<float>(100, 0.0f)).ok());
  ASSERT_TRUE(client->Join(1, 1, 100, 1).ok());
  // A push held open when the server goes away is answered UNAVAILABLE, not left hanging.
  absl::StatusOr<PushReply> held = absl::UnknownError("");
  std::thread t([&] { held = client->Push(0, 0, Encode(SparseVector{{1}, {1.0f}}, 100)); });
  ASSERT_TRUE(server->coordinator().AwaitPushes(1, absl::Seconds(30)));
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

namespace regtopk {
namespace {

// Every entry of a `dim`-vector, with varied values: a push that needs several chunks.
SparseVector Full(size_t dim) {
  SparseVector v;
  v.indices.resize(dim);
  v.values.resize(dim);
  for (size_t i = 0; i < dim; ++i) {
    v.indices[i] = static_cast<uint32_t>(i);
    v.values[i] = static_cast<float>(i % 97) * 0.25f + 1.0f;
  }
  return v;
}

// Writes the chunks of `payload` from byte 0 up to `upto` as worker 0's push of round 0 (and
// half-closes the stream if that is the whole payload).
void WriteRawPush(grpc::ClientReaderWriter<v1::PushChunk, v1::AggregateChunk>* stream,
                  const std::string& payload, size_t upto) {
  v1::PushChunk chunk;
  chunk.set_worker_id(0);
  chunk.set_round(0);
  chunk.set_total_bytes(payload.size());
  for (size_t at = 0; at < upto; at += kChunkBytes) {
    chunk.set_payload(payload.substr(at, std::min(kChunkBytes, upto - at)));
    ASSERT_TRUE(stream->Write(chunk));
  }
  if (upto == payload.size()) {
    ASSERT_TRUE(stream->WritesDone());
  }
}

TEST(Cancellation, AnUploadCancelledHalfwayInstallsNothing) {
  const size_t dim = 600000;  // three chunks
  TestServer server(Options(1, Algorithm::kTopK, 0.01));
  auto client = server.NewClient();
  ASSERT_TRUE(client->Join(0, 1, dim, 1).ok());
  HeldUpload held(server, 0, dim);
  ASSERT_TRUE(AwaitUploadOffer(server.coordinator(), 0, dim, 1, false));  // its chunk arrived
  EXPECT_EQ(held.Cancel(), grpc::StatusCode::CANCELLED);
  EXPECT_FALSE(server.coordinator().GetStatus().parameters_ready);
  // The cancelled upload's reservation is released (on the server's threads, soon after).
  ASSERT_TRUE(AwaitUploadOffer(server.coordinator(), 0, dim, 1, true));
  EXPECT_TRUE(client->UploadParameters(0, std::vector<float>(dim, 0.5f)).ok());  // still possible
}

// The server takes one parameter upload at a time (one model-sized buffer, however many workers
// start at once): while worker 0's upload is in progress, joins are not asked to upload and
// worker 1's upload is refused naming worker 0; once worker 0's stream dies, worker 1 is asked
// to upload and its upload is installed.
TEST(Upload, OneAtATimeAndADeadUploadFreesItsPlace) {
  const size_t dim = 600000;
  TestServer server(Options(2, Algorithm::kTopK, 0.01));
  auto c0 = server.NewClient();
  auto c1 = server.NewClient();
  ASSERT_TRUE(c0->Join(0, 1, dim, 1).ok());
  ASSERT_TRUE(c1->Join(1, 1, dim, 1).ok());
  auto held = std::make_unique<HeldUpload>(server, 0, dim);
  ASSERT_TRUE(AwaitUploadOffer(server.coordinator(), 1, dim, 1, false));
  const absl::Status refused = c1->UploadParameters(1, std::vector<float>(dim, 0.5f));
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(std::string(refused.message()), ::testing::HasSubstr("worker 0 is uploading"));
  EXPECT_EQ(server.coordinator().GetParameters().status().code(),
            absl::StatusCode::kFailedPrecondition);
  held.reset();  // worker 0 goes away mid-upload
  ASSERT_TRUE(AwaitUploadOffer(server.coordinator(), 1, dim, 1, true));
  ASSERT_TRUE(c1->UploadParameters(1, std::vector<float>(dim, 0.5f)).ok());
  auto p = server.coordinator().GetParameters();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p->values)[dim - 1], 0.5f);
  EXPECT_EQ(c0->UploadParameters(0, std::vector<float>(dim, 1.0f)).code(),
            absl::StatusCode::kFailedPrecondition);  // too late: the parameters are there
}

TEST(Cancellation, APushCancelledWhileStreamingInIsNotCountedAsMalformed) {
  const size_t dim = 2000000;
  TestServer server(Options(2, Algorithm::kDense, 1.0));
  auto clients = JoinAll(server, 2, dim);
  const std::string payload = Encode(Full(dim), dim);
  ASSERT_GT(payload.size(), 2 * kChunkBytes);
  auto stub = RawStub(server);
  grpc::ClientContext context;
  auto stream = stub->Push(&context);
  WriteRawPush(stream.get(), payload, kChunkBytes);
  context.TryCancel();
  stream->Finish();
  // The server learns of the cancellation on its own schedule: wait for it, within a bound.
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (server.coordinator().GetStatus().cancelled_pushes == 0 &&
         server.coordinator().GetStatus().rejected_pushes == 0) {
    ASSERT_LT(absl::Now(), give_up) << "the server never saw the cancellation";
    absl::SleepFor(absl::Milliseconds(1));
  }
  const CoordinatorStatus s = server.coordinator().GetStatus();
  EXPECT_EQ(s.cancelled_pushes, 1u);
  EXPECT_EQ(s.rejected_pushes, 0u);
  EXPECT_EQ(s.pushes_this_round, 0u);
}

TEST(Cancellation, APushCancelledWhileHeldStaysInTheRoundAndItsRetryGetsTheResult) {
  const size_t dim = 100;
  TestServer server(Options(2, Algorithm::kTopK, 0.05));
  auto clients = JoinAll(server, 2, dim);
  const std::string payload = Encode(SparseVector{{1, 2}, {1.0f, 2.0f}}, dim);
  {
    auto stub = RawStub(server);
    grpc::ClientContext context;
    auto stream = stub->Push(&context);
    WriteRawPush(stream.get(), payload, payload.size());
    ASSERT_TRUE(server.coordinator().AwaitPushes(1, absl::Seconds(30)));
    context.TryCancel();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_EQ(server.coordinator().GetStatus().rejected_pushes, 0u);
  EXPECT_EQ(server.coordinator().GetStatus().pushes_this_round, 1u);
  absl::StatusOr<PushReply> retry = absl::UnknownError("");
  std::thread t([&] { retry = clients[0]->Push(0, 0, payload); });  // takes the slot over
  auto other = clients[1]->Push(1, 0, Encode(SparseVector{{2}, {4.0f}}, dim));
  t.join();
  ASSERT_TRUE(retry.ok()) << retry.status();
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(retry->encoded, other->encoded);
  EXPECT_EQ(server.coordinator().GetStatus().round, 1u);
}

TEST(Cancellation, AReplyCancelledWhileStreamingOutLeavesTheServerWorking) {
  const size_t dim = 2000000;  // a dense aggregate of 8 MB: several chunks
  TestServer server(Options(1, Algorithm::kDense, 1.0));
  auto clients = JoinAll(server, 1, dim);
  const std::string payload = Encode(Full(dim), dim);
  {
    auto stub = RawStub(server);
    grpc::ClientContext context;
    auto stream = stub->Push(&context);
    WriteRawPush(stream.get(), payload, payload.size());
    v1::AggregateChunk first;
    ASSERT_TRUE(stream->Read(&first));  // the first chunk of the reply, then give up
    context.TryCancel();
    stream->Finish();
  }
  // The round closed; the next one works as usual.
  EXPECT_EQ(server.coordinator().GetStatus().round, 1u);
  std::mt19937 rng2(3);
  ExpectExactRound(clients, 1, dim, 1000, rng2);
}

// A poisoned push of finite FLT_MAX values: with lr 2 the step would overflow to -inf. The
// round is refused to every worker, nothing is applied (the parameters stay those before it)
// and the job stops, naming why.
TEST(Poisoning, AStepThatWouldMakeAParameterNonFiniteIsRefusedAndNothingApplied) {
  CoordinatorOptions o = Options(2, Algorithm::kTopK, 0.5);  // k = 2 of 4
  o.job.optimizer.lr = 2.0f;
  TestServer server(o);
  auto clients = JoinAll(server, 2, 4);
  const float big = std::numeric_limits<float>::max();
  auto replies = PushRound(clients, 0, {Encode(SparseVector{{1}, {big}}, 4),
                                        Encode(SparseVector{{1}, {big}}, 4)});
  for (const auto& r : replies) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr("round 0's step would make parameter 1 non-finite"));
  }
  auto pulled = clients[0]->PullParameters(0);
  ASSERT_TRUE(pulled.ok()) << pulled.status();
  EXPECT_EQ(pulled->round, 0u);
  EXPECT_EQ(pulled->values, std::vector<float>(4, 0.0f)) << "nothing applied";
  auto next = clients[0]->Push(0, 0, Encode(SparseVector{{0}, {1.0f}}, 4));
  EXPECT_THAT(std::string(next.status().message()), HasSubstr("the job failed"));
}

TEST(Poisoning, MaxAbsValueRefusesAPushAndClipNormScalesOneDown) {
  CoordinatorOptions o = Options(2, Algorithm::kTopK, 0.5);
  o.job.max_abs_value = 100;
  o.job.clip_norm = 1.0;
  TestServer server(o);
  auto clients = JoinAll(server, 2, 4);
  auto refused = clients[0]->Push(0, 0, Encode(SparseVector{{2}, {1e6f}}, 4));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("entry 2 = 1e+06 exceeds --max-abs-value=100"));
  // Norm 5 is scaled to 1: (3, 4) -> (0.6, 0.8); the other push (norm 0.5) is kept as it is.
  auto replies = PushRound(clients, 0, {Encode(SparseVector{{0, 1}, {3, 4}}, 4),
                                        Encode(SparseVector{{3}, {0.5f}}, 4)});
  ASSERT_TRUE(replies[0].ok()) << replies[0].status();
  SparseVector agg;
  ASSERT_TRUE(DecodeSparse(replies[0]->encoded, 4, 4, &agg).ok());
  EXPECT_EQ(agg.indices, (std::vector<uint32_t>{0, 1, 3}));
  EXPECT_FLOAT_EQ(agg.values[0], 0.5f * 0.6f);
  EXPECT_FLOAT_EQ(agg.values[1], 0.5f * 0.8f);
  EXPECT_FLOAT_EQ(agg.values[2], 0.5f * 0.5f);
}

TEST(BoundedResources, NothingIsAllocatedForAnUploadFromAWorkerThatDidNotJoin) {
  TestServer server(Options(2, Algorithm::kTopK, 0.5));
  auto w0 = server.NewClient();
  ASSERT_TRUE(w0->Join(0, 10, 1000, 1).ok());
  auto stranger = server.NewClient();
  absl::Status s = stranger->UploadParameters(1, std::vector<float>(1000, 1.0f));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("worker 1 must join before uploading"));
  auto unknown = server.NewClient()->Push(1, 0, "x");
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("join before pushing"));
  TestServer empty(Options(2, Algorithm::kTopK, 0.5));
  auto early = empty.NewClient()->Push(0, 0, "x");
  EXPECT_EQ(early.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(early.status().message()),
              HasSubstr("push from worker 0, but no worker has joined yet: join before pushing"));
  auto too_big = server.NewClient()->Join(1, 10, uint64_t{1} << 40, 1);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
}

// One worker cannot hold an unbounded number of streams open: the ninth concurrent push of
// worker 0 (each left waiting for more chunks) is RESOURCE_EXHAUSTED; worker 1 is unaffected,
// and once the eight go away worker 0 can push again.
TEST(BoundedResources, StreamsPerWorkerAreLimited) {
  TestServer server(Options(2, Algorithm::kTopK, 0.5));
  auto clients = JoinAll(server, 2, 4);
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  auto stub = v1::ParameterServer::NewStub(channel);
  struct Open {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReaderWriter<v1::PushChunk, v1::AggregateChunk>> stream;
  };
  auto open = [&](uint32_t worker) {
    auto o = std::make_unique<Open>();
    o->stream = stub->Push(&o->context);
    v1::PushChunk first;
    first.set_worker_id(worker);
    first.set_round(0);
    first.set_total_bytes(40);  // more is announced than will ever come (the limit is 50)
    first.set_payload("x");
    EXPECT_TRUE(o->stream->Write(first));
    return o;
  };
  std::vector<std::unique_ptr<Open>> held;
  for (int i = 0; i < ParameterServerService::kMaxStreamsPerWorker; ++i) held.push_back(open(0));
  // Streams of one channel reach the server in no set order: wait (bounded) until all eight
  // hold their slot, so that the ninth is the one refused.
  for (int i = 0; i < 500 && server.service().open_streams(0) <
                                 ParameterServerService::kMaxStreamsPerWorker; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_EQ(server.service().open_streams(0), ParameterServerService::kMaxStreamsPerWorker);
  auto ninth = open(0);
  ninth->stream->WritesDone();
  grpc::Status s = ninth->stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("worker 0 already has 8 streams open"));
  EXPECT_TRUE(clients[1]->PullParameters(1).ok()) << "another worker is unaffected";
  for (auto& o : held) o->context.TryCancel();
  for (auto& o : held) (void)o->stream->Finish();
  held.clear();
  // The slots come back when the calls are done (asynchronously: retry briefly).
  absl::Status pulled = absl::UnknownError("not tried");
  for (int i = 0; i < 50 && !pulled.ok(); ++i) {
    pulled = clients[0]->PullParameters(0).status();
    if (!pulled.ok()) absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(pulled.ok()) << pulled;
}

}  // namespace
}  // namespace regtopk
