// The wire <-> domain conversions: every field survives a round trip, and every field of the
// wire message is set (checked by reflection, so a field added to the proto but not to
// ToProto fails here instead of going missing silently).
#include "common/rpc/conversions.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace regtopk {
namespace {

// A config in which every field differs from its default.
JobConfig NonDefaultConfig() {
  JobConfig c;
  c.algorithm = Algorithm::kTopK;
  c.density = 0.125;
  c.mu = 3.5;
  c.sgd.lr = 0.25f;
  c.sgd.momentum = 0.5f;
  c.sgd.nesterov = true;
  c.sgd.weight_decay = 1e-4f;
  c.num_workers = 7;
  c.weighting = Weighting::kSamples;
  c.total_rounds = 1234;
  c.digest_every = 17;
  c.seed = 99;
  c.checkpoint_every = 25;
  c.round_timeout_seconds = 42.5;
  return c;
}

void ExpectEqual(const JobConfig& a, const JobConfig& b) {
  EXPECT_EQ(a.algorithm, b.algorithm);
  EXPECT_EQ(a.density, b.density);
  EXPECT_EQ(a.mu, b.mu);
  EXPECT_EQ(a.sgd.lr, b.sgd.lr);
  EXPECT_EQ(a.sgd.momentum, b.sgd.momentum);
  EXPECT_EQ(a.sgd.nesterov, b.sgd.nesterov);
  EXPECT_EQ(a.sgd.weight_decay, b.sgd.weight_decay);
  EXPECT_EQ(a.num_workers, b.num_workers);
  EXPECT_EQ(a.weighting, b.weighting);
  EXPECT_EQ(a.total_rounds, b.total_rounds);
  EXPECT_EQ(a.digest_every, b.digest_every);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.checkpoint_every, b.checkpoint_every);
  EXPECT_EQ(a.round_timeout_seconds, b.round_timeout_seconds);
}

TEST(Conversions, JobConfigSurvivesARoundTrip) {
  for (Algorithm a :
       {Algorithm::kDense, Algorithm::kTopK, Algorithm::kRandK, Algorithm::kRegTopK}) {
    JobConfig c = NonDefaultConfig();
    c.algorithm = a;
    v1::JobConfig p;
    ToProto(c, 1000, &p);
    auto back = FromProto(p, 1000);
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectEqual(c, *back);
  }
  JobConfig defaults;
  v1::JobConfig p;
  ToProto(defaults, 10, &p);
  auto back = FromProto(p, 10);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectEqual(defaults, *back);
}

TEST(Conversions, ToProtoSetsEveryFieldOfTheWireMessage) {
  v1::JobConfig p;
  ToProto(NonDefaultConfig(), 1000, &p);
  const google::protobuf::Descriptor* d = p.GetDescriptor();
  const google::protobuf::Reflection* r = p.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> set;
  r->ListFields(p, &set);  // proto3: the fields that differ from their zero value
  std::vector<std::string> missing;
  for (int i = 0; i < d->field_count(); ++i) {
    bool found = false;
    for (const auto* f : set) found |= f == d->field(i);
    if (!found) missing.push_back(d->field(i)->name());
  }
  EXPECT_THAT(missing, ::testing::IsEmpty()) << "fields ToProto never sets";
  EXPECT_EQ(p.max_entries(), 125u);  // k = 0.125 * 1000
}

TEST(Conversions, RefusesAServerWhoseKDisagrees) {
  v1::JobConfig p;
  ToProto(NonDefaultConfig(), 1000, &p);
  p.set_max_entries(126);
  auto c = FromProto(p, 1000);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(c.status().message()), ::testing::HasSubstr("k = 125"));
}

TEST(Conversions, RefusesAnUnknownAlgorithmAndAnInvalidConfig) {
  v1::JobConfig p;
  ToProto(NonDefaultConfig(), 1000, &p);
  p.set_algorithm(static_cast<v1::Algorithm>(42));
  EXPECT_EQ(FromProto(p, 1000).status().code(), absl::StatusCode::kInvalidArgument);
  ToProto(NonDefaultConfig(), 1000, &p);
  p.set_density(1.5);
  EXPECT_EQ(FromProto(p, 1000).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Conversions, EveryStatusCodeAndMessageSurvivesARoundTrip) {
  for (int code = 0; code <= 16; ++code) {
    const absl::Status s(static_cast<absl::StatusCode>(code), code == 0 ? "" : "why it failed");
    const absl::Status back = FromGrpcStatus(ToGrpcStatus(s));
    EXPECT_EQ(back.code(), s.code());
    EXPECT_EQ(back.message(), s.message());
  }
}

}  // namespace
}  // namespace regtopk
