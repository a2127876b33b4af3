// The default mode: no duplicates, validity of every plan, relabelling, the
// move budget, migration staging, excluded GPUs, and balance versus eplb.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "engine/placement/placement.h"
#include "engine/placement/testing/plan_checks.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::ProblemOf;

using ::moecast::testing::HasDuplicateOnAGpu;
using ::moecast::testing::Noisy;

using ::testing::Each;
using ::testing::Ge;

using Shape = ::moecast::testing::ClusterShape;

// kind 0: Zipf-like (rank^-s, s in [0.6, 1.4], random order); 1: near
// uniform (+-10%); 2: exponential.
std::vector<double> Loads(const Shape& s, int kind, std::mt19937_64& rng) {
  std::vector<double> w(static_cast<size_t>(s.layers) * s.experts);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  std::exponential_distribution<double> ex(1.0);
  std::vector<int> perm(s.experts);
  for (int l = 0; l < s.layers; ++l) {
    const double exponent = 0.6 + 0.8 * u01(rng);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int e = 0; e < s.experts; ++e) {
      double v;
      if (kind == 0) {
        v = 1000.0 / std::pow(perm[e] + 1.0, exponent);
      } else if (kind == 1) {
        v = 100.0 * (0.9 + 0.2 * u01(rng));
      } else {
        v = ex(rng);
      }
      w[static_cast<size_t>(l) * s.experts + e] = v;
    }
  }
  return w;
}

// The (layer, GPU, expert) triples of a placement.
std::set<std::tuple<int, int, int>> Triples(const std::vector<int32_t>& p2l,
                                            int layers, int slots, int gpus) {
  std::set<std::tuple<int, int, int>> out;
  const int k = slots / gpus;
  for (int l = 0; l < layers; ++l) {
    for (int s = 0; s < slots; ++s) {
      const int e = p2l[static_cast<size_t>(l) * slots + s];
      if (e >= 0) out.insert({l, s / k, e});
    }
  }
  return out;
}

PlacementOptions Default() { return PlacementOptions(); }
PlacementOptions EplbMode() {
  PlacementOptions o;
  o.mode = PlacementMode::kEplb;
  return o;
}

// The reference puts e0 twice on GPU 0 (see eplb_test); the default mode
// gives e0 and e1 two replicas each, one per GPU: loads 5.5 and 5.5.
TEST(DefaultPlanner, NeverTwoReplicasOnOneGpuWhereEplbDoes) {
  const PlacementProblem p = ProblemOf(Shape{1, 2, 4, 1, 1, 2}, {10, 1});
  ASSERT_OK_AND_ASSIGN(Plan eplb, PlanPlacement(p, EplbMode()));
  EXPECT_TRUE(HasDuplicateOnAGpu(eplb));
  ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, Default()));
  EXPECT_FALSE(HasDuplicateOnAGpu(plan));
  EXPECT_THAT(plan.logcnt, ::testing::ElementsAre(2, 2));
  EXPECT_DOUBLE_EQ(plan.gpu_load_at(0, 0), 5.5);
  EXPECT_DOUBLE_EQ(plan.gpu_load_at(0, 1), 5.5);
  EXPECT_DOUBLE_EQ(plan.balancedness, 1.0);
  EXPECT_OK(CheckPlan(p, PlacementMode::kDefault, plan));
}

// A hot expert under group-limited routing: at most one replica per GPU of
// its node. 2 nodes x 2 GPUs x 3 slots, 2 groups of 3; e0 carries almost
// everything. eplb gives e0 4 replicas of node 0's 6 slots (two GPUs), so
// some GPU holds it twice; the default mode caps it at 2.
TEST(DefaultPlanner, ReplicasCappedByTheGpusOfTheNode) {
  const PlacementProblem p =
      ProblemOf(Shape{1, 6, 12, 2, 2, 4}, {1000, 1, 1, 1, 1, 1});
  ASSERT_OK_AND_ASSIGN(Plan eplb, PlanPlacement(p, EplbMode()));
  EXPECT_TRUE(HasDuplicateOnAGpu(eplb));
  ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, Default()));
  EXPECT_FALSE(HasDuplicateOnAGpu(plan));
  EXPECT_LE(plan.logcnt_at(0, 0), 2);
  // e0 has 2 replicas of 500 each, on the two GPUs of its node.
  EXPECT_EQ(plan.logcnt_at(0, 0), 2);
  EXPECT_GE(*std::max_element(plan.gpu_loads.begin(), plan.gpu_loads.end()),
            500.0);
  EXPECT_GE(plan.balancedness, eplb.balancedness - 1e-12);
}

