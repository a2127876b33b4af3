// eplb mode against hand-worked examples of the DeepSeek EPLB reference.
// (The randomised comparison with an independent numpy re-implementation is
// eplb_reference_comparison_test.)
#include <vector>

#include "engine/placement/placement.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::Pointwise;

PlacementOptions Eplb() {
  PlacementOptions o;
  o.mode = PlacementMode::kEplb;
  return o;
}

PlacementProblem Problem(int layers, int experts, int slots, int groups,
                         int nodes, int gpus, std::vector<double> loads) {
  PlacementProblem p;
  p.num_layers = layers;
  p.num_experts = experts;
  p.num_slots = slots;
  p.num_groups = groups;
  p.num_nodes = nodes;
  p.num_gpus = gpus;
  p.loads = std::move(loads);
  return p;
}

// The README example of deepseek-ai/EPLB: 2 layers, 12 experts in 4 groups
// of 3, 16 slots, 2 nodes of 4 GPUs (2 slots per GPU). G % N == 0, so the
// hierarchical policy. Layer 0 by hand:
//   group loads: g0 = 90+132+40 = 262, g1 = 61+104+165 = 330,
//                g2 = 39+4+73 = 116,   g3 = 56+183+86 = 325.
//   groups to nodes (2 each), heaviest first to the lightest node with room:
//     g1 -> node 0 (0 vs 0: lower index), g3 -> node 1, g0 -> node 1 (325 <
//     330), g2 -> node 0 (node 1 is full). Node 0: g1, g2 = experts
//     3,4,5,6,7,8; node 1: g3, g0 = experts 9,10,11,0,1,2.
//   node 0 replicas (8 slots for 6 experts, 2 extra): 165 (e5) is the
//     largest -> e5 x2 (82.5 each); then 104 (e4) -> e4 x2 (52 each).
//     Physical order: e3 61, e4 52, e5 82.5, e6 39, e7 4, e8 73, e5 82.5,
//     e4 52.
//   packing to GPUs 0..3 (2 each), heaviest first, lightest GPU with room:
//     e5 -> G0, e5' -> G1, e8 -> G2, e3 -> G3 (82.5, 82.5, 73, 61);
//     e4 (52) -> G3 (113), e4' -> G2 (125), e6 (39) -> G0 (121.5),
//     e7 (4) -> G1 (86.5).
//   => GPUs 0..3 hold [5,6] [5,7] [8,4] [3,4]: phy2log[0..7] =
//      5 6 5 7 8 4 3 4, as the README says.
//   node 1: e10 183 -> x2 (91.5), then e1 132 -> x2 (66). Packing: e10 ->
//     G4, e10' -> G5, e0 (90) -> G6, e11 (86) -> G7; e1 (66) -> G7 (152),
//     e1' -> G6 (156), e9 (56) -> G4 (147.5), e2 (40) -> G5 (131.5).
//   => 10 9 10 2 0 1 11 1.
TEST(Eplb, ReadmeExample) {
  const PlacementProblem p =
      Problem(2, 12, 16, 4, 2, 8,
              {90, 132, 40, 61,  104, 165, 39,  4,   73,  56, 183, 86,
               20, 107, 104, 64, 19,  197, 187, 157, 172, 86, 16,  27});
  ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, Eplb()));
  EXPECT_THAT(plan.phy2log,
              ElementsAreArray({5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1,
                                11, 1,  //
                                7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0,
                                3, 1}));
  EXPECT_THAT(plan.logcnt, ElementsAreArray({1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2,
                                             1,  //
                                             1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1,
                                             1}));
  ASSERT_EQ(plan.max_replicas, 2);
  // log2phy by replica rank: e5's original replica (rank 0) went to slot 0
  // (GPU 0), its extra (rank 1) to slot 2 (GPU 1); e4's original to GPU 3's
  // second slot (7), its extra to GPU 2's second slot (5).
  EXPECT_EQ(plan.log2phy_at(0, 5, 0), 0);
  EXPECT_EQ(plan.log2phy_at(0, 5, 1), 2);
  EXPECT_EQ(plan.log2phy_at(0, 4, 0), 7);
  EXPECT_EQ(plan.log2phy_at(0, 4, 1), 5);
  EXPECT_EQ(plan.log2phy_at(0, 6, 0), 1);
  EXPECT_EQ(plan.log2phy_at(0, 6, 1), -1);
  EXPECT_THAT(std::vector<double>(plan.gpu_loads.begin(),
                                  plan.gpu_loads.begin() + 8),
              Pointwise(DoubleNear(1e-9),
                        {121.5, 86.5, 125.0, 113.0, 147.5, 131.5, 156.0,
                         152.0}));
  // Layer 0: mean 1033 / 8 = 129.125, max 156. Layer 1: mean 1156 / 8 =
  // 144.5, max 179.5.
  const double b0 = 129.125 / 156, b1 = 144.5 / 179.5;
  EXPECT_NEAR(plan.balancedness, (b0 + b1) / 2, 1e-12);
  EXPECT_NEAR(plan.balancedness_summed, (129.125 + 144.5) / (156 + 179.5),
              1e-12);
  EXPECT_NEAR(plan.max_over_mean, (156 / 129.125 + 179.5 / 144.5) / 2, 1e-12);
  EXPECT_EQ(plan.moved_experts, 0);  // no current placement
  EXPECT_TRUE(plan.transfers.empty());
  EXPECT_OK(CheckPlan(p, PlacementMode::kEplb, plan));
}

