#include "engine/job_spec.h"

#include <cmath>
#include <string>

#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

JobSpec ValidSpec() {
  JobSpec spec;
  spec.job_id = "job-1";
  spec.num_layers = 4;
  spec.num_experts = 16;
  spec.top_k = 2;
  return spec;
}

TEST(ValidateJobIdTest, AcceptsTheDocumentedAlphabet) {
  EXPECT_OK(ValidateJobId("a"));
  EXPECT_OK(ValidateJobId("Run_7.v2-final"));
  EXPECT_OK(ValidateJobId(std::string(128, 'x')));
}

TEST(ValidateJobIdTest, RejectsWithReason) {
  EXPECT_THAT(ValidateJobId(""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(ValidateJobId(std::string(129, 'x')),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("129 characters")));
  EXPECT_THAT(ValidateJobId("a/b"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("0x2f at position 1")));
  EXPECT_THAT(ValidateJobId("a b"), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("position 1")));
  EXPECT_THAT(ValidateJobId(".."), StatusIs(absl::StatusCode::kInvalidArgument,
                                            HasSubstr("reserved")));
}

TEST(ValidateJobSpecTest, AcceptsValidSpec) {
  EXPECT_OK(ValidateJobSpec(ValidSpec(), EngineOptions()));
}

TEST(ValidateJobSpecTest, RejectsMalformedFields) {
  struct Case {
    void (*mutate)(JobSpec&);
    absl::StatusCode code;
    const char* phrase;
  };
  const Case cases[] = {
      {[](JobSpec& s) { s.num_layers = 0; }, absl::StatusCode::kInvalidArgument,
       "num_layers = 0"},
      {[](JobSpec& s) { s.num_experts = 1; },
       absl::StatusCode::kInvalidArgument, "num_experts = 1"},
      {[](JobSpec& s) { s.top_k = 0; }, absl::StatusCode::kInvalidArgument,
       "top_k = 0"},
      {[](JobSpec& s) { s.top_k = 17; }, absl::StatusCode::kInvalidArgument,
       "top_k = 17 must be in [1, num_experts = 16]"},
      {[](JobSpec& s) { s.num_sources = 0; },
       absl::StatusCode::kInvalidArgument, "num_sources = 0"},
      {[](JobSpec& s) { s.job_id = "bad id"; },
       absl::StatusCode::kInvalidArgument, "job id"},
      {[](JobSpec& s) { s.hyper.aux_loss_coef = -0.1; },
       absl::StatusCode::kInvalidArgument, "aux_loss_coef"},
      {[](JobSpec& s) { s.hyper.router_temperature = 0; },
       absl::StatusCode::kInvalidArgument, "router_temperature = 0 must be positive"},
      {[](JobSpec& s) { s.hyper.entropy_weight = std::nan(""); },
       absl::StatusCode::kInvalidArgument, "entropy_weight = nan is not finite"},
      {[](JobSpec& s) { s.hyper.oracle_weight = -1; },
       absl::StatusCode::kInvalidArgument, "oracle_weight"},
      {[](JobSpec& s) { s.hyper.balance_weight = -1; },
       absl::StatusCode::kInvalidArgument, "balance_weight"},
  };
  for (const Case& c : cases) {
    JobSpec spec = ValidSpec();
    c.mutate(spec);
    EXPECT_THAT(ValidateJobSpec(spec, EngineOptions()),
                StatusIs(c.code, HasSubstr(c.phrase)))
        << c.phrase;
  }
}

TEST(ValidateJobSpecTest, LimitsComeFromOptions) {
  EngineOptions options;
  options.max_layers = 3;
  EXPECT_THAT(ValidateJobSpec(ValidSpec(), options),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("max_layers = 3")));
  options = EngineOptions();
  options.max_experts = 8;
  EXPECT_THAT(ValidateJobSpec(ValidSpec(), options),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("max_experts = 8")));
  options = EngineOptions();
  options.max_layer_experts = 63;
  EXPECT_THAT(ValidateJobSpec(ValidSpec(), options),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("4 layers x 16 experts = 64")));
  options = EngineOptions();
  options.max_sources = 2;
  JobSpec spec = ValidSpec();
  spec.num_sources = 3;
  EXPECT_THAT(ValidateJobSpec(spec, options),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("max_sources = 2")));
  options = EngineOptions();
  options.max_job_history_bytes = 1000;
  EXPECT_THAT(ValidateJobSpec(ValidSpec(), options),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("max_job_history_bytes = 1000")));
}

TEST(HistoryBytesTest, MatchesTheDocumentedFormula) {
  EngineOptions options;
  options.history_capacity_steps = 1024;
  JobSpec spec = ValidSpec();
  spec.num_layers = 58;
  spec.num_experts = 256;
  EXPECT_EQ(HistoryBytes(spec, options, false), int64_t{58} * 256 * 1024 * 4);
  EXPECT_EQ(HistoryBytes(spec, options, true), int64_t{58} * 256 * 1024 * 8);
}

}  // namespace
}  // namespace moecast
