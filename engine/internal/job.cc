#include "engine/internal/job.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/ingest/step_validator.h"
#include "engine/predict/predictor_factory.h"

namespace moecast::internal {
namespace {

// Weight added to every source's share when averaging router-logit means, so
// that a layer where no source had assignments gets the plain mean instead of
// 0/0. Real assignment counts are >= 1, so the bias is below 1e-12.
constexpr double kLogitWeightFloor = 1e-12;

}  // namespace

absl::StatusOr<std::unique_ptr<Job>> Job::Create(JobSpec spec,
                                                 const EngineOptions& options) {
  std::unique_ptr<Job> job(new Job(std::move(spec), options));
  const JobSpec& s = job->spec_;
  if (s.health) {
    HealthOptions health = options.health;
    health.gamma.top_k = s.top_k;
    health.gamma.aux_loss_alpha = s.hyper.aux_loss_coef;
    if (absl::Status st = ValidateHealthOptions(health); !st.ok()) return st;
    MutexLock lock(&job->mu_);
    for (int l = 0; l < s.num_layers; ++l) {
      job->health_.emplace_back(l, s.num_experts, health);
    }
  }
  if (!s.forecasting) return job;
  ForecastBankOptions bank_options;
  if (!s.horizons.empty()) bank_options.horizons = s.horizons;
  const std::vector<std::string> names =
      s.predictors.empty() ? DefaultPredictorNames() : s.predictors;
  MutexLock lock(&job->mu_);
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
                                                    job->state_options_);
    job->models_.push_back(std::move(model));
  }
  job->scratch_p_.assign(s.num_experts, 0.0);
  job->layer_states_.assign(s.num_layers, LoadState::kTransient);
  return job;
}

Job::Job(JobSpec spec, const EngineOptions& options)
    : spec_(std::move(spec)),
      max_pending_(options.max_pending_steps),
      timeout_(options.source_timeout),
      state_options_(options.state),
      max_path_steps_(options.max_path_steps),
      max_events_(options.max_events_per_job) {
  layers_.reserve(spec_.num_layers);
  for (int l = 0; l < spec_.num_layers; ++l) {
    layers_.emplace_back(spec_.num_experts, options.history_capacity_steps);
  }
  last_reported_.assign(spec_.num_sources, -1);
  scratch_sums_.assign(spec_.num_layers, 0.0);
  info_.spec = spec_;
}

absl::StatusOr<IngestResult> Job::Ingest(const StepInput& in, absl::Time now) {
  MutexLock lock(&mu_);
  if (absl::Status s = ValidateStep(spec_, in, absl::MakeSpan(scratch_sums_));
      !s.ok()) {
    ++info_.rejected_calls;
    return s;
  }
  if (spec_.num_sources > 1) {
    return IngestMultiSourceLocked(in, scratch_sums_, now);
  }

  IngestResult result;
  if (info_.last_step.has_value()) {
    const int64_t last = *info_.last_step;
    if (in.step == last) {
      ++info_.duplicate_calls;
      result.outcome = IngestOutcome::kDuplicate;
      result.note = absl::StrCat("step ", in.step,
                                 " was already committed; nothing changed");
      return result;
    }
    if (in.step < last) {
      ++info_.rejected_calls;
      return absl::InvalidArgumentError(
          absl::StrCat("job '", spec_.job_id, "': step ", in.step,
                       " is older than the last committed step ", last));
    }
  }
  last_reported_[0] = in.step;
  result.outcome = IngestOutcome::kCommitted;
  result.committed.push_back(CommitLocked(
      in.step, in.counts.data(), scratch_sums_.data(),
      in.router_logits.empty() ? nullptr : in.router_logits.data(), in.tokens,
      /*incomplete=*/false));
  for (int l = 0; l < spec_.num_layers; ++l) {
    if (scratch_sums_[l] <= 0) {
      absl::StrAppend(&result.note, result.note.empty()
                                        ? "layers without assignments:"
                                        : "",
                      " ", l);
    }
  }
  return result;
}

