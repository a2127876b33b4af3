// Expert placement (design section 5): which GPU holds which expert, with
// replicas, for every MoE layer; the migration from the current placement;
// and whether a rebalance pays.
//
// Two modes:
//  - kEplb reproduces DeepSeek's EPLB (github deepseek-ai/EPLB, eplb.py,
//    rebalance_experts): hierarchical when num_groups % num_nodes == 0
//    (expert groups packed to nodes with equal counts; replicas made within
//    each node, each extra one to the expert with the largest load per
//    replica; replicas packed to the node's GPUs, heaviest first, each to the
//    lightest GPU with a free slot), else the same with one group and one
//    node. Same phy2log/log2phy/logcnt conventions and the same per-GPU
//    loads as the reference. Ties: the reference sorts with an unstable
//    sort; here equal loads keep index order (lower index first), so with
//    tied loads an equally good but differently ordered plan can come out
//    (compare by per-GPU loads). Arithmetic is in double (the reference
//    casts to float32), so near-ties closer than float32 precision may break
//    differently. Its quirks are kept: two replicas of one expert can share a
//    GPU, and the current placement is ignored when planning (it is only used
//    to count moves and list transfers). excluded_gpus is rejected.
//  - kDefault keeps the reference's constraints (with num_groups % num_nodes
//    == 0 all replicas of a group stay on the node the group is packed to;
//    every usable GPU gets exactly num_slots / num_gpus slots), and:
//      * never puts two replicas of one expert on one GPU, so an expert gets
//        at most as many replicas as the GPUs it may use (the usable GPUs of
//        its node under group-limited routing, all usable GPUs otherwise);
//      * leaves out excluded GPUs (their slots are -1 in phy2log);
//      * packs groups to nodes like the reference (heaviest first to the
//        lightest node; per usable GPU when nodes differ), then swaps groups
//        off the heaviest node while that lowers it;
//      * replicates like the reference (each extra replica to the largest
//        load per replica) but capped, packs replicas greedily (heaviest
//        first to the lightest GPU that lacks the expert);
//      * improves that packing with a bounded local search on the layer's
//        most loaded GPU: the best swap of two replicas between it and
//        another GPU of its domain, else the best "replica move" (one of
//        its slots of a replicated expert goes to another expert, changing
//        both replica counts), while that lowers it; it stops when no step
//        does, after local_search_iterations steps per domain, or once the
//        layer's max/mean - 1 is below good_enough_max_vio;
//      * on layers of at most 64 experts whose plan is above a lower bound
//        on the max GPU load, also starts from the reference's plan (a
//        second replica of an expert on one GPU reassigned), polishes it the
//        same way and keeps the better plan;
//      * with a current placement: relabels nodes (among nodes with as many
//        usable GPUs) and GPUs within nodes of the balanced plan to overlap
//        the current placement most (Hungarian assignment; slots keep their
//        position within a GPU where the expert stays); and also walks from
//        the current placement (repaired: excluded GPUs evacuated,
//        duplicates removed, empty slots filled) with the same local-search
//        steps ranked by max-load reduction per moved expert. Per layer,
//        the walk's points and the relabelled plan give a (moved experts,
//        max GPU load) curve, reduced to its lower convex hull; the hull
//        steps of all layers are taken best gain per move first (gain in
//        units of the layer's total load) while the move budget lasts. The
//        chosen prefix only grows with the budget, so balance and moves are
//        monotone in it (Plan::tradeoff is that curve). With
//        PlacementOptions::migration, the prefix of that curve with the
//        least horizon MoE time + migration cost is taken instead (still
//        capped by the budget). With a migration model, on layers of more
//        than 64 experts the relabelled plan is built only where the walk
//        stops above (1 + good_enough_max_vio) x a lower bound on that
//        plan's max GPU load (its group packing's heaviest domain, or
//        heaviest expert, spread over the domain's GPUs): elsewhere it could
//        lower the layer's max by less than that tolerance, for a
//        from-scratch number of moves, and it is not on the curve.
// Every returned plan passes CheckPlan; a plan that fails it is an INTERNAL
// error (a bug), never returned.
//
// Usage:
//   PlacementProblem p;
//   p.num_layers = 58; p.num_experts = 256; p.loads = ...;   // 58 x 256
//   p.num_slots = 288; p.num_groups = 8; p.num_nodes = 4; p.num_gpus = 32;
//   p.current_phy2log = ...;                                 // optional
//   PlacementOptions o;                                      // kDefault
//   o.bytes_per_expert = 44 << 20;
//   MOECAST_ASSIGN_OR_RETURN(Plan plan, PlanPlacement(p, o));
//   MOECAST_ASSIGN_OR_RETURN(Plan now, EvaluatePlacement(p, p.current_phy2log));
//   MOECAST_ASSIGN_OR_RETURN(RebalanceDecision d,
//                            Decide(now, plan, model, /*transient=*/false));
//
// Units: loads are any non-negative measure of work per expert (token
// counts, proportions, forecast means or upper bounds); a replica carries
// load / (replica count of its expert). GPU g is on node g / (num_gpus /
// num_nodes); slot s is on GPU s / (num_slots / num_gpus).
//
// Thread-safety: the functions are pure (no shared state); call them from any
// thread.
#ifndef MOECAST_ENGINE_PLACEMENT_PLACEMENT_H_
#define MOECAST_ENGINE_PLACEMENT_PLACEMENT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moecast {