// Random inputs of many shapes, with and without exclusions and current
// placements: every plan is OK (an INTERNAL would mean it failed the
// built-in validation), passes CheckPlan, has no duplicates and leaves
// excluded GPUs empty.
TEST(DefaultPlanner, EveryReturnedPlanIsValid) {
  std::mt19937_64 rng(42);
  int planned = 0;
  for (int it = 0; it < 300; ++it) {
    std::uniform_int_distribution<int> pick(0, 1 << 20);
    const int nodes = 1 << (pick(rng) % 3);
    const int gpn = 1 + pick(rng) % 4;
    const int gpus = nodes * gpn;
    const int groups = 1 + pick(rng) % 8;
    const int gsize = 1 + pick(rng) % 6;
    const int experts = groups * gsize;
    const int k = 1 + pick(rng) % 5;
    Shape s{1 + pick(rng) % 3, experts, gpus * k, groups, nodes, gpus};
    if (s.slots < experts) continue;
    PlacementProblem p = ProblemOf(s, Loads(s, pick(rng) % 3, rng));
    if (pick(rng) % 3 == 0 && gpus > 1) p.excluded_gpus = {pick(rng) % gpus};
    if (pick(rng) % 2 == 0) {
      // Current: an eplb plan of other loads (may duplicate and, for
      // hierarchical shapes, follows its own group packing).
      PlacementProblem q = ProblemOf(s, Loads(s, 0, rng));
      absl::StatusOr<Plan> cur = PlanPlacement(q, EplbMode());
      ASSERT_OK(cur.status());
      p.current_phy2log = cur->phy2log;
    }
    PlacementOptions o;
    o.move_budget = pick(rng) % 4 == 0 ? -1 : pick(rng) % 20;
    o.compute_tradeoff = pick(rng) % 2 == 0;
    o.max_extra_experts_per_gpu = 1 + pick(rng) % 3;
    o.bytes_per_expert = 10;
    absl::StatusOr<Plan> plan = PlanPlacement(p, o);
    if (!plan.ok()) {
      // Only the documented feasibility rejections.
      EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument)
          << plan.status();
      continue;
    }
    ++planned;
    EXPECT_OK(CheckPlan(p, PlacementMode::kDefault, *plan));
    EXPECT_FALSE(HasDuplicateOnAGpu(*plan));
    const int kk = s.slots / s.gpus;
    for (int g : p.excluded_gpus) {
      for (int l = 0; l < s.layers; ++l) {
        for (int j = 0; j < kk; ++j) EXPECT_EQ(plan->phy2log_at(l, g * kk + j), -1);
      }
    }
    if (!p.current_phy2log.empty() && o.move_budget >= 0) {
      EXPECT_LE(plan->moved_experts, plan->forced_moves + o.move_budget);
    }
  }
  EXPECT_GT(planned, 100);
}

// Permutes a placement within the constraints: nodes (hierarchical) or all
// GPUs (global), GPUs within nodes, and slots within GPUs.
std::vector<int32_t> Permute(const std::vector<int32_t>& p2l, const Shape& s,
                             bool hierarchical, std::mt19937_64& rng) {
  const int k = s.slots / s.gpus, gpn = s.gpus / s.nodes;
  std::vector<int> gpu_to(s.gpus);
  if (hierarchical) {
    std::vector<int> node_to(s.nodes);
    std::iota(node_to.begin(), node_to.end(), 0);
    std::shuffle(node_to.begin(), node_to.end(), rng);
    for (int n = 0; n < s.nodes; ++n) {
      std::vector<int> local(gpn);
      std::iota(local.begin(), local.end(), 0);
      std::shuffle(local.begin(), local.end(), rng);
      for (int i = 0; i < gpn; ++i) gpu_to[n * gpn + i] = node_to[n] * gpn + local[i];
    }
  } else {
    std::iota(gpu_to.begin(), gpu_to.end(), 0);
    std::shuffle(gpu_to.begin(), gpu_to.end(), rng);
  }
  std::vector<int32_t> out(p2l.size());
  std::vector<int> slot_to(k);
  for (int l = 0; l < s.layers; ++l) {
    for (int g = 0; g < s.gpus; ++g) {
      std::iota(slot_to.begin(), slot_to.end(), 0);
      std::shuffle(slot_to.begin(), slot_to.end(), rng);
      for (int j = 0; j < k; ++j) {
        out[static_cast<size_t>(l) * s.slots + gpu_to[g] * k + slot_to[j]] =
            p2l[static_cast<size_t>(l) * s.slots + g * k + j];
      }
    }
  }
  return out;
}