absl::StatusOr<IngestResult> Job::IngestMultiSourceLocked(
    const StepInput& in, const std::vector<double>& layer_sums,
    absl::Time now) {
  IngestResult result;
  // Time-outs first, so that a long-silent source does not make a fresh
  // report look out of room.
  DrainLocked(now, /*force=*/false, &result.committed);

  const int s = in.source;
  const int64_t t = in.step;
  // The lambda is analysed on its own (clang's -Wthread-safety cannot see
  // that mu_ is held here), so it counts through a pointer taken under the
  // lock.
  int64_t* const rejected_calls = &info_.rejected_calls;
  auto reject = [&](absl::Status status) -> absl::StatusOr<IngestResult> {
    ++*rejected_calls;
    if (!result.committed.empty()) {
      status = absl::Status(
          status.code(),
          absl::StrCat(status.message(), "; meanwhile ",
                       result.committed.size(),
                       " timed-out step(s) were committed"));
    }
    return status;
  };
  if (t == last_reported_[s]) {
    ++info_.duplicate_calls;
    result.outcome = IngestOutcome::kDuplicate;
    result.note = absl::StrCat("source ", s, " already reported step ", t,
                               "; nothing changed");
    return result;
  }
  if (t < last_reported_[s]) {
    return reject(absl::InvalidArgumentError(absl::StrCat(
        "job '", spec_.job_id, "': source ", s, " sent step ", t,
        ", older than the last step it reported (", last_reported_[s], ")")));
  }
  if (info_.last_step.has_value() && t <= *info_.last_step) {
    return reject(absl::FailedPreconditionError(absl::StrCat(
        "job '", spec_.job_id, "': source ", s, " sent step ", t,
        " after it was committed without this source (last committed step ",
        *info_.last_step, "); the late part is dropped")));
  }
  auto it = pending_.find(t);
  if (it == pending_.end()) {
    if (static_cast<int>(pending_.size()) >= max_pending_) {
      return reject(absl::ResourceExhaustedError(absl::StrCat(
          "job '", spec_.job_id, "': ", pending_.size(),
          " steps are already waiting for sources (max_pending_steps = ",
          max_pending_, "); source ", s, " is too far ahead at step ", t,
          ", oldest pending step is ", pending_.begin()->first)));
    }
    const size_t n = static_cast<size_t>(spec_.num_layers) * spec_.num_experts;
    PendingStep fresh;
    fresh.counts.assign(n, 0.0);
    fresh.logit_sums.assign(n, 0.0);
    fresh.logit_weights.assign(spec_.num_layers, 0.0);
    fresh.reported.assign(spec_.num_sources, 0);
    fresh.first_seen = now;
    it = pending_.emplace(t, std::move(fresh)).first;
  }
  PendingStep& p = it->second;
  const int m = spec_.num_experts;
  for (size_t i = 0; i < p.counts.size(); ++i) p.counts[i] += in.counts[i];
  if (in.router_logits.empty()) {
    p.all_logits = false;
  } else {
    for (int l = 0; l < spec_.num_layers; ++l) {
      const double w = layer_sums[l] + kLogitWeightFloor;
      p.logit_weights[l] += w;
      const double* z = in.router_logits.data() + static_cast<size_t>(l) * m;
      double* acc = p.logit_sums.data() + static_cast<size_t>(l) * m;
      for (int e = 0; e < m; ++e) acc[e] += w * z[e];
    }
  }
  if (in.tokens.has_value()) {
    p.tokens += *in.tokens;
  } else {
    p.all_tokens = false;
  }
  p.reported[s] = 1;
  ++p.num_reported;
  last_reported_[s] = t;

  DrainLocked(now, /*force=*/false, &result.committed);
  result.outcome = IngestOutcome::kPending;
  for (const CommittedStep& c : result.committed) {
    if (c.step == t) result.outcome = IngestOutcome::kCommitted;
  }
  return result;
}

