#include "engine/eval/evaluator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <map>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/analysis/layer_forecaster.h"
#include "engine/predict/forecast_bank.h"
#include "engine/predict/predictor_factory.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace moecast {
namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr const char* kStateNames[3] = {"all", "transient", "stable"};

// Steps before timing starts, so that windows are full and fits exist.
constexpr int64_t kTimingWarmup = 500;

int StateIndex(LoadState s) { return s == LoadState::kTransient ? 1 : 2; }

// Sums of one metric over scored forecasts.
struct Acc {
  double l1 = 0, mape = 0, step_mape = 0;
  int64_t n = 0, mape_n = 0, step_mape_n = 0;
  void Add(double l1v, double mape_v, double step_mape_v) {
    l1 += l1v;
    ++n;
    if (std::isfinite(mape_v)) {
      mape += mape_v;
      ++mape_n;
    }
    if (std::isfinite(step_mape_v)) {
      step_mape += step_mape_v;
      ++step_mape_n;
    }
  }
};

// Floors at the forecast origins of one layer and horizon.
struct FloorOrigin {
  int64_t index;
  int state;
  std::vector<double> counts;  // cumulative at the origin
  double assignments;
  double tokens;
  double empirical;  // the empirical floor, known at the origin
};

// Everything the evaluator keeps per layer.
// Its classifier, shift detectors and bank step as the engine's do.
struct LayerEval : LayerForecaster {
  // (step index, state from then on), in order.
  std::vector<std::pair<int64_t, LoadState>> changes;
  // Cumulative counts, assignments and tokens.
  std::vector<double> cum_counts;
  double cum_assignments = 0, cum_tokens = 0;
  // Running sums of step-to-step differences over the last floor_window.
  std::deque<std::vector<double>> diffs;
  std::vector<double> diff_sum, diff_sq;
  std::vector<double> last_p;
  bool has_last = false;
  std::vector<std::deque<FloorOrigin>> floors;  // per horizon
  double early_ratio_sum = 0;
  int early_ratio_n = 0;
  int64_t observed = 0;  // steps this layer observed (the bank's index)
  std::vector<std::unique_ptr<Predictor>> timed;  // for timing
};

LoadState StateAt(const LayerEval& le, int64_t index) {
  LoadState s = LoadState::kTransient;
  for (auto it = le.changes.rbegin(); it != le.changes.rend(); ++it) {
    if (it->first <= index) {
      s = it->second;
      break;
    }
  }
  return s;
}

// A number, or null for NaN and infinities (JSON has neither).
nlohmann::json Number(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

// Values rounded to 6 significant digits (the series is for plots).
std::vector<double> Rounded(const std::vector<double>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    out[i] = std::stod(absl::StrFormat("%.6g", v[i]));
  }
  return out;
}

}  // namespace

absl::Status ValidateEvalOptions(const EvalOptions& o) {
  if (o.top_k < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_k = ", o.top_k, " must be >= 1"));
  }
  if (o.horizons.empty()) return absl::InvalidArgumentError("no horizons");
  for (int h : o.horizons) {
    if (h < 1 || h > 1000000) {
      return absl::InvalidArgumentError(
          absl::StrCat("horizon ", h, " must be in [1, 1000000]"));
    }
  }
  if (o.max_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_steps = ", o.max_steps, " must be >= 0"));
  }
  if (o.floor_window < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("floor_window = ", o.floor_window, " must be >= 2"));
  }
  if (o.timing_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("timing_steps = ", o.timing_steps, " must be >= 0"));
  }
  if (absl::Status s = ValidateShiftOptions(o.shift); !s.ok()) return s;
  if (o.auto_blend < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("auto_blend = ", o.auto_blend, " must be >= 1"));
  }
  if (o.series_experts < 1 || o.series_max_points < 10 || o.series_horizon < 1) {
    return absl::InvalidArgumentError(
        "series_experts >= 1, series_max_points >= 10 and series_horizon >= 1 "
        "are required");
  }
  return ValidateStateOptions(o.state);
}

