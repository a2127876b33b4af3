// The default mode with a migration model: the plan is the prefix of the
// gain/cost curve that minimises horizon x MoE time + migration cost, so no
// shorter or longer prefix of the same curve (what a move budget gives) does
// better under the model, as scored by EvaluatePlacement + Decide; and the
// rebalance decision agrees with the plan.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "engine/placement/placement.h"
#include "engine/placement/testing/plan_checks.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::ProblemOf;

using ::moecast::testing::Noisy;

using Shape = ::moecast::testing::ClusterShape;

std::vector<double> Zipf(const Shape& s, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.6, 1.2);
  std::vector<double> w(static_cast<size_t>(s.layers) * s.experts);
  std::vector<int> perm(s.experts);
  for (int l = 0; l < s.layers; ++l) {
    const double exponent = u(rng);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int e = 0; e < s.experts; ++e) {
      w[static_cast<size_t>(l) * s.experts + perm[e]] =
          1000.0 / std::pow(e + 1.0, exponent);
    }
  }
  return w;
}

// horizon x proposed step time + required migration cost: what the
// planner minimises, as Decide scores it.
double Objective(const PlacementProblem& p, const Plan& plan,
                 const MigrationModel& m, bool transient) {
  absl::StatusOr<Plan> now = EvaluatePlacement(p, p.current_phy2log);
  EXPECT_TRUE(now.ok()) << now.status();
  absl::StatusOr<RebalanceDecision> d = Decide(*now, plan, m, transient);
  EXPECT_TRUE(d.ok()) << d.status();
  return m.horizon_steps * d->step_time_proposed_s + d->required_s;
}

struct Case {
  Shape shape;
  double bytes_scale;  // x the default bytes per expert
  double horizon;
  bool overlap, transient;
  int max_extra;
};

TEST(MarginalGain, NoShorterOrLongerPrefixOfTheCurveDoesBetter) {
  const Case cases[] = {
      {{6, 32, 48, 4, 2, 8}, 1, 1000, false, false, 1},
      {{6, 32, 48, 1, 2, 8}, 1, 1000, false, false, 1},
      {{5, 64, 80, 8, 2, 16}, 1, 300, false, true, 1},
      {{5, 64, 80, 1, 4, 16}, 3, 3000, true, false, 2},
      {{4, 16, 24, 4, 2, 8}, 0.2, 1000, false, false, 1},
      {{8, 256, 288, 8, 4, 32}, 1, 1000, false, false, 1},
      {{8, 256, 288, 1, 4, 32}, 10, 1000, false, false, 1},
  };
  std::mt19937_64 rng(31);
  int moved_cases = 0, held_cases = 0;
  for (const Case& c : cases) {
    for (int rep = 0; rep < 3; ++rep) {
      SCOPED_TRACE(::testing::Message()
                   << "experts " << c.shape.experts << " groups "
                   << c.shape.groups << " bytes x" << c.bytes_scale << " H "
                   << c.horizon << " rep " << rep);
      const std::vector<double> base = Zipf(c.shape, rng);
      PlacementOptions o;
      o.max_extra_experts_per_gpu = c.max_extra;
      ASSERT_OK_AND_ASSIGN(Plan old_plan,
                           PlanPlacement(ProblemOf(c.shape, base), o));
      PlacementProblem p = ProblemOf(c.shape, Noisy(base, 0.05, rng));
      p.current_phy2log = old_plan.phy2log;
      MigrationModel m = DefaultMigrationModel();
      m.bytes_per_expert *= c.bytes_scale;
      m.horizon_steps = c.horizon;
      m.overlap = c.overlap;
      o.bytes_per_expert = static_cast<int64_t>(m.bytes_per_expert);
      PlacementOptions with_model = o;
      with_model.migration = m;
      with_model.transient = c.transient;
      ASSERT_OK_AND_ASSIGN(Plan best, PlanPlacement(p, with_model));
      const double j_best = Objective(p, best, m, c.transient);
      const int64_t spent = best.moved_experts - best.forced_moves;
      ASSERT_EQ(best.forced_moves, 0);
      // The same curve cut by a move budget: shorter and longer prefixes.
      std::vector<int64_t> budgets = {0,         spent / 4,     spent / 2,
                                      spent - 1, spent + 1,     spent + 7,
                                      2 * spent + 20, 4 * spent + 100, -1};
      for (int64_t b : budgets) {
        if (b < -1) continue;
        PlacementOptions cut = o;
        cut.move_budget = b;
        ASSERT_OK_AND_ASSIGN(Plan other, PlanPlacement(p, cut));
        const double j = Objective(p, other, m, c.transient);
        EXPECT_LE(j_best, j * (1 + 1e-9) + 1e-12)
            << "budget " << b << " moves " << other.moved_experts
            << " beats the chosen " << best.moved_experts << " moves";
      }
      // The plan at its own budget is the same plan.
      PlacementOptions same = o;
      same.move_budget = spent;
      ASSERT_OK_AND_ASSIGN(Plan again, PlanPlacement(p, same));
      EXPECT_EQ(again.phy2log, best.phy2log);
      // The decision agrees: every plan that moves something pays.
      ASSERT_OK_AND_ASSIGN(Plan now, EvaluatePlacement(p, p.current_phy2log));
      ASSERT_OK_AND_ASSIGN(RebalanceDecision d,
                           Decide(now, best, m, c.transient));
      EXPECT_EQ(d.rebalance, best.moved_experts > 0) << d.reason;
      if (best.moved_experts > 0) {
        EXPECT_GT(d.saved_s, d.required_s);
        ++moved_cases;
      } else {
        ++held_cases;
      }
    }
  }
  // Most cases move something (the dear case is the next test).
  EXPECT_GT(moved_cases, held_cases);
}

