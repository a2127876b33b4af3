// The rebalance decision on hand-computed numbers, and end to end with a
// planned migration.
#include <random>
#include <vector>

#include "engine/placement/placement.h"
#include "engine/placement/testing/plan_checks.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

// One layer, 4 GPUs on 2 nodes (GPUs 0-1 on node 0, 2-3 on node 1).
Plan Loads(std::vector<double> gpu_loads) {
  Plan p;
  p.num_layers = 1;
  p.num_gpus = 4;
  p.num_nodes = 2;
  p.gpu_loads = std::move(gpu_loads);
  return p;
}

Transfer T(int from, int to, int stage) {
  Transfer t;
  t.from_gpu = from;
  t.to_gpu = to;
  t.stage = stage;
  t.bytes = 123;  // ignored: the model's bytes_per_expert is set
  return t;
}

// current [40, 20, 20, 20]: the straggler does 40% of the layer's work;
// proposed [25, 25, 25, 25]: 25%. tokens_per_step 1e5 x 1e-6 s = 0.1 s of
// work per step if one GPU did it all, so steps take 0.04 s and 0.025 s:
// 0.015 s saved per step. Two transfers of 1 GB: GPU 0 -> 1 (same node,
// 100 GB/s: 0.01 s) in stage 0, GPU 0 -> 2 (other node, 10 GB/s: 0.1 s) in
// stage 1: migration 0.11 s.
MigrationModel Model(double horizon) {
  MigrationModel m;
  m.bytes_per_expert = 1e9;
  m.intra_node_bandwidth = 100e9;
  m.inter_node_bandwidth = 10e9;
  m.tokens_per_step = 1e5;
  m.time_per_token_s = 1e-6;
  m.horizon_steps = horizon;
  m.overlap = false;
  m.overlap_cost_fraction = 0.2;
  m.transient_margin = 1.0;
  return m;
}

Plan Proposed() {
  Plan p = Loads({25, 25, 25, 25});
  p.transfers = {T(0, 1, 0), T(0, 2, 1)};
  p.num_stages = 2;
  p.moved_experts = 2;
  return p;
}

TEST(Decide, HandComputedStall) {
  // Horizon 100: saved 1.5 s > 0.11 s.
  ASSERT_OK_AND_ASSIGN(RebalanceDecision d,
                       Decide(Loads({40, 20, 20, 20}), Proposed(), Model(100),
                              /*transient=*/false));
  EXPECT_NEAR(d.step_time_current_s, 0.04, 1e-15);
  EXPECT_NEAR(d.step_time_proposed_s, 0.025, 1e-15);
  EXPECT_NEAR(d.saved_s, 1.5, 1e-12);
  EXPECT_NEAR(d.migration_s, 0.11, 1e-15);
  EXPECT_NEAR(d.cost_s, 0.11, 1e-15);
  EXPECT_NEAR(d.required_s, 0.11, 1e-15);
  EXPECT_EQ(d.num_stages, 2);
  EXPECT_EQ(d.moved_experts, 2);
  EXPECT_TRUE(d.rebalance);
  EXPECT_THAT(d.reason, HasSubstr("rebalance: saved 1.5 s"));
  // Horizon 5: saved 0.075 s < 0.11 s.
  ASSERT_OK_AND_ASSIGN(d, Decide(Loads({40, 20, 20, 20}), Proposed(), Model(5),
                                 false));
  EXPECT_NEAR(d.saved_s, 0.075, 1e-12);
  EXPECT_FALSE(d.rebalance);
  EXPECT_THAT(d.reason, HasSubstr("keep: saving does not exceed the cost"));
}

TEST(Decide, OverlapCostsAFraction) {
  // Overlapped: cost 0.2 x 0.11 = 0.022 s < 0.075 s saved.
  MigrationModel m = Model(5);
  m.overlap = true;
  ASSERT_OK_AND_ASSIGN(RebalanceDecision d,
                       Decide(Loads({40, 20, 20, 20}), Proposed(), m, false));
  EXPECT_NEAR(d.migration_s, 0.11, 1e-15);
  EXPECT_NEAR(d.cost_s, 0.022, 1e-15);
  EXPECT_TRUE(d.rebalance);
  EXPECT_THAT(d.reason, HasSubstr("overlapped"));
}

