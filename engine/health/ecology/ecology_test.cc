#include "engine/health/ecology/ecology.h"

#include <cmath>
#include <limits>
#include <vector>

#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------
// E

TEST(ComputeETest, FiniteValueAtAndAboveTheThreshold) {
  ASSERT_OK_AND_ASSIGN(EParameter e, ComputeE(1.0, 1.0, 1.0, 1.0));
  EXPECT_EQ(e.kind, EKind::kFinite);
  ASSERT_TRUE(e.value.has_value());
  EXPECT_DOUBLE_EQ(*e.value, 0.5);
  EXPECT_FALSE(e.below_threshold);  // E >= 0.5 is fine
  EXPECT_THAT(e.missing, IsEmpty());
  EXPECT_THAT(e.message, HasSubstr("at or above 0.5"));

  ASSERT_OK_AND_ASSIGN(e, ComputeE(2.0, 3.0, 1.0, 0.5));
  EXPECT_DOUBLE_EQ(*e.value, 4.0);
  EXPECT_FALSE(e.below_threshold);
}

TEST(ComputeETest, WarnsBelowTheThreshold) {
  ASSERT_OK_AND_ASSIGN(EParameter e, ComputeE(1.0, 0.5, 1.5, 0.5));
  EXPECT_EQ(e.kind, EKind::kFinite);
  EXPECT_DOUBLE_EQ(*e.value, 0.25);
  EXPECT_TRUE(e.below_threshold);
  EXPECT_DOUBLE_EQ(e.warn_below, 0.5);
  EXPECT_THAT(e.message, HasSubstr("below 0.5"));
  EXPECT_THAT(e.message, HasSubstr("dead experts"));

  // A configurable threshold (harder tasks need more).
  ASSERT_OK_AND_ASSIGN(e, ComputeE(1.0, 0.5, 1.5, 0.5, /*warn_below=*/0.2));
  EXPECT_FALSE(e.below_threshold);
  ASSERT_OK_AND_ASSIGN(e, ComputeE(1.0, 1.0, 1.0, 0.0, /*warn_below=*/2.0));
  EXPECT_DOUBLE_EQ(*e.value, 1.0);
  EXPECT_TRUE(e.below_threshold);
}

TEST(ComputeETest, ZeroTemperatureOrEntropyWeightGivesZero) {
  ASSERT_OK_AND_ASSIGN(EParameter e, ComputeE(0.0, 1.0, 1.0, 1.0));
  EXPECT_EQ(e.kind, EKind::kFinite);
  EXPECT_DOUBLE_EQ(*e.value, 0.0);
  EXPECT_TRUE(e.below_threshold);
  ASSERT_OK_AND_ASSIGN(e, ComputeE(1.0, 0.0, 0.0, 0.1));
  EXPECT_DOUBLE_EQ(*e.value, 0.0);
}

TEST(ComputeETest, NoOracleOrBalanceWeightIsUnbounded) {
  ASSERT_OK_AND_ASSIGN(EParameter e, ComputeE(1.0, 0.01, 0.0, 0.0));
  EXPECT_EQ(e.kind, EKind::kUnbounded);
  EXPECT_FALSE(e.value.has_value());
  EXPECT_FALSE(e.below_threshold);
  EXPECT_THAT(e.message, HasSubstr("unbounded"));
  EXPECT_THAT(e.message, HasSubstr("O+B = 0"));
  EXPECT_EQ(EKindName(e.kind), "unbounded");
}

TEST(ComputeETest, ZeroOverZeroIsIndeterminate) {
  ASSERT_OK_AND_ASSIGN(EParameter e, ComputeE(1.0, 0.0, 0.0, 0.0));
  EXPECT_EQ(e.kind, EKind::kIndeterminate);
  EXPECT_FALSE(e.value.has_value());
  EXPECT_FALSE(e.below_threshold);
  EXPECT_THAT(e.message, HasSubstr("0/0"));
  ASSERT_OK_AND_ASSIGN(e, ComputeE(0.0, 0.0, 0.0, 0.0));
  EXPECT_EQ(e.kind, EKind::kIndeterminate);
}

