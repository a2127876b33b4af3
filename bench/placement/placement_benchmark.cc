// Placement planner costs and quality (engine/placement).
//
//   bazel run -c opt //bench/placement:placement_benchmark
//   bazel run -c opt //bench/placement:placement_benchmark -- --sweep_only
//   bazel run -c opt //bench/placement:placement_benchmark -- --no_sweep
//
// Shapes:
//   v3        DeepSeek-V3: 58 MoE layers, 256 experts, 288 slots (32 redundant),
//             32 GPUs on 4 nodes, 8 groups (group-limited routing: each node
//             gets 2 groups).
//   l94_hier  94 layers x 128 experts (Qwen3-235B-A22B sized), 160 slots
//             (32 redundant), 16 GPUs on 2 nodes, 8 groups (hierarchical).
//   l94_glob  the same with 1 group (global: any expert on any GPU).
//   v3_glob   v3 with 1 group (global).
// Loads per layer: w_e = exp(0.7 z_e), z_e standard normal (a lognormal skew
// like real routing loads: max/mean about 3 over 256 experts).
//
// Benchmarks (CPU time, single thread):
//   BM_Plan/<shape>/<mode>          PlanPlacement without a current placement
//                                   (mode 0 eplb, 1 default, 2 default with
//                                   local_search_iterations = 0)
//   BM_PlanWithCurrent/<shape>/<m>  default mode, current = the default plan
//                                   for the same loads before 5% noise
//                                   (w_e * (1 + 0.05 z)), no move budget;
//                                   m = 0: no migration model (best
//                                   balance), m = 1: DefaultMigrationModel()
//                                   (what `moecast plan --current` uses)
//   BM_Evaluate/<shape>             EvaluatePlacement of a plan
// Counters: plan_ms (the planner's own wall time), balancedness, moved.
//
// The sweep (after the benchmarks) prints, per shape and load kind (zipf:
// w_e = rank^-s, s uniform in [0.6, 1.2], random expert order; uniform:
// 1 +- 10%), over 20 random inputs: default/eplb balancedness ratio (min,
// mean), both balancednesses (mean), the share of inputs whose eplb plan
// has an expert twice on a GPU; then, with a current placement and 5% load
// noise, the experts moved by eplb (its new plan versus its old one) and by
// the default mode without and with move budgets, and the balancedness
// reached.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "engine/placement/placement.h"
#include "engine/placement/testing/plan_checks.h"

namespace moecast {
namespace {

using ::moecast::testing::ProblemOf;

using ::moecast::testing::HasDuplicateOnAGpu;
using ::moecast::testing::Noisy;

struct Shape {
  const char* name;
  int layers, experts, slots, groups, nodes, gpus;
};

const Shape kShapes[] = {
    {"v3", 58, 256, 288, 8, 4, 32},
    {"l94_hier", 94, 128, 160, 8, 2, 16},
    {"l94_glob", 94, 128, 160, 1, 2, 16},
    {"v3_glob", 58, 256, 288, 1, 4, 32},
};

std::vector<double> LognormalLoads(const Shape& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n01(0.0, 1.0);
  std::vector<double> w(static_cast<size_t>(s.layers) * s.experts);
  for (double& v : w) v = std::exp(0.7 * n01(rng));
  return w;
}

std::vector<double> ZipfLoads(const Shape& s, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.6, 1.2);
  std::vector<double> w(static_cast<size_t>(s.layers) * s.experts);
  std::vector<int> perm(s.experts);
  for (int l = 0; l < s.layers; ++l) {
    const double exponent = u(rng);
    for (int e = 0; e < s.experts; ++e) perm[e] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int e = 0; e < s.experts; ++e) {
      w[static_cast<size_t>(l) * s.experts + perm[e]] =
          1000.0 / std::pow(e + 1.0, exponent);
    }
  }
  return w;
}

std::vector<double> UniformLoads(const Shape& s, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0.9, 1.1);
  std::vector<double> w(static_cast<size_t>(s.layers) * s.experts);
  for (double& v : w) v = 100.0 * u(rng);
  return w;
}

Plan MustPlan(const PlacementProblem& p, const PlacementOptions& o) {
  absl::StatusOr<Plan> plan = PlanPlacement(p, o);
  if (!plan.ok()) {
    std::fprintf(stderr, "PlanPlacement failed: %s\n",
                 plan.status().ToString().c_str());
    std::abort();
  }
  return *std::move(plan);
}