// Global policy (1 group, 1 node), 2 experts, 2 GPUs x 2 slots, loads
// [10, 1]. Replicas: e0 (10) x2 -> 5, then e0 again (5 > 1) x3 -> 3.33.
// Physical: e0, e1, e0, e0 with ranks 0, 0, 1, 2; per replica 3.33, 1,
// 3.33, 3.33. Packing (ties keep index order): phy0 -> G0, phy2 -> G1,
// phy3 -> G0 (3.33 = 3.33: lower GPU), phy1 -> G1. GPU 0 gets e0 twice:
// the reference's duplicate quirk. GPU loads 6.67 and 4.33.
TEST(Eplb, GlobalDuplicateOnOneGpu) {
  const PlacementProblem p = Problem(1, 2, 4, 1, 1, 2, {10, 1});
  ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, Eplb()));
  EXPECT_THAT(plan.phy2log, ElementsAre(0, 0, 0, 1));
  EXPECT_THAT(plan.logcnt, ElementsAre(3, 1));
  ASSERT_EQ(plan.max_replicas, 3);
  EXPECT_THAT(plan.log2phy, ElementsAre(0, 2, 1, 3, -1, -1));
  EXPECT_THAT(plan.gpu_loads,
              Pointwise(DoubleNear(1e-12), {20.0 / 3, 10.0 / 3 + 1}));
  // Passes the eplb check, fails the default-mode one.
  EXPECT_OK(CheckPlan(p, PlacementMode::kEplb, plan));
  EXPECT_FALSE(CheckPlan(p, PlacementMode::kDefault, plan).ok());
}

// One slot per GPU: the reference's balanced_packing keeps physical order
// (item i -> pack i). Loads [1, 6, 3], 4 slots: the extra replica goes to
// e1, so phy2log = [0, 1, 2, 1] and GPU loads [1, 3, 3, 3].
TEST(Eplb, OneSlotPerGpuKeepsPhysicalOrder) {
  const PlacementProblem p = Problem(1, 3, 4, 1, 1, 4, {1, 6, 3});
  ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, Eplb()));
  EXPECT_THAT(plan.phy2log, ElementsAre(0, 1, 2, 1));
  EXPECT_THAT(plan.logcnt, ElementsAre(1, 2, 1));
  EXPECT_THAT(plan.log2phy, ElementsAre(0, -1, 1, 3, 2, -1));
  EXPECT_THAT(plan.gpu_loads, Pointwise(DoubleNear(1e-12), {1.0, 3.0, 3.0, 3.0}));
}