enum class PlacementMode {
  kEplb,     // the DeepSeek EPLB reference
  kDefault,  // moecast's planner (see the header comment)
};

// "eplb" / "default".
absl::string_view PlacementModeName(PlacementMode mode);
// Parses "eplb" or "default"; INVALID_ARGUMENT otherwise.
absl::StatusOr<PlacementMode> ParsePlacementMode(absl::string_view name);

struct PlacementProblem {
  int num_layers = 0;   // L >= 1
  int num_experts = 0;  // M >= 1 logical experts per layer
  // L x M, row-major: loads[l * M + e] >= 0 and finite.
  std::vector<double> loads;
  // Total physical slots S (EPLB's num_replicas): a multiple of num_gpus,
  // S >= M.
  int num_slots = 0;
  // Expert groups G (dividing M; experts g*M/G .. (g+1)*M/G - 1 form group
  // g). Group-limited (hierarchical) placement when G % num_nodes == 0.
  int num_groups = 1;
  int num_nodes = 1;  // N >= 1
  int num_gpus = 0;   // P, a multiple of N
  // GPUs to leave out (failed or drained): each in [0, P), no repeats. Their
  // slots hold nothing (-1) in a default-mode plan. Not supported in eplb
  // mode. A node with every GPU left out cannot take groups: describe the
  // cluster without it instead.
  std::vector<int> excluded_gpus;
  // Optional current placement, L x S row-major (empty: none): the logical
  // expert in each slot, -1 for an empty slot. Every expert must appear at
  // least once per layer. It may hold experts on GPUs now excluded (they are
  // evacuated), duplicates on a GPU (removed) and, under group-limited
  // routing, groups spread over nodes (that layer is then re-planned from
  // scratch).
  std::vector<int32_t> current_phy2log;
};

