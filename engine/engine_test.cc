#include "engine/engine.h"

#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/clock.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr int kLayers = 3;
constexpr int kExperts = 4;

JobSpec Spec(std::string id, int sources = 1) {
  JobSpec spec;
  spec.job_id = std::move(id);
  spec.num_layers = kLayers;
  spec.num_experts = kExperts;
  spec.top_k = 2;
  spec.num_sources = sources;
  return spec;
}

// Counts where layer l, expert e gets base + l + e.
std::vector<double> Counts(double base = 1) {
  std::vector<double> c(kLayers * kExperts);
  for (int l = 0; l < kLayers; ++l) {
    for (int e = 0; e < kExperts; ++e) c[l * kExperts + e] = base + l + e;
  }
  return c;
}

StepInput Input(int64_t step, const std::vector<double>& counts,
                int source = 0) {
  StepInput in;
  in.step = step;
  in.source = source;
  in.counts = counts;
  return in;
}

// Everything observable about a job, to check that rejected calls change
// nothing.
struct Snapshot {
  int64_t committed = 0;
  std::optional<int64_t> last_step;
  int64_t pending = 0;
  std::vector<std::vector<float>> newest;  // per layer, proportions
  std::vector<double> totals;              // per layer cumulative counts

  bool operator==(const Snapshot& o) const {
    return committed == o.committed && last_step == o.last_step &&
           pending == o.pending && newest == o.newest && totals == o.totals;
  }
};

Snapshot Take(Engine& engine, const std::string& job) {
  Snapshot s;
  JobInfo info = engine.GetJobInfo(job).value();
  s.committed = info.committed_steps;
  s.last_step = info.last_step;
  s.pending = info.pending_steps;
  for (int l = 0; l < info.spec.num_layers; ++l) {
    EXPECT_OK(engine.VisitHistory(job, l, [&](const LayerHistory& h) {
      if (!h.empty()) {
        auto p = h.Recent(0).proportions;
        s.newest.emplace_back(p.begin(), p.end());
      }
      for (double v : h.totals().counts) s.totals.push_back(v);
    }));
  }
  return s;
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.clock = &clock_;
    options_.history_capacity_steps = 16;
    // A 16-step ring lets a tight ingest loop overrun background analysis
    // (the overload policy would then shed and coalesce); these tests check
    // the answers themselves, so the analysis runs inline. The background
    // mode is tested against inline in engine/analysis/analysis_test.cc.
    options_.analysis.mode = AnalysisOptions::Mode::kInline;
    ASSERT_OK_AND_ASSIGN(engine_, Engine::Create(options_));
  }

  FakeClock clock_;
  EngineOptions options_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, CreateRejectsBadOptions) {
  EngineOptions o;
  o.history_capacity_steps = 1;
  EXPECT_THAT(Engine::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("history_capacity_steps = 1")));
  o = EngineOptions();
  o.max_jobs = 0;
  EXPECT_THAT(Engine::Create(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("max_jobs = 0")));
  o = EngineOptions();
  o.source_timeout = absl::ZeroDuration();
  EXPECT_THAT(Engine::Create(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("source_timeout")));
}

TEST_F(EngineTest, RegisterListDelete) {
  EXPECT_OK(engine_->RegisterJob(Spec("b")));
  EXPECT_OK(engine_->RegisterJob(Spec("a")));
  EXPECT_THAT(engine_->RegisterJob(Spec("a")),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("'a'")));
  EXPECT_THAT(engine_->ListJobs(), ElementsAre("a", "b"));
  EXPECT_OK(engine_->DeleteJob("a"));
  EXPECT_THAT(engine_->DeleteJob("a"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'a'")));
  EXPECT_THAT(engine_->ListJobs(), ElementsAre("b"));
  EXPECT_THAT(engine_->GetJobInfo("a"), StatusIs(absl::StatusCode::kNotFound,
                                                 HasSubstr("not registered")));
  // A deleted id can be registered again, fresh.
  EXPECT_OK(engine_->RegisterJob(Spec("a")));
  EXPECT_EQ(engine_->GetJobInfo("a")->committed_steps, 0);
}

TEST_F(EngineTest, RegisterEnforcesJobAndMemoryLimits) {
  EngineOptions o;
  o.max_jobs = 2;
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(o));
  EXPECT_OK(engine->RegisterJob(Spec("a")));
  EXPECT_OK(engine->RegisterJob(Spec("b")));
  EXPECT_THAT(engine->RegisterJob(Spec("c")),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("max_jobs = 2")));
  EXPECT_OK(engine->DeleteJob("a"));
  EXPECT_OK(engine->RegisterJob(Spec("c")));

  // History only: each job reserves 3 * 4 * 100 * 8 = 9600 bytes.
  auto history_only = [](std::string id) {
    JobSpec spec = Spec(std::move(id));
    spec.forecasting = false;
    return spec;
  };
  o = EngineOptions();
  o.history_capacity_steps = 100;
  o.max_total_history_bytes = 20000;
  ASSERT_OK_AND_ASSIGN(engine, Engine::Create(o));
  EXPECT_OK(engine->RegisterJob(history_only("a")));
  EXPECT_OK(engine->RegisterJob(history_only("b")));
  EXPECT_THAT(engine->RegisterJob(history_only("c")),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("max_total_history_bytes")));
  EXPECT_OK(engine->DeleteJob("b"));
  EXPECT_OK(engine->RegisterJob(history_only("c")));

  // Forecasting state counts too: the same limit no longer fits one job.
  EXPECT_THAT(engine->RegisterJob(Spec("f")),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("history and forecasting")));
  o.max_job_history_bytes = 12000;
  o.max_total_history_bytes = int64_t{1} << 30;
  ASSERT_OK_AND_ASSIGN(engine, Engine::Create(o));
  EXPECT_OK(engine->RegisterJob(history_only("a")));
  EXPECT_THAT(engine->RegisterJob(Spec("f")),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("forecasting state")));
}