// Equal loads: items keep index order (the reference's sort is unstable, so
// it may order them differently; per-GPU loads are the same).
// 4 experts, 2 GPUs x 2: phy0 -> G0, phy1 -> G1, phy2 -> G0, phy3 -> G1.
TEST(Eplb, TiesKeepIndexOrder) {
  const PlacementProblem p = Problem(1, 4, 4, 1, 1, 2, {1, 1, 1, 1});
  ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, Eplb()));
  EXPECT_THAT(plan.phy2log, ElementsAre(0, 2, 1, 3));
  EXPECT_THAT(plan.gpu_loads, ElementsAre(2.0, 2.0));
}

// Global fallback: 3 groups on 2 nodes (3 % 2 != 0) uses one group and one
// node, so replicas ignore nodes. Loads [8, 1, 1, 1, 1, 1], 2 GPUs (one per
// node) x 4 slots. Replicas: e0 x2 (4), then e0 x3 (2.67 > 1). Physical:
// e0..e5, e0, e0; per replica 2.67, 1 x5, 2.67, 2.67. Packing, heaviest
// first (ties in index order): phy0 -> G0, phy6 -> G1, phy7 -> G0 (tie),
// phy1 -> G1 (3.67), phy2 -> G1 (4.67), phy3 -> G1 (5.67, full), phy4 and
// phy5 -> G0 (7.33). G0 = [e0, e0, e4, e5], G1 = [e0, e1, e2, e3].
TEST(Eplb, GlobalWhenGroupsDoNotSplitOverNodes) {
  const PlacementProblem p = Problem(1, 6, 8, 3, 2, 2, {8, 1, 1, 1, 1, 1});
  ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, Eplb()));
  EXPECT_THAT(plan.logcnt, ElementsAre(3, 1, 1, 1, 1, 1));
  EXPECT_THAT(plan.gpu_loads,
              Pointwise(DoubleNear(1e-12), {16.0 / 3 + 2, 8.0 / 3 + 3}));
  EXPECT_THAT(plan.phy2log, ElementsAre(0, 0, 4, 5, 0, 1, 2, 3));
}

// eplb ignores the current placement when planning; it is only used to
// count moves and list transfers.
TEST(Eplb, IgnoresTheCurrentPlacementButCountsMoves) {
  PlacementProblem p =
      Problem(2, 12, 16, 4, 2, 8,
              {90, 132, 40, 61,  104, 165, 39,  4,   73,  56, 183, 86,
               20, 107, 104, 64, 19,  197, 187, 157, 172, 86, 16,  27});
  ASSERT_OK_AND_ASSIGN(Plan fresh, PlanPlacement(p, Eplb()));
  p.current_phy2log = fresh.phy2log;
  ASSERT_OK_AND_ASSIGN(Plan same, PlanPlacement(p, Eplb()));
  EXPECT_EQ(same.phy2log, fresh.phy2log);
  EXPECT_EQ(same.moved_experts, 0);
  // Current: slot s holds expert s % 12 (both layers).
  for (int s = 0; s < 32; ++s) p.current_phy2log[s] = (s % 16) % 12;
  PlacementOptions o = Eplb();
  o.bytes_per_expert = 100;
  ASSERT_OK_AND_ASSIGN(Plan moved, PlanPlacement(p, o));
  EXPECT_EQ(moved.phy2log, fresh.phy2log);
  EXPECT_GT(moved.moved_experts, 0);
  EXPECT_EQ(moved.moved_bytes, 100 * moved.moved_experts);
  EXPECT_EQ(static_cast<int64_t>(moved.transfers.size()), moved.moved_experts);
}

}  // namespace
}  // namespace moecast