TEST(ComputeETest, OverflowIsUnbounded) {
  ASSERT_OK_AND_ASSIGN(EParameter e, ComputeE(1e200, 1e200, 1.0, 0.0));
  EXPECT_EQ(e.kind, EKind::kUnbounded);
  EXPECT_FALSE(e.value.has_value());
}

TEST(ComputeETest, MissingInputsAreListedInOrder) {
  ASSERT_OK_AND_ASSIGN(EParameter e,
                       ComputeE(std::nullopt, 1.0, 1.0, std::nullopt));
  EXPECT_EQ(e.kind, EKind::kMissing);
  EXPECT_FALSE(e.value.has_value());
  EXPECT_FALSE(e.below_threshold);
  EXPECT_THAT(e.missing, ElementsAre("T", "B"));
  EXPECT_THAT(e.message, HasSubstr("T, B are not declared"));

  ASSERT_OK_AND_ASSIGN(e, ComputeE(1.0, 1.0, std::nullopt, 0.0));
  EXPECT_THAT(e.missing, ElementsAre("O"));
  EXPECT_THAT(e.message, HasSubstr("O is not declared"));

  ASSERT_OK_AND_ASSIGN(
      e, ComputeE(std::nullopt, std::nullopt, std::nullopt, std::nullopt));
  EXPECT_THAT(e.missing, ElementsAre("T", "H", "O", "B"));
}

TEST(ComputeETest, RejectsNegativeAndNonFiniteInputs) {
  EXPECT_THAT(ComputeE(-1.0, 1.0, 1.0, 1.0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("T (router temperature) = -1 must be >= 0")));
  EXPECT_THAT(
      ComputeE(1.0, -0.5, 1.0, 1.0),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("H (routing-entropy weight) = -0.5 must be >= 0")));
  EXPECT_THAT(ComputeE(1.0, 1.0, kNaN, 1.0),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("O (oracle weight) = nan must be finite")));
  EXPECT_THAT(ComputeE(1.0, 1.0, 1.0, kInf),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("B (balance weight) = inf must be finite")));
  // Validation applies to the declared inputs even when others are missing.
  EXPECT_THAT(ComputeE(std::nullopt, 1.0, -2.0, std::nullopt),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("O ")));
  EXPECT_THAT(ComputeE(1.0, 1.0, 1.0, 1.0, -0.1),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("warn_below = -0.1")));
  EXPECT_THAT(
      ComputeE(1.0, 1.0, 1.0, 1.0, kNaN),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("warn_below")));
}

// ---------------------------------------------------------------------------
// Dead experts

TEST(DeadExpertOptionsTest, DefaultsAreValidAndMatchTheDesign) {
  DeadExpertOptions o;
  EXPECT_OK(ValidateDeadExpertOptions(o));
  EXPECT_DOUBLE_EQ(o.alpha_dead, 0.16);
  EXPECT_EQ(o.window_steps, 100);
  EXPECT_EQ(o.dead_windows, 3);
  EXPECT_DOUBLE_EQ(o.min_assignments_per_expert_factor, 20);
  EXPECT_DOUBLE_EQ(o.revive_factor, 1.5);
  EXPECT_EQ(o.revive_windows, 2);
  EXPECT_EQ(o.sparse_windows, SparseWindowPolicy::kReset);
}