TEST_F(EngineTest, IngestCommitsAndRecordsProportions) {
  ASSERT_OK(engine_->RegisterJob(Spec("j")));
  std::vector<double> c = Counts();
  std::vector<double> z(kLayers * kExperts, 0.25);
  StepInput in = Input(7, c);
  in.router_logits = z;
  in.tokens = 100;
  ASSERT_OK_AND_ASSIGN(IngestResult r, engine_->Ingest("j", in));
  EXPECT_EQ(r.outcome, IngestOutcome::kCommitted);
  ASSERT_EQ(r.committed.size(), 1u);
  EXPECT_EQ(r.committed[0].step, 7);
  EXPECT_FALSE(r.committed[0].incomplete);
  EXPECT_THAT(r.note, IsEmpty());

  // Layer 1 counts are 2,3,4,5 (sum 14).
  ASSERT_OK(engine_->VisitHistory("j", 1, [](const LayerHistory& h) {
    ASSERT_EQ(h.size(), 1);
    StepView v = h.Recent(0);
    EXPECT_EQ(v.step, 7);
    EXPECT_EQ(v.tokens, 100);
    EXPECT_EQ(v.assignments, 14);
    EXPECT_THAT(v.proportions,
                ElementsAre(FloatNear(2 / 14.0, 1e-7), FloatNear(3 / 14.0, 1e-7),
                            FloatNear(4 / 14.0, 1e-7), FloatNear(5 / 14.0, 1e-7)));
    EXPECT_THAT(v.logits, ElementsAre(0.25f, 0.25f, 0.25f, 0.25f));
  }));
  JobInfo info = engine_->GetJobInfo("j").value();
  EXPECT_EQ(info.committed_steps, 1);
  EXPECT_EQ(info.first_step, 7);
  EXPECT_EQ(info.last_step, 7);
  EXPECT_EQ(info.tokens, 100);
}

TEST_F(EngineTest, TokensDefaultToAssignmentsOverTopK) {
  ASSERT_OK(engine_->RegisterJob(Spec("j")));
  std::vector<double> c = Counts();
  ASSERT_OK(engine_->Ingest("j", Input(0, c)));
  ASSERT_OK(engine_->VisitHistory("j", 0, [](const LayerHistory& h) {
    EXPECT_EQ(h.Recent(0).tokens, (1 + 2 + 3 + 4) / 2.0);
  }));
}

TEST_F(EngineTest, EveryRejectionNamesTheProblemAndChangesNothing) {
  ASSERT_OK(engine_->RegisterJob(Spec("j")));
  std::vector<double> good = Counts();
  ASSERT_OK(engine_->Ingest("j", Input(5, good)));
  const Snapshot before = Take(*engine_, "j");

  std::vector<double> short_counts(kLayers * kExperts - 1, 1.0);
  std::vector<double> negative = Counts();
  negative[1 * kExperts + 2] = -1;
  std::vector<double> nan_counts = Counts();
  nan_counts[2 * kExperts + 3] = std::nan("");
  std::vector<double> inf_counts = Counts();
  inf_counts[0] = std::numeric_limits<double>::infinity();
  std::vector<double> bad_logits(kLayers * kExperts, 0.0);
  bad_logits[5] = std::numeric_limits<double>::infinity();
  std::vector<double> short_logits(2, 0.0);

  struct Case {
    std::string name;
    std::string job;
    StepInput in;
    absl::StatusCode code;
    std::string phrase;
  };
  std::vector<Case> cases;
  cases.push_back({"unknown job", "nope", Input(6, good),
                   absl::StatusCode::kNotFound, "job 'nope' is not registered"});
  cases.push_back({"wrong size", "j", Input(6, short_counts),
                   absl::StatusCode::kInvalidArgument,
                   "has 11 counts; the job declares 3 layers x 4 experts = 12"});
  cases.push_back({"negative", "j", Input(6, negative),
                   absl::StatusCode::kInvalidArgument,
                   "counts[layer 1][expert 2] = -1 is negative"});
  cases.push_back({"nan", "j", Input(6, nan_counts),
                   absl::StatusCode::kInvalidArgument,
                   "counts[layer 2][expert 3] = nan is not finite"});
  cases.push_back({"inf", "j", Input(6, inf_counts),
                   absl::StatusCode::kInvalidArgument,
                   "counts[layer 0][expert 0] = inf is not finite"});
  {
    StepInput in = Input(6, good);
    in.router_logits = bad_logits;
    cases.push_back({"bad logit", "j", in, absl::StatusCode::kInvalidArgument,
                     "router_logits[layer 1][expert 1] = inf is not finite"});
  }
  {
    StepInput in = Input(6, good);
    in.router_logits = short_logits;
    cases.push_back({"logit size", "j", in, absl::StatusCode::kInvalidArgument,
                     "has 2 router logits"});
  }
  {
    StepInput in = Input(6, good);
    in.tokens = 3;  // layer 0 has 10 assignments > 3 * 2
    cases.push_back({"too few tokens", "j", in,
                     absl::StatusCode::kInvalidArgument,
                     "layer 0 has 10 assignments, more than tokens x top_k"});
  }
  {
    StepInput in = Input(6, good);
    in.tokens = -1;
    cases.push_back({"negative tokens", "j", in,
                     absl::StatusCode::kInvalidArgument, "tokens = -1"});
  }
  {
    StepInput in = Input(6, good);
    in.tokens = std::nan("");
    cases.push_back({"nan tokens", "j", in, absl::StatusCode::kInvalidArgument,
                     "tokens = nan"});
  }
  cases.push_back({"negative step", "j", Input(-1, good),
                   absl::StatusCode::kInvalidArgument, "step -1 is negative"});
  cases.push_back({"older step", "j", Input(4, good),
                   absl::StatusCode::kInvalidArgument,
                   "step 4 is older than the last committed step 5"});
  cases.push_back({"source out of range", "j", Input(6, good, /*source=*/1),
                   absl::StatusCode::kInvalidArgument, "source 1 is out of range"});

  for (const Case& c : cases) {
    EXPECT_THAT(engine_->Ingest(c.job, c.in), StatusIs(c.code, HasSubstr(c.phrase)))
        << c.name;
    EXPECT_TRUE(Take(*engine_, "j") == before) << c.name;
  }
  EXPECT_EQ(engine_->GetJobInfo("j")->rejected_calls,
            static_cast<int64_t>(cases.size()) - 1);  // unknown job not counted

  // The job still takes the next good step.
  ASSERT_OK_AND_ASSIGN(IngestResult r, engine_->Ingest("j", Input(6, good)));
  EXPECT_EQ(r.outcome, IngestOutcome::kCommitted);
}