void BM_Plan(benchmark::State& state) {
  const Shape& s = kShapes[state.range(0)];
  PlacementOptions o;
  o.mode = state.range(1) == 0 ? PlacementMode::kEplb : PlacementMode::kDefault;
  if (state.range(1) == 2) o.local_search_iterations = 0;
  const PlacementProblem p = ProblemOf(s, LognormalLoads(s, 7));
  double ms = 0, bal = 0;
  int64_t runs = 0;
  for (auto _ : state) {
    Plan plan = MustPlan(p, o);
    ms += plan.plan_ms;
    bal = plan.balancedness;
    ++runs;
    benchmark::DoNotOptimize(plan);
  }
  state.counters["plan_ms"] = ms / runs;
  state.counters["balancedness"] = bal;
  state.SetLabel(std::string(s.name) + "/" +
                 (o.mode == PlacementMode::kEplb        ? "eplb"
                  : o.local_search_iterations == 0 ? "default_no_local_search"
                                                   : "default"));
}
BENCHMARK(BM_Plan)
    ->ArgsProduct({{0, 1, 2, 3}, {0, 1, 2}})
    ->Unit(benchmark::kMillisecond);

void BM_PlanWithCurrent(benchmark::State& state) {
  const Shape& s = kShapes[state.range(0)];
  PlacementOptions o;
  std::vector<double> base = LognormalLoads(s, 7);
  PlacementProblem before = ProblemOf(s, base);
  const Plan old_plan = MustPlan(before, o);
  if (state.range(1) == 1) {
    o.migration = DefaultMigrationModel();
    o.bytes_per_expert = static_cast<int64_t>(o.migration->bytes_per_expert);
  }
  std::mt19937_64 rng(11);
  PlacementProblem p = ProblemOf(s, Noisy(base, 0.05, rng));
  p.current_phy2log = old_plan.phy2log;
  double ms = 0, bal = 0, moved = 0;
  int64_t runs = 0;
  for (auto _ : state) {
    Plan plan = MustPlan(p, o);
    ms += plan.plan_ms;
    bal = plan.balancedness;
    moved = static_cast<double>(plan.moved_experts);
    ++runs;
    benchmark::DoNotOptimize(plan);
  }
  state.counters["plan_ms"] = ms / runs;
  state.counters["balancedness"] = bal;
  state.counters["moved"] = moved;
  state.SetLabel(std::string(s.name) + "/default+current" +
                 (state.range(1) == 1 ? "+model" : ""));
}
BENCHMARK(BM_PlanWithCurrent)
    ->ArgsProduct({{0, 1, 2, 3}, {0, 1}})
    ->Unit(benchmark::kMillisecond);

void BM_Evaluate(benchmark::State& state) {
  const Shape& s = kShapes[state.range(0)];
  const PlacementProblem p = ProblemOf(s, LognormalLoads(s, 7));
  const Plan plan = MustPlan(p, PlacementOptions());
  for (auto _ : state) {
    absl::StatusOr<Plan> e = EvaluatePlacement(p, plan.phy2log);
    benchmark::DoNotOptimize(e);
  }
  state.SetLabel(s.name);
}
BENCHMARK(BM_Evaluate)->DenseRange(0, 3)->Unit(benchmark::kMillisecond);