// A permuted copy of the plan for the same loads is recognised as it is:
// zero moves, and the returned placement is the current one, slot for slot.
TEST(DefaultPlanner, RelabellingRecognisesAPermutedPlacement) {
  std::mt19937_64 rng(7);
  const Shape shapes[] = {
      {4, 64, 80, 8, 2, 16},   // hierarchical
      {4, 48, 64, 3, 2, 8},    // global (3 groups on 2 nodes)
      {3, 256, 288, 8, 4, 32}, // DeepSeek-V3 sized
  };
  for (const Shape& s : shapes) {
    for (int kind = 0; kind < 2; ++kind) {
      PlacementProblem p = ProblemOf(s, Loads(s, kind, rng));
      ASSERT_OK_AND_ASSIGN(Plan fresh, PlanPlacement(p, Default()));
      // Same placement, unpermuted.
      p.current_phy2log = fresh.phy2log;
      ASSERT_OK_AND_ASSIGN(Plan same, PlanPlacement(p, Default()));
      EXPECT_EQ(same.moved_experts, 0);
      EXPECT_EQ(same.phy2log, fresh.phy2log);
      // Permuted.
      p.current_phy2log =
          Permute(fresh.phy2log, s, s.groups % s.nodes == 0, rng);
      ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, Default()));
      EXPECT_EQ(plan.moved_experts, 0) << "shape M=" << s.experts;
      EXPECT_EQ(plan.phy2log, p.current_phy2log);
      EXPECT_TRUE(plan.transfers.empty());
      EXPECT_NEAR(plan.balancedness, fresh.balancedness, 1e-12);
    }
  }
}

// A larger move budget never gives a worse balance or fewer moves, and the
// budget is respected; the trade-off curve is monotone too.
TEST(DefaultPlanner, MoveBudgetTradesBalanceForMovesMonotonically) {
  std::mt19937_64 rng(11);
  const Shape shapes[] = {{8, 64, 80, 8, 2, 16}, {8, 64, 96, 1, 2, 16}};
  for (const Shape& s : shapes) {
    const std::vector<double> base = Loads(s, 0, rng);
    ASSERT_OK_AND_ASSIGN(Plan old_plan, PlanPlacement(ProblemOf(s, base), Default()));
    PlacementProblem p = ProblemOf(s, Noisy(base, 0.2, rng));
    p.current_phy2log = old_plan.phy2log;
    double last_bal = 0;
    int64_t last_moved = -1;
    for (int64_t budget : {0, 1, 2, 5, 10, 20, 50, 100, 200, 500, -1}) {
      PlacementOptions o;
      o.move_budget = budget;
      ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, o));
      EXPECT_EQ(plan.forced_moves, 0);
      if (budget >= 0) {
        EXPECT_LE(plan.moved_experts, budget);
      }
      EXPECT_GE(plan.balancedness, last_bal - 1e-12) << "budget " << budget;
      EXPECT_GE(plan.moved_experts, last_moved) << "budget " << budget;
      last_bal = plan.balancedness;
      last_moved = plan.moved_experts;
    }
    // Budget 0 keeps the current placement.
    PlacementOptions o;
    o.move_budget = 0;
    ASSERT_OK_AND_ASSIGN(Plan kept, PlanPlacement(p, o));
    EXPECT_EQ(kept.phy2log, p.current_phy2log);
    ASSERT_OK_AND_ASSIGN(Plan now, EvaluatePlacement(p, p.current_phy2log));
    EXPECT_GT(last_bal, now.balancedness);  // moving pays off in balance
    // The curve.
    o.move_budget = -1;
    o.compute_tradeoff = true;
    o.tradeoff_points = 16;
    ASSERT_OK_AND_ASSIGN(Plan curved, PlanPlacement(p, o));
    ASSERT_GE(curved.tradeoff.size(), 2u);
    EXPECT_LE(curved.tradeoff.size(), 16u);
    EXPECT_EQ(curved.tradeoff.front().move_budget, 0);
    EXPECT_NEAR(curved.tradeoff.front().balancedness, now.balancedness, 1e-9);
    EXPECT_NEAR(curved.tradeoff.back().balancedness, curved.balancedness, 1e-9);
    EXPECT_EQ(curved.tradeoff.back().moved_experts, curved.moved_experts);
    for (size_t i = 1; i < curved.tradeoff.size(); ++i) {
      EXPECT_GT(curved.tradeoff[i].move_budget, curved.tradeoff[i - 1].move_budget);
      EXPECT_GE(curved.tradeoff[i].balancedness,
                curved.tradeoff[i - 1].balancedness - 1e-12);
    }
    // A point of the curve is what that budget gives.
    const TradeoffPoint& mid = curved.tradeoff[curved.tradeoff.size() / 2];
    o.compute_tradeoff = false;
    o.move_budget = mid.move_budget;
    ASSERT_OK_AND_ASSIGN(Plan at_mid, PlanPlacement(p, o));
    EXPECT_EQ(at_mid.moved_experts, mid.moved_experts);
    EXPECT_NEAR(at_mid.balancedness, mid.balancedness, 1e-9);
  }
}