TEST_F(EngineTest, ResendingTheLastStepIsANoOpThatSaysSo) {
  ASSERT_OK(engine_->RegisterJob(Spec("j")));
  std::vector<double> c = Counts();
  ASSERT_OK(engine_->Ingest("j", Input(3, c)));
  const Snapshot before = Take(*engine_, "j");
  std::vector<double> other = Counts(50);
  ASSERT_OK_AND_ASSIGN(IngestResult r, engine_->Ingest("j", Input(3, other)));
  EXPECT_EQ(r.outcome, IngestOutcome::kDuplicate);
  EXPECT_THAT(r.committed, IsEmpty());
  EXPECT_THAT(r.note, HasSubstr("step 3 was already committed"));
  EXPECT_TRUE(Take(*engine_, "j") == before);
  EXPECT_EQ(engine_->GetJobInfo("j")->duplicate_calls, 1);
}

TEST_F(EngineTest, GapsAreAllowedAndRecorded) {
  ASSERT_OK(engine_->RegisterJob(Spec("j")));
  std::vector<double> c = Counts();
  ASSERT_OK(engine_->Ingest("j", Input(0, c)));
  ASSERT_OK(engine_->Ingest("j", Input(1, c)));
  ASSERT_OK_AND_ASSIGN(IngestResult r, engine_->Ingest("j", Input(5, c)));
  ASSERT_EQ(r.committed.size(), 1u);
  EXPECT_EQ(r.committed[0].gap_before, 3);
  ASSERT_OK(engine_->Ingest("j", Input(9, c)));
  JobInfo info = engine_->GetJobInfo("j").value();
  EXPECT_EQ(info.gaps, 2);
  EXPECT_EQ(info.missing_steps, 3 + 3);
  ASSERT_OK(engine_->VisitHistory("j", 0, [](const LayerHistory& h) {
    EXPECT_NE(h.Recent(0).flags & kStepAfterGap, 0u);
    EXPECT_NE(h.Recent(1).flags & kStepAfterGap, 0u);
    EXPECT_EQ(h.Recent(2).flags & kStepAfterGap, 0u);
  }));
}

TEST_F(EngineTest, AllZeroLayerIsAcceptedFlaggedAndNoted) {
  ASSERT_OK(engine_->RegisterJob(Spec("j")));
  std::vector<double> c = Counts();
  for (int e = 0; e < kExperts; ++e) c[2 * kExperts + e] = 0;
  ASSERT_OK_AND_ASSIGN(IngestResult r, engine_->Ingest("j", Input(0, c)));
  EXPECT_THAT(r.note, HasSubstr("layers without assignments: 2"));
  ASSERT_OK(engine_->VisitHistory("j", 2, [](const LayerHistory& h) {
    EXPECT_NE(h.Recent(0).flags & kStepNoAssignments, 0u);
  }));
}

TEST_F(EngineTest, VisitHistoryRejectsBadLayer) {
  ASSERT_OK(engine_->RegisterJob(Spec("j")));
  EXPECT_THAT(engine_->VisitHistory("j", kLayers, [](const LayerHistory&) {}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("layer 3 is out of range [0, 3)")));
  EXPECT_THAT(engine_->VisitHistory("x", 0, [](const LayerHistory&) {}),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'x'")));
}

// ---- Multi-source jobs ----

TEST_F(EngineTest, MultiSourceSumsPartsOnceEverySourceReported) {
  ASSERT_OK(engine_->RegisterJob(Spec("m", 3)));
  std::vector<double> c = Counts();
  ASSERT_OK_AND_ASSIGN(IngestResult r0, engine_->Ingest("m", Input(0, c, 0)));
  EXPECT_EQ(r0.outcome, IngestOutcome::kPending);
  EXPECT_THAT(r0.committed, IsEmpty());
  ASSERT_OK_AND_ASSIGN(IngestResult r2, engine_->Ingest("m", Input(0, c, 2)));
  EXPECT_EQ(r2.outcome, IngestOutcome::kPending);
  EXPECT_EQ(engine_->GetJobInfo("m")->pending_steps, 1);
  ASSERT_OK_AND_ASSIGN(IngestResult r1, engine_->Ingest("m", Input(0, c, 1)));
  EXPECT_EQ(r1.outcome, IngestOutcome::kCommitted);
  ASSERT_EQ(r1.committed.size(), 1u);
  EXPECT_FALSE(r1.committed[0].incomplete);
  ASSERT_OK(engine_->VisitHistory("m", 0, [](const LayerHistory& h) {
    ASSERT_EQ(h.size(), 1);
    EXPECT_EQ(h.Recent(0).assignments, 3 * (1 + 2 + 3 + 4));
    EXPECT_EQ(h.totals().counts[3], 3 * 4);
  }));
  EXPECT_EQ(engine_->GetJobInfo("m")->pending_steps, 0);
}

TEST_F(EngineTest, MultiSourceRouterMeansAreWeightedByAssignments) {
  JobSpec spec = Spec("m", 2);
  spec.num_layers = 1;
  spec.num_experts = 2;
  spec.top_k = 1;
  ASSERT_OK(engine_->RegisterJob(spec));
  std::vector<double> c0 = {3, 1}, z0 = {1.0, 0.0};  // 4 assignments
  std::vector<double> c1 = {0, 12}, z1 = {-1.0, 2.0};  // 12 assignments
  StepInput a = Input(0, c0, 0);
  a.router_logits = z0;
  StepInput b = Input(0, c1, 1);
  b.router_logits = z1;
  ASSERT_OK(engine_->Ingest("m", a));
  ASSERT_OK(engine_->Ingest("m", b));
  ASSERT_OK(engine_->VisitHistory("m", 0, [](const LayerHistory& h) {
    EXPECT_THAT(h.Recent(0).logits,
                ElementsAre(FloatNear((4 * 1.0 + 12 * -1.0) / 16, 1e-6),
                            FloatNear((4 * 0.0 + 12 * 2.0) / 16, 1e-6)));
    EXPECT_THAT(h.Recent(0).proportions,
                ElementsAre(FloatNear(3 / 16.0, 1e-7), FloatNear(13 / 16.0, 1e-7)));
  }));
}

TEST_F(EngineTest, MultiSourceLogitsDroppedUnlessEverySourceSentThem) {
  ASSERT_OK(engine_->RegisterJob(Spec("m", 2)));
  std::vector<double> c = Counts();
  std::vector<double> z(kLayers * kExperts, 1.0);
  StepInput a = Input(0, c, 0);
  a.router_logits = z;
  ASSERT_OK(engine_->Ingest("m", a));
  ASSERT_OK(engine_->Ingest("m", Input(0, c, 1)));
  ASSERT_OK(engine_->VisitHistory("m", 0, [](const LayerHistory& h) {
    EXPECT_THAT(h.Recent(0).logits, IsEmpty());
  }));
}

TEST_F(EngineTest, MultiSourceStepIsIncompleteWhenSourcesMovePastIt) {
  ASSERT_OK(engine_->RegisterJob(Spec("m", 2)));
  std::vector<double> c = Counts();
  ASSERT_OK(engine_->Ingest("m", Input(0, c, 0)));  // source 1 skips step 0
  ASSERT_OK(engine_->Ingest("m", Input(1, c, 0)));
  ASSERT_OK_AND_ASSIGN(IngestResult r, engine_->Ingest("m", Input(1, c, 1)));
  ASSERT_EQ(r.committed.size(), 2u);
  EXPECT_EQ(r.committed[0].step, 0);
  EXPECT_TRUE(r.committed[0].incomplete);
  EXPECT_EQ(r.committed[1].step, 1);
  EXPECT_FALSE(r.committed[1].incomplete);
  EXPECT_EQ(r.outcome, IngestOutcome::kCommitted);
  EXPECT_EQ(engine_->GetJobInfo("m")->incomplete_steps, 1);
  ASSERT_OK(engine_->VisitHistory("m", 0, [](const LayerHistory& h) {
    EXPECT_NE(h.Recent(1).flags & kStepIncomplete, 0u);
    EXPECT_EQ(h.Recent(0).flags & kStepIncomplete, 0u);
  }));
}

TEST_F(EngineTest, MultiSourceTimeoutCommitsIncompleteAndRejectsLateParts) {
  ASSERT_OK(engine_->RegisterJob(Spec("m", 2)));
  std::vector<double> c = Counts();
  ASSERT_OK(engine_->Ingest("m", Input(0, c, 0)));
  clock_.Advance(options_.source_timeout - absl::Seconds(1));
  EXPECT_EQ(engine_->Poll(), 0);
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(engine_->Poll(), 1);
  JobInfo info = engine_->GetJobInfo("m").value();
  EXPECT_EQ(info.last_step, 0);
  EXPECT_EQ(info.incomplete_steps, 1);
  const Snapshot before = Take(*engine_, "m");
  EXPECT_THAT(engine_->Ingest("m", Input(0, c, 1)),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("after it was committed without this source")));
  EXPECT_TRUE(Take(*engine_, "m") == before);
  // The late source carries on with the next step.
  ASSERT_OK(engine_->Ingest("m", Input(1, c, 1)));
  ASSERT_OK_AND_ASSIGN(IngestResult r, engine_->Ingest("m", Input(1, c, 0)));
  EXPECT_EQ(r.outcome, IngestOutcome::kCommitted);
}