void Sweep() {
  constexpr int kInputs = 20;
  std::printf(
      "\nSweep: %d random inputs per row; ratio = default / eplb "
      "balancedness (per input)\n",
      kInputs);
  std::printf("%-9s %-8s %9s %9s %9s %9s %8s %9s %9s\n", "shape", "loads",
              "ratio_min", "ratio_avg", "eplb_bal", "dflt_bal", "eplb_dup",
              "eplb_ms", "dflt_ms");
  for (const Shape& s : kShapes) {
    for (int kind = 0; kind < 2; ++kind) {
      std::mt19937_64 rng(1000 + kind);
      double rmin = 1e9, rsum = 0, eb = 0, db = 0, ems = 0, dms = 0;
      int dups = 0;
      for (int i = 0; i < kInputs; ++i) {
        const PlacementProblem p =
            ProblemOf(s, kind == 0 ? ZipfLoads(s, rng) : UniformLoads(s, rng));
        PlacementOptions o;
        o.mode = PlacementMode::kEplb;
        const Plan e = MustPlan(p, o);
        o.mode = PlacementMode::kDefault;
        const Plan d = MustPlan(p, o);
        const double r = d.balancedness / e.balancedness;
        rmin = std::min(rmin, r);
        rsum += r;
        eb += e.balancedness;
        db += d.balancedness;
        ems += e.plan_ms;
        dms += d.plan_ms;
        dups += HasDuplicateOnAGpu(e);
      }
      std::printf("%-9s %-8s %9.4f %9.4f %9.4f %9.4f %5d/%-2d %9.3f %9.3f\n",
                  s.name, kind == 0 ? "zipf" : "uniform", rmin,
                  rsum / kInputs, eb / kInputs, db / kInputs, dups, kInputs,
                  ems / kInputs, dms / kInputs);
    }
  }

  std::printf(
      "\nMigration with 5%% load noise (zipf loads; current = the same "
      "mode's plan before the noise), mean over %d inputs:\n",
      kInputs / 2);
  std::printf("%-9s %-22s %10s %12s %9s %11s\n", "shape", "planner", "moved",
              "of_replicas", "bal", "of_eplb");
  for (const Shape& s : kShapes) {
    struct Row {
      const char* name;
      PlacementMode mode;
      int64_t budget;
      bool model;
      double horizon;
    };
    const Row rows[] = {
        {"eplb", PlacementMode::kEplb, -1, false, 0},
        {"default, no budget", PlacementMode::kDefault, -1, false, 0},
        {"default, model", PlacementMode::kDefault, -1, true, 1000},
        {"default, model H=300", PlacementMode::kDefault, -1, true, 300},
        {"default, model H=3000", PlacementMode::kDefault, -1, true, 3000},
        {"default, budget 200", PlacementMode::kDefault, 200, false, 0},
        {"default, budget 50", PlacementMode::kDefault, 50, false, 0},
        {"default, budget 0", PlacementMode::kDefault, 0, false, 0},
    };
    double eplb_moved = 0;
    for (const Row& row : rows) {
      std::mt19937_64 rng(77);
      double moved = 0, bal = 0;
      const int n = kInputs / 2;
      for (int i = 0; i < n; ++i) {
        std::vector<double> base = ZipfLoads(s, rng);
        PlacementOptions o;
        o.mode = row.mode;
        const Plan old_plan = MustPlan(ProblemOf(s, base), o);
        PlacementProblem p = ProblemOf(s, Noisy(base, 0.05, rng));
        p.current_phy2log = old_plan.phy2log;
        o.move_budget = row.budget;
        if (row.model) {
          o.migration = DefaultMigrationModel();
          o.migration->horizon_steps = row.horizon;
          o.bytes_per_expert =
              static_cast<int64_t>(o.migration->bytes_per_expert);
        }
        const Plan plan = MustPlan(p, o);
        moved += static_cast<double>(plan.moved_experts);
        bal += plan.balancedness;
      }
      if (row.mode == PlacementMode::kEplb) eplb_moved = moved;
      std::printf("%-9s %-22s %10.1f %11.1f%% %9.4f %10.1f%%\n", s.name,
                  row.name, moved / n,
                  100.0 * moved / n / (static_cast<double>(s.layers) * s.slots),
                  bal / n, eplb_moved > 0 ? 100.0 * moved / eplb_moved : 0.0);
    }
  }

  // The trade-off curve of one input.
  const Shape& s = kShapes[0];
  std::mt19937_64 rng(5);
  std::vector<double> base = ZipfLoads(s, rng);
  const Plan old_plan = MustPlan(ProblemOf(s, base), PlacementOptions());
  PlacementProblem p = ProblemOf(s, Noisy(base, 0.05, rng));
  p.current_phy2log = old_plan.phy2log;
  PlacementOptions o;
  o.compute_tradeoff = true;
  o.tradeoff_points = 12;
  const Plan plan = MustPlan(p, o);
  std::printf("\nTrade-off curve (v3, zipf, 5%% noise; plan_ms %.2f):\n",
              plan.plan_ms);
  std::printf("%12s %10s %12s %12s\n", "move_budget", "moved", "balanced",
              "bal_summed");
  for (const TradeoffPoint& t : plan.tradeoff) {
    std::printf("%12lld %10lld %12.4f %12.4f\n",
                static_cast<long long>(t.move_budget),
                static_cast<long long>(t.moved_experts), t.balancedness,
                t.balancedness_summed);
  }
}

}  // namespace
}  // namespace moecast

int main(int argc, char** argv) {
  bool sweep = true, bench = true;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no_sweep") == 0) {
      sweep = false;
    } else if (std::strcmp(argv[i], "--sweep_only") == 0) {
      bench = false;
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  if (bench) {
    benchmark::Initialize(&n, args.data());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
  }
  if (sweep) moecast::Sweep();
  return 0;
}
