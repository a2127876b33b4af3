// Decide: whether moving to a proposed placement pays over the horizon.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/placement/placement.h"
#include "engine/status_macros.h"

namespace moecast {
namespace {

absl::Status Invalid(const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat("rebalance decision: ", message));
}

// Sum over layers of max GPU load / layer total (0 for an empty layer).
double StragglerShare(const Plan& plan) {
  double sum = 0;
  for (int l = 0; l < plan.num_layers; ++l) {
    double mx = 0, total = 0;
    for (int g = 0; g < plan.num_gpus; ++g) {
      const double v = plan.gpu_load_at(l, g);
      mx = std::max(mx, v);
      total += v;
    }
    if (total > 0) sum += mx / total;
  }
  return sum;
}

}  // namespace

MigrationModel DefaultMigrationModel() {
  MigrationModel m;
  m.bytes_per_expert = 44040192;  // 3 x 7168 x 2048 bytes (fp8 V3 expert)
  m.intra_node_bandwidth = 150e9;
  m.inter_node_bandwidth = 40e9;
  m.tokens_per_step = 4096.0 * 8;
  m.time_per_token_s = 2.2e-7;  // 88 MFLOP per assignment at 400 TFLOP/s
  m.horizon_steps = 1000;
  m.overlap = false;
  return m;
}

absl::Status ValidateMigrationModel(const MigrationModel& model,
                                    absl::string_view what) {
  auto bad = [what](const std::string& message) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", message));
  };
  auto non_negative = [&](const char* name, double v) -> absl::Status {
    if (!std::isfinite(v) || v < 0) {
      return bad(absl::StrCat(name, " must be finite and >= 0, got ", v));
    }
    return absl::OkStatus();
  };
  auto positive = [&](const char* name, double v) -> absl::Status {
    if (!std::isfinite(v) || v <= 0) {
      return bad(absl::StrCat(name, " must be finite and > 0, got ", v));
    }
    return absl::OkStatus();
  };
  for (const absl::Status& s :
       {non_negative("bytes_per_expert", model.bytes_per_expert),
        positive("intra_node_bandwidth", model.intra_node_bandwidth),
        positive("inter_node_bandwidth", model.inter_node_bandwidth),
        non_negative("tokens_per_step", model.tokens_per_step),
        non_negative("time_per_token_s", model.time_per_token_s),
        non_negative("horizon_steps", model.horizon_steps),
        non_negative("transient_margin", model.transient_margin)}) {
    if (!s.ok()) return s;
  }
  if (!(model.overlap_cost_fraction >= 0 && model.overlap_cost_fraction <= 1)) {
    return bad(absl::StrCat("overlap_cost_fraction must be in [0, 1], got ",
                            model.overlap_cost_fraction));
  }
  return absl::OkStatus();
}

absl::StatusOr<RebalanceDecision> Decide(const Plan& current,
                                         const Plan& proposed,
                                         const MigrationModel& model,
                                         bool transient) {
  MOECAST_RETURN_IF_ERROR(ValidateMigrationModel(model, "rebalance decision"));
  if (current.num_layers != proposed.num_layers ||
      current.num_gpus != proposed.num_gpus ||
      current.num_nodes != proposed.num_nodes) {
    return Invalid(absl::StrCat(
        "current plan has (layers, GPUs, nodes) = (", current.num_layers, ", ",
        current.num_gpus, ", ", current.num_nodes, "), proposed has (",
        proposed.num_layers, ", ", proposed.num_gpus, ", ", proposed.num_nodes,
        ")"));
  }
  const size_t want =
      static_cast<size_t>(proposed.num_layers) * proposed.num_gpus;
  if (current.gpu_loads.size() != want || proposed.gpu_loads.size() != want ||
      proposed.num_nodes <= 0 || proposed.num_gpus % proposed.num_nodes != 0) {
    return Invalid("plans have inconsistent gpu_loads sizes or GPU counts");
  }

  RebalanceDecision d;
  const double per_unit = model.tokens_per_step * model.time_per_token_s;
  d.step_time_current_s = per_unit * StragglerShare(current);
  d.step_time_proposed_s = per_unit * StragglerShare(proposed);
  d.saved_s = model.horizon_steps * (d.step_time_current_s - d.step_time_proposed_s);

  const int gpus_per_node = proposed.num_gpus / proposed.num_nodes;
  std::vector<double> stage_time(proposed.num_stages, 0.0);
  for (const Transfer& t : proposed.transfers) {
    if (t.stage < 0 || t.stage >= proposed.num_stages) {
      return Invalid(absl::StrCat("transfer stage ", t.stage,
                                  " is outside [0, num_stages = ",
                                  proposed.num_stages, ")"));
    }
    const bool inter = t.from_gpu < 0 || t.from_gpu / gpus_per_node !=
                                             t.to_gpu / gpus_per_node;
    const double bytes = model.bytes_per_expert > 0
                             ? model.bytes_per_expert
                             : static_cast<double>(t.bytes);
    const double secs =
        bytes / (inter ? model.inter_node_bandwidth : model.intra_node_bandwidth);
    stage_time[t.stage] = std::max(stage_time[t.stage], secs);
  }
  for (double s : stage_time) d.migration_s += s;
  d.cost_s = model.overlap ? model.overlap_cost_fraction * d.migration_s
                           : d.migration_s;
  d.required_s = transient ? (1 + model.transient_margin) * d.cost_s : d.cost_s;
  d.moved_experts = proposed.moved_experts;
  d.num_stages = proposed.num_stages;

  const std::string numbers = absl::StrFormat(
      "saved %.6g s over %.6g steps (step %.6g s -> %.6g s), migration %.6g s "
      "in %d stages, cost %.6g s (%s)%s",
      d.saved_s, model.horizon_steps, d.step_time_current_s,
      d.step_time_proposed_s, d.migration_s, d.num_stages, d.cost_s,
      model.overlap ? "overlapped" : "stall",
      transient ? absl::StrFormat(", transient: required %.6g s", d.required_s)
                : std::string());
  if (proposed.transfers.empty()) {
    d.rebalance = false;
    d.reason = absl::StrCat("no transfers: the proposed placement keeps every "
                            "expert where it is; ",
                            numbers);
  } else if (proposed.forced_moves > 0) {
    // The current placement cannot stay as it is (the plan prices the rest
    // of its moves against this forced start), so the plan is adopted
    // whatever the saving.
    d.rebalance = true;
    d.reason = absl::StrCat(
        "rebalance: ", proposed.forced_moves,
        " of the moves are forced (the current placement uses excluded GPUs, "
        "holds an expert twice on a GPU, leaves slots empty or spreads a "
        "group over nodes); ",
        numbers);
  } else if (d.saved_s > d.required_s) {
    d.rebalance = true;
    d.reason = absl::StrCat("rebalance: ", numbers);
  } else {
    d.rebalance = false;
    d.reason = absl::StrCat("keep: saving does not exceed the ",
                            transient ? "required margin" : "cost", "; ",
                            numbers);
  }
  return d;
}

}  // namespace moecast