TEST_F(EngineTest, MultiSourceTimeoutAlsoFiresOnIngest) {
  ASSERT_OK(engine_->RegisterJob(Spec("m", 2)));
  std::vector<double> c = Counts();
  ASSERT_OK(engine_->Ingest("m", Input(0, c, 0)));
  clock_.Advance(options_.source_timeout);
  ASSERT_OK_AND_ASSIGN(IngestResult r, engine_->Ingest("m", Input(1, c, 0)));
  ASSERT_EQ(r.committed.size(), 1u);
  EXPECT_EQ(r.committed[0].step, 0);
  EXPECT_TRUE(r.committed[0].incomplete);
  EXPECT_EQ(r.outcome, IngestOutcome::kPending);
}

TEST_F(EngineTest, MultiSourceDuplicatesOrderAndPendingLimit) {
  options_.max_pending_steps = 2;
  ASSERT_OK_AND_ASSIGN(engine_, Engine::Create(options_));
  ASSERT_OK(engine_->RegisterJob(Spec("m", 2)));
  std::vector<double> c = Counts();
  ASSERT_OK(engine_->Ingest("m", Input(0, c, 0)));
  ASSERT_OK_AND_ASSIGN(IngestResult dup, engine_->Ingest("m", Input(0, c, 0)));
  EXPECT_EQ(dup.outcome, IngestOutcome::kDuplicate);
  EXPECT_THAT(dup.note, HasSubstr("source 0 already reported step 0"));
  ASSERT_OK(engine_->Ingest("m", Input(1, c, 0)));
  const Snapshot before = Take(*engine_, "m");
  EXPECT_THAT(engine_->Ingest("m", Input(2, c, 0)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("max_pending_steps = 2")));
  EXPECT_THAT(engine_->Ingest("m", Input(0, c, 0)),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("older than the last step it reported (1)")));
  EXPECT_TRUE(Take(*engine_, "m") == before);
  // Source 1 catches up; both steps commit in order.
  ASSERT_OK(engine_->Ingest("m", Input(0, c, 1)));
  ASSERT_OK_AND_ASSIGN(IngestResult r, engine_->Ingest("m", Input(1, c, 1)));
  ASSERT_EQ(r.committed.size(), 1u);
  EXPECT_EQ(engine_->GetJobInfo("m")->committed_steps, 2);
  EXPECT_EQ(engine_->GetJobInfo("m")->incomplete_steps, 0);
}

TEST_F(EngineTest, FlushPendingCommitsEverythingNow) {
  ASSERT_OK(engine_->RegisterJob(Spec("m", 3)));
  std::vector<double> c = Counts();
  ASSERT_OK(engine_->Ingest("m", Input(0, c, 0)));
  ASSERT_OK(engine_->Ingest("m", Input(1, c, 0)));
  ASSERT_OK_AND_ASSIGN(std::vector<CommittedStep> flushed,
                       engine_->FlushPending("m"));
  ASSERT_EQ(flushed.size(), 2u);
  EXPECT_TRUE(flushed[0].incomplete);
  EXPECT_EQ(flushed[1].step, 1);
  EXPECT_EQ(engine_->GetJobInfo("m")->pending_steps, 0);
  EXPECT_THAT(engine_->FlushPending("zz"), StatusIs(absl::StatusCode::kNotFound,
                                                    HasSubstr("'zz'")));
}

// ---- Forecasting, state and events ----

TEST_F(EngineTest, RegisterRejectsUnknownPredictorsAndBadHorizons) {
  JobSpec spec = Spec("f");
  spec.predictors = {"sw_avg(10)", "prophet"};
  EXPECT_THAT(engine_->RegisterJob(spec),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("job 'f': unknown predictor 'prophet'")));
  spec.predictors = {};
  spec.horizons = {10, 10};
  EXPECT_THAT(engine_->RegisterJob(spec),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("horizon 10 is listed twice")));
  EXPECT_THAT(engine_->ListJobs(), IsEmpty());
}