// Transfers: exactly the new (layer, GPU, expert) triples, each from a GPU
// that held the expert, staged so that no GPU receives more than the limit
// per stage; inter-node transfers first on each GPU.
TEST(DefaultPlanner, MigrationStagesRespectThePerGpuLimit) {
  std::mt19937_64 rng(3);
  const Shape s{6, 64, 80, 8, 2, 16};
  ASSERT_OK_AND_ASSIGN(Plan old_plan,
                       PlanPlacement(ProblemOf(s, Loads(s, 0, rng)), Default()));
  PlacementProblem p = ProblemOf(s, Loads(s, 0, rng));  // unrelated loads
  p.current_phy2log = old_plan.phy2log;
  for (int limit : {1, 2, 5}) {
    PlacementOptions o;
    o.max_extra_experts_per_gpu = limit;
    o.bytes_per_expert = 1 << 20;
    ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, o));
    ASSERT_GT(plan.moved_experts, 0);
    EXPECT_EQ(plan.moved_bytes, plan.moved_experts * (1 << 20));
    std::map<std::pair<int, int>, int> per_stage_gpu;
    std::map<int, int> incoming;
    std::set<std::tuple<int, int, int>> moved;
    const std::set<std::tuple<int, int, int>> before =
        Triples(p.current_phy2log, s.layers, s.slots, s.gpus);
    const std::set<std::tuple<int, int, int>> after =
        Triples(plan.phy2log, s.layers, s.slots, s.gpus);
    int last_stage = 0;
    for (const Transfer& t : plan.transfers) {
      EXPECT_GE(t.stage, last_stage);  // sorted by stage
      last_stage = t.stage;
      ++per_stage_gpu[{t.stage, t.to_gpu}];
      ++incoming[t.to_gpu];
      moved.insert({t.layer, t.to_gpu, t.expert});
      EXPECT_EQ(t.bytes, 1 << 20);
      ASSERT_GE(t.from_gpu, 0);
      EXPECT_TRUE(before.count({t.layer, t.from_gpu, t.expert}));
      EXPECT_FALSE(before.count({t.layer, t.to_gpu, t.expert}));
      EXPECT_TRUE(after.count({t.layer, t.to_gpu, t.expert}));
    }
    for (const auto& [key, n] : per_stage_gpu) EXPECT_LE(n, limit);
    int stages = 0;
    for (const auto& [gpu, n] : incoming) stages = std::max(stages, (n + limit - 1) / limit);
    EXPECT_EQ(plan.num_stages, stages);
    std::set<std::tuple<int, int, int>> want;
    std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                        std::inserter(want, want.begin()));
    EXPECT_EQ(moved, want);
    EXPECT_EQ(plan.moved_experts, static_cast<int64_t>(want.size()));
  }
}