TEST(Decide, TransientStateNeedsTheMargin) {
  // Horizon 10: saved 0.15 s. Stable: > 0.11 s. Transient (margin 1):
  // must exceed 0.22 s.
  ASSERT_OK_AND_ASSIGN(RebalanceDecision stable,
                       Decide(Loads({40, 20, 20, 20}), Proposed(), Model(10),
                              false));
  EXPECT_TRUE(stable.rebalance);
  ASSERT_OK_AND_ASSIGN(RebalanceDecision transient,
                       Decide(Loads({40, 20, 20, 20}), Proposed(), Model(10),
                              true));
  EXPECT_NEAR(transient.saved_s, 0.15, 1e-12);
  EXPECT_NEAR(transient.required_s, 0.22, 1e-15);
  EXPECT_FALSE(transient.rebalance);
  EXPECT_THAT(transient.reason, HasSubstr("required margin"));
}

TEST(Decide, StageLastsAsLongAsItsSlowestTransfer) {
  // Both transfers in one stage: max(0.01, 0.1) = 0.1 s. A transfer with no
  // source GPU counts as inter-node.
  Plan p = Proposed();
  p.transfers = {T(0, 1, 0), T(-1, 3, 0)};
  p.num_stages = 1;
  ASSERT_OK_AND_ASSIGN(RebalanceDecision d,
                       Decide(Loads({40, 20, 20, 20}), p, Model(100), false));
  EXPECT_NEAR(d.migration_s, 0.1, 1e-15);
  // Without bytes_per_expert in the model, each transfer's bytes are used:
  // 123 B at 10 GB/s.
  MigrationModel m = Model(100);
  m.bytes_per_expert = 0;
  ASSERT_OK_AND_ASSIGN(d, Decide(Loads({40, 20, 20, 20}), p, m, false));
  EXPECT_NEAR(d.migration_s, 123 / 10e9, 1e-20);
}

TEST(Decide, NothingToMove) {
  Plan p = Loads({40, 20, 20, 20});
  ASSERT_OK_AND_ASSIGN(RebalanceDecision d,
                       Decide(Loads({40, 20, 20, 20}), p, Model(100), false));
  EXPECT_FALSE(d.rebalance);
  EXPECT_EQ(d.saved_s, 0);
  EXPECT_EQ(d.migration_s, 0);
  EXPECT_THAT(d.reason, HasSubstr("no transfers"));
}

TEST(Decide, RejectsBadModelsAndShapes) {
  MigrationModel m = Model(100);
  m.inter_node_bandwidth = 0;
  EXPECT_THAT(Decide(Loads({1, 1, 1, 1}), Proposed(), m, false).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("inter_node_bandwidth must be finite and > 0, "
                                 "got 0")));
  m = Model(100);
  m.overlap_cost_fraction = 1.5;
  EXPECT_THAT(Decide(Loads({1, 1, 1, 1}), Proposed(), m, false).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("overlap_cost_fraction must be in [0, 1], got "
                                 "1.5")));
  m = Model(-1);
  EXPECT_THAT(Decide(Loads({1, 1, 1, 1}), Proposed(), m, false).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("horizon_steps must be finite and >= 0")));
  Plan other = Loads({1, 1, 1, 1});
  other.num_gpus = 2;
  other.gpu_loads = {1, 1};
  EXPECT_THAT(Decide(other, Proposed(), Model(100), false).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("current plan has (layers, GPUs, nodes) = (1, "
                                 "2, 2), proposed has (1, 4, 2)")));
}

// End to end: a placement planned for old loads, loads shift; plan with the
// current placement, evaluate the current one, decide. A long horizon pays
// for the move, a very short one does not.
TEST(Decide, ForcedMovesRebalanceWhateverTheSaving) {
  Plan proposed = Proposed();
  proposed.forced_moves = 1;
  // A horizon of 0 saves nothing: without forced moves this is "keep".
  ASSERT_OK_AND_ASSIGN(RebalanceDecision d,
                       Decide(Loads({40, 20, 20, 20}), proposed, Model(0),
                              /*transient=*/false));
  EXPECT_TRUE(d.rebalance);
  EXPECT_THAT(d.reason, HasSubstr("1 of the moves are forced"));
  proposed.forced_moves = 0;
  ASSERT_OK_AND_ASSIGN(d, Decide(Loads({40, 20, 20, 20}), proposed, Model(0),
                                 false));
  EXPECT_FALSE(d.rebalance);
}