TEST(DeadExpertOptionsTest, RejectsBadOptions) {
  auto bad = [](auto mutate, const char* field) {
    DeadExpertOptions o;
    mutate(o);
    EXPECT_THAT(ValidateDeadExpertOptions(o),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(field)))
        << field;
    EXPECT_THAT(DeadExpertTracker::Create(8, o),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(field)));
  };
  bad([](DeadExpertOptions& o) { o.alpha_dead = 0; }, "alpha_dead");
  bad([](DeadExpertOptions& o) { o.alpha_dead = 1; }, "alpha_dead");
  bad([](DeadExpertOptions& o) { o.alpha_dead = kNaN; }, "alpha_dead");
  bad([](DeadExpertOptions& o) { o.window_steps = 0; }, "window_steps");
  bad([](DeadExpertOptions& o) { o.dead_windows = 0; }, "dead_windows");
  bad([](DeadExpertOptions& o) { o.min_assignments_per_expert_factor = -1; },
      "min_assignments_per_expert_factor");
  bad([](DeadExpertOptions& o) { o.min_assignments_per_expert_factor = kInf; },
      "min_assignments_per_expert_factor");
  bad([](DeadExpertOptions& o) { o.revive_factor = 0.9; }, "revive_factor");
  bad([](DeadExpertOptions& o) { o.revive_factor = kNaN; }, "revive_factor");
  bad([](DeadExpertOptions& o) { o.revive_windows = 0; }, "revive_windows");
  bad(
      [](DeadExpertOptions& o) {
        o.sparse_windows = static_cast<SparseWindowPolicy>(7);
      },
      "sparse_windows");
  EXPECT_THAT(DeadExpertTracker::Create(0, DeadExpertOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("num_experts = 0")));
}

// One step of M = 4 experts with 10 assignments each except `expert`, which
// gets `count`.
std::vector<double> Step(int expert, double count) {
  std::vector<double> c(4, 10.0);
  c[expert] = count;
  return c;
}

// Feeds `window_steps` identical steps; returns the events of the last one
// (the only one that can have any) and checks the others have none.
std::vector<DeadExpertEvent> FeedWindow(DeadExpertTracker& t, int64_t* step,
                                        const std::vector<double>& counts) {
  const int w = t.options().window_steps;
  std::vector<DeadExpertEvent> last;
  for (int i = 0; i < w; ++i) {
    auto r = t.ObserveStep(++*step, counts);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    if (i + 1 < w) {
      EXPECT_THAT(*r, IsEmpty()) << "step " << *step;
    } else {
      last = *r;
    }
  }
  return last;
}

TEST(DeadExpertTrackerTest, DiesAfterExactlyThreeQualifyingWindows) {
  ASSERT_OK_AND_ASSIGN(DeadExpertTracker t,
                       DeadExpertTracker::Create(4, DeadExpertOptions()));
  EXPECT_DOUBLE_EQ(t.death_threshold(), 0.04);
  EXPECT_DOUBLE_EQ(t.revival_threshold(), 0.06);
  int64_t step = 0;
  // Window 1 (steps 1..100): everyone at 25%.
  EXPECT_THAT(FeedWindow(t, &step, Step(2, 10)), IsEmpty());
  // Expert 2's share drops to ~0 (0.1 of 30.1 per step: 0.33%).
  EXPECT_THAT(FeedWindow(t, &step, Step(2, 0.1)), IsEmpty());  // ends 200
  EXPECT_EQ(t.streak(2), 1);
  EXPECT_THAT(FeedWindow(t, &step, Step(2, 0.1)), IsEmpty());  // ends 300
  EXPECT_EQ(t.streak(2), 2);
  EXPECT_FALSE(t.is_dead(2));
  std::vector<DeadExpertEvent> ev = FeedWindow(t, &step, Step(2, 0.1));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, DeadExpertEventType::kDeath);
  EXPECT_EQ(ev[0].step, 400);
  EXPECT_EQ(ev[0].expert, 2);
  EXPECT_NEAR(ev[0].share, 0.1 / 30.1, 1e-12);
  EXPECT_DOUBLE_EQ(ev[0].threshold, 0.04);
  EXPECT_EQ(ev[0].streak_start_step, 200);
  EXPECT_TRUE(t.is_dead(2));
  EXPECT_THAT(t.dead_experts(), ElementsAre(2));
  EXPECT_EQ(t.num_dead(), 1);
  // Staying at ~0 raises no further event.
  EXPECT_THAT(FeedWindow(t, &step, Step(2, 0.1)), IsEmpty());
  EXPECT_EQ(t.windows_evaluated(), 5);
  EXPECT_EQ(t.qualifying_windows(), 5);
  ASSERT_TRUE(t.last_window().has_value());
  EXPECT_EQ(t.last_window()->last_step, 500);
  EXPECT_EQ(t.last_window()->steps, 100);
  EXPECT_NEAR(t.last_window()->assignments, 3010, 1e-9);
  EXPECT_TRUE(t.last_window()->qualifying);
  EXPECT_EQ(t.pending_steps(), 0);
}

