// Internals of the placement planner (placement.h): the problem layout shared
// by both modes, the EPLB reference (eplb.cc) and the default planner
// (default_planner.cc). Not part of the public API.
//
// Thread-safety: plain functions and value types; no shared state.
#ifndef MOECAST_ENGINE_PLACEMENT_INTERNAL_H_
#define MOECAST_ENGINE_PLACEMENT_INTERNAL_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "engine/placement/placement.h"

namespace moecast {
namespace placement_internal {

// Derived sizes of a validated problem.
struct Layout {
  int num_layers = 0;
  int num_experts = 0;
  int num_slots = 0;
  int num_groups = 0;
  int num_nodes = 0;
  int num_gpus = 0;
  int slots_per_gpu = 0;  // k = S / P
  int gpus_per_node = 0;  // P / N
  int group_size = 0;     // M / G
  // G % N == 0: groups are packed to nodes and their replicas stay there.
  bool hierarchical = false;
  std::vector<uint8_t> usable;  // P flags
  int num_usable = 0;
  // Placement domains: hierarchical: one per node, its usable GPUs
  // (ascending); else one with every usable GPU.
  std::vector<std::vector<int>> domain_gpus;

  int node_of_gpu(int gpu) const { return gpu / gpus_per_node; }
};

// Fills `layout` from a problem whose sizes were validated.
Layout MakeLayout(const PlacementProblem& problem);

// Reusable buffers of the EPLB reference.
struct EplbScratch {
  std::vector<std::pair<double, int>> order;
  std::vector<int> pack, rank, pack_items;
  std::vector<double> pack_weights, values, node_w, per_replica;
  std::vector<int> log2mlog, mlog2log, phy2mlog, phy_rank, mlog_cnt;
  std::vector<int> group_pack, group_rank;
};

// The reference's balanced_packing on one row: n items of weights w into
// num_packs packs of n / num_packs items each. Items in descending weight
// (ties: lower index first); each goes to the lightest pack with room
// (ties: lower pack). With one item per pack, item i goes to pack i.
void BalancedPacking(const double* w, int n, int num_packs, int* pack,
                     int* rank, EplbScratch& scratch);

// The reference's replicate_experts on one row: num_phy replicas of n
// experts; each extra replica goes to the expert with the largest
// w / count (ties: lower index). phy2log[i] = i for i < n.
void ReplicateExperts(const double* w, int n, int num_phy, int* phy2log,
                      int* rank, int* count, EplbScratch& scratch);

// The reference's rebalance_experts for one layer (hierarchical when
// layout.hierarchical, else one group and one node): writes phy2log[S],
// phy_rank[S] and logcnt[M].
void EplbLayer(const double* w, const Layout& layout, int32_t* phy2log,
               int32_t* phy_rank, int32_t* logcnt, EplbScratch& scratch);

// Default-mode planning of every layer. Writes phy2log (L x S, -1 on
// excluded GPUs), forced_moves, and the trade-off curve when asked.
// `current` is problem.current_phy2log (possibly empty).
absl::Status PlanDefault(const PlacementProblem& problem,
                         const PlacementOptions& options,
                         const Layout& layout, std::vector<int32_t>* phy2log,
                         int64_t* forced_moves,
                         std::vector<TradeoffPoint>* tradeoff);

// Maximum-weight perfect assignment on an n x n matrix (row-major
// score[r * n + c]); writes col_of_row[n]. Hungarian algorithm, O(n^3), for
// n <= kExactAssignmentMax; above that a greedy matching (largest scores
// first), O(n^2 log n), so that relabelling 256 GPUs stays cheap.
constexpr int kExactAssignmentMax = 64;
void MaxWeightAssignment(const std::vector<double>& score, int n,
                         std::vector<int>* col_of_row);

}  // namespace placement_internal
}  // namespace moecast

#endif  // MOECAST_ENGINE_PLACEMENT_INTERNAL_H_