void Job::DrainLocked(std::optional<absl::Time> now, bool force,
                      std::vector<CommittedStep>* out) {
  if (pending_.empty()) return;
  const int64_t min_reported =
      *std::min_element(last_reported_.begin(), last_reported_.end());
  const int m = spec_.num_experts;
  while (!pending_.empty()) {
    auto it = pending_.begin();
    const int64_t t = it->first;
    PendingStep& p = it->second;
    const bool final_step = t <= min_reported;
    const bool expired = now.has_value() && *now - p.first_seen >= timeout_;
    if (!final_step && !expired && !force) break;

    for (int l = 0; l < spec_.num_layers; ++l) {
      const double* c = p.counts.data() + static_cast<size_t>(l) * m;
      double sum = 0;
      for (int e = 0; e < m; ++e) sum += c[e];
      scratch_sums_[l] = sum;
    }
    const double* logits = nullptr;
    if (p.all_logits) {
      for (int l = 0; l < spec_.num_layers; ++l) {
        double* z = p.logit_sums.data() + static_cast<size_t>(l) * m;
        const double inv = 1.0 / p.logit_weights[l];
        for (int e = 0; e < m; ++e) z[e] *= inv;
      }
      logits = p.logit_sums.data();
    }
    std::optional<double> tokens;
    if (p.all_tokens) tokens = p.tokens;
    out->push_back(CommitLocked(t, p.counts.data(), scratch_sums_.data(),
                                logits, tokens,
                                p.num_reported < spec_.num_sources));
    pending_.erase(it);
  }
}

CommittedStep Job::CommitLocked(int64_t step, const double* counts,
                                const double* layer_sums, const double* logits,
                                std::optional<double> tokens,
                                bool incomplete) {
  CommittedStep c;
  c.step = step;
  c.incomplete = incomplete;
  uint32_t flags = incomplete ? kStepIncomplete : 0;
  if (info_.last_step.has_value() && step != *info_.last_step + 1) {
    c.gap_before = step - *info_.last_step - 1;
    flags |= kStepAfterGap;
    ++info_.gaps;
    info_.missing_steps += c.gap_before;
  }
  const int m = spec_.num_experts;
  bool layer_changed = false;
  for (int l = 0; l < spec_.num_layers; ++l) {
    const size_t off = static_cast<size_t>(l) * m;
    const double n = tokens.has_value() ? *tokens : layer_sums[l] / spec_.top_k;
    layers_[l].Append(step, n, flags, counts + off, layer_sums[l],
                      logits == nullptr ? nullptr : logits + off);
    if (!health_.empty() && layer_sums[l] > 0 && n > 0) {
      // Validated input, so Observe cannot fail here.
      (void)health_[l].Observe(
          step, absl::MakeConstSpan(counts + off, m), n,
          logits == nullptr ? absl::Span<const double>()
                            : absl::MakeConstSpan(logits + off, m));
      for (HealthEvent& e : health_[l].TakeEvents()) {
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
        AddEventLocked(std::move(event));
      }
      (void)health_[l].TakeWindows();
    }
    if (models_.empty() || layer_sums[l] <= 0) continue;
    const double inv = 1.0 / layer_sums[l];
    for (int e = 0; e < m; ++e) scratch_p_[e] = counts[off + e] * inv;
    LayerModel& model = models_[l];
    if (std::optional<StateTransition> t =
            model.state->Observe(step, scratch_p_, n, l)) {
      layer_states_[l] = t->to;
      layer_changed = true;
      AddEventLocked(Event{0, step, EventKind::kStateChange, l,
                           std::string(LoadStateName(t->from)),
                           std::string(LoadStateName(t->to)), t->drift_ratio});
    }
    model.bank->Observe(step, scratch_p_, layer_sums[l]);
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
      AddEventLocked(Event{0, step, EventKind::kStateChange, -1,
                           std::string(LoadStateName(job_state_)),
                           std::string(LoadStateName(job_state)), median});
      job_state_ = job_state;
    }
  }
  info_.tokens += tokens.has_value() ? *tokens : layer_sums[0] / spec_.top_k;
  ++info_.committed_steps;
  if (!info_.first_step.has_value()) info_.first_step = step;
  info_.last_step = step;
  if (incomplete) ++info_.incomplete_steps;
  return c;
}