TEST(DeadExpertTrackerTest, AWindowAtOrAboveTheThresholdBreaksTheStreak) {
  DeadExpertTracker t(4, DeadExpertOptions());
  int64_t step = 0;
  FeedWindow(t, &step, Step(1, 0));
  FeedWindow(t, &step, Step(1, 0));
  // 2 of 32 = 6.25% > 4%: not below.
  EXPECT_THAT(FeedWindow(t, &step, Step(1, 2)), IsEmpty());
  EXPECT_EQ(t.streak(1), 0);
  FeedWindow(t, &step, Step(1, 0));
  FeedWindow(t, &step, Step(1, 0));
  std::vector<DeadExpertEvent> ev = FeedWindow(t, &step, Step(1, 0));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].step, 600);
  EXPECT_EQ(ev[0].streak_start_step, 400);
  EXPECT_DOUBLE_EQ(ev[0].share, 0.0);
}

// Windows given already aggregated. M = 4, default options: a window
// qualifies with >= 80 assignments; the death threshold is 4%, revival 6%.
std::vector<double> Window(double expert0, double others_each) {
  return {expert0, others_each, others_each, others_each};
}

TEST(DeadExpertTrackerTest, SparseWindowsResetTheStreakByDefault) {
  DeadExpertTracker t(4, DeadExpertOptions());
  auto obs = [&](int64_t last, std::vector<double> c) {
    auto r = t.ObserveWindow(last, c, 100);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<DeadExpertEvent>{};
  };
  EXPECT_THAT(obs(100, Window(0, 100)), IsEmpty());
  EXPECT_THAT(obs(200, Window(0, 100)), IsEmpty());
  EXPECT_EQ(t.streak(0), 2);
  // 79 assignments < 20 * 4: does not count, and breaks the streak.
  EXPECT_THAT(obs(300, {0, 26, 26, 27}), IsEmpty());
  EXPECT_FALSE(t.last_window()->qualifying);
  EXPECT_EQ(t.streak(0), 0);
  EXPECT_THAT(obs(400, Window(0, 100)), IsEmpty());
  EXPECT_THAT(obs(500, Window(0, 100)), IsEmpty());
  std::vector<DeadExpertEvent> ev = obs(600, Window(0, 100));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].step, 600);
  EXPECT_EQ(ev[0].streak_start_step, 400);
  EXPECT_EQ(t.windows_evaluated(), 6);
  EXPECT_EQ(t.qualifying_windows(), 5);
}

TEST(DeadExpertTrackerTest, SparseWindowsCanBeSkipped) {
  DeadExpertOptions o;
  o.sparse_windows = SparseWindowPolicy::kSkip;
  DeadExpertTracker t(4, o);
  ASSERT_OK(t.ObserveWindow(100, Window(0, 100), 100));
  ASSERT_OK(t.ObserveWindow(200, Window(0, 100), 100));
  // Sparse: the streak stays at 2 and does not advance.
  ASSERT_OK_AND_ASSIGN(auto ev, t.ObserveWindow(300, {0, 26, 26, 27}, 100));
  EXPECT_THAT(ev, IsEmpty());
  EXPECT_EQ(t.streak(0), 2);
  ASSERT_OK_AND_ASSIGN(ev, t.ObserveWindow(400, Window(0, 100), 100));
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].type, DeadExpertEventType::kDeath);
  EXPECT_EQ(ev[0].step, 400);
  EXPECT_EQ(ev[0].streak_start_step, 100);
}