TEST_F(EngineTest, ForecastAnswersEveryLayerAndHorizon) {
  JobSpec spec = Spec("f");
  spec.horizons = {1, 5};
  ASSERT_OK(engine_->RegisterJob(spec));
  ForecastRequest request;
  EXPECT_THAT(engine_->Forecast("f", request),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("no committed steps yet")));
  std::vector<double> c = Counts();
  for (int t = 0; t < 30; ++t) ASSERT_OK(engine_->Ingest("f", Input(t, c)));
  request.path_steps = 4;
  ASSERT_OK_AND_ASSIGN(ForecastResult r, engine_->Forecast("f", request));
  EXPECT_EQ(r.as_of_step, 29);
  ASSERT_EQ(r.layers.size(), static_cast<size_t>(kLayers));
  for (const LayerForecast& lf : r.layers) {
    ASSERT_EQ(lf.horizons.size(), 2u);
    EXPECT_EQ(lf.horizons[0].horizon, 1);
    EXPECT_EQ(lf.horizons[1].horizon, 5);
    for (const HorizonForecast& hf : lf.horizons) {
      ASSERT_EQ(hf.mean.size(), static_cast<size_t>(kExperts));
      double sum = 0;
      for (double v : hf.mean) sum += v;
      EXPECT_NEAR(sum, 1.0, 1e-12);
      // Constant counts: every predictor forecasts the observed shares.
      const int l = lf.layer;
      const double total = 4 * (1 + l) + 6;
      // The history ring keeps proportions as float (7 digits).
      EXPECT_NEAR(hf.mean[3], (4 + l) / total, 1e-7);
      EXPECT_EQ(hf.lower.size(), static_cast<size_t>(kExperts));
    }
    EXPECT_EQ(lf.path.size(), static_cast<size_t>(4 * kExperts));
    EXPECT_FALSE(lf.path_predictor.empty());
  }
  request = ForecastRequest();
  request.predictor = "ema(0.9)";
  request.horizons = {7};
  request.layers = {2};
  ASSERT_OK_AND_ASSIGN(r, engine_->Forecast("f", request));
  ASSERT_EQ(r.layers.size(), 1u);
  EXPECT_EQ(r.layers[0].layer, 2);
  EXPECT_EQ(r.layers[0].horizons[0].predictor, "ema(0.9)");
}