std::vector<CommittedStep> Job::ExpirePending(absl::Time now) {
  MutexLock lock(&mu_);
  std::vector<CommittedStep> out;
  DrainLocked(now, /*force=*/false, &out);
  return out;
}

std::vector<CommittedStep> Job::FlushPending() {
  MutexLock lock(&mu_);
  std::vector<CommittedStep> out;
  DrainLocked(std::nullopt, /*force=*/true, &out);
  return out;
}

JobInfo Job::Info() const {
  MutexLock lock(&mu_);
  JobInfo info = info_;
  info.pending_steps = static_cast<int64_t>(pending_.size());
  info.history_bytes = 0;
  for (const LayerHistory& h : layers_) info.history_bytes += h.MemoryBytes();
  info.forecast_bytes = 0;
  for (const LayerModel& m : models_) {
    info.forecast_bytes += m.state->MemoryBytes() + m.bank->MemoryBytes();
  }
  return info;
}

void Job::VisitLayer(int layer,
                     absl::FunctionRef<void(const LayerHistory&)> fn) const {
  MutexLock lock(&mu_);
  fn(layers_[layer]);
}

void Job::AddEventLocked(Event event) {
  event.seq = next_seq_++;
  events_.push_back(std::move(event));
  while (static_cast<int>(events_.size()) > max_events_) events_.pop_front();
}

std::vector<Event> Job::ReadEvents(int64_t after_seq, int max_events) const {
  MutexLock lock(&mu_);
  std::vector<Event> out;
  for (const Event& e : events_) {
    if (static_cast<int>(out.size()) >= max_events) break;
    if (e.seq > after_seq) out.push_back(e);
  }
  return out;
}

absl::StatusOr<StateReport> Job::State() const {
  MutexLock lock(&mu_);
  if (models_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job '", spec_.job_id, "' was registered with forecasting off"));
  }
  if (!info_.last_step.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("job '", spec_.job_id, "' has no committed steps yet"));
  }
  StateReport report;
  report.as_of_step = *info_.last_step;
  report.job_state = job_state_;
  for (const LayerModel& model : models_) {
    report.layers.push_back(model.state->Signals());
  }
  return report;
}

absl::StatusOr<HealthReport> Job::Health() const {
  MutexLock lock(&mu_);
  if (health_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job '", spec_.job_id, "' was registered with health off"));
  }
  HealthReport report;
  report.as_of_step = info_.last_step.value_or(-1);
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

absl::StatusOr<std::vector<ForecastScore>> Job::Scores() const {
  MutexLock lock(&mu_);
  if (models_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job '", spec_.job_id, "' was registered with forecasting off"));
  }
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

void Job::VisitBank(int layer, absl::FunctionRef<void(ForecastBank&)> fn) {
  MutexLock lock(&mu_);
  fn(*models_[layer].bank);
}

absl::StatusOr<ForecastResult> Job::Forecast(const ForecastRequest& request) {
  MutexLock lock(&mu_);
  const std::string& id = spec_.job_id;
  if (models_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("job '", id, "' was registered with forecasting off"));
  }
  if (!info_.last_step.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("job '", id, "' has no committed steps yet"));
  }
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
  if (request.path_steps < 0 || request.path_steps > max_path_steps_) {
    return absl::InvalidArgumentError(
        absl::StrCat("path_steps ", request.path_steps, " must be in [0, ",
                     max_path_steps_, "] (EngineOptions.max_path_steps)"));
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
  result.as_of_step = *info_.last_step;
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

}  // namespace moecast::internal
