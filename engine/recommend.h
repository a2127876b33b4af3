// Placement recommendations from a job's forecasts: the request and the
// answer of Engine::RecommendPlacement.
//
//   PlacementRequest request;
//   request.num_slots = 288; request.num_groups = 8;
//   request.num_nodes = 4;   request.num_gpus = 32;
//   request.current_phy2log = current;           // L x S, optional
//   request.migration = model;                   // optional: decide
//   MOECAST_ASSIGN_OR_RETURN(PlacementRecommendation r,
//                            engine->RecommendPlacement("job", request));
//   if (r.decision && r.decision->rebalance) apply(r.plan.phy2log, r.plan.transfers);
//
// Thread-safety: plain value types.
#ifndef MOECAST_ENGINE_RECOMMEND_H_
#define MOECAST_ENGINE_RECOMMEND_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/analysis_progress.h"
#include "engine/placement/placement.h"
#include "engine/state/state_classifier.h"

namespace moecast {

struct PlacementRequest {
  // The cluster (design section 5): total physical slots S (a multiple of
  // num_gpus, >= experts), expert groups, nodes, GPUs, GPUs to leave out.
  int num_slots = 0;
  int num_groups = 1;
  int num_nodes = 1;
  int num_gpus = 0;
  std::vector<int> excluded_gpus;
  // The placement in service now, L x S (-1: empty slot); empty if none.
  std::vector<int32_t> current_phy2log;
  // Mode, move budget, staging, bytes per expert (see placement.h).
  PlacementOptions options;
  // Plan for the mean load over the next `horizon` steps, as forecast by
  // `predictor` ("auto" by default).
  int horizon = 100;
  std::string predictor = "auto";
  // Layers in the transient state are planned on the upper bound of their
  // forecast interval at this level (headroom), stable ones on the mean.
  // Set upper_bounds_when_transient = false to plan on means throughout.
  bool upper_bounds_when_transient = true;
  double interval_level = 0.9;
  // With a current placement and a migration model, the plan moves only the
  // experts whose moves pay under the model (PlacementOptions::migration, set
  // from this one unless options.migration is set; transient if the job is),
  // and the recommendation decides whether rebalancing now pays (placement.h,
  // Decide).
  std::optional<MigrationModel> migration;
  // Wait for analysis (default) or plan on a stale forecast
  // (analysis_progress.h).
  Freshness freshness;
};

struct PlacementRecommendation {
  int64_t as_of_step = 0;  // the last analysed step (analysis.as_of_step)
  AnalysisProgress analysis;
  LoadState job_state = LoadState::kTransient;
  int horizon = 0;
  // Layers planned on upper interval bounds (transient), by index.
  std::vector<int> upper_bound_layers;
  // The loads planned on, L x M (each row the shares of one layer).
  std::vector<double> loads;
  Plan plan;
  // The current placement scored on the same loads (when given).
  std::optional<Plan> current;
  // Rebalance or hold (when a current placement and a migration model are
  // given).
  std::optional<RebalanceDecision> decision;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_RECOMMEND_H_
