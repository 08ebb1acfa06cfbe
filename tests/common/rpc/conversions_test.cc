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
// Every field off its default. SGD's momentum and Nesterov with Adam's betas is not a valid job
// (FromProto refuses it), so the round trips use AdamConfig or SgdConfig below.
JobConfig NonDefaultConfig() {
  JobConfig c;
  c.optimizer.kind = OptimizerKind::kAdamW;
  c.optimizer.beta1 = 0.8f;
  c.optimizer.beta2 = 0.99f;
  c.optimizer.eps = 1e-6f;
  c.optimizer.schedule = LrSchedule::kCosine;
  c.optimizer.warmup_rounds = 10;
  c.optimizer.step_rounds = 30;
  c.optimizer.step_gamma = 0.5f;
  c.optimizer.decay_rounds = 200;
  c.optimizer.min_lr = 0.001f;
  c.clip_norm = 5.5;
  c.max_abs_value = 100;
  c.downlink_density = 0.02;
  c.algorithm = Algorithm::kTopK;
  c.density = 0.125;
  c.mu = 3.5;
  c.optimizer.lr = 0.25f;
  c.optimizer.momentum = 0.5f;
  c.optimizer.nesterov = true;
  c.optimizer.weight_decay = 1e-4f;
  c.num_workers = 7;
  c.weighting = Weighting::kSamples;
  c.total_rounds = 1234;
  c.digest_every = 17;
  c.seed = 99;
  c.checkpoint_every = 25;
  c.round_timeout_seconds = 42.5;
  return c;
}

JobConfig SgdConfig() {
  JobConfig c = NonDefaultConfig();
  c.optimizer.kind = OptimizerKind::kSgd;
  c.optimizer.schedule = LrSchedule::kStep;
  return c;
}

JobConfig AdamConfig() {
  JobConfig c = NonDefaultConfig();
  c.optimizer.momentum = 0;
  c.optimizer.nesterov = false;
  return c;
}

void ExpectEqual(const JobConfig& a, const JobConfig& b) {
  EXPECT_EQ(a.algorithm, b.algorithm);
  EXPECT_EQ(a.density, b.density);
  EXPECT_EQ(a.mu, b.mu);
  EXPECT_EQ(a.optimizer.lr, b.optimizer.lr);
  EXPECT_EQ(a.optimizer.momentum, b.optimizer.momentum);
  EXPECT_EQ(a.optimizer.nesterov, b.optimizer.nesterov);
  EXPECT_EQ(a.optimizer.weight_decay, b.optimizer.weight_decay);
  EXPECT_EQ(a.num_workers, b.num_workers);
  EXPECT_EQ(a.weighting, b.weighting);
  EXPECT_EQ(a.total_rounds, b.total_rounds);
  EXPECT_EQ(a.digest_every, b.digest_every);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.checkpoint_every, b.checkpoint_every);
  EXPECT_EQ(a.round_timeout_seconds, b.round_timeout_seconds);
  EXPECT_EQ(a.optimizer.kind, b.optimizer.kind);
  EXPECT_EQ(a.optimizer.beta1, b.optimizer.beta1);
  EXPECT_EQ(a.optimizer.beta2, b.optimizer.beta2);
  EXPECT_EQ(a.optimizer.eps, b.optimizer.eps);
  EXPECT_EQ(a.optimizer.schedule, b.optimizer.schedule);
  EXPECT_EQ(a.optimizer.warmup_rounds, b.optimizer.warmup_rounds);
  EXPECT_EQ(a.optimizer.step_rounds, b.optimizer.step_rounds);
  EXPECT_EQ(a.optimizer.step_gamma, b.optimizer.step_gamma);
  EXPECT_EQ(a.optimizer.decay_rounds, b.optimizer.decay_rounds);
  EXPECT_EQ(a.optimizer.min_lr, b.optimizer.min_lr);
  EXPECT_EQ(a.clip_norm, b.clip_norm);
  EXPECT_EQ(a.max_abs_value, b.max_abs_value);
  EXPECT_EQ(a.downlink_density, b.downlink_density);
}

TEST(Conversions, JobConfigSurvivesARoundTrip) {
  for (Algorithm a :
       {Algorithm::kDense, Algorithm::kTopK, Algorithm::kRandK, Algorithm::kRegTopK}) {
    for (JobConfig c : {SgdConfig(), AdamConfig()}) {
      c.algorithm = a;
      v1::JobConfig p;
      ToProto(c, 1000, &p);
      auto back = FromProto(p, 1000);
      ASSERT_TRUE(back.ok()) << back.status();
      ExpectEqual(c, *back);
    }
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
  ToProto(AdamConfig(), 1000, &p);
  p.set_max_entries(126);
  auto c = FromProto(p, 1000);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(c.status().message()), ::testing::HasSubstr("k = 125"));
}

TEST(Conversions, RefusesAnUnknownAlgorithmAndAnInvalidConfig) {
  v1::JobConfig p;
  ToProto(AdamConfig(), 1000, &p);
  p.set_algorithm(static_cast<v1::Algorithm>(42));
  EXPECT_EQ(FromProto(p, 1000).status().code(), absl::StatusCode::kInvalidArgument);
  ToProto(AdamConfig(), 1000, &p);
  p.set_density(1.5);
  EXPECT_EQ(FromProto(p, 1000).status().code(), absl::StatusCode::kInvalidArgument);
  ToProto(AdamConfig(), 1000, &p);
  p.set_optimizer(static_cast<v1::Optimizer>(9));
  EXPECT_THAT(std::string(FromProto(p, 1000).status().message()),
              ::testing::HasSubstr("unknown optimizer 9"));
  ToProto(AdamConfig(), 1000, &p);
  p.set_lr_schedule(static_cast<v1::LrSchedule>(9));
  EXPECT_THAT(std::string(FromProto(p, 1000).status().message()),
              ::testing::HasSubstr("unknown lr schedule 9"));
  // SGD's momentum with Adam: refused, naming why.
  ToProto(NonDefaultConfig(), 1000, &p);
  EXPECT_THAT(std::string(FromProto(p, 1000).status().message()),
              ::testing::HasSubstr("beta1 and beta2"));
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
