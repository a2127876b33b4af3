#include "engine/analysis/job_analyzer.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/predict/predictor_factory.h"

namespace moecast {

void AnalysisStep::Resize(int num_layers, int num_experts) {
  const size_t n = static_cast<size_t>(num_layers) * num_experts;
  proportions.resize(n);
  assignments.resize(num_layers);
  tokens.resize(num_layers);
  has_logits.resize(num_layers);
  logits.resize(n);
}

JobAnalyzer::JobAnalyzer(const JobSpec& spec, const EngineOptions& options)
    : spec_(spec),
      state_options_(options.state),
      shift_options_(options.shift),
      max_events_(options.max_events_per_job),
      health_options_(options.health) {}

absl::StatusOr<std::unique_ptr<JobAnalyzer>> JobAnalyzer::Create(
    const JobSpec& s, const EngineOptions& options) {
  std::unique_ptr<JobAnalyzer> a(new JobAnalyzer(s, options));
  if (s.health) {
    HealthOptions& health = a->health_options_;
    health.gamma.top_k = s.top_k;
    health.gamma.aux_loss_alpha = s.hyper.aux_loss_coef;
    if (absl::Status st = ValidateHealthOptions(health); !st.ok()) return st;
    a->health_.reserve(s.num_layers);
    for (int l = 0; l < s.num_layers; ++l) {
      a->health_.emplace_back(l, s.num_experts, health);
      // Windows are fitted between ObserveStep and FinishStep.
      a->health_.back().set_defer_window_close(true);
    }
    a->scratch_counts_.assign(s.num_experts, 0.0);
  }
  if (!s.forecasting) return a;
  ForecastBankOptions bank_options;
  if (!s.horizons.empty()) bank_options.horizons = s.horizons;
  const std::vector<std::string> names =
      s.predictors.empty() ? DefaultPredictorNames() : s.predictors;
  for (int l = 0; l < s.num_layers; ++l) {
    std::vector<std::unique_ptr<Predictor>> predictors;
    for (const std::string& name : names) {
      absl::StatusOr<std::unique_ptr<Predictor>> p =
          MakePredictor(name, s.num_experts);
      if (!p.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("job '", s.job_id, "': ", p.status().message()));
      }
      predictors.push_back(*std::move(p));
    }
    absl::StatusOr<std::unique_ptr<ForecastBank>> bank =
        ForecastBank::Create(std::move(predictors), bank_options);
    if (!bank.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("job '", s.job_id, "': ", bank.status().message()));
    }
    LayerModel model;
    model.bank = *std::move(bank);
    model.state = std::make_unique<StateClassifier>(s.num_experts, s.top_k,
                                                    a->state_options_);
    model.shift = std::make_unique<ShiftMonitor>(s.num_experts, a->shift_options_);
    a->models_.push_back(std::move(model));
  }
  a->layer_states_.assign(s.num_layers, LoadState::kTransient);
  return a;
}

void JobAnalyzer::AddEvent(Event event) {
  event.seq = next_seq_++;
  events_.push_back(std::move(event));
  while (static_cast<int>(events_.size()) > max_events_) events_.pop_front();
}

void JobAnalyzer::TakeHealthEvents(HealthMonitor& monitor) {
  for (HealthEvent& e : monitor.TakeEvents()) {
    Event event;
    event.step = e.step;
    event.layer = e.layer;
    event.detail = std::move(e.detail);
    event.from = std::move(e.from);
    event.to = std::move(e.to);
    if (e.kind == "phase_change") {
      event.kind = EventKind::kPhaseChange;
    } else {
      event.kind = e.kind == "expert_dead" ? EventKind::kExpertDead
                                           : EventKind::kExpertRevived;
      event.value = e.expert;
    }
    AddEvent(std::move(event));
  }
  (void)monitor.TakeWindows();
}

