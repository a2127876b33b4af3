#include "engine/eval/simulator.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace moecast {
namespace {

// Balancedness and straggler load of one step under a placement.
struct StepScore {
  double balancedness = 0;  // mean over layers of mean/max GPU load
  double straggler = 0;     // sum over layers of the max GPU load (assignments)
};

class Scorer {
 public:
  Scorer(int layers, int experts, int slots, int gpus)
      : l_(layers), m_(experts), s_(slots), p_(gpus), per_gpu_(slots / gpus),
        gpu_(gpus) {}

  StepScore Score(const std::vector<int32_t>& phy2log,
                  const std::vector<int32_t>& logcnt, const float* counts) {
    StepScore out;
    for (int l = 0; l < l_; ++l) {
      std::fill(gpu_.begin(), gpu_.end(), 0.0);
      const int32_t* row = phy2log.data() + static_cast<size_t>(l) * s_;
      const int32_t* cnt = logcnt.data() + static_cast<size_t>(l) * m_;
      const float* c = counts + static_cast<size_t>(l) * m_;
      for (int slot = 0; slot < s_; ++slot) {
        const int e = row[slot];
        if (e >= 0) gpu_[slot / per_gpu_] += c[e] / cnt[e];
      }
      double total = 0, mx = 0;
      for (double g : gpu_) {
        total += g;
        mx = std::max(mx, g);
      }
      out.balancedness += mx > 0 ? (total / p_) / mx : 1.0;
      out.straggler += mx;
    }
    out.balancedness /= l_;
    return out;
  }

 private:
  int l_, m_, s_, p_, per_gpu_;
  std::vector<double> gpu_;
};

}  // namespace

absl::Status ValidateSimulateOptions(const SimulateOptions& o) {
  if (o.top_k < 1) {
    return absl::InvalidArgumentError(absl::StrCat("top_k = ", o.top_k, " must be >= 1"));
  }
  if (o.policy != "periodic" && o.policy != "oracle" && o.policy != "moecast") {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy '", o.policy, "' is not one of periodic, oracle, moecast"));
  }
  if (o.window < 1 || o.interval < 1 || o.check_every < 0 || o.series_every < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "window (", o.window, "), interval (", o.interval, ") and series_every (",
        o.series_every, ") must be >= 1, check_every (", o.check_every, ") >= 0"));
  }
  // tokens_per_step 0 means the trace's; the horizon is set from interval.
  MOECAST_RETURN_IF_ERROR(ValidateMigrationModel(o.migration, "simulate: migration"));
  if (o.max_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_steps = ", o.max_steps, " must be >= 0"));
  }
  return absl::OkStatus();
}