absl::StatusOr<EvalReport> Evaluate(TraceReader& reader,
                                    const EvalOptions& options) {
  MOECAST_RETURN_IF_ERROR(ValidateEvalOptions(options));
  const TraceLayout& layout = reader.layout();
  const int num_layers = layout.num_layers();
  const int m = layout.num_experts;
  if (options.top_k > m) {
    return absl::InvalidArgumentError(absl::StrCat(
        "top_k = ", options.top_k, " exceeds the trace's ", m, " experts"));
  }
  if (options.series_layer < 0 || options.series_layer >= num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("series layer ", options.series_layer,
                     " is out of range [0, ", num_layers, ")"));
  }
  const std::vector<std::string> names =
      options.predictors.empty() ? DefaultPredictorNames() : options.predictors;
  std::vector<int> horizons = options.horizons;
  std::sort(horizons.begin(), horizons.end());
  horizons.erase(std::unique(horizons.begin(), horizons.end()), horizons.end());
  const bool series_horizon_scored =
      std::find(horizons.begin(), horizons.end(), options.series_horizon) !=
      horizons.end();
  const int num_h = static_cast<int>(horizons.size());

  EvalReport report;
  report.layers = num_layers;
  report.experts = m;
  report.top_k = options.top_k;
  report.layer_ids = layout.layer_ids;
  report.horizons = horizons;

  ForecastBankOptions bank_options;
  bank_options.horizons = horizons;
  bank_options.per_step_mape = true;
  bank_options.auto_blend = options.auto_blend;
  bank_options.error_half_life = options.error_half_life;
  bank_options.auto_long_run_weight = options.auto_long_run_weight;
  bank_options.auto_memory_prior = options.auto_memory_prior;

  // (layer, predictor + 1, horizon, state) -> sums; predictor -1 is auto.
  const int num_p = static_cast<int>(names.size()) + 1;
  std::vector<Acc> accs(static_cast<size_t>(num_layers) * num_p * num_h * 3);
  auto acc = [&](int l, int p, int h, int s) -> Acc& {
    return accs[((static_cast<size_t>(l) * num_p + p + 1) * num_h + h) * 3 + s];
  };
  std::vector<Acc> sampling_floor(static_cast<size_t>(num_layers) * num_h * 3);
  std::vector<Acc> empirical_floor(sampling_floor.size());
  auto floor_at = [&](std::vector<Acc>& v, int l, int h, int s) -> Acc& {
    return v[(static_cast<size_t>(l) * num_h + h) * 3 + s];
  };
  std::map<int, int> horizon_index;
  for (int h = 0; h < num_h; ++h) horizon_index[horizons[h]] = h;

  // Plot series (one layer, auto, one horizon), thinned by stride doubling.
  EvalSeries& series = report.series;
  series.layer = options.series_layer;
  series.horizon = options.series_horizon;
  std::vector<std::vector<double>> series_forecast, series_actual;  // all M
  int64_t series_seen = 0;
  int64_t series_stride = 1;

  std::vector<LayerEval> layers(num_layers);
  for (int l = 0; l < num_layers; ++l) {
    LayerEval& le = layers[l];
    std::vector<std::unique_ptr<Predictor>> predictors;
    for (const std::string& name : names) {
      MOECAST_ASSIGN_OR_RETURN(std::unique_ptr<Predictor> p, MakePredictor(name, m));
      predictors.push_back(std::move(p));
      if (options.timing_steps > 0) {
        MOECAST_ASSIGN_OR_RETURN(std::unique_ptr<Predictor> t, MakePredictor(name, m));
        le.timed.push_back(std::move(t));
      }
    }
    MOECAST_ASSIGN_OR_RETURN(le.bank,
                             ForecastBank::Create(std::move(predictors), bank_options));
    le.state = std::make_unique<StateClassifier>(m, options.top_k, options.state);
    le.shift = std::make_unique<ShiftMonitor>(m, options.shift);
    le.cum_counts.assign(m, 0.0);
    le.diff_sum.assign(m, 0.0);
    le.diff_sq.assign(m, 0.0);
    le.last_p.assign(m, 0.0);
    le.floors.resize(num_h);
    le.bank->set_listener([&, l](const ScoredForecast& s) {
      const int h = horizon_index[s.horizon];
      const int st = StateIndex(StateAt(layers[l], s.origin_index));
      acc(l, s.predictor, h, 0).Add(s.l1, s.mape, s.step_mape);
      acc(l, s.predictor, h, st).Add(s.l1, s.mape, s.step_mape);
      if (s.predictor == -1 && l == options.series_layer &&
          s.horizon == options.series_horizon) {
        if (series_seen++ % series_stride != 0) return;
        series.steps.push_back(s.origin_step);
        series.state.push_back(kStateNames[st]);
        series.predictor.push_back("");  // filled below from the origin
        series_forecast.emplace_back(s.forecast.begin(), s.forecast.end());
        series_actual.emplace_back(s.realised.begin(), s.realised.end());
        if (static_cast<int>(series.steps.size()) > 2 * options.series_max_points) {
          // Keep every other point and halve the rate from now on.
          size_t w = 0;
          for (size_t r = 0; r < series.steps.size(); r += 2, ++w) {
            if (w == r) continue;  // a vector moved onto itself is emptied
            series.steps[w] = series.steps[r];
            series.state[w] = series.state[r];
            series_forecast[w] = std::move(series_forecast[r]);
            series_actual[w] = std::move(series_actual[r]);
          }
          series.steps.resize(w);
          series.state.resize(w);
          series.predictor.resize(w);
          series_forecast.resize(w);
          series_actual.resize(w);
          series_stride *= 2;
        }
      }
    });
  }
  std::vector<double> timing_update(names.size(), 0.0);
  std::vector<double> timing_forecast(names.size(), 0.0);
  int64_t timed_steps = 0;
  int64_t timed_forecasts = 0;
  // Auto's choice at each origin of the series, to label the plot.
  std::map<int64_t, std::string> series_choice;

  TraceStep step;
  std::vector<double> p(m);
  std::vector<double> scratch(m);
  int64_t index = 0;
  while (options.max_steps == 0 || index < options.max_steps) {
    MOECAST_ASSIGN_OR_RETURN(bool more, reader.Next(&step));
    if (!more) break;
    ++index;
    for (int l = 0; l < num_layers; ++l) {
      LayerEval& le = layers[l];
      const double* c = step.counts.data() + static_cast<size_t>(l) * m;
      double total = 0;
      for (int e = 0; e < m; ++e) total += c[e];
      if (total <= 0) continue;  // a step without assignments carries no load
      const int64_t li = ++le.observed;
      for (int e = 0; e < m; ++e) p[e] = c[e] / total;
      const double tokens = step.tokens.has_value()
                                ? static_cast<double>(*step.tokens)
                                : total / options.top_k;
      const LayerForecaster::Events events =
          le.Observe(step.step, l, p, tokens, total, options.shift);
      for (const std::optional<StateTransition>* t :
           {&events.transition, &events.shift_transition}) {
        if (!t->has_value()) continue;
        le.changes.emplace_back(li, (*t)->to);
        report.transitions.push_back(EvalTransition{
            l, (*t)->step, std::string(LoadStateName((*t)->from)),
            std::string(LoadStateName((*t)->to)), (*t)->drift_ratio});
      }
      if (const std::optional<Shift>& shift = events.shift) {
        ++report.layer_shifts;
        report.shifts.push_back(
            EvalShift{l, shift->step, shift->change_step, shift->size});
      }
      if (index >= 100 && index <= 1000) {
        if (auto r = le.state->drift_ratio()) {
          le.early_ratio_sum += *r;
          ++le.early_ratio_n;
        }
      }
      // Step-to-step differences for the empirical floor.
      if (le.has_last) {
        std::vector<double> d(m);
        for (int e = 0; e < m; ++e) {
          d[e] = p[e] - le.last_p[e];
          le.diff_sum[e] += d[e];
          le.diff_sq[e] += d[e] * d[e];
        }
        le.diffs.push_back(std::move(d));
        if (static_cast<int>(le.diffs.size()) > options.floor_window) {
          const std::vector<double>& old = le.diffs.front();
          for (int e = 0; e < m; ++e) {
            le.diff_sum[e] -= old[e];
            le.diff_sq[e] -= old[e] * old[e];
          }
          le.diffs.pop_front();
        }
      }
      le.last_p = p;
      le.has_last = true;
      for (int e = 0; e < m; ++e) le.cum_counts[e] += c[e];
      le.cum_assignments += total;
      le.cum_tokens += tokens;

      // Timing: standalone copies of the predictors, timed once their
      // windows are full (after kTimingWarmup steps).
      if (index <= kTimingWarmup + options.timing_steps) {
        const bool timed = index > kTimingWarmup;
        for (size_t j = 0; j < le.timed.size(); ++j) {
          auto t0 = std::chrono::steady_clock::now();
          le.timed[j]->Observe(p);
          auto t1 = std::chrono::steady_clock::now();
          if (!timed) continue;
          for (int h : horizons) le.timed[j]->Forecast(h, absl::MakeSpan(scratch));
          auto t2 = std::chrono::steady_clock::now();
          timing_update[j] += std::chrono::duration<double, std::micro>(t1 - t0).count();
          timing_forecast[j] += std::chrono::duration<double, std::micro>(t2 - t1).count();
        }
      }

      le.bank->Advance(step.step, p, total);
      if (l == options.series_layer && series_horizon_scored &&
          li % std::max(1, options.series_horizon / 10) == 0) {
        series_choice[step.step] = le.bank->AutoChoice(options.series_horizon);
      }

      // Floors: realise the origins whose horizon has passed, open new ones.
      const int n_diffs = static_cast<int>(le.diffs.size());
      for (int h = 0; h < num_h; ++h) {
        const int horizon = horizons[h];
        auto& q = le.floors[h];
        while (!q.empty() && q.front().index + horizon == li) {
          const FloorOrigin& o = q.front();
          const double a = le.cum_assignments - o.assignments;
          const double n_tok = le.cum_tokens - o.tokens;
          double floor = 0;
          for (int e = 0; e < m; ++e) {
            const double y = a > 0 ? (le.cum_counts[e] - o.counts[e]) / a : 0;
            const double var =
                std::max(0.0, y * (1 - options.top_k * y)) / (options.top_k * n_tok);
            floor += kSqrt2OverPi * std::sqrt(var);
          }
          for (int s : {0, o.state}) {
            floor_at(sampling_floor, l, h, s).Add(floor, NAN, NAN);
            if (std::isfinite(o.empirical)) {
              floor_at(empirical_floor, l, h, s).Add(o.empirical, NAN, NAN);
            }
          }
          q.pop_front();
        }
        if (li % std::max(1, horizon / 10) == 0) {
          double empirical = NAN;
          if (n_diffs >= 2) {
            empirical = 0;
            for (int e = 0; e < m; ++e) {
              const double var_d =
                  (le.diff_sq[e] - le.diff_sum[e] * le.diff_sum[e] / n_diffs) /
                  (n_diffs - 1);
              empirical += kSqrt2OverPi * std::sqrt(std::max(0.0, var_d) / 2 / horizon);
            }
          }
          q.push_back(FloorOrigin{li, StateIndex(le.state->state()), le.cum_counts,
                                  le.cum_assignments, le.cum_tokens, empirical});
        }
      }
    }
    if (index > kTimingWarmup && index <= kTimingWarmup + options.timing_steps) {
      ++timed_steps;
      timed_forecasts += static_cast<int64_t>(num_h);
    }
  }
  if (index == 0) return absl::InvalidArgumentError("the trace has no steps");
  report.steps = index;

  // Per-layer means, then the mean over layers.
  report.predictors = names;
  report.predictors.push_back("auto");
  for (int p_i = -1; p_i < static_cast<int>(names.size()); ++p_i) {
    for (int h = 0; h < num_h; ++h) {
      for (int s = 0; s < 3; ++s) {
        EvalResult r;
        r.predictor = p_i < 0 ? "auto" : names[p_i];
        r.horizon = horizons[h];
        r.state = kStateNames[s];
        int layers_l1 = 0, layers_mape = 0, layers_step = 0;
        for (int l = 0; l < num_layers; ++l) {
          const Acc& a = acc(l, p_i, h, s);
          r.n += a.n;
          if (a.n > 0) {
            r.l1 += a.l1 / a.n;
            ++layers_l1;
          }
          if (a.mape_n > 0) {
            r.mape += a.mape / a.mape_n;
            ++layers_mape;
          }
          if (a.step_mape_n > 0) {
            r.step_mape += a.step_mape / a.step_mape_n;
            ++layers_step;
          }
        }
        if (r.n == 0) continue;
        r.l1 /= layers_l1;
        r.mape = layers_mape > 0 ? r.mape / layers_mape : NAN;
        r.step_mape = layers_step > 0 ? r.step_mape / layers_step : NAN;
        report.results.push_back(r);
      }
    }
  }
  for (auto [source, target] :
       {std::make_pair(&sampling_floor, &report.noise_floor),
        std::make_pair(&empirical_floor, &report.empirical_floor)}) {
    for (int h = 0; h < num_h; ++h) {
      for (int s = 0; s < 3; ++s) {
        FloorResult f;
        f.horizon = horizons[h];
        f.state = kStateNames[s];
        int layers_n = 0;
        for (int l = 0; l < num_layers; ++l) {
          const Acc& a = floor_at(*source, l, h, s);
          if (a.n == 0) continue;
          f.l1 += a.l1 / a.n;
          f.n += a.n;
          ++layers_n;
        }
        if (layers_n == 0) continue;
        f.l1 /= layers_n;
        target->push_back(f);
      }
    }
  }
  if (timed_steps > 0) {
    for (size_t j = 0; j < names.size(); ++j) {
      EvalTiming t;
      t.predictor = names[j];
      t.experts = m;
      t.update_us = timing_update[j] / (timed_steps * num_layers);
      t.forecast_us = timing_forecast[j] / (timed_forecasts * num_layers);
      report.timing.push_back(t);
    }
  }
  // The series: the busiest experts of the layer over the whole trace.
  const LayerEval& sl = layers[options.series_layer];
  std::vector<int> order(m);
  for (int e = 0; e < m; ++e) order[e] = e;
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return sl.cum_counts[a] > sl.cum_counts[b]; });
  order.resize(std::min(m, options.series_experts));
  series.experts = order;
  series.forecast.assign(order.size(), {});
  series.actual.assign(order.size(), {});
  for (size_t i = 0; i < series.steps.size(); ++i) {
    for (size_t k = 0; k < order.size(); ++k) {
      series.forecast[k].push_back(series_forecast[i][order[k]]);
      series.actual[k].push_back(series_actual[i][order[k]]);
    }
    auto it = series_choice.find(series.steps[i]);
    series.predictor[i] = it == series_choice.end() ? "" : it->second;
  }
  for (int l = 0; l < num_layers; ++l) {
    const LayerEval& le = layers[l];
    int64_t from = -1;
    if (le.state->state() == LoadState::kStable) {
      from = 0;
      for (const EvalTransition& t : report.transitions) {
        if (t.layer == l && t.to == "stable") from = t.step;
      }
    }
    report.stable_from.push_back(from);
    report.early_drift_ratio.push_back(
        le.early_ratio_n > 0 ? le.early_ratio_sum / le.early_ratio_n : NAN);
  }
  return report;
}