// A GPU left out of the current placement forces moves; with moves so dear
// that the saving never pays for the migration, the plan still moves the
// forced ones, and the decision agrees with it (before, it said "keep" for a
// plan that moves experts).
TEST(Decide, AgreesWithAPlanThatOnlyMovesWhatIsForced) {
  std::mt19937_64 rng(3);
  std::exponential_distribution<double> ex(1.0);
  std::vector<double> loads(2 * 96);
  for (double& w : loads) w = ex(rng);
  PlacementProblem p =
      ::moecast::testing::ProblemOf(::moecast::testing::ClusterShape{2, 96, 128, 1, 2, 16},
                                    loads);
  ASSERT_OK_AND_ASSIGN(Plan old_plan, PlanPlacement(p, PlacementOptions()));
  p.current_phy2log = old_plan.phy2log;
  p.excluded_gpus = {5};
  PlacementOptions o;
  o.migration = DefaultMigrationModel();
  o.migration->bytes_per_expert = 1e15;
  o.bytes_per_expert = 1 << 20;
  ASSERT_OK_AND_ASSIGN(Plan proposed, PlanPlacement(p, o));
  ASSERT_GT(proposed.forced_moves, 0);
  // Optional moves only where they fit stages the forced ones pay for.
  EXPECT_GE(proposed.moved_experts, proposed.forced_moves);
  ASSERT_OK_AND_ASSIGN(Plan now, EvaluatePlacement(p, p.current_phy2log, o));
  ASSERT_OK_AND_ASSIGN(RebalanceDecision d,
                       Decide(now, proposed, *o.migration, false));
  EXPECT_LE(d.saved_s, d.required_s);  // the saving alone would not pay
  EXPECT_TRUE(d.rebalance) << d.reason;
  EXPECT_EQ(d.moved_experts, proposed.moved_experts);
}

TEST(Decide, EndToEnd) {
  PlacementProblem p;
  p.num_layers = 4;
  p.num_experts = 64;
  p.num_slots = 80;
  p.num_groups = 8;
  p.num_nodes = 2;
  p.num_gpus = 16;
  std::mt19937_64 rng(1);
  std::exponential_distribution<double> ex(1.0);
  for (int i = 0; i < 4 * 64; ++i) p.loads.push_back(ex(rng));
  ASSERT_OK_AND_ASSIGN(Plan old_plan, PlanPlacement(p, PlacementOptions()));
  for (double& w : p.loads) w = ex(rng);  // new loads
  p.current_phy2log = old_plan.phy2log;
  PlacementOptions o;
  o.bytes_per_expert = 1 << 26;
  o.max_extra_experts_per_gpu = 2;
  ASSERT_OK_AND_ASSIGN(Plan proposed, PlanPlacement(p, o));
  ASSERT_OK_AND_ASSIGN(Plan now, EvaluatePlacement(p, p.current_phy2log, o));
  EXPECT_EQ(now.moved_experts, 0);
  ASSERT_GT(proposed.moved_experts, 0);
  MigrationModel m;
  m.intra_node_bandwidth = 100e9;
  m.inter_node_bandwidth = 20e9;
  m.tokens_per_step = 4096 * 8;
  m.time_per_token_s = 2e-6;
  m.horizon_steps = 1000;
  ASSERT_OK_AND_ASSIGN(RebalanceDecision d, Decide(now, proposed, m, false));
  EXPECT_GT(d.saved_s, 0);
  EXPECT_GT(d.migration_s, 0);
  EXPECT_TRUE(d.rebalance) << d.reason;
  m.horizon_steps = 0.001;
  ASSERT_OK_AND_ASSIGN(d, Decide(now, proposed, m, false));
  EXPECT_FALSE(d.rebalance) << d.reason;
}

}  // namespace
}  // namespace moecast