absl::StatusOr<SimulateReport> Simulate(TraceReader& reader,
                                        const SimulateOptions& o) {
  MOECAST_RETURN_IF_ERROR(ValidateSimulateOptions(o));
  const TraceLayout& layout = reader.layout();
  const int num_layers = layout.num_layers();
  const int m = layout.num_experts;
  const size_t lm = static_cast<size_t>(num_layers) * m;

  // The whole trace, as float counts.
  std::vector<float> counts;
  std::vector<double> tokens;
  TraceStep step;
  double assignments = 0;
  int64_t n = 0;
  while (o.max_steps == 0 || n < o.max_steps) {
    MOECAST_ASSIGN_OR_RETURN(bool more, reader.Next(&step));
    if (!more) break;
    for (double c : step.counts) {
      counts.push_back(static_cast<float>(c));
      assignments += c;
    }
    tokens.push_back(step.tokens.has_value() ? static_cast<double>(*step.tokens) : -1);
    ++n;
  }
  if (n == 0) return absl::InvalidArgumentError("the trace has no steps");

  // One token volume for deciding and for scoring: with tokens_per_step N
  // given, the trace's counts are scaled by N / (its mean assignments per
  // layer per step) when scored, so that MoE time is measured for the load
  // the decisions were made for; without, both use the trace's mean. (The
  // engine is fed the trace's own counts: its noise statistics need them.)
  MigrationModel model = o.migration;
  model.horizon_steps = o.interval;
  const double trace_tokens = assignments / (static_cast<double>(n) * num_layers);
  if (model.tokens_per_step <= 0) model.tokens_per_step = trace_tokens;
  const double volume_scale =
      trace_tokens > 0 ? model.tokens_per_step / trace_tokens : 1.0;

  PlacementProblem problem;
  problem.num_layers = num_layers;
  problem.num_experts = m;
  problem.num_slots = o.num_slots;
  problem.num_groups = o.num_groups;
  problem.num_nodes = o.num_nodes;
  problem.num_gpus = o.num_gpus;
  problem.loads.assign(lm, 1.0);
  PlacementOptions eplb_options;
  eplb_options.mode = PlacementMode::kEplb;
  eplb_options.bytes_per_expert = static_cast<int64_t>(model.bytes_per_expert);
  eplb_options.max_extra_experts_per_gpu = o.max_extra_experts_per_gpu;
  PlacementOptions default_options = eplb_options;
  default_options.mode = PlacementMode::kDefault;
  // The oracle and moecast plan with the migration model: they move only
  // what pays over the horizon.
  PlacementOptions paying_options = default_options;
  paying_options.migration = model;
  MOECAST_ASSIGN_OR_RETURN(Plan initial, PlanPlacement(problem, eplb_options));
  std::vector<int32_t> phy2log = initial.phy2log;
  std::vector<int32_t> logcnt = initial.logcnt;

  std::unique_ptr<Engine> engine;
  const std::string job = "simulate";
  if (o.policy == "moecast") {
    // An offline replay: every step analysed as it is fed, on this thread
    // (background analysis could shed or coalesce when the trace is fed
    // faster than it analyses, and results would depend on timing).
    EngineOptions engine_options;
    engine_options.analysis.mode = AnalysisOptions::Mode::kInline;
    MOECAST_ASSIGN_OR_RETURN(engine, Engine::Create(engine_options));
    JobSpec spec;
    spec.job_id = job;
    spec.num_layers = num_layers;
    spec.num_experts = m;
    spec.top_k = o.top_k;
    MOECAST_RETURN_IF_ERROR(engine->RegisterJob(spec));
  }
  const int check_every = o.check_every > 0
                              ? o.check_every
                              : std::min(o.interval, SimulateOptions::kDefaultCheckEvery);

  SimulateReport report;
  report.policy = o.policy;
  report.steps = n;
  report.layers = num_layers;
  report.experts = m;
  report.min_balancedness = 1.0;
  report.tokens_per_step = model.tokens_per_step;
  report.trace_tokens_per_step = trace_tokens;
  Scorer scorer(num_layers, m, o.num_slots, o.num_gpus);
  double series_sum = 0;
  int series_n = 0;

  // Adopts `plan` (made with problem.current_phy2log = the placement in force).
  auto adopt = [&](int64_t t, const Plan& plan, double migration_s,
                   const std::string& reason) {
    SimulateDecision d;
    d.step = t;
    d.adopted = true;
    d.moved_experts = plan.moved_experts;
    d.migration_s = migration_s;
    d.planned_balancedness = plan.balancedness;
    d.reason = reason;
    report.decisions.push_back(d);
    if (plan.moved_experts > 0) ++report.rebalances;
    report.moved_experts += plan.moved_experts;
    report.moved_bytes += plan.moved_bytes;
    report.migration_s += migration_s;
    phy2log = plan.phy2log;
    logcnt = plan.logcnt;
  };
  // Migration time of going from the placement in force to `plan` (the
  // same staged-transfer model for every policy).
  auto migration_time = [&](const Plan& plan) -> absl::StatusOr<double> {
    MOECAST_ASSIGN_OR_RETURN(Plan current,
                             EvaluatePlacement(problem, phy2log, default_options));
    MigrationModel always = model;
    MOECAST_ASSIGN_OR_RETURN(RebalanceDecision d, Decide(current, plan, always, false));
    return d.migration_s;
  };

  int64_t last_adopted = 0;  // moecast: step of its last rebalance
  for (int64_t t = 0; t < n; ++t) {
    const bool decision_point = t > 0 && t % o.interval == 0;
    if ((o.policy == "periodic" || o.policy == "oracle") && decision_point) {
      // periodic: eplb on the last `window` steps; oracle: default mode on
      // the next `interval` steps. Both always adopt.
      const bool periodic = o.policy == "periodic";
      const int64_t from = periodic ? std::max<int64_t>(0, t - o.window) : t;
      const int64_t to = periodic ? t : std::min<int64_t>(n, t + o.interval);
      std::fill(problem.loads.begin(), problem.loads.end(), 0.0);
      for (int64_t s = from; s < to; ++s) {
        const float* c = counts.data() + static_cast<size_t>(s) * lm;
        for (size_t i = 0; i < lm; ++i) problem.loads[i] += c[i];
      }
      problem.current_phy2log = phy2log;
      MOECAST_ASSIGN_OR_RETURN(
          Plan plan, PlanPlacement(problem, periodic ? eplb_options : paying_options));
      report.plan_ms_total += plan.plan_ms;
      MOECAST_ASSIGN_OR_RETURN(double mig, migration_time(plan));
      adopt(t, plan, mig, o.policy);
    } else if (o.policy == "moecast" && t > 0 && t % check_every == 0) {
      PlacementRequest request;
      request.num_slots = o.num_slots;
      request.num_groups = o.num_groups;
      request.num_nodes = o.num_nodes;
      request.num_gpus = o.num_gpus;
      request.current_phy2log = phy2log;
      request.options = paying_options;
      // How long the new placement will serve: as long as the one in force
      // has so far (at least one check interval, at most `interval`), so
      // that frequent rebalancing shortens the horizon moves must pay in.
      const int horizon = static_cast<int>(std::clamp<int64_t>(
          t - last_adopted, check_every, std::max(check_every, o.interval)));
      request.horizon = horizon;
      request.migration = model;
      request.migration->horizon_steps = horizon;
      request.options.migration->horizon_steps = horizon;
      MOECAST_ASSIGN_OR_RETURN(PlacementRecommendation r,
                               engine->RecommendPlacement(job, request));
      report.plan_ms_total += r.plan.plan_ms;
      if (!r.decision.has_value()) {
        // RecommendPlacement decides whenever a current placement and a
        // migration model are given, as here.
        return absl::InternalError("simulate: no rebalance decision was made");
      }
      if (r.decision->rebalance) {
        adopt(t, r.plan, r.decision->migration_s, r.decision->reason);
        last_adopted = t;
      } else {
        SimulateDecision d;
        d.step = t;
        d.planned_balancedness = r.plan.balancedness;
        d.reason = r.decision->reason;
        report.decisions.push_back(d);
      }
    }

    const float* c = counts.data() + static_cast<size_t>(t) * lm;
    const StepScore score = scorer.Score(phy2log, logcnt, c);
    report.mean_balancedness += score.balancedness;
    report.min_balancedness = std::min(report.min_balancedness, score.balancedness);
    report.moe_time_s += score.straggler * volume_scale * model.time_per_token_s;
    series_sum += score.balancedness;
    if (++series_n == o.series_every || t + 1 == n) {
      report.series_steps.push_back(t);
      report.series_balancedness.push_back(series_sum / series_n);
      series_sum = 0;
      series_n = 0;
    }

    if (engine != nullptr) {
      std::vector<double> in(c, c + lm);
      StepInput input;
      input.step = t;
      input.counts = in;
      if (tokens[t] >= 0) input.tokens = tokens[t];
      MOECAST_RETURN_IF_ERROR(engine->Ingest(job, input).status());
    }
  }
  report.mean_balancedness /= n;
  report.total_time_s = report.moe_time_s + report.migration_s;
  return report;
}