void JobAnalyzer::ObserveStep(const AnalysisStep& in) {
  const int m = spec_.num_experts;
  const int64_t step = in.step;
  bool layer_changed = false;
  due_.clear();
  for (int l = 0; l < spec_.num_layers; ++l) {
    const size_t off = static_cast<size_t>(l) * m;
    const double sum = in.assignments[l];
    const double n = in.tokens[l];
    const absl::Span<const double> p =
        absl::MakeConstSpan(in.proportions.data() + off, m);
    if (!health_.empty() && sum > 0 && n > 0) {
      for (int e = 0; e < m; ++e) scratch_counts_[e] = p[e] * sum;
      // Validated input, so Observe cannot fail here.
      HealthMonitor& monitor = health_[l];
      (void)monitor.Observe(step, scratch_counts_, n,
                            in.has_logits[l]
                                ? absl::MakeConstSpan(in.logits.data() + off, m)
                                : absl::Span<const double>());
      TakeHealthEvents(monitor);
      if (monitor.window_due()) due_.push_back(monitor.TakeDueWindow());
    }
    if (models_.empty() || sum <= 0) continue;
    LayerModel& model = models_[l];
    // The bank's scoring and origins wait for FinishStep, after any refit
    // that is due (a separate task); the predictors observe now.
    const LayerForecaster::Events e =
        model.Observe(step, l, p, n, sum, shift_options_);
    if (const std::optional<StateTransition>& t = e.transition) {
      layer_states_[l] = t->to;
      layer_changed = true;
      AddEvent(Event{0, step, EventKind::kStateChange, l,
                     std::string(LoadStateName(t->from)),
                     std::string(LoadStateName(t->to)), t->drift_ratio});
    }
    if (e.shift.has_value()) OnShift(l, *e.shift);
    if (const std::optional<StateTransition>& t = e.shift_transition) {
      layer_states_[l] = t->to;
      layer_changed = true;
      AddEvent(Event{0, step, EventKind::kStateChange, l,
                     std::string(LoadStateName(t->from)),
                     std::string(LoadStateName(t->to)), t->drift_ratio,
                     absl::StrFormat("layer %d: load shifted (L1 %.3f), transient",
                                     l, e.shift->size)});
    }
    if (in.take_origins) model.bank->AppendDueRefits(&due_refits_);
  }
  if (layer_changed) {
    const LoadState job_state =
        JobState(layer_states_, state_options_.job_transient_fraction);
    if (job_state != job_state_) {
      std::vector<double> ratios;
      for (const LayerModel& model : models_) {
        if (auto r = model.state->drift_ratio()) ratios.push_back(*r);
      }
      double median = 0;
      if (!ratios.empty()) {
        std::nth_element(ratios.begin(), ratios.begin() + ratios.size() / 2,
                         ratios.end());
        median = ratios[ratios.size() / 2];
      }
      AddEvent(Event{0, step, EventKind::kStateChange, -1,
                     std::string(LoadStateName(job_state_)),
                     std::string(LoadStateName(job_state)), median});
      job_state_ = job_state;
    }
  }
  open_step_ = step;
  open_num_steps_ = in.num_steps;
  open_input_ = &in;
}

namespace {

void Record(const Shift& s, ShiftSummary* summary) {
  ++summary->shifts;
  summary->last_step = s.step;
  summary->last_change_step = s.change_step;
  summary->last_size = s.size;
}

}  // namespace

void JobAnalyzer::OnShift(int layer, const Shift& s) {
  AddEvent(Event{0, s.step, EventKind::kShift, layer, absl::StrCat(s.change_step), "",
                 s.size,
                 absl::StrFormat("layer %d: load shifted at about step %d (L1 %.3f "
                                 "between the mean shares before and after; noise %.3f, "
                                 "windows of %d steps)",
                                 layer, s.change_step, s.size, s.noise, s.window)});
  models_[layer].last_shift_step = s.step;
  Record(s, &models_[layer].shifts);
  // The job shifted when at least half of its layers did within the last
  // two windows (once per such span).
  const int64_t span = 2 * static_cast<int64_t>(s.window);
  if (last_job_shift_step_ >= 0 && s.step - last_job_shift_step_ <= span) return;
  int shifted = 0;
  for (const LayerModel& m : models_) {
    shifted += m.last_shift_step >= 0 && s.step - m.last_shift_step <= span;
  }
  if (2 * static_cast<size_t>(shifted) < models_.size()) return;
  last_job_shift_step_ = s.step;
  Record(s, &job_shifts_);
  // The job's event carries the layer shift that completed the majority.
  AddEvent(Event{0, s.step, EventKind::kShift, -1, absl::StrCat(s.change_step), "",
                 s.size,
                 absl::StrFormat("job: %d of %d layers shifted within %d steps",
                                 shifted, static_cast<int>(models_.size()),
                                 static_cast<int>(span))});
}