TEST_F(EngineTest, ForecastRejectsBadRequests) {
  ASSERT_OK(engine_->RegisterJob(Spec("f")));
  std::vector<double> c = Counts();
  ASSERT_OK(engine_->Ingest("f", Input(0, c)));
  struct Case {
    void (*mutate)(ForecastRequest&);
    absl::StatusCode code;
    const char* phrase;
  };
  const Case cases[] = {
      {[](ForecastRequest& r) { r.horizons = {0}; },
       absl::StatusCode::kInvalidArgument, "horizon 0"},
      {[](ForecastRequest& r) { r.interval_level = 1.5; },
       absl::StatusCode::kInvalidArgument, "interval_level 1.5"},
      {[](ForecastRequest& r) { r.path_steps = 5000; },
       absl::StatusCode::kInvalidArgument, "path_steps 5000"},
      {[](ForecastRequest& r) { r.layers = {7}; },
       absl::StatusCode::kInvalidArgument, "layer 7 is out of range"},
      {[](ForecastRequest& r) { r.predictor = "arima(1,1,1)"; },
       absl::StatusCode::kNotFound, "predictor 'arima(1,1,1)'"},
  };
  for (const Case& c : cases) {
    ForecastRequest r;
    c.mutate(r);
    EXPECT_THAT(engine_->Forecast("f", r), StatusIs(c.code, HasSubstr(c.phrase)))
        << c.phrase;
  }
  EXPECT_THAT(engine_->Forecast("nope", ForecastRequest()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'nope'")));
  JobSpec off = Spec("off");
  off.forecasting = false;
  ASSERT_OK(engine_->RegisterJob(off));
  ASSERT_OK(engine_->Ingest("off", Input(0, c)));
  EXPECT_THAT(engine_->Forecast("off", ForecastRequest()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("forecasting off")));
  EXPECT_THAT(engine_->GetState("off"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("forecasting off")));
  EXPECT_THAT(engine_->ReadEvents("f", 0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_events")));
}

TEST_F(EngineTest, StateChangesAreEventsInOrder) {
  JobSpec spec = Spec("s");
  spec.num_layers = 2;
  ASSERT_OK(engine_->RegisterJob(spec));
  std::mt19937 rng(9);
  std::poisson_distribution<int> noise(200);
  std::vector<double> c(2 * kExperts);
  // Steady load (both layers become stable), then layer 1's load trends.
  for (int t = 0; t < 600; ++t) {
    for (int e = 0; e < 2 * kExperts; ++e) c[e] = noise(rng);
    if (t >= 400) c[kExperts] += 20.0 * (t - 400);  // layer 1, expert 0 grows
    ASSERT_OK(engine_->Ingest("s", Input(t, c)));
  }
  ASSERT_OK_AND_ASSIGN(std::vector<Event> all, engine_->ReadEvents("s", 0, 100));
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i].seq, i + 1);
  // The trend is also a load shift of layer 1 (and so of the job: half of
  // its two layers), reported after it starts.
  std::vector<Event> events;  // the state changes
  bool layer1_shift = false;
  for (const Event& e : all) {
    if (e.kind == EventKind::kStateChange) events.push_back(e);
    if (e.kind == EventKind::kShift) {
      EXPECT_GT(e.step, 400);
      layer1_shift |= e.layer == 1;
    }
  }
  EXPECT_TRUE(layer1_shift);
  // Layer 0 and 1 turn stable at the first decision, then the job; then
  // layer 1 turns transient (the job, at fraction 0.5, stays stable).
  ASSERT_EQ(events.size(), 4u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(events[i].seq, i + 1);
  EXPECT_EQ(events[0].layer, 0);
  EXPECT_EQ(events[0].to, "stable");
  EXPECT_EQ(events[1].layer, 1);
  EXPECT_EQ(events[2].layer, -1);
  EXPECT_EQ(events[2].to, "stable");
  EXPECT_EQ(events[3].layer, 1);
  EXPECT_EQ(events[3].from, "stable");
  EXPECT_EQ(events[3].to, "transient");
  EXPECT_GT(events[3].step, 400);
  EXPECT_GT(events[3].value, options_.state.enter_threshold);
  ASSERT_OK_AND_ASSIGN(std::vector<Event> later, engine_->ReadEvents("s", 2, 100));
  ASSERT_EQ(later.size(), all.size() - 2);
  EXPECT_EQ(later[0].seq, 3);
  ASSERT_OK_AND_ASSIGN(StateReport report, engine_->GetState("s"));
  EXPECT_EQ(report.job_state, LoadState::kStable);
  EXPECT_EQ(report.layers[0].state, LoadState::kStable);
  EXPECT_EQ(report.layers[1].state, LoadState::kTransient);
  EXPECT_EQ(report.as_of_step, 599);
}

// After a layer's shift, sw_avg(100) restarts from the change point: right
// after the event it forecasts the new load, not a blend with the old one
// (EngineOptions::shift.restart_predictors; off, it still averages across).
TEST_F(EngineTest, PredictorsRestartFromTheChangePointOfAShift) {
  for (bool restart : {true, false}) {
    SCOPED_TRACE(restart ? "restart" : "no restart");
    EngineOptions o = options_;
    o.shift.restart_predictors = restart;
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> engine, Engine::Create(o));
    JobSpec spec = Spec("r");
    spec.num_layers = 1;
    spec.predictors = {"sw_avg(100)", "ewm(3000)"};
    ASSERT_OK(engine->RegisterJob(spec));
    std::mt19937 rng(4);
    std::poisson_distribution<int> big(300), small(30);
    std::vector<double> c(kExperts);
    int64_t shift_step = -1;
    for (int t = 0; t < 600 && shift_step < 0; ++t) {
      // Expert 0 carries the load until step 400, expert 3 after.
      for (int e = 0; e < kExperts; ++e) {
        c[e] = (e == (t < 400 ? 0 : 3)) ? big(rng) : small(rng);
      }
      ASSERT_OK(engine->Ingest("r", Input(t, c)));
      ASSERT_OK_AND_ASSIGN(std::vector<Event> events, engine->ReadEvents("r", 0, 100));
      for (const Event& e : events) {
        if (e.kind == EventKind::kShift && e.layer == 0) shift_step = e.step;
      }
    }
    ASSERT_GE(shift_step, 400) << "no shift reported";
    ASSERT_LE(shift_step, 420);
    ForecastRequest r;
    r.horizons = {10};
    r.predictor = "sw_avg(100)";
    ASSERT_OK_AND_ASSIGN(ForecastResult f, engine->Forecast("r", r));
    const std::vector<double>& mean = f.layers[0].horizons[0].mean;
    // The new load: 300 / (300 + 3 x 30) = 0.77 on expert 3.
    if (restart) {
      EXPECT_GT(mean[3], 0.7);
      EXPECT_LT(mean[0], 0.15);
    } else {
      EXPECT_LT(mean[3], 0.3);
      EXPECT_GT(mean[0], 0.5);
    }
    // ewm(3000) (memory above restart_max_memory) keeps the old load.
    r.predictor = "ewm(3000)";
    ASSERT_OK_AND_ASSIGN(f, engine->Forecast("r", r));
    EXPECT_GT(f.layers[0].horizons[0].mean[0], 0.5);
    // GetState counts it (the one layer is the job's majority), and a
    // restored job keeps the counts.
    ASSERT_OK_AND_ASSIGN(StateReport state, engine->GetState("r"));
    ASSERT_EQ(state.layer_shifts.size(), 1u);
    for (const ShiftSummary& sum : {state.layer_shifts[0], state.job_shifts}) {
      EXPECT_EQ(sum.shifts, 1);
      EXPECT_EQ(sum.last_step, shift_step);
      ASSERT_TRUE(sum.last_change_step.has_value());
      EXPECT_NEAR(static_cast<double>(*sum.last_change_step), 400, 2);
      EXPECT_GT(sum.last_size, 0.8);
    }
    ASSERT_OK_AND_ASSIGN(std::string bytes, engine->SnapshotJob("r"));
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> restored, Engine::Create(o));
    ASSERT_OK(restored->RestoreJob(bytes));
    ASSERT_OK_AND_ASSIGN(StateReport again, restored->GetState("r"));
    EXPECT_EQ(again.job_shifts.shifts, 1);
    EXPECT_EQ(again.layer_shifts[0].last_change_step, state.layer_shifts[0].last_change_step);
    EXPECT_EQ(again.layer_shifts[0].last_size, state.layer_shifts[0].last_size);
  }
}

// ---- Health ----

TEST_F(EngineTest, HealthReportsWindowsEAndDeadExpertEvents) {
  JobSpec spec = Spec("h");
  spec.hyper.router_temperature = 1.0;
  spec.hyper.entropy_weight = 0.1;
  spec.hyper.oracle_weight = 0.2;
  spec.hyper.balance_weight = 0.2;
  ASSERT_OK(engine_->RegisterJob(spec));
  EXPECT_THAT(engine_->Health("h"), StatusIs(absl::StatusCode::kFailedPrecondition,
                                             HasSubstr("no health window")));
  // Expert 3 of every layer gets nothing: dead after 3 windows of 100 steps.
  std::vector<double> c(kLayers * kExperts, 50.0);
  std::vector<double> z(kLayers * kExperts, 0.0);
  for (int l = 0; l < kLayers; ++l) {
    c[l * kExperts + 3] = 0;
    for (int e = 0; e < kExperts; ++e) z[l * kExperts + e] = 0.3 * e;
  }
  for (int t = 0; t < 300; ++t) {
    StepInput in = Input(t, c);
    in.router_logits = z;
    ASSERT_OK(engine_->Ingest("h", in));
  }
  ASSERT_OK_AND_ASSIGN(HealthReport r, engine_->Health("h"));
  EXPECT_EQ(r.as_of_step, 299);
  ASSERT_TRUE(r.e.value.has_value());
  EXPECT_NEAR(*r.e.value, 1.0 * 0.1 / 0.4, 1e-12);
  EXPECT_TRUE(r.e.below_threshold);
  ASSERT_EQ(r.layers.size(), static_cast<size_t>(kLayers));
  EXPECT_EQ(r.layers[0].step, 299);
  EXPECT_TRUE(r.layers[0].gamma.has_value()) << r.layers[0].gamma_status;
  EXPECT_THAT(r.layers[1].dead_experts, ElementsAre(3));
  ASSERT_OK_AND_ASSIGN(std::vector<Event> events, engine_->ReadEvents("h", 0, 100));
  int dead = 0;
  for (const Event& e : events) {
    if (e.kind != EventKind::kExpertDead) continue;
    ++dead;
    EXPECT_EQ(e.value, 3);
    EXPECT_EQ(e.step, 299);
    EXPECT_EQ(e.to, "dead");
    EXPECT_THAT(e.detail, HasSubstr("expert 3"));
  }
  EXPECT_EQ(dead, kLayers);

  JobSpec off = Spec("off");
  off.health = false;
  ASSERT_OK(engine_->RegisterJob(off));
  EXPECT_THAT(engine_->Health("off"), StatusIs(absl::StatusCode::kFailedPrecondition,
                                               HasSubstr("health off")));
  EXPECT_THAT(engine_->Health("none"), StatusIs(absl::StatusCode::kNotFound,
                                                HasSubstr("'none'")));
}

// ---- Placement ----

TEST_F(EngineTest, RecommendPlacementPlansFromForecasts) {
  JobSpec spec = Spec("p");
  spec.num_layers = 2;
  spec.num_experts = 8;
  ASSERT_OK(engine_->RegisterJob(spec));
  std::mt19937 rng(4);
  std::vector<double> c(16);
  for (int t = 0; t < 400; ++t) {
    for (int l = 0; l < 2; ++l) {
      for (int e = 0; e < 8; ++e) {
        std::poisson_distribution<int> d(100.0 * (e + 1) / (l + 1));
        c[l * 8 + e] = d(rng);
      }
    }
    ASSERT_OK(engine_->Ingest("p", Input(t, c)));
  }
  PlacementRequest request;
  request.num_slots = 12;
  request.num_gpus = 4;
  request.horizon = 50;
  ASSERT_OK_AND_ASSIGN(PlacementRecommendation r,
                       engine_->RecommendPlacement("p", request));
  EXPECT_EQ(r.as_of_step, 399);
  EXPECT_EQ(r.job_state, LoadState::kStable);
  EXPECT_TRUE(r.upper_bound_layers.empty());
  ASSERT_EQ(r.loads.size(), 16u);
  PlacementProblem problem;
  problem.num_layers = 2;
  problem.num_experts = 8;
  problem.loads = r.loads;
  problem.num_slots = 12;
  problem.num_gpus = 4;
  EXPECT_OK(CheckPlan(problem, PlacementMode::kDefault, r.plan));
  // The heaviest expert of layer 0 (e = 7) gets the extra replicas.
  EXPECT_GE(r.plan.logcnt[7], 2);
  EXPECT_FALSE(r.decision.has_value());

  // With the current placement (the plan itself) and a migration model:
  // nothing to move, so hold.
  request.current_phy2log = r.plan.phy2log;
  MigrationModel model;
  model.intra_node_bandwidth = 1e11;
  model.inter_node_bandwidth = 2e10;
  model.bytes_per_expert = 4e7;
  model.tokens_per_step = 8192;
  model.time_per_token_s = 1e-6;
  model.horizon_steps = 1000;
  request.migration = model;
  ASSERT_OK_AND_ASSIGN(r, engine_->RecommendPlacement("p", request));
  ASSERT_TRUE(r.current.has_value());
  ASSERT_TRUE(r.decision.has_value());
  EXPECT_FALSE(r.decision->rebalance);
  EXPECT_EQ(r.plan.moved_experts, 0);

  // From a poor placement (the four lightest experts duplicated), the plan
  // moves only what pays: nothing when moves are dear, and then the decision
  // holds; some when they are cheap, and then it rebalances.
  std::vector<int32_t> poor;
  for (int l = 0; l < 2; ++l) {
    for (int s = 0; s < 12; ++s) poor.push_back(s < 8 ? s : s - 8);
  }
  request.current_phy2log = poor;
  model.bytes_per_expert = 1e15;  // hours per move
  request.migration = model;
  ASSERT_OK_AND_ASSIGN(r, engine_->RecommendPlacement("p", request));
  ASSERT_TRUE(r.decision.has_value());
  EXPECT_EQ(r.plan.moved_experts, 0);
  EXPECT_FALSE(r.decision->rebalance);
  model.bytes_per_expert = 1e3;  // nearly free
  request.migration = model;
  ASSERT_OK_AND_ASSIGN(r, engine_->RecommendPlacement("p", request));
  ASSERT_TRUE(r.decision.has_value());
  EXPECT_GT(r.plan.moved_experts, 0);
  EXPECT_TRUE(r.decision->rebalance);
  EXPECT_GT(r.plan.balancedness, r.current->balancedness);

  request = PlacementRequest();
  request.num_slots = 10;  // not a multiple of 4 GPUs
  request.num_gpus = 4;
  EXPECT_THAT(engine_->RecommendPlacement("p", request),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("10")));
  request.num_slots = 12;
  request.horizon = 0;
  EXPECT_THAT(engine_->RecommendPlacement("p", request),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("horizon 0")));
  EXPECT_THAT(engine_->RecommendPlacement("none", PlacementRequest()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'none'")));
}

// ---- Concurrency ----

TEST_F(EngineTest, ForecastScoresAverageOverLayers) {
  JobSpec spec = Spec("f");
  spec.predictors = {"last_value", "sw_avg(10)"};
  spec.horizons = {1, 5};
  ASSERT_OK(engine_->RegisterJob(spec));
  ASSERT_OK_AND_ASSIGN(std::vector<ForecastScore> before, engine_->ForecastScores("f"));
  for (const ForecastScore& s : before) {
    EXPECT_EQ(s.layers_scored, 0) << s.predictor;
    EXPECT_TRUE(std::isnan(s.recent_l1));
  }
  // Alternating loads: last_value is always wrong by the full swing at
  // h = 1, the 10-step average is close.
  std::vector<double> a = Counts(1), b = Counts(1);
  for (int l = 0; l < kLayers; ++l) b[l * kExperts] += 40;
  for (int t = 0; t < 60; ++t) ASSERT_OK(engine_->Ingest("f", Input(t, t % 2 ? a : b)).status());
  ASSERT_OK_AND_ASSIGN(std::vector<ForecastScore> scores, engine_->ForecastScores("f"));
  // auto and the two predictors, at two horizons each.
  ASSERT_EQ(scores.size(), 6u);
  double last_h1 = -1, avg_h1 = -1;
  for (const ForecastScore& s : scores) {
    EXPECT_EQ(s.layers_scored, kLayers) << s.predictor << " h=" << s.horizon;
    EXPECT_GT(s.scored, 0);
    EXPECT_GE(s.recent_l1, 0);
    if (s.horizon == 1 && s.predictor == "last_value") last_h1 = s.recent_l1;
    if (s.horizon == 1 && s.predictor == "sw_avg(10)") avg_h1 = s.recent_l1;
  }
  EXPECT_GT(last_h1, 1.5 * avg_h1);  // about 2x: the full swing vs half of it
  EXPECT_THAT(engine_->ForecastScores("nope"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("nope")));
  JobSpec off = Spec("off");
  off.forecasting = false;
  ASSERT_OK(engine_->RegisterJob(off));
  EXPECT_THAT(engine_->ForecastScores("off"),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("forecasting off")));
}