std::string EvalReportToJson(const EvalReport& r) {
  using nlohmann::json;
  json out;
  out["trace"] = {{"counts", r.counts_path}, {"steps", r.steps},
                  {"layers", r.layers},      {"experts", r.experts},
                  {"top_k", r.top_k},        {"layer_ids", r.layer_ids}};
  out["predictors"] = r.predictors;
  out["horizons"] = r.horizons;
  json results = json::array();
  for (const EvalResult& x : r.results) {
    results.push_back({{"predictor", x.predictor},
                       {"horizon", x.horizon},
                       {"state", x.state},
                       {"l1", Number(x.l1)},
                       {"mape", Number(x.mape)},
                       {"step_mape", Number(x.step_mape)},
                       {"n", x.n}});
  }
  out["results"] = std::move(results);
  for (auto [key, floors] : {std::make_pair("noise_floor", &r.noise_floor),
                             std::make_pair("empirical_floor", &r.empirical_floor)}) {
    json rows = json::array();
    for (const FloorResult& f : *floors) {
      rows.push_back({{"horizon", f.horizon},
                      {"state", f.state},
                      {"l1", Number(f.l1)},
                      {"n", f.n}});
    }
    out[key] = std::move(rows);
  }
  json transitions = json::array();
  for (const EvalTransition& t : r.transitions) {
    transitions.push_back({{"layer", t.layer},
                           {"step", t.step},
                           {"from", t.from},
                           {"to", t.to},
                           {"drift_ratio", Number(t.drift_ratio)}});
  }
  out["transitions"] = std::move(transitions);
  out["layer_shifts"] = r.layer_shifts;
  json shifts = json::array();
  for (const EvalShift& x : r.shifts) {
    shifts.push_back({{"layer", x.layer},
                      {"step", x.step},
                      {"change_step", x.change_step},
                      {"size", Number(x.size)}});
  }
  out["shifts"] = std::move(shifts);
  json timing = json::array();
  for (const EvalTiming& t : r.timing) {
    timing.push_back({{"predictor", t.predictor},
                      {"update_us", Number(t.update_us)},
                      {"forecast_us", Number(t.forecast_us)},
                      {"experts", t.experts}});
  }
  out["timing"] = std::move(timing);
  json layers = json::array();
  for (int l = 0; l < r.layers; ++l) {
    layers.push_back({{"layer", l},
                      {"layer_id", r.layer_ids[l]},
                      {"stable_from", r.stable_from[l]},
                      {"early_drift_ratio", Number(r.early_drift_ratio[l])}});
  }
  out["layers"] = std::move(layers);
  const EvalSeries& s = r.series;
  json actual = json::array(), forecast = json::array();
  for (const auto& row : s.actual) actual.push_back(Rounded(row));
  for (const auto& row : s.forecast) forecast.push_back(Rounded(row));
  out["series"] = {{"layer", s.layer},         {"horizon", s.horizon},
                   {"experts", s.experts},     {"steps", s.steps},
                   {"state", s.state},         {"predictor", s.predictor},
                   {"actual", std::move(actual)}, {"forecast", std::move(forecast)}};
  return out.dump(1) + "\n";
}

}  // namespace moecast
