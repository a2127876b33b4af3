// PlanPlacement, EvaluatePlacement and CheckPlan: validation, the two modes,
// metrics, moves and the staged migration.
#include "engine/placement/placement.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/placement/internal.h"
#include "engine/status_macros.h"

namespace moecast {

using placement_internal::Layout;

absl::string_view PlacementModeName(PlacementMode mode) {
  return mode == PlacementMode::kEplb ? "eplb" : "default";
}

absl::StatusOr<PlacementMode> ParsePlacementMode(absl::string_view name) {
  if (name == "eplb") return PlacementMode::kEplb;
  if (name == "default") return PlacementMode::kDefault;
  return absl::InvalidArgumentError(absl::StrCat(
      "placement mode must be \"eplb\" or \"default\", got \"", name, "\""));
}

namespace placement_internal {

Layout MakeLayout(const PlacementProblem& p) {
  Layout lay;
  lay.num_layers = p.num_layers;
  lay.num_experts = p.num_experts;
  lay.num_slots = p.num_slots;
  lay.num_groups = p.num_groups;
  lay.num_nodes = p.num_nodes;
  lay.num_gpus = p.num_gpus;
  lay.slots_per_gpu = p.num_slots / p.num_gpus;
  lay.gpus_per_node = p.num_gpus / p.num_nodes;
  lay.group_size = p.num_experts / p.num_groups;
  lay.hierarchical = p.num_groups % p.num_nodes == 0;
  lay.usable.assign(p.num_gpus, 1);
  for (int g : p.excluded_gpus) lay.usable[g] = 0;
  lay.num_usable = 0;
  for (uint8_t u : lay.usable) lay.num_usable += u;
  const int domains = lay.hierarchical ? p.num_nodes : 1;
  lay.domain_gpus.assign(domains, {});
  for (int g = 0; g < p.num_gpus; ++g) {
    if (!lay.usable[g]) continue;
    lay.domain_gpus[lay.hierarchical ? lay.node_of_gpu(g) : 0].push_back(g);
  }
  return lay;
}

}  // namespace placement_internal

namespace {

absl::Status Invalid(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("placement: ", message));
}

absl::Status ValidateOptions(const PlacementOptions& o) {
  if (o.move_budget < -1) {
    return Invalid(absl::StrCat("move_budget must be >= 0 or -1 (no limit), got ",
                                o.move_budget));
  }
  if (!(o.min_gain_per_moved_expert >= 0) ||
      !std::isfinite(o.min_gain_per_moved_expert)) {
    return Invalid(absl::StrCat(
        "min_gain_per_moved_expert must be finite and >= 0, got ",
        o.min_gain_per_moved_expert));
  }
  if (o.tradeoff_points < 2) {
    return Invalid(
        absl::StrCat("tradeoff_points must be >= 2, got ", o.tradeoff_points));
  }
  if (o.max_extra_experts_per_gpu < 1) {
    return Invalid(absl::StrCat("max_extra_experts_per_gpu must be >= 1, got ",
                                o.max_extra_experts_per_gpu));
  }
  if (o.bytes_per_expert < 0) {
    return Invalid(absl::StrCat("bytes_per_expert must be >= 0, got ",
                                o.bytes_per_expert));
  }
  if (!(o.good_enough_max_vio >= 0) || !std::isfinite(o.good_enough_max_vio)) {
    return Invalid(absl::StrCat("good_enough_max_vio must be finite and >= 0, got ",
                                o.good_enough_max_vio));
  }
  if (o.migration.has_value()) {
    MOECAST_RETURN_IF_ERROR(
        ValidateMigrationModel(*o.migration, "placement: migration"));
  }
  if (o.local_search_iterations < 0) {
    return Invalid(absl::StrCat("local_search_iterations must be >= 0, got ",
                                o.local_search_iterations));
  }
  return absl::OkStatus();
}

// Sizes, loads and excluded GPUs (both modes, and EvaluatePlacement).
absl::Status ValidateShape(const PlacementProblem& p) {
  auto positive = [](const char* name, int v) -> absl::Status {
    if (v <= 0) return Invalid(absl::StrCat(name, " must be positive, got ", v));
    return absl::OkStatus();
  };
  MOECAST_RETURN_IF_ERROR(positive("num_layers", p.num_layers));
  MOECAST_RETURN_IF_ERROR(positive("num_experts", p.num_experts));
  MOECAST_RETURN_IF_ERROR(positive("num_slots", p.num_slots));
  MOECAST_RETURN_IF_ERROR(positive("num_groups", p.num_groups));
  MOECAST_RETURN_IF_ERROR(positive("num_nodes", p.num_nodes));
  MOECAST_RETURN_IF_ERROR(positive("num_gpus", p.num_gpus));
  const int64_t lm = static_cast<int64_t>(p.num_layers) * p.num_experts;
  if (static_cast<int64_t>(p.loads.size()) != lm) {
    return Invalid(absl::StrCat("loads has ", p.loads.size(),
                                " values, expected num_layers * num_experts = ",
                                p.num_layers, " * ", p.num_experts, " = ", lm));
  }
  for (int64_t i = 0; i < lm; ++i) {
    const double v = p.loads[i];
    if (!std::isfinite(v) || v < 0) {
      return Invalid(absl::StrCat("loads[layer ", i / p.num_experts,
                                  "][expert ", i % p.num_experts, "] = ", v,
                                  std::isfinite(v) ? " is negative"
                                                   : " is not finite"));
    }
  }
  if (p.num_slots % p.num_gpus != 0) {
    return Invalid(absl::StrCat("num_slots (", p.num_slots,
                                ") is not a multiple of num_gpus (", p.num_gpus,
                                ")"));
  }
  if (p.num_slots < p.num_experts) {
    return Invalid(absl::StrCat("num_slots (", p.num_slots,
                                ") is less than num_experts (", p.num_experts,
                                "): every expert needs a slot"));
  }
  if (p.num_gpus % p.num_nodes != 0) {
    return Invalid(absl::StrCat("num_gpus (", p.num_gpus,
                                ") is not a multiple of num_nodes (",
                                p.num_nodes, ")"));
  }
  if (p.num_experts % p.num_groups != 0) {
    return Invalid(absl::StrCat("num_groups (", p.num_groups,
                                ") does not divide num_experts (",
                                p.num_experts, ")"));
  }
  std::vector<uint8_t> seen(p.num_gpus, 0);
  for (int g : p.excluded_gpus) {
    if (g < 0 || g >= p.num_gpus) {
      return Invalid(absl::StrCat("excluded_gpus: GPU ", g,
                                  " is out of range [0, ", p.num_gpus, ")"));
    }
    if (seen[g]) {
      return Invalid(
          absl::StrCat("excluded_gpus: GPU ", g, " is listed twice"));
    }
    seen[g] = 1;
  }
  return absl::OkStatus();
}

// A placement row set (L x S): values in [-1, M), every expert present.
absl::Status ValidatePlacementValues(const PlacementProblem& p,
                                     const std::vector<int32_t>& phy2log,
                                     const char* name) {
  const int64_t ls = static_cast<int64_t>(p.num_layers) * p.num_slots;
  if (static_cast<int64_t>(phy2log.size()) != ls) {
    return Invalid(absl::StrCat(name, " has ", phy2log.size(),
                                " values, expected num_layers * num_slots = ",
                                p.num_layers, " * ", p.num_slots, " = ", ls));
  }
  std::vector<uint8_t> present(p.num_experts);
  for (int l = 0; l < p.num_layers; ++l) {
    std::fill(present.begin(), present.end(), 0);
    const int32_t* row = phy2log.data() + static_cast<size_t>(l) * p.num_slots;
    for (int s = 0; s < p.num_slots; ++s) {
      const int32_t e = row[s];
      if (e < -1 || e >= p.num_experts) {
        return Invalid(absl::StrCat(name, "[layer ", l, "][slot ", s, "] = ", e,
                                    " is not an expert in [0, ", p.num_experts,
                                    ") or -1 (empty)"));
      }
      if (e >= 0) present[e] = 1;
    }
    for (int e = 0; e < p.num_experts; ++e) {
      if (!present[e]) {
        return Invalid(absl::StrCat(name, " layer ", l,
                                    " does not place expert ", e,
                                    " (every expert needs a replica)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateProblem(const PlacementProblem& p,
                             const PlacementOptions& o) {
  MOECAST_RETURN_IF_ERROR(ValidateOptions(o));
  MOECAST_RETURN_IF_ERROR(ValidateShape(p));
  const int k = p.num_slots / p.num_gpus;
  const int gpus_per_node = p.num_gpus / p.num_nodes;
  if (o.mode == PlacementMode::kEplb) {
    if (!p.excluded_gpus.empty()) {
      return Invalid(absl::StrCat(
          "excluded_gpus (", p.excluded_gpus.size(),
          " GPUs) is not supported in eplb mode: the reference has no notion "
          "of excluded GPUs; use the default mode"));
    }
  } else {
    std::vector<int> usable(p.num_nodes, gpus_per_node);
    for (int g : p.excluded_gpus) --usable[g / gpus_per_node];
    if (p.num_groups % p.num_nodes == 0) {
      const int per_node = p.num_experts / p.num_nodes;
      for (int n = 0; n < p.num_nodes; ++n) {
        const int64_t slots = static_cast<int64_t>(usable[n]) * k;
        if (slots < per_node) {
          return Invalid(absl::StrCat(
              "too few usable slots on node ", n, ": ", usable[n],
              " usable GPUs x ", k, " slots = ", slots, " < ", per_node,
              " experts (num_groups / num_nodes = ",
              p.num_groups / p.num_nodes, " groups of ",
              p.num_experts / p.num_groups,
              "; group-limited routing keeps a group on one node)"));
        }
        if (k > per_node) {
          return Invalid(absl::StrCat(
              "cannot fill ", slots, " slots on node ", n,
              " without two replicas of one expert on one GPU: ", k,
              " slots per GPU but only ", per_node,
              " experts per node, each at most once per GPU (at most ",
              usable[n], " replicas, one per usable GPU of the node)"));
        }
      }
    } else {
      const int u = p.num_gpus - static_cast<int>(p.excluded_gpus.size());
      const int64_t slots = static_cast<int64_t>(u) * k;
      if (slots < p.num_experts) {
        return Invalid(absl::StrCat("too few usable slots: ", u,
                                    " usable GPUs x ", k, " slots = ", slots,
                                    " < ", p.num_experts, " experts"));
      }
      if (k > p.num_experts) {
        return Invalid(absl::StrCat(
            "cannot fill ", slots,
            " slots without two replicas of one expert on one GPU: ", k,
            " slots per GPU but only ", p.num_experts,
            " experts, each at most once per GPU (at most ", u,
            " replicas, one per usable GPU)"));
      }
    }
  }
  if (!p.current_phy2log.empty()) {
    MOECAST_RETURN_IF_ERROR(
        ValidatePlacementValues(p, p.current_phy2log, "current_phy2log"));
  }
  return absl::OkStatus();
}

// logcnt, log2phy (ordered by phy_rank if given, else by slot), gpu_loads
// and the balance metrics. Every expert must have a replica.
void FillDerived(const PlacementProblem& p, const Layout& lay,
                 const std::vector<int32_t>* phy_rank, Plan* plan) {
  const int L = p.num_layers, M = p.num_experts, S = p.num_slots;
  const int P = p.num_gpus, k = lay.slots_per_gpu;
  plan->num_layers = L;
  plan->num_experts = M;
  plan->num_slots = S;
  plan->num_gpus = P;
  plan->num_nodes = p.num_nodes;
  plan->logcnt.assign(static_cast<size_t>(L) * M, 0);
  int maxrep = 0;
  for (int l = 0; l < L; ++l) {
    const int32_t* row = plan->phy2log.data() + static_cast<size_t>(l) * S;
    int32_t* cnt = plan->logcnt.data() + static_cast<size_t>(l) * M;
    for (int s = 0; s < S; ++s) {
      if (row[s] >= 0) ++cnt[row[s]];
    }
    for (int e = 0; e < M; ++e) maxrep = std::max(maxrep, cnt[e]);
  }
  plan->max_replicas = maxrep;
  plan->log2phy.assign(static_cast<size_t>(L) * M * maxrep, -1);
  std::vector<int> next(M);
  for (int l = 0; l < L; ++l) {
    const int32_t* row = plan->phy2log.data() + static_cast<size_t>(l) * S;
    int32_t* out = plan->log2phy.data() + static_cast<size_t>(l) * M * maxrep;
    std::fill(next.begin(), next.end(), 0);
    for (int s = 0; s < S; ++s) {
      const int e = row[s];
      if (e < 0) continue;
      const int r = phy_rank != nullptr
                        ? (*phy_rank)[static_cast<size_t>(l) * S + s]
                        : next[e]++;
      out[static_cast<size_t>(e) * maxrep + r] = s;
    }
  }
  plan->gpu_loads.assign(static_cast<size_t>(L) * P, 0.0);
  double sum_bal = 0, sum_mom = 0, sum_mean = 0, sum_max = 0;
  for (int l = 0; l < L; ++l) {
    const int32_t* row = plan->phy2log.data() + static_cast<size_t>(l) * S;
    const int32_t* cnt = plan->logcnt.data() + static_cast<size_t>(l) * M;
    const double* w = p.loads.data() + static_cast<size_t>(l) * M;
    double* gl = plan->gpu_loads.data() + static_cast<size_t>(l) * P;
    int holding = 0;
    double total = 0, mx = 0;
    for (int g = 0; g < P; ++g) {
      double sum = 0;
      bool any = false;
      for (int j = 0; j < k; ++j) {
        const int e = row[g * k + j];
        if (e < 0) continue;
        any = true;
        sum += w[e] / cnt[e];
      }
      gl[g] = sum;
      holding += any;
      total += sum;
      mx = std::max(mx, sum);
    }
    const double mean = holding > 0 ? total / holding : 0;
    sum_bal += mx > 0 ? mean / mx : 1.0;
    sum_mom += mean > 0 ? mx / mean : 1.0;
    sum_mean += mean;
    sum_max += mx;
  }
  plan->balancedness = sum_bal / L;
  plan->max_over_mean = sum_mom / L;
  plan->balancedness_summed = sum_max > 0 ? sum_mean / sum_max : 1.0;
}

// Moves and the staged transfers versus problem.current_phy2log.
void FillMoves(const PlacementProblem& p, const PlacementOptions& o,
               const Layout& lay, Plan* plan) {
  plan->moved_experts = 0;
  plan->moved_bytes = 0;
  plan->transfers.clear();
  plan->num_stages = 0;
  if (p.current_phy2log.empty()) return;
  const int L = p.num_layers, M = p.num_experts, S = p.num_slots;
  const int P = p.num_gpus, k = lay.slots_per_gpu;
  std::vector<uint8_t> cur(static_cast<size_t>(P) * M), now(cur.size());
  std::vector<int> outgoing(P, 0);
  std::vector<std::vector<int>> holders(M);
  for (int l = 0; l < L; ++l) {
    const int32_t* crow = p.current_phy2log.data() + static_cast<size_t>(l) * S;
    const int32_t* nrow = plan->phy2log.data() + static_cast<size_t>(l) * S;
    std::fill(cur.begin(), cur.end(), 0);
    std::fill(now.begin(), now.end(), 0);
    for (auto& h : holders) h.clear();
    for (int s = 0; s < S; ++s) {
      const int g = s / k;
      if (crow[s] >= 0 && !cur[static_cast<size_t>(g) * M + crow[s]]) {
        cur[static_cast<size_t>(g) * M + crow[s]] = 1;
        holders[crow[s]].push_back(g);
      }
    }
    for (int s = 0; s < S; ++s) {
      const int g = s / k, e = nrow[s];
      if (e < 0) continue;
      uint8_t& seen = now[static_cast<size_t>(g) * M + e];
      if (seen) continue;
      seen = 1;
      if (cur[static_cast<size_t>(g) * M + e]) continue;
      // Source: usable on g's node, usable elsewhere, excluded; fewest
      // transfers sent so far, then lowest id.
      int from = -1, best_tier = 3;
      for (int h : holders[e]) {
        const int tier = !lay.usable[h] ? 2
                         : lay.node_of_gpu(h) == lay.node_of_gpu(g) ? 0
                                                                     : 1;
        if (from < 0 || tier < best_tier ||
            (tier == best_tier && outgoing[h] < outgoing[from])) {
          from = h;
          best_tier = tier;
        }
      }
      if (from >= 0) ++outgoing[from];
      Transfer t;
      t.layer = l;
      t.expert = e;
      t.from_gpu = from;
      t.to_gpu = g;
      t.bytes = o.bytes_per_expert;
      plan->transfers.push_back(t);
    }
  }
  plan->moved_experts = static_cast<int64_t>(plan->transfers.size());
  plan->moved_bytes = plan->moved_experts * o.bytes_per_expert;
  // Stages: per destination, inter-node transfers first, then by layer.
  auto inter = [&lay](const Transfer& t) {
    return t.from_gpu < 0 ||
           lay.node_of_gpu(t.from_gpu) != lay.node_of_gpu(t.to_gpu);
  };
  std::stable_sort(plan->transfers.begin(), plan->transfers.end(),
                   [&](const Transfer& a, const Transfer& b) {
                     if (a.to_gpu != b.to_gpu) return a.to_gpu < b.to_gpu;
                     return inter(a) > inter(b);
                   });
  int idx = 0;
  for (size_t i = 0; i < plan->transfers.size(); ++i) {
    if (i > 0 && plan->transfers[i].to_gpu != plan->transfers[i - 1].to_gpu) {
      idx = 0;
    }
    plan->transfers[i].stage = idx++ / o.max_extra_experts_per_gpu;
    plan->num_stages = std::max(plan->num_stages, plan->transfers[i].stage + 1);
  }
  std::stable_sort(plan->transfers.begin(), plan->transfers.end(),
                   [](const Transfer& a, const Transfer& b) {
                     if (a.stage != b.stage) return a.stage < b.stage;
                     return a.to_gpu < b.to_gpu;
                   });
}

absl::Status Failed(const std::string& message) {
  return absl::FailedPreconditionError(absl::StrCat("plan check: ", message));
}

}  // namespace

absl::Status CheckPlan(const PlacementProblem& p, PlacementMode mode,
                       const Plan& plan) {
  const int L = p.num_layers, M = p.num_experts, S = p.num_slots;
  const int P = p.num_gpus;
  if (plan.num_layers != L || plan.num_experts != M || plan.num_slots != S ||
      plan.num_gpus != P || plan.num_nodes != p.num_nodes) {
    return Failed(absl::StrCat("plan shape (", plan.num_layers, ", ",
                               plan.num_experts, ", ", plan.num_slots, ", ",
                               plan.num_gpus, ", ", plan.num_nodes,
                               ") differs from the problem's"));
  }
  const Layout lay = placement_internal::MakeLayout(p);
  const int k = lay.slots_per_gpu, R = plan.max_replicas;
  if (plan.phy2log.size() != static_cast<size_t>(L) * S ||
      plan.logcnt.size() != static_cast<size_t>(L) * M ||
      plan.log2phy.size() != static_cast<size_t>(L) * M * R ||
      plan.gpu_loads.size() != static_cast<size_t>(L) * P) {
    return Failed("array sizes do not match the shape");
  }
  int maxrep = 0;
  std::vector<int> cnt(M);
  std::vector<int64_t> on_gpu(M, -1);  // last GPU index (layer * P + g) seen
  std::vector<int64_t> seen(S, 0);  // stamp of the (layer, expert) last seen
  int64_t stamp = 0;
  std::vector<int> group_node(p.num_groups);
  std::vector<int> group_of(M), node_of_slot(S);
  for (int e = 0; e < M; ++e) group_of[e] = e / lay.group_size;
  for (int s = 0; s < S; ++s) node_of_slot[s] = lay.node_of_gpu(s / k);
  for (int l = 0; l < L; ++l) {
    const int32_t* row = plan.phy2log.data() + static_cast<size_t>(l) * S;
    std::fill(cnt.begin(), cnt.end(), 0);
    for (int s = 0, g = 0, j = 0; s < S; ++s, j = j + 1 == k ? 0 : j + 1,
             g += j == 0) {
      const int e = row[s];
      if (!lay.usable[g]) {
        if (e != -1) {
          return Failed(absl::StrCat("layer ", l, " slot ", s,
                                     " of excluded GPU ", g, " holds expert ",
                                     e));
        }
        continue;
      }
      if (e < 0 || e >= M) {
        return Failed(absl::StrCat("layer ", l, " slot ", s, " of GPU ", g,
                                   " holds ", e, ", not an expert"));
      }
      ++cnt[e];
      // Slots of a GPU are contiguous, so a repeat within the GPU shows as
      // the same stamp.
      const int64_t gpu_stamp = static_cast<int64_t>(l) * P + g;
      const bool repeat = on_gpu[e] == gpu_stamp;
      on_gpu[e] = gpu_stamp;
      if (repeat && mode == PlacementMode::kDefault) {
        return Failed(absl::StrCat("layer ", l, ": GPU ", g,
                                   " holds two replicas of expert ", e));
      }
    }
    for (int e = 0; e < M; ++e) {
      if (cnt[e] < 1) {
        return Failed(absl::StrCat("layer ", l, ": expert ", e,
                                   " has no replica"));
      }
      if (plan.logcnt_at(l, e) != cnt[e]) {
        return Failed(absl::StrCat("layer ", l, ": logcnt of expert ", e,
                                   " is ", plan.logcnt_at(l, e), " but ",
                                   cnt[e], " slots hold it"));
      }
      maxrep = std::max(maxrep, cnt[e]);
      ++stamp;
      for (int r = 0; r < R; ++r) {
        const int s = plan.log2phy_at(l, e, r);
        if (r >= cnt[e]) {
          if (s != -1) {
            return Failed(absl::StrCat("layer ", l, ": log2phy of expert ", e,
                                       " has ", s, " past its ", cnt[e],
                                       " replicas"));
          }
          continue;
        }
        if (s < 0 || s >= S || row[s] != e || seen[s] == stamp) {
          return Failed(absl::StrCat("layer ", l, ": log2phy of expert ", e,
                                     " replica ", r, " is slot ", s,
                                     ", which does not hold it (or repeats)"));
        }
        seen[s] = stamp;
      }
    }
    if (lay.hierarchical) {
      std::fill(group_node.begin(), group_node.end(), -1);
      for (int s = 0; s < S; ++s) {
        if (row[s] < 0) continue;
        const int grp = group_of[row[s]];
        const int node = node_of_slot[s];
        if (group_node[grp] >= 0 && group_node[grp] != node) {
          return Failed(absl::StrCat("layer ", l, ": group ", grp,
                                     " has replicas on nodes ",
                                     group_node[grp], " and ", node));
        }
        group_node[grp] = node;
      }
      std::vector<int> per_node(p.num_nodes, 0);
      for (int grp = 0; grp < p.num_groups; ++grp) ++per_node[group_node[grp]];
      for (int n = 0; n < p.num_nodes; ++n) {
        if (per_node[n] != p.num_groups / p.num_nodes) {
          return Failed(absl::StrCat("layer ", l, ": node ", n, " holds ",
                                     per_node[n], " groups, expected ",
                                     p.num_groups / p.num_nodes));
        }
      }
    }
  }
  if (maxrep != R) {
    return Failed(absl::StrCat("max_replicas is ", R, " but the largest logcnt is ",
                               maxrep));
  }
  return absl::OkStatus();
}

absl::StatusOr<Plan> PlanPlacement(const PlacementProblem& problem,
                                   const PlacementOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  MOECAST_RETURN_IF_ERROR(ValidateProblem(problem, options));
  const Layout lay = placement_internal::MakeLayout(problem);
  Plan plan;
  plan.mode = options.mode;
  const int L = problem.num_layers, M = problem.num_experts;
  const int S = problem.num_slots;
  if (options.mode == PlacementMode::kEplb) {
    plan.phy2log.assign(static_cast<size_t>(L) * S, -1);
    std::vector<int32_t> phy_rank(plan.phy2log.size());
    std::vector<int32_t> logcnt(static_cast<size_t>(L) * M);
    placement_internal::EplbScratch scratch;
    for (int l = 0; l < L; ++l) {
      placement_internal::EplbLayer(
          problem.loads.data() + static_cast<size_t>(l) * M, lay,
          plan.phy2log.data() + static_cast<size_t>(l) * S,
          phy_rank.data() + static_cast<size_t>(l) * S,
          logcnt.data() + static_cast<size_t>(l) * M, scratch);
    }
    FillDerived(problem, lay, &phy_rank, &plan);
    if (plan.logcnt != logcnt) {
      return absl::InternalError(
          "placement: internal error: eplb logcnt differs from phy2log counts");
    }
  } else {
    MOECAST_RETURN_IF_ERROR(placement_internal::PlanDefault(
        problem, options, lay, &plan.phy2log, &plan.forced_moves,
        &plan.tradeoff));
    FillDerived(problem, lay, nullptr, &plan);
  }
  const absl::Status check = CheckPlan(problem, options.mode, plan);
  if (!check.ok()) {
    return absl::InternalError(absl::StrCat(
        "placement: internal error, the ", PlacementModeName(options.mode),
        " plan fails validation: ", check.message()));
  }
  FillMoves(problem, options, lay, &plan);
  plan.plan_ms = std::chrono::duration<double, std::milli>(
                     std::chrono::steady_clock::now() - start)
                     .count();
  return plan;
}

absl::StatusOr<Plan> EvaluatePlacement(const PlacementProblem& problem,
                                       const std::vector<int32_t>& phy2log,
                                       const PlacementOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  MOECAST_RETURN_IF_ERROR(ValidateOptions(options));
  MOECAST_RETURN_IF_ERROR(ValidateShape(problem));
  MOECAST_RETURN_IF_ERROR(ValidatePlacementValues(problem, phy2log, "phy2log"));
  if (!problem.current_phy2log.empty()) {
    MOECAST_RETURN_IF_ERROR(ValidatePlacementValues(
        problem, problem.current_phy2log, "current_phy2log"));
  }
  const Layout lay = placement_internal::MakeLayout(problem);
  Plan plan;
  plan.mode = options.mode;
  plan.phy2log = phy2log;
  FillDerived(problem, lay, nullptr, &plan);
  FillMoves(problem, options, lay, &plan);
  plan.plan_ms = std::chrono::duration<double, std::milli>(
                     std::chrono::steady_clock::now() - start)
                     .count();
  return plan;
}

absl::StatusOr<std::vector<double>> FoldSlotLoads(
    int num_layers, int num_experts, int num_slots,
    const std::vector<int32_t>& phy2log, const std::vector<double>& slot_loads) {
  if (num_layers <= 0 || num_experts <= 0 || num_slots <= 0) {
    return Invalid(absl::StrCat("FoldSlotLoads: sizes must be positive, got (",
                                num_layers, ", ", num_experts, ", ", num_slots,
                                ")"));
  }
  const size_t ls = static_cast<size_t>(num_layers) * num_slots;
  if (phy2log.size() != ls || slot_loads.size() != ls) {
    return Invalid(absl::StrCat(
        "FoldSlotLoads: phy2log has ", phy2log.size(), " and slot_loads ",
        slot_loads.size(), " values, expected num_layers * num_slots = ", ls));
  }
  std::vector<double> out(static_cast<size_t>(num_layers) * num_experts, 0.0);
  for (size_t i = 0; i < ls; ++i) {
    const int32_t e = phy2log[i];
    const double v = slot_loads[i];
    const int l = static_cast<int>(i / num_slots);
    const int s = static_cast<int>(i % num_slots);
    if (!std::isfinite(v) || v < 0) {
      return Invalid(absl::StrCat("FoldSlotLoads: slot_loads[layer ", l,
                                  "][slot ", s, "] = ", v,
                                  " is negative or not finite"));
    }
    if (e < -1 || e >= num_experts) {
      return Invalid(absl::StrCat("FoldSlotLoads: phy2log[layer ", l, "][slot ",
                                  s, "] = ", e, " is not an expert in [0, ",
                                  num_experts, ") or -1"));
    }
    if (e < 0) {
      if (v != 0) {
        return Invalid(absl::StrCat("FoldSlotLoads: slot_loads[layer ", l,
                                    "][slot ", s, "] = ", v,
                                    " on an empty slot"));
      }
      continue;
    }
    out[static_cast<size_t>(l) * num_experts + e] += v;
  }
  return out;
}

}  // namespace moecast