void JobAnalyzer::FinishStep(std::vector<HealthWindow> fitted) {
  for (size_t i = 0; i < fitted.size() && i < due_.size(); ++i) {
    HealthMonitor& monitor = health_[due_[i].layer];
    monitor.ApplyWindow(std::move(fitted[i]));
    TakeHealthEvents(monitor);
  }
  due_.clear();
  due_refits_.clear();
  // The banks score and take their origins (the refits are done).
  const AnalysisStep& in = *open_input_;
  const int m = spec_.num_experts;
  for (size_t l = 0; l < models_.size(); ++l) {
    const double sum = in.assignments[l];
    if (sum <= 0) continue;
    models_[l].bank->Advance(
        open_step_, absl::MakeConstSpan(in.proportions.data() + l * m, m), sum,
        in.take_origins);
  }
  open_input_ = nullptr;
  analysed_steps_ += open_num_steps_;
  last_step_ = open_step_;
}

int64_t JobAnalyzer::ForecastBytes() const {
  int64_t bytes = 0;
  for (const LayerModel& m : models_) {
    bytes += m.state->MemoryBytes() + m.bank->MemoryBytes();
    bytes += m.shift->MemoryBytes();
  }
  return bytes;
}

std::vector<Event> JobAnalyzer::ReadEvents(int64_t after_seq,
                                           int max_events) const {
  std::vector<Event> out;
  for (const Event& e : events_) {
    if (static_cast<int>(out.size()) >= max_events) break;
    if (e.seq > after_seq) out.push_back(e);
  }
  return out;
}

namespace {

absl::Status ForecastingOff(const JobSpec& spec) {
  return absl::FailedPreconditionError(absl::StrCat(
      "job '", spec.job_id, "' was registered with forecasting off"));
}

// FAILED_PRECONDITION before the first analysed step: none committed, or
// (a stale answer) none analysed yet.
absl::Status NothingAnalysed(const JobSpec& spec, int64_t committed_steps) {
  if (committed_steps == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("job '", spec.job_id, "' has no committed steps yet"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "job '", spec.job_id, "' has ", committed_steps,
      " committed steps but none analysed yet (a stale answer was asked for)"));
}

}  // namespace

absl::StatusOr<StateReport> JobAnalyzer::State(int64_t committed_steps) const {
  if (models_.empty()) return ForecastingOff(spec_);
  if (!last_step_.has_value()) return NothingAnalysed(spec_, committed_steps);
  StateReport report;
  report.as_of_step = *last_step_;
  report.job_state = job_state_;
  for (const LayerModel& model : models_) {
    report.layers.push_back(model.state->Signals());
    report.layer_shifts.push_back(model.shifts);
  }
  report.job_shifts = job_shifts_;
  return report;
}

absl::StatusOr<HealthReport> JobAnalyzer::Health() const {
  if (health_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job '", spec_.job_id, "' was registered with health off"));
  }
  HealthReport report;
  report.as_of_step = last_step_.value_or(-1);
  const TrainingHyperparams& h = spec_.hyper;
  absl::StatusOr<EParameter> e = ComputeE(h.router_temperature, h.entropy_weight,
                                          h.oracle_weight, h.balance_weight);
  if (!e.ok()) return e.status();
  report.e = *e;
  bool any = false;
  for (const HealthMonitor& monitor : health_) {
    if (monitor.latest() != nullptr) {
      report.layers.push_back(*monitor.latest());
      any = true;
    } else {
      HealthWindow none;
      none.step = -1;
      report.layers.push_back(none);
    }
  }
  if (!any) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job '", spec_.job_id, "': no health window has completed yet "
        "(a window is EngineOptions.health.window_steps steps)"));
  }
  return report;
}