// How moving experts costs time and what balance buys.
//
// DefaultMigrationModel() describes a DeepSeek-V3-class deployment: an fp8
// expert of 3 x 7168 x 2048 bytes (44 MB), 150 GB/s effective GPU-to-GPU
// bandwidth inside a node (NVLink, H800 class), 40 GB/s between nodes
// (400 Gb/s InfiniBand per GPU, after protocol overhead), 0.22 us per
// token-expert assignment (88 MFLOP at 400 TFLOP/s sustained), 4096 tokens
// x top-8 = 32768 assignments per layer per step, a 1000-step horizon, and a
// job that stalls while experts move. Calibrate it for other hardware.
struct MigrationModel {
  // Bytes per expert; if 0, each transfer's own bytes are used (the
  // planner then uses PlacementOptions::bytes_per_expert).
  double bytes_per_expert = 0;
  double intra_node_bandwidth = 0;  // bytes/s, > 0
  double inter_node_bandwidth = 0;  // bytes/s, > 0 (also for from_gpu = -1)
  // Token-expert assignments per MoE layer per step (N * K), >= 0.
  double tokens_per_step = 0;
  // Seconds for one GPU to process one token-expert assignment, >= 0.
  double time_per_token_s = 0;
  // Steps the new placement is expected to serve, >= 0.
  double horizon_steps = 0;
  // true: migration overlaps compute and costs overlap_cost_fraction of its
  // time; false: the job stalls for all of it.
  bool overlap = false;
  double overlap_cost_fraction = 0.2;  // in [0, 1]
  // In a transient state the saving must exceed (1 + transient_margin) x the
  // cost (>= 0).
  double transient_margin = 1.0;
};

// The documented defaults above.
MigrationModel DefaultMigrationModel();

// INVALID_ARGUMENT naming the first bad field: bandwidths not finite and
// > 0; bytes, tokens, time per token, horizon or transient margin not finite
// and >= 0; overlap_cost_fraction outside [0, 1]. `what` prefixes the
// message.
absl::Status ValidateMigrationModel(const MigrationModel& model,
                                    absl::string_view what);

struct PlacementOptions {
  PlacementMode mode = PlacementMode::kDefault;
  // Default mode with a current placement only: the most moved experts (over
  // all layers) spent beyond the forced ones, -1 for no limit. Forced moves
  // are those no plan can avoid: evacuating excluded GPUs, removing
  // duplicates, filling empty slots, re-planning a layer whose current
  // placement breaks the group-node constraint. With no limit, each layer
  // takes its best-balanced option (fewest moves among equals).
  int64_t move_budget = -1;
  // Default mode with a current placement: when set, the planner chooses
  // how many experts to move, and which, on its gain/cost curve (the hull
  // steps of every layer, best gain per moved expert first): it keeps the
  // prefix of that curve that minimises horizon x MoE step time + migration
  // cost (staged exactly as the returned transfers are, times
  // overlap_cost_fraction when overlapped, times 1 + transient_margin when
  // `transient`). Every suffix of the chosen moves pays for itself: dropping
  // the last j moves (any j) never lowers that total, and adding the next
  // ones never does either. move_budget still caps the moves. Unset: the
  // budget alone decides (no limit: best balance).
  std::optional<MigrationModel> migration;
  bool transient = false;
  // Default mode: a step of the move-budget walk is taken only if it lowers
  // the layer's max GPU load by more than this per moved expert, in units of
  // the layer's total load (0: any strict gain).
  double min_gain_per_moved_expert = 0;
  // Default mode with a current placement: fill Plan::tradeoff (move budget
  // -> balancedness, moved experts) from the same walk, at most
  // tradeoff_points points (>= 2), always including budget 0 and the last.
  bool compute_tradeoff = false;
  int tradeoff_points = 32;
  // Migration staging: at most this many extra experts (>= 1) received per
  // GPU in one stage.
  int max_extra_experts_per_gpu = 1;
  // Bytes of one expert's weights (>= 0), for moved_bytes and transfers.
  int64_t bytes_per_expert = 0;
  // Default mode: the most improving local-search steps per layer, times
  // the number of placement domains (nodes under group-limited routing, else
  // 1), when polishing a packing; per layer when walking from the current
  // placement (>= 0; 0 turns local search off).
  int local_search_iterations = 64;
  // Default mode: local search (and the walk from the current placement)
  // stops once a layer's max GPU load is within this fraction of its mean
  // GPU load (max / mean - 1, MaxVio), >= 0; 0: until no step improves.
  // Differences this small are well inside forecast error; it also means a
  // near-perfectly balanced layer may end up to this fraction less balanced
  // than eplb mode would make it. With a migration model it also decides
  // which layers build the from-scratch plan (see the header comment).
  double good_enough_max_vio = 1e-3;
};