TEST(DeadExpertTrackerTest, AnEmptyWindowNeverQualifies) {
  DeadExpertOptions o;
  o.min_assignments_per_expert_factor = 0;
  o.dead_windows = 1;
  DeadExpertTracker t(4, o);
  ASSERT_OK_AND_ASSIGN(auto ev, t.ObserveWindow(10, {0, 0, 0, 0}, 10));
  EXPECT_THAT(ev, IsEmpty());
  EXPECT_FALSE(t.last_window()->qualifying);
  EXPECT_THAT(t.last_window()->shares, IsEmpty());
  // With factor 0 a single assignment qualifies.
  ASSERT_OK_AND_ASSIGN(ev, t.ObserveWindow(20, {0, 1, 0, 0}, 10));
  EXPECT_EQ(ev.size(), 3u);  // experts 0, 2, 3 die (dead_windows = 1)
}

TEST(DeadExpertTrackerTest, RevivesAfterTwoWindowsAboveOneAndAHalfTimes) {
  DeadExpertTracker t(4, DeadExpertOptions());
  std::vector<DeadExpertEvent> all;
  auto obs = [&](int64_t last, std::vector<double> c) {
    auto r = t.ObserveWindow(last, c, 100);
    ASSERT_TRUE(r.ok()) << r.status();
    all.insert(all.end(), r->begin(), r->end());
  };
  for (int w = 1; w <= 3; ++w) obs(100 * w, Window(0, 300));  // dies at 300
  ASSERT_TRUE(t.is_dead(0));
  // 5% is above the death threshold (4%) but not the revival one (6%).
  obs(400, Window(45, 285));  // 45 / 900 = 5%
  obs(500, Window(45, 285));
  obs(600, Window(45, 285));
  EXPECT_TRUE(t.is_dead(0));
  EXPECT_EQ(t.streak(0), 0);
  obs(700, Window(90, 270));  // 10%
  EXPECT_EQ(t.streak(0), 1);
  obs(800, Window(45, 285));  // back to 5%: the streak restarts
  EXPECT_EQ(t.streak(0), 0);
  obs(900, Window(90, 270));
  obs(1000, Window(90, 270));  // revives here
  EXPECT_FALSE(t.is_dead(0));
  EXPECT_THAT(t.dead_experts(), IsEmpty());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].type, DeadExpertEventType::kDeath);
  EXPECT_EQ(all[0].step, 300);
  EXPECT_EQ(all[0].streak_start_step, 100);
  EXPECT_EQ(all[1].type, DeadExpertEventType::kRevival);
  EXPECT_EQ(all[1].step, 1000);
  EXPECT_EQ(all[1].expert, 0);
  EXPECT_NEAR(all[1].share, 0.1, 1e-12);
  EXPECT_DOUBLE_EQ(all[1].threshold, 0.06);
  EXPECT_EQ(all[1].streak_start_step, 900);
  EXPECT_EQ(DeadExpertEventTypeName(all[1].type), "revival");
}