absl::StatusOr<std::vector<ForecastScore>> JobAnalyzer::Scores() const {
  if (models_.empty()) return ForecastingOff(spec_);
  std::vector<ForecastScore> out;
  std::vector<double> recent_sum, mean_sum;
  for (const LayerModel& model : models_) {
    const std::vector<PredictorScore> scores = model.bank->Scores();
    if (out.empty()) {
      out.resize(scores.size());
      recent_sum.assign(scores.size(), 0);
      mean_sum.assign(scores.size(), 0);
      for (size_t i = 0; i < scores.size(); ++i) {
        out[i].predictor = scores[i].name;
        out[i].horizon = scores[i].horizon;
      }
    }
    for (size_t i = 0; i < scores.size(); ++i) {
      if (scores[i].scored == 0 || !std::isfinite(scores[i].recent_l1)) continue;
      ++out[i].layers_scored;
      out[i].scored += scores[i].scored;
      recent_sum[i] += scores[i].recent_l1;
      mean_sum[i] += scores[i].mean_l1;
    }
  }
  for (size_t i = 0; i < out.size(); ++i) {
    const double n = out[i].layers_scored;
    out[i].recent_l1 = n > 0 ? recent_sum[i] / n : std::nan("");
    out[i].mean_l1 = n > 0 ? mean_sum[i] / n : std::nan("");
  }
  return out;
}

void JobAnalyzer::VisitBank(int layer, absl::FunctionRef<void(ForecastBank&)> fn) {
  fn(*models_[layer].bank);
}

absl::StatusOr<ForecastResult> JobAnalyzer::Forecast(
    const ForecastRequest& request, int max_path_steps, int64_t committed_steps) {
  if (models_.empty()) return ForecastingOff(spec_);
  if (!last_step_.has_value()) return NothingAnalysed(spec_, committed_steps);
  for (int h : request.horizons) {
    if (h < 1 || h > 1000000) {
      return absl::InvalidArgumentError(
          absl::StrCat("forecast horizon ", h, " must be in [1, 1000000]"));
    }
  }
  if (!(request.interval_level > 0 && request.interval_level < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "interval_level ", request.interval_level, " must be in (0, 1)"));
  }
  if (request.path_steps < 0 || request.path_steps > max_path_steps) {
    return absl::InvalidArgumentError(
        absl::StrCat("path_steps ", request.path_steps, " must be in [0, ",
                     max_path_steps, "] (EngineOptions.max_path_steps)"));
  }
  std::vector<int> layers = request.layers;
  if (layers.empty()) {
    for (int l = 0; l < spec_.num_layers; ++l) layers.push_back(l);
  }
  for (int l : layers) {
    if (l < 0 || l >= spec_.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer ", l, " is out of range [0, ", spec_.num_layers, ")"));
    }
  }
  const std::vector<int>& horizons = request.horizons.empty()
                                         ? models_[0].bank->horizons()
                                         : request.horizons;
  ForecastResult result;
  result.as_of_step = *last_step_;
  result.job_state = job_state_;
  for (int l : layers) {
    LayerModel& model = models_[l];
    LayerForecast lf;
    lf.layer = l;
    lf.state = model.state->state();
    lf.drift_ratio = model.state->drift_ratio();
    for (int h : horizons) {
      absl::StatusOr<BankForecast> f =
          model.bank->Forecast(h, request.predictor, request.interval_level);
      if (!f.ok()) return f.status();
      HorizonForecast hf;
      hf.horizon = h;
      hf.predictor = std::move(f->predictor);
      hf.mean = std::move(f->mean);
      hf.lower = std::move(f->lower);
      hf.upper = std::move(f->upper);
      lf.horizons.push_back(std::move(hf));
    }
    if (request.path_steps > 0) {
      absl::StatusOr<std::vector<double>> path =
          model.bank->ForecastPath(request.path_steps, request.predictor);
      if (!path.ok()) return path.status();
      lf.path = *std::move(path);
      lf.path_predictor = request.predictor == "auto"
                              ? model.bank->AutoChoice(request.path_steps)
                              : request.predictor;
    }
    result.layers.push_back(std::move(lf));
  }
  return result;
}

}  // namespace moecast