// One expert copied to a GPU that did not hold it.
struct Transfer {
  int layer = 0;
  int expert = 0;
  // A GPU that held the expert in the current placement (a usable one on the
  // destination's node first, then a usable one elsewhere, then an excluded
  // one: a drained GPU can still send; for a failed one the caller fetches
  // the weights elsewhere), -1 if none did.
  int from_gpu = -1;
  int to_gpu = 0;
  int64_t bytes = 0;
  // Stages run one after another; within a stage each GPU receives at most
  // max_extra_experts_per_gpu experts. Each GPU's inter-node transfers come
  // first, so that slow transfers share stages.
  int stage = 0;
};

// One point of the move-budget trade-off.
struct TradeoffPoint {
  int64_t move_budget = 0;      // moves beyond the forced ones
  int64_t moved_experts = 0;    // forced + budgeted
  double balancedness = 0;
  double balancedness_summed = 0;
  // With PlacementOptions::migration: horizon x MoE step time and the
  // migration cost of this prefix (seconds); their sum is what the planner
  // minimises.
  double moe_time_s = 0;
  double cost_s = 0;
};

struct Plan {
  PlacementMode mode = PlacementMode::kDefault;
  int num_layers = 0;
  int num_experts = 0;
  int num_slots = 0;
  int num_gpus = 0;
  int num_nodes = 0;
  // L x S: logical expert of each physical slot (-1: empty, only on
  // excluded GPUs).
  std::vector<int32_t> phy2log;
  // L x M x max_replicas: the slots of each expert's replicas, -1 padded
  // (eplb: ordered by replica rank as in the reference; default: ascending
  // slot).
  std::vector<int32_t> log2phy;
  int max_replicas = 0;  // the largest logcnt over all layers
  // L x M: replica count of each expert.
  std::vector<int32_t> logcnt;
  // L x P: per-GPU load (each replica carries load / replica count).
  std::vector<double> gpu_loads;
  // Per layer mean GPU load / max GPU load (1 for an all-zero layer),
  // averaged over layers. The mean is over GPUs holding at least one expert
  // (the usable GPUs, for planned placements).
  double balancedness = 0;
  // Sum over layers of mean GPU load / sum over layers of max GPU load.
  double balancedness_summed = 0;
  // Per layer max / mean GPU load, averaged over layers (MaxVio is this
  // minus 1).
  double max_over_mean = 0;
  // Versus the current placement (0 / empty without one): (layer, GPU,
  // expert) triples present in this plan and absent from the current one,
  // i.e. replicas placed on a GPU that did not hold that expert (a second
  // replica of an expert on the same GPU, eplb mode only, is not counted
  // again). moved_bytes = moved_experts * bytes_per_expert.
  int64_t moved_experts = 0;
  int64_t moved_bytes = 0;
  int64_t forced_moves = 0;  // of moved_experts (see move_budget)
  std::vector<Transfer> transfers;  // sorted by (stage, to_gpu, layer)
  int num_stages = 0;
  double plan_ms = 0;  // wall time of the planning call
  std::vector<TradeoffPoint> tradeoff;

  int32_t phy2log_at(int layer, int slot) const {
    return phy2log[static_cast<size_t>(layer) * num_slots + slot];
  }
  int32_t logcnt_at(int layer, int expert) const {
    return logcnt[static_cast<size_t>(layer) * num_experts + expert];
  }
  int32_t log2phy_at(int layer, int expert, int replica) const {
    return log2phy[(static_cast<size_t>(layer) * num_experts + expert) *
                       max_replicas +
                   replica];
  }
  double gpu_load_at(int layer, int gpu) const {
    return gpu_loads[static_cast<size_t>(layer) * num_gpus + gpu];
  }
};