// Dear migration: nothing pays; free migration: the best balance the curve
// offers; the move budget still caps.
TEST(MarginalGain, DearMovesNothingCheapFollowsTheLoadBudgetCaps) {
  const Shape s{6, 64, 96, 1, 2, 16};
  std::mt19937_64 rng(5);
  const std::vector<double> base = Zipf(s, rng);
  ASSERT_OK_AND_ASSIGN(Plan old_plan,
                       PlanPlacement(ProblemOf(s, base), PlacementOptions()));
  PlacementProblem p = ProblemOf(s, Noisy(base, 0.2, rng));
  p.current_phy2log = old_plan.phy2log;

  PlacementOptions o;
  o.migration = DefaultMigrationModel();
  o.migration->bytes_per_expert = 1e15;
  ASSERT_OK_AND_ASSIGN(Plan dear, PlanPlacement(p, o));
  EXPECT_EQ(dear.moved_experts, 0);

  o.migration->bytes_per_expert = 1;
  ASSERT_OK_AND_ASSIGN(Plan cheap, PlanPlacement(p, o));
  ASSERT_OK_AND_ASSIGN(Plan unlimited, PlanPlacement(p, PlacementOptions()));
  EXPECT_GT(cheap.moved_experts, 0);
  EXPECT_NEAR(cheap.balancedness, unlimited.balancedness, 1e-9);

  o.move_budget = 5;
  ASSERT_OK_AND_ASSIGN(Plan capped, PlanPlacement(p, o));
  EXPECT_LE(capped.moved_experts, 5);
  EXPECT_GT(cheap.balancedness, dear.balancedness);

  // Transient: the saving must clear a margin, so never more moves.
  o.move_budget = -1;
  o.migration->bytes_per_expert = DefaultMigrationModel().bytes_per_expert;
  ASSERT_OK_AND_ASSIGN(Plan stable, PlanPlacement(p, o));
  o.transient = true;
  o.migration->transient_margin = 3;
  ASSERT_OK_AND_ASSIGN(Plan transient, PlanPlacement(p, o));
  EXPECT_LE(transient.moved_experts, stable.moved_experts);
}

