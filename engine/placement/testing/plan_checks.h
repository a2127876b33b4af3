// Helpers shared by the placement tests and benchmark: a problem from a
// cluster shape, noisy copies of loads, and the check for two replicas of one
// expert on one GPU.
//
// Thread-safety: pure functions (the RNG is the caller's).
#ifndef MOECAST_ENGINE_PLACEMENT_TESTING_PLAN_CHECKS_H_
#define MOECAST_ENGINE_PLACEMENT_TESTING_PLAN_CHECKS_H_

#include <algorithm>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "engine/placement/placement.h"

namespace moecast::testing {

// A cluster and model shape for the tests.
struct ClusterShape {
  int layers, experts, slots, groups, nodes, gpus;
};

// The problem of `loads` (layers x experts) on a cluster of shape `s`: a
// ClusterShape or any struct with its fields (the benchmark's named shapes).
template <typename Shape>
PlacementProblem ProblemOf(const Shape& s, std::vector<double> loads) {
  PlacementProblem p;
  p.num_layers = s.layers;
  p.num_experts = s.experts;
  p.num_slots = s.slots;
  p.num_groups = s.groups;
  p.num_nodes = s.nodes;
  p.num_gpus = s.gpus;
  p.loads = std::move(loads);
  return p;
}

// w * (1 + sd * N(0, 1)) elementwise, clipped at 0.
inline std::vector<double> Noisy(const std::vector<double>& w, double sd,
                                 std::mt19937_64& rng) {
  std::normal_distribution<double> n01(0.0, 1.0);
  std::vector<double> out(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    out[i] = std::max(0.0, w[i] * (1 + sd * n01(rng)));
  }
  return out;
}

// Whether some GPU of some layer holds two replicas of one expert (empty
// slots, -1, are ignored).
inline bool HasDuplicateOnAGpu(const Plan& plan) {
  const int k = plan.num_slots / plan.num_gpus;
  for (int l = 0; l < plan.num_layers; ++l) {
    for (int g = 0; g < plan.num_gpus; ++g) {
      std::set<int> seen;
      for (int j = 0; j < k; ++j) {
        const int e = plan.phy2log_at(l, g * k + j);
        if (e >= 0 && !seen.insert(e).second) return true;
      }
    }
  }
  return false;
}

}  // namespace moecast::testing

#endif  // MOECAST_ENGINE_PLACEMENT_TESTING_PLAN_CHECKS_H_
