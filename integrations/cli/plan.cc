// moecast plan: plans an expert placement for given loads (design section 5),
// in eplb mode (the published reference) or moecast's default mode, with the
// migration from a current placement and, given a migration model, the
// rebalance decision.
#include <algorithm>
#include <fstream>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/placement/placement.h"
#include "integrations/cli/commands.h"
#include "integrations/cli/flags.h"
#include "integrations/cli/json_io.h"

namespace moecast::cli {
namespace {

// Parses "3,5,7" (or "") into GPU indices.
absl::StatusOr<std::vector<int>> ParseIntList(const std::string& flag,
                                              const std::string& text) {
  std::vector<int> out;
  if (text.empty()) return out;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, ": '", part, "' is not an integer"));
    }
    out.push_back(v);
  }
  return out;
}

}  // namespace

int RunPlan(const std::vector<std::string>& args, std::ostream& out,
            std::ostream& err) {
  std::string loads_path, current_path, json_path, mode_name = "default",
                                                   exclude_text;
  int64_t slots = 0, groups = 1, nodes = 1, gpus = 0, move_budget = -1,
          max_moves = -1, max_extra = 1;
  const MigrationModel defaults = DefaultMigrationModel();
  double bytes_per_expert = defaults.bytes_per_expert,
         intra_bw = defaults.intra_node_bandwidth,
         inter_bw = defaults.inter_node_bandwidth,
         tokens_per_step = defaults.tokens_per_step,
         time_per_token = defaults.time_per_token_s,
         horizon_steps = defaults.horizon_steps;
  bool tradeoff = false, overlap = false, transient = false, marginal = true;
  FlagSet flags("plan");
  flags.AddString("loads", &loads_path,
                  "JSON {\"loads\": [[...M...], ...L rows]}: load per layer and "
                  "expert; or {\"slot_loads\": [[...S...], ...]} with --current",
                  /*required=*/true);
  constexpr int64_t kMaxSize = 1 << 24;
  flags.AddInt("slots", &slots, "total physical slots S (a multiple of --gpus, >= M)",
               /*required=*/true, 1, kMaxSize);
  flags.AddInt("groups", &groups, "expert groups G (dividing M)", false, 1, kMaxSize);
  flags.AddInt("nodes", &nodes, "nodes N (dividing --gpus)", false, 1, kMaxSize);
  flags.AddInt("gpus", &gpus, "GPUs P", /*required=*/true, 1, kMaxSize);
  flags.AddString("mode", &mode_name, "eplb (the published reference) or default");
  flags.AddString("current", &current_path,
                  "JSON {\"phy2log\": [[...S...], ...L rows]}: the placement in service");
  flags.AddString("exclude", &exclude_text, "GPUs to leave out, e.g. 3,17");
  flags.AddInt("max_moves", &max_moves,
               "cap on experts moved beyond forced ones (-1: no cap)", false, -1,
               std::numeric_limits<int64_t>::max());
  flags.AddInt("move_budget", &move_budget, "the former name of --max_moves", false,
               -1, std::numeric_limits<int64_t>::max());
  flags.AddBool("marginal", &marginal,
                "with --current in default mode: move only what pays under the "
                "migration model (--nomarginal: best balance within --max_moves)");
  flags.AddBool("tradeoff", &tradeoff, "report the balance-vs-moves curve");
  flags.AddInt("max_extra_per_gpu", &max_extra,
               "most extra experts a GPU receives per migration stage", false, 1,
               kMaxSize);
  // The migration model (defaults: DefaultMigrationModel(), placement.h).
  flags.AddDouble("bytes_per_expert", &bytes_per_expert,
                  "bytes of one expert's weights (default: fp8 DeepSeek-V3 expert)");
  flags.AddDouble("intra_bw", &intra_bw, "intra-node bandwidth, bytes/s");
  flags.AddDouble("inter_bw", &inter_bw, "inter-node bandwidth, bytes/s");
  flags.AddDouble("tokens_per_step", &tokens_per_step,
                  "token-expert assignments per layer per step");
  flags.AddDouble("time_per_token", &time_per_token,
                  "seconds per token-expert assignment on one GPU");
  flags.AddDouble("horizon_steps", &horizon_steps,
                  "steps the new placement will serve");
  flags.AddBool("overlap", &overlap, "migration overlaps compute (else the job stalls)");
  flags.AddBool("transient", &transient, "the job is in a transient state");
  flags.AddString("json", &json_path, "write the plan as JSON to this file");
  int64_t repeat = 1;
  flags.AddInt("repeat", &repeat,
               "plan this many times and report the first (cold) call's time and "
               "the median of the others (warm)", false, 1, 1000);
  if (absl::Status s = flags.Parse(args); !s.ok()) {
    err << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    out << "usage: moecast plan [flags]\n" << flags.Usage();
    return 0;
  }
  absl::StatusOr<PlacementMode> mode = ParsePlacementMode(mode_name);
  if (!mode.ok()) {
    err << "moecast plan: --mode: " << mode.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<std::vector<int>> excluded = ParseIntList("exclude", exclude_text);
  if (!excluded.ok()) {
    err << "moecast plan: " << excluded.status().message() << "\n";
    return 2;
  }
  bool model_flag = false;
  for (const char* name : {"intra_bw", "inter_bw", "tokens_per_step", "time_per_token",
                           "horizon_steps", "overlap", "transient"}) {
    model_flag = model_flag || flags.IsSet(name);
  }
  if (model_flag && current_path.empty()) {
    err << "moecast plan: the migration model flags (--tokens_per_step, --intra_bw, "
           "...) need --current\n";
    return 2;
  }
  if (flags.IsSet("max_moves") && flags.IsSet("move_budget") && max_moves != move_budget) {
    err << "moecast plan: --max_moves (" << max_moves << ") and --move_budget ("
        << move_budget << ") disagree; give one\n";
    return 2;
  }
  if (flags.IsSet("move_budget")) max_moves = move_budget;
  MigrationModel model;
  model.bytes_per_expert = bytes_per_expert;
  model.intra_node_bandwidth = intra_bw;
  model.inter_node_bandwidth = inter_bw;
  model.tokens_per_step = tokens_per_step;
  model.time_per_token_s = time_per_token;
  model.horizon_steps = horizon_steps;
  model.overlap = overlap;
  if (absl::Status s = ValidateMigrationModel(model, "migration model"); !s.ok()) {
    err << "moecast plan: " << s.message() << "\n";
    return 2;
  }

  // Logical loads ({"loads": L x M}), or per-physical-slot loads
  // ({"slot_loads": L x S}, e.g. what each replica served) folded through
  // the current placement.
  absl::StatusOr<Matrix> loads = ReadMatrixJson(loads_path, "loads", false);
  std::optional<Matrix> slot_loads;
  if (!loads.ok() && absl::StrContains(loads.status().message(),
                                       "expected an object with the key")) {
    absl::StatusOr<Matrix> by_slot = ReadMatrixJson(loads_path, "slot_loads", false);
    if (by_slot.ok()) {
      if (current_path.empty()) {
        err << "moecast plan: " << loads_path
            << ": slot_loads need --current (the placement they were measured on)\n";
        return 2;
      }
      slot_loads = *by_slot;
    }
  }
  if (!loads.ok() && !slot_loads.has_value()) {
    err << "moecast plan: " << loads.status().message()
        << " (or \"slot_loads\" with --current)\n";
    return 1;
  }
  PlacementProblem problem;
  if (loads.ok()) {
    problem.num_layers = loads->rows;
    problem.num_experts = loads->cols;
    problem.loads = loads->values;
  }
  problem.num_slots = static_cast<int>(slots);
  problem.num_groups = static_cast<int>(groups);
  problem.num_nodes = static_cast<int>(nodes);
  problem.num_gpus = static_cast<int>(gpus);
  problem.excluded_gpus = *excluded;
  if (!current_path.empty()) {
    absl::StatusOr<Matrix> current = ReadMatrixJson(current_path, "phy2log", true);
    if (!current.ok()) {
      err << "moecast plan: " << current.status().message() << "\n";
      return 1;
    }
    if (slot_loads.has_value()) {
      // The experts are those the current placement names.
      int max_expert = -1;
      for (double v : current->values) max_expert = std::max(max_expert, static_cast<int>(v));
      // Every expert needs a slot, so a placement of S slots names at most S
      // experts; a larger id is a typo, and would size the folded loads
      // (layers x experts) after it (2e9 experts: 16 GB per layer).
      if (max_expert >= problem.num_slots) {
        err << "moecast plan: " << current_path << ": phy2log names expert "
            << max_expert << ", but " << problem.num_slots
            << " slots hold at most " << problem.num_slots << " experts (0.."
            << problem.num_slots - 1 << ")\n";
        return 1;
      }
      problem.num_layers = slot_loads->rows;
      problem.num_experts = max_expert + 1;
      if (slot_loads->cols != problem.num_slots) {
        err << "moecast plan: " << loads_path << ": slot_loads has " << slot_loads->cols
            << " slots per layer, --slots is " << problem.num_slots << "\n";
        return 1;
      }
    }
    if (current->rows != problem.num_layers || current->cols != problem.num_slots) {
      err << "moecast plan: " << current_path << ": phy2log is " << current->rows
          << " x " << current->cols << ", expected layers x slots = "
          << problem.num_layers << " x " << problem.num_slots << "\n";
      return 1;
    }
    problem.current_phy2log.assign(current->values.begin(), current->values.end());
    if (slot_loads.has_value()) {
      absl::StatusOr<std::vector<double>> folded =
          FoldSlotLoads(problem.num_layers, problem.num_experts, problem.num_slots,
                        problem.current_phy2log, slot_loads->values);
      if (!folded.ok()) {
        err << "moecast plan: " << loads_path << ": " << folded.status().message() << "\n";
        return 1;
      }
      problem.loads = *std::move(folded);
    }
  }
  PlacementOptions options;
  options.mode = *mode;
  options.move_budget = max_moves;
  options.compute_tradeoff = tradeoff;
  options.max_extra_experts_per_gpu = static_cast<int>(max_extra);
  options.bytes_per_expert = static_cast<int64_t>(bytes_per_expert);
  if (marginal && *mode == PlacementMode::kDefault && !problem.current_phy2log.empty()) {
    options.migration = model;
    options.transient = transient;
  }
  absl::StatusOr<Plan> plan = PlanPlacement(problem, options);
  if (!plan.ok()) {
    err << "moecast plan: " << plan.status().message() << "\n";
    return 1;
  }
  // The same plan again: the first call pays for cold caches and fresh
  // memory, the others show the planner's own time.
  std::vector<double> warm_ms;
  for (int64_t r = 1; r < repeat; ++r) {
    absl::StatusOr<Plan> again = PlanPlacement(problem, options);
    if (!again.ok()) {
      err << "moecast plan: " << again.status().message() << "\n";
      return 1;
    }
    warm_ms.push_back(again->plan_ms);
  }
  std::optional<Plan> current_eval;
  std::optional<RebalanceDecision> decision;
  if (!problem.current_phy2log.empty()) {
    absl::StatusOr<Plan> c = EvaluatePlacement(problem, problem.current_phy2log, options);
    if (!c.ok()) {
      err << "moecast plan: " << current_path << ": " << c.status().message() << "\n";
      return 1;
    }
    current_eval = *c;
    absl::StatusOr<RebalanceDecision> d = Decide(*c, *plan, model, transient);
    if (!d.ok()) {
      err << "moecast plan: " << d.status().message() << "\n";
      return 1;
    }
    decision = *d;
  }

  out << absl::StrFormat(
      "moecast plan: %d layers x %d experts -> %d slots on %d GPUs (%d nodes, "
      "%d groups), mode %s\n",
      problem.num_layers, problem.num_experts, problem.num_slots, problem.num_gpus,
      problem.num_nodes, problem.num_groups, PlacementModeName(*mode));
  out << absl::StrFormat(
      "  balancedness %.4f (summed %.4f), max/mean %.4f, planned in %.2f ms\n",
      plan->balancedness, plan->balancedness_summed, plan->max_over_mean, plan->plan_ms);
  if (!warm_ms.empty()) {
    std::sort(warm_ms.begin(), warm_ms.end());
    out << absl::StrFormat("  planned again %d times: median %.2f ms (min %.2f, max %.2f)\n",
                           warm_ms.size(), warm_ms[warm_ms.size() / 2], warm_ms.front(),
                           warm_ms.back());
  }
  if (current_eval.has_value()) {
    out << absl::StrFormat(
        "  current placement: balancedness %.4f, max/mean %.4f\n"
        "  moves: %d experts (%d forced), %d bytes, %d stages\n",
        current_eval->balancedness, current_eval->max_over_mean, plan->moved_experts,
        plan->forced_moves, plan->moved_bytes, plan->num_stages);
  }
  if (decision.has_value()) {
    out << absl::StrFormat(
        "  decision: %s (saves %.4g s over the horizon, migration %.4g s, "
        "cost %.4g s, required %.4g s): %s\n",
        decision->rebalance ? "REBALANCE" : "hold", decision->saved_s,
        decision->migration_s, decision->cost_s, decision->required_s,
        decision->reason);
  }
  if (!plan->tradeoff.empty()) {
    out << "  trade-off (moved experts -> balancedness):";
    for (const TradeoffPoint& t : plan->tradeoff) {
      out << absl::StrFormat(" %d->%.4f", t.moved_experts, t.balancedness);
    }
    out << "\n";
  }
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << PlanToJson(*plan, decision, current_eval);
    f.close();
    if (!f) {
      err << "moecast plan: cannot write " << json_path << "\n";
      return 1;
    }
    out << "  JSON: " << json_path << "\n";
  }
  return 0;
}

}  // namespace moecast::cli