// Excluded GPUs hold nothing; their experts are evacuated (forced moves),
// copied from a usable holder where there is one, else from the excluded
// GPU itself.
TEST(DefaultPlanner, ExcludedGpusAreEvacuated) {
  const Shape s{2, 12, 16, 4, 2, 8};
  PlacementProblem p =
      ProblemOf(s, {90, 132, 40, 61,  104, 165, 39,  4,   73,  56, 183, 86,
                  20, 107, 104, 64, 19,  197, 187, 157, 172, 86, 16,  27});
  ASSERT_OK_AND_ASSIGN(Plan eplb, PlanPlacement(p, EplbMode()));
  p.current_phy2log = eplb.phy2log;  // GPU 1 holds e5 (replicated) and e7
  p.excluded_gpus = {1};
  PlacementOptions o;
  o.move_budget = 0;
  ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, o));
  EXPECT_OK(CheckPlan(p, PlacementMode::kDefault, plan));
  for (int l = 0; l < 2; ++l) {
    EXPECT_EQ(plan.phy2log_at(l, 2), -1);
    EXPECT_EQ(plan.phy2log_at(l, 3), -1);
    EXPECT_EQ(plan.gpu_load_at(l, 1), 0.0);
  }
  EXPECT_GT(plan.forced_moves, 0);
  EXPECT_EQ(plan.moved_experts, plan.forced_moves);  // budget 0
  bool e7_from_excluded = false;
  for (const Transfer& t : plan.transfers) {
    EXPECT_NE(t.to_gpu, 1);
    if (t.layer == 0 && t.expert == 7) {
      EXPECT_EQ(t.from_gpu, 1);  // its only holder
      e7_from_excluded = true;
    }
    if (t.layer == 0 && t.expert == 5) {
      EXPECT_EQ(t.from_gpu, 0);  // a usable copy
    }
  }
  EXPECT_TRUE(e7_from_excluded);
  // Balance: mean over the 7 usable GPUs.
  ASSERT_OK_AND_ASSIGN(Plan fresh, PlanPlacement([&] {
    PlacementProblem q = p;
    q.current_phy2log.clear();
    return q;
  }(), Default()));
  EXPECT_OK(CheckPlan(p, PlacementMode::kDefault, fresh));
}

// A current placement that breaks the group-node constraint (groups over
// both nodes) or duplicates an expert on a GPU is repaired: a valid plan,
// the fixes counted as forced moves.
TEST(DefaultPlanner, RepairsACurrentPlacementThatBreaksConstraints) {
  const Shape s{1, 12, 16, 4, 2, 8};
  PlacementProblem p = ProblemOf(s, {90, 132, 40, 61, 104, 165, 39, 4, 73, 56,
                                   183, 86});
  for (int sl = 0; sl < 16; ++sl) p.current_phy2log.push_back(sl % 12);
  PlacementOptions o;
  o.move_budget = 0;
  ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, o));
  EXPECT_OK(CheckPlan(p, PlacementMode::kDefault, plan));
  EXPECT_GT(plan.forced_moves, 0);
  EXPECT_EQ(plan.moved_experts, plan.forced_moves);

  const PlacementProblem q0 = ProblemOf(Shape{1, 2, 4, 1, 1, 2}, {10, 1});
  PlacementProblem q = q0;
  q.current_phy2log = {0, 0, 0, 1};  // eplb's plan: e0 twice on GPU 0
  ASSERT_OK_AND_ASSIGN(Plan fixed, PlanPlacement(q, o));
  EXPECT_FALSE(HasDuplicateOnAGpu(fixed));
  EXPECT_EQ(fixed.forced_moves, 1);  // GPU 0's second slot gets e1
  EXPECT_DOUBLE_EQ(fixed.balancedness, 1.0);
}

TEST(DefaultPlanner, AllZeroLoads) {
  const Shape s{2, 16, 24, 4, 2, 4};
  const PlacementProblem p = ProblemOf(s, std::vector<double>(32, 0.0));
  ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, Default()));
  EXPECT_DOUBLE_EQ(plan.balancedness, 1.0);
  EXPECT_DOUBLE_EQ(plan.max_over_mean, 1.0);
  ASSERT_OK_AND_ASSIGN(Plan eplb, PlanPlacement(p, EplbMode()));
  EXPECT_DOUBLE_EQ(eplb.balancedness, 1.0);
}