std::string SimulateReportToJson(const SimulateReport& r) {
  nlohmann::json out;
  out["policy"] = r.policy;
  out["steps"] = r.steps;
  out["layers"] = r.layers;
  out["experts"] = r.experts;
  out["mean_balancedness"] = r.mean_balancedness;
  out["min_balancedness"] = r.min_balancedness;
  out["moe_time_s"] = r.moe_time_s;
  out["migration_s"] = r.migration_s;
  out["total_time_s"] = r.total_time_s;
  out["tokens_per_step"] = r.tokens_per_step;
  out["trace_tokens_per_step"] = r.trace_tokens_per_step;
  out["rebalances"] = r.rebalances;
  out["moved_experts"] = r.moved_experts;
  out["moved_bytes"] = r.moved_bytes;
  out["plan_ms_total"] = r.plan_ms_total;
  nlohmann::json decisions = nlohmann::json::array();
  for (const SimulateDecision& d : r.decisions) {
    decisions.push_back({{"step", d.step},
                         {"adopted", d.adopted},
                         {"moved_experts", d.moved_experts},
                         {"migration_s", d.migration_s},
                         {"planned_balancedness", d.planned_balancedness},
                         {"reason", d.reason}});
  }
  out["decisions"] = std::move(decisions);
  out["series"] = {{"steps", r.series_steps}, {"balancedness", r.series_balancedness}};
  return out.dump(1) + "\n";
}

}  // namespace moecast