TEST(DeadExpertTrackerTest, EventsComeInStepThenExpertOrder) {
  DeadExpertOptions o;
  o.window_steps = 5;
  DeadExpertTracker t(8, o);  // threshold 2%, revival 3%, 160 per window
  std::vector<DeadExpertEvent> all;
  int64_t step = 0;
  auto window = [&](std::vector<double> per_step) {
    for (int i = 0; i < o.window_steps; ++i) {
      step += 2;  // gaps in step numbers are fine
      auto r = t.ObserveStep(step, per_step);
      ASSERT_TRUE(r.ok()) << r.status();
      all.insert(all.end(), r->begin(), r->end());
    }
  };
  const std::vector<double> base = {20, 20, 20, 20, 20, 20, 20, 20};
  std::vector<double> low57 = base;
  low57[5] = 0;
  low57[7] = 0;
  std::vector<double> low3 = low57;
  low3[3] = 0;
  window(low57);  // ends at step 10
  window(low3);   // 20
  window(low3);   // 30: experts 5 and 7 die
  window(low3);   // 40: expert 3 dies
  std::vector<double> back = base;
  back[3] = 0;
  window(back);  // 50
  window(back);  // 60: 5 and 7 revive
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all[0].step, 30);
  EXPECT_EQ(all[0].expert, 5);
  EXPECT_EQ(all[1].step, 30);
  EXPECT_EQ(all[1].expert, 7);
  EXPECT_EQ(all[2].step, 40);
  EXPECT_EQ(all[2].expert, 3);
  EXPECT_EQ(all[2].type, DeadExpertEventType::kDeath);
  EXPECT_EQ(all[3].step, 60);
  EXPECT_EQ(all[3].expert, 5);
  EXPECT_EQ(all[3].type, DeadExpertEventType::kRevival);
  EXPECT_EQ(all[4].expert, 7);
  EXPECT_EQ(all[4].type, DeadExpertEventType::kRevival);
  EXPECT_THAT(t.dead_experts(), ElementsAre(3));
}

TEST(DeadExpertTrackerTest, OneExpertIsNeverDead) {
  DeadExpertOptions o;
  o.window_steps = 1;
  o.dead_windows = 1;
  DeadExpertTracker t(1, o);
  for (int s = 1; s <= 5; ++s) {
    ASSERT_OK_AND_ASSIGN(auto ev, t.ObserveStep(s, {100.0}));
    EXPECT_THAT(ev, IsEmpty());
  }
  EXPECT_EQ(t.num_dead(), 0);
}

TEST(DeadExpertTrackerTest, RejectsBadInputWithoutRecordingIt) {
  DeadExpertTracker t(4, DeadExpertOptions());
  EXPECT_THAT(t.ObserveStep(1, {1, 2, 3}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("3 counts, expected 4")));
  EXPECT_THAT(t.ObserveStep(1, {1, -2, 3, 4}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("expert 1 count = -2")));
  EXPECT_THAT(t.ObserveStep(1, {1, 2, kNaN, 4}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("expert 2 count = nan")));
  EXPECT_EQ(t.pending_steps(), 0);
  ASSERT_OK(t.ObserveStep(5, {1, 2, 3, 4}));
  EXPECT_THAT(t.ObserveStep(5, {1, 2, 3, 4}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("step 5 does not follow")));
  // A partial window is pending: whole windows cannot be mixed in.
  EXPECT_THAT(t.ObserveWindow(200, {1, 2, 3, 4}, 100),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("1 steps of a partial window")));
  DeadExpertTracker w(4, DeadExpertOptions());
  EXPECT_THAT(
      w.ObserveWindow(100, {1, 2, 3, 4}, 0),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("spans 0 steps")));
  ASSERT_OK(w.ObserveWindow(100, {1, 2, 3, 4}, 100));
  EXPECT_THAT(w.ObserveWindow(100, {1, 2, 3, 4}, 100),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("does not follow")));
  EXPECT_EQ(w.windows_evaluated(), 1);
}

// ---------------------------------------------------------------------------
// Imbalance

