// moecast bench: replays a trace with a sliding forecast origin and reports
// every predictor's error by horizon and state next to the noise floors, as
// a table and as JSON (engine/eval/evaluator.h describes the method).
#include <fstream>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "engine/eval/evaluator.h"
#include "engine/predict/predictor_factory.h"
#include "engine/trace/trace_reader.h"
#include "integrations/cli/commands.h"
#include "integrations/cli/flags.h"

namespace moecast::cli {
namespace {

// Splits "a,b(1,2),c" at top-level commas.
std::vector<std::string> SplitTopLevel(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  for (char c : text) {
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (c == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

void PrintTable(const EvalReport& r, const std::string& state, std::ostream& out) {
  std::map<std::pair<std::string, int>, const EvalResult*> cell;
  for (const EvalResult& x : r.results) {
    if (x.state == state) cell[{x.predictor, x.horizon}] = &x;
  }
  if (cell.empty()) {
    out << "\n  (no forecast was scored in the " << state << " state)\n";
    return;
  }
  out << "\nL1 error of the forecast mean share over the next h steps, " << state
      << (state == "all" ? " states" : " state") << " (per layer, averaged over layers):\n";
  out << absl::StrFormat("  %-16s", "predictor");
  for (int h : r.horizons) out << absl::StrFormat(" %10s", absl::StrCat("h=", h));
  out << "\n";
  for (const std::string& p : r.predictors) {
    out << absl::StrFormat("  %-16s", p);
    for (int h : r.horizons) {
      auto it = cell.find({p, h});
      out << (it == cell.end() ? absl::StrFormat(" %10s", "-")
                               : absl::StrFormat(" %10.4f", it->second->l1));
    }
    out << "\n";
  }
  for (auto [label, floors] : {std::make_pair("sampling floor", &r.noise_floor),
                               std::make_pair("empirical floor", &r.empirical_floor)}) {
    out << absl::StrFormat("  %-16s", label);
    for (int h : r.horizons) {
      const FloorResult* f = nullptr;
      for (const FloorResult& x : *floors) {
        if (x.horizon == h && x.state == state) f = &x;
      }
      out << (f == nullptr ? absl::StrFormat(" %10s", "-")
                           : absl::StrFormat(" %10.4f", f->l1));
    }
    out << "\n";
  }
  out << absl::StrFormat("  %-16s", "scored (auto)");
  for (int h : r.horizons) {
    auto it = cell.find({"auto", h});
    out << absl::StrFormat(" %10d", it == cell.end() ? 0 : it->second->n);
  }
  out << "\n";
}

}  // namespace

int RunBench(const std::vector<std::string>& args, std::ostream& out,
             std::ostream& err) {
  std::string counts_path, router_path, json_path;
  std::string horizons_text = "1,10,100,1000";
  std::string predictors_text = "all";
  int64_t top_k = 0, max_steps = 0, series_layer = 0, series_horizon = 10;
  FlagSet flags("bench");
  flags.AddString("counts", &counts_path, "counts trace NAME.counts.csv[.gz]",
                  /*required=*/true);
  flags.AddString("router", &router_path,
                  "optional router trace (validated against the counts)");
  flags.AddInt("top_k", &top_k, "experts chosen per token (K)", /*required=*/true);
  flags.AddString("horizons", &horizons_text, "comma-separated horizons in steps");
  flags.AddString("predictors", &predictors_text,
                  absl::StrCat("'default' (the engine's default bank), 'all' "
                               "(default + arima(5,1,5), + lstm with "
                               "--lstm_weights), or a comma-separated list of: ",
                               KnownPredictorsHelp()));
  flags.AddString("json", &json_path, "write the full report as JSON to this file");
  flags.AddInt("max_steps", &max_steps, "stop after this many steps (0 = all)");
  int64_t auto_blend = ForecastBankOptions().auto_blend;
  flags.AddInt("auto_blend", &auto_blend,
               "auto blends this many best-ranked predictors (1: picks the best)");
  std::string lstm_weights;
  flags.AddString("lstm_weights", &lstm_weights,
                  "with --predictors all: also run lstm with this weights file "
                  "(its expert count must match the trace)");
  double half_life = ForecastBankOptions().error_half_life;
  flags.AddDouble("error_half_life", &half_life,
                  "half-life, in scored forecasts, of the error auto ranks by");
  double long_run = ForecastBankOptions().auto_long_run_weight;
  flags.AddDouble("auto_long_run_weight", &long_run,
                  "weight of the long-run error against the recent one in auto's ranking");
  bool memory_prior = ForecastBankOptions().auto_memory_prior;
  flags.AddBool("auto_memory_prior", &memory_prior,
                "before auto has scores at a horizon, a stable layer takes the "
                "predictor whose memory is nearest it (false: the ranking of a "
                "shorter horizon)");
  bool restart_at_shifts = ShiftOptions().restart_predictors;
  flags.AddBool("restart_at_shifts", &restart_at_shifts,
                "after a layer's load shift, restart sw_avg and ewm from its "
                "change point (as the engine does by default)");
  int64_t restart_max_memory = ShiftOptions().restart_max_memory;
  flags.AddInt("restart_max_memory", &restart_max_memory,
               "with --restart_at_shifts: only smoothers of at most this many "
               "steps of memory restart");
  flags.AddInt("series_layer", &series_layer,
               "layer index whose busiest experts go into the JSON series");
  flags.AddInt("series_horizon", &series_horizon,
               "horizon of the series (must be one of --horizons)");
  if (absl::Status s = flags.Parse(args); !s.ok()) {
    err << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    out << "usage: moecast bench [flags]\n" << flags.Usage();
    return 0;
  }
  EvalOptions options;
  options.top_k = static_cast<int>(std::min<int64_t>(top_k, 1 << 20));
  options.max_steps = max_steps;
  options.error_half_life = half_life;
  options.shift.restart_predictors = restart_at_shifts;
  options.shift.restart_max_memory =
      static_cast<int>(std::clamp<int64_t>(restart_max_memory, -1, 1 << 30));
  options.auto_long_run_weight = long_run;
  options.auto_memory_prior = memory_prior;
  options.auto_blend = static_cast<int>(std::clamp<int64_t>(auto_blend, 0, 1 << 20));
  options.series_layer = static_cast<int>(std::min<int64_t>(series_layer, 1 << 20));
  options.series_horizon = static_cast<int>(std::min<int64_t>(series_horizon, 1 << 20));
  options.horizons.clear();
  for (absl::string_view h : absl::StrSplit(horizons_text, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(h, &v)) {
      err << "moecast bench: --horizons: '" << h << "' is not an integer\n";
      return 2;
    }
    options.horizons.push_back(v);
  }
  if (predictors_text == "all") {
    // The engine's default bank plus the expensive ones.
    options.predictors = DefaultPredictorNames();
    options.predictors.push_back("arima(5,1,5)");
    if (!lstm_weights.empty()) {
      options.predictors.push_back(absl::StrCat("lstm(", lstm_weights, ")"));
    }
  } else if (predictors_text != "default") {
    options.predictors = SplitTopLevel(predictors_text);
    for (const std::string& name : options.predictors) {
      absl::StatusOr<std::unique_ptr<Predictor>> p = MakePredictor(name, 2);
      if (!p.ok() && p.status().message().find("unknown predictor") != std::string::npos) {
        err << "moecast bench: --predictors: " << p.status().message() << "\n";
        return 2;
      }
    }
  }
  if (absl::Status s = ValidateEvalOptions(options); !s.ok()) {
    err << "moecast bench: " << s.message() << "\n";
    return 2;
  }
  if (std::find(options.horizons.begin(), options.horizons.end(),
                options.series_horizon) == options.horizons.end()) {
    err << "moecast bench: --series_horizon=" << options.series_horizon
        << " is not one of --horizons\n";
    return 2;
  }

  absl::StatusOr<std::unique_ptr<TraceReader>> reader =
      TraceReader::Open(counts_path, router_path);
  if (!reader.ok()) {
    err << "moecast bench: " << reader.status().message() << "\n";
    return 1;
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<EvalReport> report = Evaluate(**reader, options);
  if (!report.ok()) {
    err << "moecast bench: " << report.status().message() << "\n";
    return 1;
  }
  report->counts_path = counts_path;
  const EvalReport& r = *report;

  out << absl::StrFormat(
      "moecast bench: %s\n  %d steps, %d layers x %d experts, top_k %d, %.1f s\n",
      counts_path, r.steps, r.layers, r.experts, r.top_k,
      absl::ToDoubleSeconds(absl::Now() - start));
  for (const char* state : {"all", "transient", "stable"}) PrintTable(r, state, out);
  out << "\nStates (drift ratio R over " << options.state.window
      << " steps; transient above " << options.state.enter_threshold
      << ", stable below " << options.state.leave_threshold << "):\n";
  for (int l = 0; l < r.layers; ++l) {
    int changes = 0;
    for (const EvalTransition& t : r.transitions) changes += t.layer == l;
    out << absl::StrFormat(
        "  layer %-4d mean R over steps 100-1000: %6.2f   %s   (%d transitions)\n",
        r.layer_ids[l], r.early_drift_ratio[l],
        r.stable_from[l] < 0 ? std::string("ends transient")
                             : absl::StrCat("stable from step ", r.stable_from[l]),
        changes);
  }
  out << absl::StrFormat("\nLoad shifts: %d over all layers (%s)\n", r.layer_shifts,
                         restart_at_shifts
                             ? absl::StrCat("smoothers of memory <= ",
                                            options.shift.restart_max_memory,
                                            " steps restarted at each change point")
                                           : "predictors not restarted");
  if (!r.timing.empty()) {
    out << "\nCost per layer-step (" << r.experts
        << " experts; multiply by layers for a job):\n";
    for (const EvalTiming& t : r.timing) {
      out << absl::StrFormat("  %-16s update %8.2f us   forecast %8.2f us\n",
                             t.predictor, t.update_us, t.forecast_us);
    }
  }
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << EvalReportToJson(r);
    f.close();
    if (!f) {
      err << "moecast bench: cannot write " << json_path << "\n";
      return 1;
    }
    out << "\nJSON report: " << json_path << "\n";
  }
  return 0;
}

}  // namespace moecast::cli