// On layers of more than 64 experts the from-scratch plan is built only
// where the walk from the current placement stops more than
// good_enough_max_vio above its lower bound. With cheap moves the model plan
// is then within that tolerance of the best-balanced plan; after a large
// shift (experts permuted) the walk alone cannot get there and the
// from-scratch plan is still taken.
TEST(MarginalGain, LargeLayersBuildTheScratchPlanWhenTheWalkFallsShort) {
  const Shape s{3, 128, 160, 1, 2, 16};
  std::mt19937_64 rng(21);
  const std::vector<double> base = Zipf(s, rng);
  ASSERT_OK_AND_ASSIGN(Plan old_plan,
                       PlanPlacement(ProblemOf(s, base), PlacementOptions()));
  for (const bool shifted : {false, true}) {
    SCOPED_TRACE(shifted ? "experts permuted" : "5% noise");
    std::vector<double> w = Noisy(base, 0.05, rng);
    if (shifted) {
      for (int l = 0; l < s.layers; ++l) {
        std::shuffle(w.begin() + l * s.experts,
                     w.begin() + (l + 1) * s.experts, rng);
      }
    }
    PlacementProblem p = ProblemOf(s, w);
    p.current_phy2log = old_plan.phy2log;
    PlacementOptions o;
    o.local_search_iterations = 8;  // a short walk: at most 16 moves a layer
    ASSERT_OK_AND_ASSIGN(Plan unlimited, PlanPlacement(p, o));
    o.migration = DefaultMigrationModel();
    o.migration->bytes_per_expert = 1;
    ASSERT_OK_AND_ASSIGN(Plan cheap, PlanPlacement(p, o));
    EXPECT_GE(cheap.balancedness,
              unlimited.balancedness * (1 - o.good_enough_max_vio));
    EXPECT_GT(cheap.moved_experts, 0);
    if (shifted) {
      // A walk step moves at most 2 experts: more than that per layer only
      // comes from the from-scratch plan.
      EXPECT_GT(cheap.moved_experts,
                int64_t{2} * o.local_search_iterations * s.layers);
    }
  }
}

TEST(MarginalGain, TradeoffCurveCarriesTheObjective) {
  const Shape s{4, 32, 48, 4, 2, 8};
  std::mt19937_64 rng(9);
  const std::vector<double> base = Zipf(s, rng);
  ASSERT_OK_AND_ASSIGN(Plan old_plan,
                       PlanPlacement(ProblemOf(s, base), PlacementOptions()));
  PlacementProblem p = ProblemOf(s, Noisy(base, 0.1, rng));
  p.current_phy2log = old_plan.phy2log;
  PlacementOptions o;
  o.migration = DefaultMigrationModel();
  o.compute_tradeoff = true;
  o.tradeoff_points = 1000;  // every point
  ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, o));
  ASSERT_GE(plan.tradeoff.size(), 2u);
  double best = plan.tradeoff[0].moe_time_s + plan.tradeoff[0].cost_s;
  int64_t best_moves = plan.tradeoff[0].moved_experts;
  for (const TradeoffPoint& t : plan.tradeoff) {
    EXPECT_GT(t.moe_time_s, 0);
    if (t.moe_time_s + t.cost_s < best) {
      best = t.moe_time_s + t.cost_s;
      best_moves = t.moved_experts;
    }
  }
  EXPECT_EQ(plan.moved_experts, best_moves);
  EXPECT_EQ(plan.tradeoff[0].cost_s, 0);
}

TEST(MarginalGain, RejectsABadModel) {
  const Shape s{1, 4, 4, 1, 1, 2};
  PlacementProblem p = ProblemOf(s, {1, 2, 3, 4});
  p.current_phy2log = {0, 1, 2, 3};
  PlacementOptions o;
  o.migration = DefaultMigrationModel();
  o.migration->inter_node_bandwidth = 0;
  EXPECT_THAT(PlanPlacement(p, o).status().message(),
              ::testing::HasSubstr(
                  "placement: migration: inter_node_bandwidth must be finite "
                  "and > 0, got 0"));
  o.migration = DefaultMigrationModel();
  o.migration->horizon_steps = -1;
  EXPECT_THAT(PlanPlacement(p, o).status().message(),
              ::testing::HasSubstr("horizon_steps must be finite and >= 0"));
  o.migration = DefaultMigrationModel();
  o.migration->overlap_cost_fraction = 2;
  EXPECT_THAT(PlanPlacement(p, o).status().message(),
              ::testing::HasSubstr("overlap_cost_fraction must be in [0, 1]"));
}

}  // namespace
}  // namespace moecast