TEST(ImbalanceTest, HandComputedValues) {
  // mean 2.5, max 4; deviations -1.5 -0.5 0.5 1.5, variance 5/4;
  // p = 0.1 0.2 0.3 0.4.
  ASSERT_OK_AND_ASSIGN(ImbalanceMetrics m, Imbalance({1, 2, 3, 4}));
  EXPECT_EQ(m.num_experts, 4);
  EXPECT_DOUBLE_EQ(m.total, 10);
  EXPECT_DOUBLE_EQ(m.max_over_mean, 1.6);
  EXPECT_NEAR(m.max_vio, 0.6, 1e-15);
  EXPECT_NEAR(m.coefficient_of_variation, 0.4472135954999579,
              1e-15);  // sqrt(0.2)
  EXPECT_NEAR(m.normalized_entropy, 0.9232196723355078, 1e-15);
  EXPECT_FALSE(m.zero_load);

  // Scale does not matter.
  ASSERT_OK_AND_ASSIGN(ImbalanceMetrics m10, Imbalance({10, 20, 30, 40}));
  EXPECT_NEAR(m10.max_over_mean, m.max_over_mean, 1e-15);
  EXPECT_NEAR(m10.coefficient_of_variation, m.coefficient_of_variation, 1e-15);
  EXPECT_NEAR(m10.normalized_entropy, m.normalized_entropy, 1e-15);
}

TEST(ImbalanceTest, UniformAndOneHot) {
  ASSERT_OK_AND_ASSIGN(ImbalanceMetrics u, Imbalance({5, 5, 5}));
  EXPECT_DOUBLE_EQ(u.max_over_mean, 1);
  EXPECT_DOUBLE_EQ(u.max_vio, 0);
  EXPECT_DOUBLE_EQ(u.coefficient_of_variation, 0);
  EXPECT_NEAR(u.normalized_entropy, 1, 1e-15);

  // All load on one of 4 experts: max/mean = M, CV = sqrt(M - 1), H = 0.
  ASSERT_OK_AND_ASSIGN(ImbalanceMetrics h, Imbalance({0, 0, 7, 0}));
  EXPECT_DOUBLE_EQ(h.max_over_mean, 4);
  EXPECT_DOUBLE_EQ(h.max_vio, 3);
  EXPECT_NEAR(h.coefficient_of_variation, std::sqrt(3.0), 1e-15);
  EXPECT_DOUBLE_EQ(h.normalized_entropy, 0);
}

TEST(ImbalanceTest, EdgeCases) {
  ASSERT_OK_AND_ASSIGN(ImbalanceMetrics z, Imbalance({0, 0, 0}));
  EXPECT_TRUE(z.zero_load);
  EXPECT_DOUBLE_EQ(z.total, 0);
  EXPECT_DOUBLE_EQ(z.max_over_mean, 1);
  EXPECT_DOUBLE_EQ(z.max_vio, 0);
  EXPECT_DOUBLE_EQ(z.coefficient_of_variation, 0);
  EXPECT_DOUBLE_EQ(z.normalized_entropy, 1);

  ASSERT_OK_AND_ASSIGN(ImbalanceMetrics one, Imbalance({3}));
  EXPECT_EQ(one.num_experts, 1);
  EXPECT_FALSE(one.zero_load);
  EXPECT_DOUBLE_EQ(one.max_over_mean, 1);
  EXPECT_DOUBLE_EQ(one.max_vio, 0);
  EXPECT_DOUBLE_EQ(one.coefficient_of_variation, 0);
  EXPECT_DOUBLE_EQ(one.normalized_entropy, 1);

  ASSERT_OK_AND_ASSIGN(ImbalanceMetrics one_zero, Imbalance({0}));
  EXPECT_TRUE(one_zero.zero_load);
  EXPECT_DOUBLE_EQ(one_zero.normalized_entropy, 1);
}

TEST(ImbalanceTest, RejectsBadLoads) {
  EXPECT_THAT(Imbalance({}), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("no loads")));
  EXPECT_THAT(Imbalance({1, -1}), StatusIs(absl::StatusCode::kInvalidArgument,
                                           HasSubstr("expert 1 = -1")));
  EXPECT_THAT(Imbalance({kNaN, 1}), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("expert 0 = nan")));
  EXPECT_THAT(Imbalance({1, kInf}), StatusIs(absl::StatusCode::kInvalidArgument,
                                             HasSubstr("expert 1 = inf")));
}

}  // namespace
}  // namespace moecast