TEST(EngineExpiryTest, IdleJobsExpireAndActiveOnesStay) {
  FakeClock clock;
  EngineOptions options;
  options.clock = &clock;
  options.idle_job_expiry = absl::Seconds(60);
  options.max_jobs = 2;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> engine, Engine::Create(options));
  ASSERT_OK(engine->RegisterJob(Spec("fed")));
  ASSERT_OK(engine->RegisterJob(Spec("idle")));
  // The job limit is full until expiry frees a slot.
  EXPECT_THAT(engine->RegisterJob(Spec("third")),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("max_jobs")));
  const std::vector<double> c = Counts();
  for (int t = 0; t < 4; ++t) {
    clock.Advance(absl::Seconds(20));
    ASSERT_OK(engine->Ingest("fed", Input(t, c)).status());
    // Reading a job is not activity.
    ASSERT_OK(engine->GetJobInfo("idle").status());
    const std::vector<std::string> expired = engine->ExpireIdleJobs();
    if (t < 3) {  // idle for 20, 40, exactly 60 s: kept
      EXPECT_THAT(expired, IsEmpty()) << "t = " << t;
    } else {      // 80 s: more than the limit
      EXPECT_THAT(expired, ElementsAre("idle"));
    }
  }
  EXPECT_THAT(engine->ListJobs(), ElementsAre("fed"));
  ASSERT_OK_AND_ASSIGN(JobInfo info, engine->GetJobInfo("fed"));
  EXPECT_EQ(info.idle, absl::ZeroDuration());
  clock.Advance(absl::Seconds(30));
  ASSERT_OK_AND_ASSIGN(info, engine->GetJobInfo("fed"));
  EXPECT_EQ(info.idle, absl::Seconds(30));
  EXPECT_OK(engine->RegisterJob(Spec("third")));  // the slot was freed
  clock.Advance(absl::Seconds(31));
  EXPECT_THAT(engine->ExpireIdleJobs(), ElementsAre("fed"));
  EXPECT_THAT(engine->Ingest("fed", Input(9, c)),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'fed'")));
}