// On realistic shapes (at least 32 experts per placement domain), skewed and
// near-uniform loads, hierarchical and global: the default mode's
// balancedness is at least eplb's on every input. (On tiny shapes eplb's
// duplicates can win: two replicas of an expert on one GPU amount to an
// unused slot, which the default mode may not have; see
// eplb_reference_comparison.py for the counts.)
TEST(DefaultPlanner, AtLeastAsBalancedAsEplb) {
  std::mt19937_64 rng(2024);
  const Shape shapes[] = {
      {6, 64, 80, 8, 2, 16},     // hierarchical, 32 experts per node
      {6, 128, 160, 8, 2, 16},   // hierarchical
      {6, 128, 160, 1, 2, 16},   // global
      {6, 96, 128, 3, 2, 16},    // global (3 groups on 2 nodes)
      {3, 256, 288, 8, 4, 32},   // DeepSeek-V3 sized
  };
  double sum_ratio = 0;
  int n = 0;
  for (const Shape& s : shapes) {
    for (int kind = 0; kind < 3; ++kind) {
      for (int rep = 0; rep < 4; ++rep) {
        const PlacementProblem p = ProblemOf(s, Loads(s, kind, rng));
        ASSERT_OK_AND_ASSIGN(Plan eplb, PlanPlacement(p, EplbMode()));
        ASSERT_OK_AND_ASSIGN(Plan plan, PlanPlacement(p, Default()));
        EXPECT_GE(plan.balancedness, eplb.balancedness - 1e-12)
            << "M=" << s.experts << " G=" << s.groups << " kind " << kind;
        EXPECT_GE(plan.balancedness_summed, eplb.balancedness_summed - 1e-12);
        sum_ratio += plan.balancedness / eplb.balancedness;
        ++n;
      }
    }
  }
  EXPECT_GT(sum_ratio / n, 1.0);
}

}  // namespace
}  // namespace moecast

namespace moecast {
namespace {

// Every small shape: 8 to 64 experts, slots from M to 2M (multiples of the
// GPU count), 2 to 16 GPUs, 1 or 2 nodes, global and (where groups divide
// into nodes) hierarchical; three load kinds. Where eplb's plan has no two
// replicas of an expert on one GPU it is a valid default-mode plan, and the
// default mode is at least as balanced on every such input. Where eplb
// duplicates, it splits an expert's load unevenly between GPUs (2/3 and
// 1/3), which no plan without duplicates can; there the default mode must be
// at least as balanced on average, and the inputs it loses are counted.
TEST(DefaultPlanner, SmallShapeSweepAtLeastAsBalancedAsEplb) {
  std::mt19937_64 rng(77);
  int compared = 0, no_dup = 0, lost_with_dup = 0, with_dup = 0;
  double ratio_sum = 0;
  for (int m : {8, 12, 16, 24, 32, 48, 64}) {
    for (int gpus : {2, 4, 8, 16}) {
      for (int nodes : {1, 2}) {
        if (gpus % nodes != 0) continue;
        for (int groups : {1, 2, 4}) {
          if (m % groups != 0) continue;
          if (groups > 1 && groups % nodes != 0) continue;  // else global again
          for (int slots = (m + gpus - 1) / gpus * gpus; slots <= 2 * m;
               slots += gpus) {
            const Shape s{2, m, slots, groups, nodes, gpus};
            for (int kind = 0; kind < 3; ++kind) {
              const PlacementProblem p = ProblemOf(s, Loads(s, kind, rng));
              absl::StatusOr<Plan> plan = PlanPlacement(p, Default());
              if (!plan.ok()) {
                EXPECT_EQ(plan.status().code(),
                          absl::StatusCode::kInvalidArgument);
                continue;
              }
              ASSERT_OK_AND_ASSIGN(Plan eplb, PlanPlacement(p, EplbMode()));
              ++compared;
              ratio_sum += plan->balancedness / eplb.balancedness;
              const bool ok = plan->balancedness >= eplb.balancedness - 1e-12;
              if (HasDuplicateOnAGpu(eplb)) {
                ++with_dup;
                lost_with_dup += !ok;
                continue;
              }
              ++no_dup;
              EXPECT_TRUE(ok) << "M=" << m << " S=" << slots << " P=" << gpus
                              << " N=" << nodes << " G=" << groups
                              << " kind " << kind << ": default "
                              << plan->balancedness << " < eplb "
                              << eplb.balancedness;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(no_dup, 500);
  EXPECT_GT(with_dup, 500);
  EXPECT_GT(ratio_sum / compared, 1.0);
  // Losses happen only where eplb duplicated (see above), on a few: 69 of
  // 1,822 with the replica-shift starts (347 before them).
  EXPECT_LE(lost_with_dup, with_dup / 20) << "of " << with_dup;
  std::printf("small shapes: %d inputs, %d where eplb duplicated (default "
              "less balanced on %d of them), mean ratio %.4f\n",
              compared, with_dup, lost_with_dup, ratio_sum / compared);
}

}  // namespace
}  // namespace moecast
