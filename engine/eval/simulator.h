// Simulator: replays a trace against a placement policy and scores each plan
// on the loads that actually follow (what `moecast simulate` runs).
//
// Every policy starts from the same placement (eplb mode on uniform loads:
// experts dealt round-robin) and may replace it at its decision points:
//   periodic  every `interval` steps: eplb mode on the sum of the last
//             `window` steps, always adopted (vLLM's default policy, W = 1000,
//             I = 3000);
//   oracle    every `interval` steps: default mode on the loads of the next
//             `interval` steps (the future: a bound for policies that act
//             every `interval` steps), always adopted;
//   moecast   every `check_every` steps (default: min(interval, 100)): the
//             engine's RecommendPlacement on its forecasts (horizon H =
//             the steps the placement in force has served so far, clamped to
//             [check_every, interval]: a new placement is expected to serve
//             as long as the last one did, so frequent rebalancing shortens
//             the horizon its moves must pay in; upper bounds for transient
//             layers; default mode from the current placement), adopted only
//             when the migration-aware decision says it pays.
// The oracle and moecast plan with the migration model (placement.h,
// PlacementOptions::migration), so they move only what pays over the
// horizon; periodic moves whatever eplb's new plan moves.
// Scoring, per step t and layer l with the placement in force: GPU g's load
// is the sum over its slots of c_e(t) / logcnt_e; balancedness = mean / max
// GPU load, averaged over layers, then over steps. Time per step =
// time_per_token_s x sum_l max_g load (the straggler) x v, where v scales
// the trace's counts to the token volume the decisions use: v =
// tokens_per_step / the trace's mean assignments per layer per step when
// tokens_per_step is given, else 1 (decisions then use the trace's mean).
// Migrations cost their staged transfer time (placement.h, Decide) as a
// stall; total time = MoE time + migration time, for every policy.
//
// The trace is read into memory (float counts: steps x L x M x 4 bytes).
//
// Thread-safety: Simulate is reentrant.
#ifndef MOECAST_ENGINE_EVAL_SIMULATOR_H_
#define MOECAST_ENGINE_EVAL_SIMULATOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/placement/placement.h"
#include "engine/trace/trace_reader.h"

namespace moecast {

struct SimulateOptions {
  int top_k = 0;
  // Cluster (design section 5).
  int num_slots = 0;
  int num_groups = 1;
  int num_nodes = 1;
  int num_gpus = 0;
  std::string policy = "moecast";  // periodic | oracle | moecast
  int window = 1000;               // periodic: steps summed
  int interval = 3000;             // steps between decisions (and horizon)
  // moecast: steps between its checks; 0 means min(interval,
  // kDefaultCheckEvery). It may check more often than periodic acts: each
  // check rebalances only when the move pays over the horizon.
  int check_every = 0;
  static constexpr int kDefaultCheckEvery = 100;
  int64_t max_steps = 0;           // 0: the whole trace
  // Migration and time model (placement.h; validated as there).
  // tokens_per_step: the token volume for decisions and scoring; 0 means the
  // trace's mean token-expert assignments per layer per step.
  MigrationModel migration{
      /*bytes_per_expert=*/44040192,  // 3 x 7168 x 2048 bytes (fp8 V3 expert)
      /*intra_node_bandwidth=*/150e9,
      /*inter_node_bandwidth=*/40e9,
      /*tokens_per_step=*/0,
      /*time_per_token_s=*/2.2e-7,  // 88 MFLOP per assignment at 400 TFLOP/s
      /*horizon_steps=*/0,          // set to `interval`
      /*overlap=*/false};
  int max_extra_experts_per_gpu = 1;
  // Balancedness is sampled for the series every this many steps.
  int series_every = 50;
};

absl::Status ValidateSimulateOptions(const SimulateOptions& options);

struct SimulateDecision {
  int64_t step = 0;
  bool adopted = false;
  int64_t moved_experts = 0;
  double migration_s = 0;
  double planned_balancedness = 0;
  std::string reason;
};

struct SimulateReport {
  std::string policy;
  int64_t steps = 0;
  int layers = 0, experts = 0;
  double mean_balancedness = 0;     // over all steps
  double min_balancedness = 0;      // worst step
  double moe_time_s = 0;            // sum over steps of the straggler time
  double migration_s = 0;           // sum of adopted migrations (stalls)
  double total_time_s = 0;          // moe_time_s + migration_s
  // The token volume decisions and scoring used, and the trace's own mean
  // (assignments per layer per step).
  double tokens_per_step = 0;
  double trace_tokens_per_step = 0;
  int64_t rebalances = 0;
  int64_t moved_experts = 0;
  int64_t moved_bytes = 0;
  double plan_ms_total = 0;
  std::vector<SimulateDecision> decisions;
  std::vector<int64_t> series_steps;
  std::vector<double> series_balancedness;  // mean over the sampled block
};

absl::StatusOr<SimulateReport> Simulate(TraceReader& reader,
                                        const SimulateOptions& options);

std::string SimulateReportToJson(const SimulateReport& report);

}  // namespace moecast

#endif  // MOECAST_ENGINE_EVAL_SIMULATOR_H_