TEST(EngineExpiryTest, NeverByDefaultAndRejectsNonPositive) {
  FakeClock clock;
  EngineOptions options;
  options.clock = &clock;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> engine, Engine::Create(options));
  ASSERT_OK(engine->RegisterJob(Spec("a")));
  clock.Advance(absl::Hours(24 * 365));
  EXPECT_THAT(engine->ExpireIdleJobs(), IsEmpty());
  EXPECT_THAT(engine->ListJobs(), ElementsAre("a"));
  options.idle_job_expiry = absl::ZeroDuration();
  EXPECT_THAT(Engine::Create(options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("idle_job_expiry")));
}

TEST(EngineConcurrencyTest, ParallelProducersOnDifferentJobs) {
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(EngineOptions()));
  constexpr int kJobs = 8;
  constexpr int kSteps = 300;
  for (int j = 0; j < kJobs; ++j) {
    ASSERT_OK(engine->RegisterJob(Spec(absl::StrCat("job", j))));
  }
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int j = 0; j < kJobs; ++j) {
    threads.emplace_back([&, j] {
      const std::string id = absl::StrCat("job", j);
      std::vector<double> c = Counts(j + 1);
      for (int t = 0; t < kSteps; ++t) {
        if (!engine->Ingest(id, Input(t, c)).ok()) ++errors;
      }
    });
  }
  // A reader and a registry writer run at the same time.
  threads.emplace_back([&] {
    for (int i = 0; i < 200; ++i) {
      for (const std::string& id : engine->ListJobs()) {
        if (!engine->GetJobInfo(id).ok()) ++errors;
      }
      const std::string tmp = absl::StrCat("tmp", i);
      if (!engine->RegisterJob(Spec(tmp)).ok()) ++errors;
      if (!engine->DeleteJob(tmp).ok()) ++errors;
    }
  });
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  for (int j = 0; j < kJobs; ++j) {
    const std::string id = absl::StrCat("job", j);
    JobInfo info = engine->GetJobInfo(id).value();
    EXPECT_EQ(info.committed_steps, kSteps);
    ASSERT_OK(engine->VisitHistory(id, 0, [&](const LayerHistory& h) {
      EXPECT_DOUBLE_EQ(h.totals().counts[0], kSteps * (j + 1.0));
    }));
  }
}

TEST(EngineConcurrencyTest, ParallelSourcesOfOneJobSumExactly) {
  ASSERT_OK_AND_ASSIGN(auto engine, Engine::Create(EngineOptions()));
  constexpr int kSources = 4;
  constexpr int kSteps = 400;
  ASSERT_OK(engine->RegisterJob(Spec("m", kSources)));
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int s = 0; s < kSources; ++s) {
    threads.emplace_back([&, s] {
      std::vector<double> c = Counts(s + 1);
      for (int t = 0; t < kSteps; ++t) {
        // Back off when too far ahead of the slowest source.
        while (true) {
          absl::StatusOr<IngestResult> r = engine->Ingest("m", Input(t, c, s));
          if (r.ok()) break;
          if (r.status().code() != absl::StatusCode::kResourceExhausted) {
            ++errors;
            break;
          }
          std::this_thread::yield();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  JobInfo info = engine->GetJobInfo("m").value();
  EXPECT_EQ(info.committed_steps, kSteps);
  EXPECT_EQ(info.incomplete_steps, 0);
  EXPECT_EQ(info.pending_steps, 0);
  ASSERT_OK(engine->VisitHistory("m", 0, [&](const LayerHistory& h) {
    // Sum over sources of (s + 1) for expert 0 = 1+2+3+4 = 10 per step.
    EXPECT_DOUBLE_EQ(h.totals().counts[0], kSteps * 10.0);
  }));
}

}  // namespace
}  // namespace moecast
