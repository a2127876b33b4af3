// JobSpec: what a producer declares about a job when registering it.
//
//   JobSpec spec;
//   spec.job_id = "pretrain-a";
//   spec.num_layers = 58;
//   spec.num_experts = 256;
//   spec.top_k = 8;
//   spec.num_sources = 16;   // 16 EP ranks each send partial counts
//   spec.hyper.aux_loss_coef = 0.001;
//   MOECAST_RETURN_IF_ERROR(engine->RegisterJob(spec));
//
// Thread-safety: a plain value type.
#ifndef MOECAST_ENGINE_JOB_SPEC_H_
#define MOECAST_ENGINE_JOB_SPEC_H_

#include <optional>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "engine/options.h"

namespace moecast {

// What one ingested step stands for; the engine does not interpret it, but
// windows and horizons count steps, so a consumer needs to know.
enum class StepUnit {
  kOptimizerStep,  // training: one optimizer step (all micro-batches)
  kForwardPass,    // serving: one forward pass of the model
  kInterval,       // serving: counts aggregated over a fixed time interval
};

// How the router scores experts. gamma_eff (design section 6) assumes softmax.
enum class RouterKind {
  kSoftmax,
  kSigmoidWithBias,  // DeepSeek-V3 style: outside the gamma_eff model
};

// Training hyperparameters used by health diagnostics. Each is optional; a
// diagnostic that needs a missing one says so instead of guessing.
struct TrainingHyperparams {
  // Switch/HF load-balancing loss coefficient alpha (loss alpha*M*sum f_e P_e).
  std::optional<double> aux_loss_coef;
  // Router softmax temperature T (> 0).
  std::optional<double> router_temperature;
  // Routing-entropy weight H (>= 0).
  std::optional<double> entropy_weight;
  // Oracle weight O (>= 0).
  std::optional<double> oracle_weight;
  // Balance weight B (>= 0).
  std::optional<double> balance_weight;
};

struct JobSpec {
  // Letters, digits, '.', '_' and '-'; 1 to 128 characters; not "." or "..".
  std::string job_id;
  // MoE layers L, experts per layer M, experts chosen per token K (1..M).
  int num_layers = 0;
  int num_experts = 0;
  int top_k = 0;
  // Producers that each report partial counts for every step (e.g. one per
  // data- or expert-parallel rank). The engine sums them per step.
  int num_sources = 1;
  StepUnit step_unit = StepUnit::kOptimizerStep;
  // Forecasting: the predictor bank (names as in predictor_factory.h; empty:
  // DefaultPredictorNames(), last_value, sw_avg(100), ema(0.9), holt,
  // ewm(300), ewm(3000)) and the horizons it is scored
  // at (empty: 1, 10, 100, 1000). With `forecasting` off the job only keeps
  // history (and ingests faster).
  bool forecasting = true;
  // Health monitoring (gamma_eff needs router-logit means in the steps).
  bool health = true;
  std::vector<std::string> predictors;
  std::vector<int> horizons;
  RouterKind router = RouterKind::kSoftmax;
  TrainingHyperparams hyper;
};

// Returns OK if `id` is a valid job id, else INVALID_ARGUMENT naming the
// offending character or length.
absl::Status ValidateJobId(absl::string_view id);

// Returns OK if `spec` is well formed and within `options`' limits. Errors:
// INVALID_ARGUMENT for malformed fields (naming the field and value),
// RESOURCE_EXHAUSTED when a size exceeds a limit (naming the limit).
absl::Status ValidateJobSpec(const JobSpec& spec, const EngineOptions& options);

// Bytes one job's history ring takes for `spec` under `options` (without and
// with router logits).
int64_t HistoryBytes(const JobSpec& spec, const EngineOptions& options,
                     bool with_router);

absl::string_view StepUnitName(StepUnit unit);
absl::string_view RouterKindName(RouterKind kind);

}  // namespace moecast

#endif  // MOECAST_ENGINE_JOB_SPEC_H_