// Plans a placement. INVALID_ARGUMENT names the field and the value seen:
// non-positive sizes; loads of the wrong size, negative or not finite;
// num_slots not a multiple of num_gpus or below num_experts; num_gpus not a
// multiple of num_nodes; num_groups not dividing num_experts; excluded GPUs
// out of range or repeated (or any, in eplb mode); too few usable slots for
// one replica of every expert (per node under group-limited routing); in
// default mode, more slots than can be filled without two replicas of one
// expert on one GPU; a current placement of the wrong size, naming an
// unknown expert or missing one; bad options.
absl::StatusOr<Plan> PlanPlacement(const PlacementProblem& problem,
                                   const PlacementOptions& options);

// The metrics of a given placement phy2log (L x S, -1 for empty slots) under
// problem.loads: gpu_loads, balancedness..., logcnt/log2phy (ascending slot
// order), and moves/transfers versus problem.current_phy2log if present
// (staged with `options`). Every expert must have a replica. Use it for the
// current placement before Decide. mode is set to options.mode.
absl::StatusOr<Plan> EvaluatePlacement(const PlacementProblem& problem,
                                       const std::vector<int32_t>& phy2log,
                                       const PlacementOptions& options = {});

// Checks a plan against the problem: sizes; slots of excluded GPUs empty and
// every other slot holding an expert; logcnt[l][e] >= 1 equal to the number
// of slots holding e, and log2phy listing exactly those slots, -1 padded;
// under group-limited routing (G % N == 0), all replicas of a group on one
// node and num_groups / num_nodes groups per node; in default mode, no
// expert twice on one GPU. FAILED_PRECONDITION naming the first violation.
absl::Status CheckPlan(const PlacementProblem& problem, PlacementMode mode,
                       const Plan& plan);

// Folds per-physical-slot loads (L x S, e.g. tokens each replica served)
// into logical loads (L x M) through phy2log (L x S, -1 for empty slots,
// whose loads must be 0): an expert's load is the sum over its replicas.
// INVALID_ARGUMENT for wrong sizes, unknown experts, negative or non-finite
// loads, or load on an empty slot.
absl::StatusOr<std::vector<double>> FoldSlotLoads(
    int num_layers, int num_experts, int num_slots,
    const std::vector<int32_t>& phy2log, const std::vector<double>& slot_loads);

struct RebalanceDecision {
  bool rebalance = false;
  // Per-step MoE time of each placement: tokens_per_step * time_per_token_s
  // * sum over layers of (max GPU load / layer total load), i.e. the
  // straggler GPU's share of each layer's work.
  double step_time_current_s = 0;
  double step_time_proposed_s = 0;
  // horizon_steps * (step_time_current_s - step_time_proposed_s).
  double saved_s = 0;
  // Transfers' time: stages one after another; a stage lasts as long as its
  // slowest transfer, bytes / bandwidth (inter-node when the GPUs are on
  // different nodes or from_gpu is -1).
  double migration_s = 0;
  // migration_s if the job stalls, overlap_cost_fraction * migration_s if it
  // overlaps.
  double cost_s = 0;
  // What saved_s must exceed: cost_s, times (1 + transient_margin) in a
  // transient state.
  double required_s = 0;
  int64_t moved_experts = 0;
  int num_stages = 0;
  std::string reason;
};

// Decides whether to move from `current` (EvaluatePlacement of the current
// placement under the same loads) to `proposed` (PlanPlacement with that
// current placement, so its transfers are the migration). transient: the
// loads are the upper bounds the caller planned on in a transient state; the
// saving must then clear the margin. Rebalance iff proposed moves something
// and either some of its moves are forced (proposed.forced_moves > 0: the
// current placement cannot stay, and PlanPlacement priced its other moves
// from the forced start) or saved_s > required_s. INVALID_ARGUMENT for a bad
// model or plans of different shapes.
absl::StatusOr<RebalanceDecision> Decide(const Plan& current,
                                         const Plan& proposed,
                                         const MigrationModel& model,
                                         bool transient);

}  // namespace moecast

#endif  // MOECAST_ENGINE_PLACEMENT_PLACEMENT_H_
