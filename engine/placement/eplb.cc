// The DeepSeek EPLB reference algorithm (eplb.py), one layer at a time.
// Written from the published description; see internal.h for the tie rules.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "engine/placement/internal.h"

namespace moecast {
namespace placement_internal {

void BalancedPacking(const double* w, int n, int num_packs, int* pack,
                     int* rank, EplbScratch& scratch) {
  const int per_pack = n / num_packs;
  if (per_pack == 1) {
    for (int i = 0; i < n; ++i) {
      pack[i] = i;
      rank[i] = 0;
    }
    return;
  }
  // Descending weight, ties by index: the order of a stable sort.
  std::vector<std::pair<double, int>>& order = scratch.order;
  order.resize(n);
  for (int i = 0; i < n; ++i) order[i] = {-w[i], i};
  std::sort(order.begin(), order.end());
  std::vector<double>& pack_weights = scratch.pack_weights;
  std::vector<int>& pack_items = scratch.pack_items;
  pack_weights.assign(num_packs, 0.0);
  pack_items.assign(num_packs, 0);
  for (const auto& [neg_w, item] : order) {
    // The lightest pack with room, lowest index on ties (branch-free).
    int best = -1;
    double best_w = std::numeric_limits<double>::infinity();
    for (int p = 0; p < num_packs; ++p) {
      const double v =
          pack_items[p] < per_pack ? pack_weights[p] : best_w;
      const bool lt = v < best_w || best < 0;
      best_w = lt ? v : best_w;
      best = lt && pack_items[p] < per_pack ? p : best;
    }
    pack[item] = best;
    rank[item] = pack_items[best]++;
    pack_weights[best] += w[item];
  }
}

void ReplicateExperts(const double* w, int n, int num_phy, int* phy2log,
                      int* rank, int* count, EplbScratch& scratch) {
  std::vector<double>& per_replica = scratch.per_replica;
  per_replica.assign(w, w + n);
  for (int i = 0; i < n; ++i) {
    phy2log[i] = i;
    rank[i] = 0;
    count[i] = 1;
  }
  for (int i = n; i < num_phy; ++i) {
    int best = 0;
    for (int j = 1; j < n; ++j) {
      if (per_replica[j] > per_replica[best]) best = j;
    }
    phy2log[i] = best;
    rank[i] = count[best];
    ++count[best];
    per_replica[best] = w[best] / count[best];
  }
}

void EplbLayer(const double* w, const Layout& layout, int32_t* phy2log,
               int32_t* phy_rank, int32_t* logcnt, EplbScratch& scratch) {
  const int m = layout.num_experts;
  const int s = layout.num_slots;
  const int k = layout.slots_per_gpu;
  const int groups = layout.hierarchical ? layout.num_groups : 1;
  const int nodes = layout.hierarchical ? layout.num_nodes : 1;
  const int group_size = m / groups;
  const int groups_per_node = groups / nodes;
  const int m_node = m / nodes;
  const int s_node = s / nodes;
  const int gpus_node = layout.num_gpus / nodes;

  // Step 1: groups to nodes.
  std::vector<double>& values = scratch.values;
  values.assign(groups, 0.0);
  for (int g = 0; g < groups; ++g) {
    double sum = 0;
    for (int j = 0; j < group_size; ++j) sum += w[g * group_size + j];
    values[g] = sum;
  }
  scratch.group_pack.resize(groups);
  scratch.group_rank.resize(groups);
  BalancedPacking(values.data(), groups, nodes, scratch.group_pack.data(),
                  scratch.group_rank.data(), scratch);
  // Experts renumbered node by node ("mlog"): node n holds mlog
  // n * m_node .. (n + 1) * m_node - 1.
  scratch.log2mlog.resize(m);
  scratch.mlog2log.resize(m);
  for (int g = 0; g < groups; ++g) {
    const int base =
        (scratch.group_pack[g] * groups_per_node + scratch.group_rank[g]) *
        group_size;
    for (int j = 0; j < group_size; ++j) {
      scratch.log2mlog[g * group_size + j] = base + j;
      scratch.mlog2log[base + j] = g * group_size + j;
    }
  }

  scratch.node_w.resize(m_node);
  scratch.phy2mlog.resize(s_node);
  scratch.phy_rank.resize(s_node);
  scratch.mlog_cnt.resize(m_node);
  scratch.pack.resize(s_node);
  scratch.rank.resize(s_node);
  std::vector<double> per_phy(s_node);
  for (int n = 0; n < nodes; ++n) {
    const int* mlog2log = scratch.mlog2log.data() + n * m_node;
    for (int i = 0; i < m_node; ++i) scratch.node_w[i] = w[mlog2log[i]];
    // Step 2: replicas within the node.
    ReplicateExperts(scratch.node_w.data(), m_node, s_node,
                     scratch.phy2mlog.data(), scratch.phy_rank.data(),
                     scratch.mlog_cnt.data(), scratch);
    // Step 3: replicas to the node's GPUs.
    for (int i = 0; i < s_node; ++i) {
      const int e = scratch.phy2mlog[i];
      per_phy[i] = scratch.node_w[e] / scratch.mlog_cnt[e];
    }
    BalancedPacking(per_phy.data(), s_node, gpus_node, scratch.pack.data(),
                    scratch.rank.data(), scratch);
    for (int i = 0; i < s_node; ++i) {
      const int slot = n * s_node + scratch.pack[i] * k + scratch.rank[i];
      phy2log[slot] = mlog2log[scratch.phy2mlog[i]];
      phy_rank[slot] = scratch.phy_rank[i];
    }
    for (int i = 0; i < m_node; ++i) logcnt[mlog2log[i]] = scratch.mlog_cnt[i];
  }
}

}  // namespace placement_internal
}  // namespace moecast
