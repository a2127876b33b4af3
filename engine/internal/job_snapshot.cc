// Job::SaveTo / LoadFrom: a job's whole state in the snapshot payload
// (docs/snapshot-format.md). Kept apart from job.cc so that the ingest and
// forecast paths and the snapshot code can change independently.
#include <cstring>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/internal/job.h"

namespace moecast::internal {
namespace {

constexpr uint32_t kSpecTag = SnapshotTag("SPEC");
constexpr uint32_t kOptionsTag = SnapshotTag("OPTS");
constexpr uint32_t kJobTag = SnapshotTag("JOB ");
constexpr uint32_t kLayerTag = SnapshotTag("LAYR");
constexpr uint32_t kHistoryTag = SnapshotTag("HIST");
constexpr uint32_t kStateTag = SnapshotTag("STAT");
constexpr uint32_t kBankTag = SnapshotTag("BANK");
constexpr uint32_t kHealthTag = SnapshotTag("HLTH");
// Last in a layer's section; absent in snapshots written before shift
// detection (the detector then starts afresh).
constexpr uint32_t kShiftTag = SnapshotTag("SHFT");

constexpr size_t kMaxText = size_t{1} << 20;

// ---- Spec -----------------------------------------------------------------

void PutSpec(SnapshotWriter& out, const JobSpec& s) {
  out.PutString(s.job_id);
  out.PutI32(s.num_layers);
  out.PutI32(s.num_experts);
  out.PutI32(s.top_k);
  out.PutI32(s.num_sources);
  out.PutI32(static_cast<int>(s.step_unit));
  out.PutBool(s.forecasting);
  out.PutBool(s.health);
  out.PutStrings(s.predictors);
  out.PutI32s(s.horizons);
  out.PutI32(static_cast<int>(s.router));
  out.PutOptionalDouble(s.hyper.aux_loss_coef);
  out.PutOptionalDouble(s.hyper.router_temperature);
  out.PutOptionalDouble(s.hyper.entropy_weight);
  out.PutOptionalDouble(s.hyper.oracle_weight);
  out.PutOptionalDouble(s.hyper.balance_weight);
}

// ---- Options that shape a job ----------------------------------------------

// One EngineOptions field that a job's behaviour depends on, by its name in
// EngineOptions. Integers and doubles (compared bit for bit).
struct OptionEntry {
  std::string name;
  std::variant<int64_t, double> value;
  // False for a setting no saved state depends on, under which a job
  // restores whatever its saved value: it applies from the restore on.
  bool must_match = true;
};

std::vector<OptionEntry> JobOptionEntries(const EngineOptions& o) {
  std::vector<OptionEntry> e;
  auto i = [&](const char* name, int64_t v, bool must_match = true) {
    e.push_back({name, v, must_match});
  };
  auto d = [&](const char* name, double v) { e.push_back({name, v}); };
  i("history_capacity_steps", o.history_capacity_steps);
  i("max_pending_steps", o.max_pending_steps);
  i("source_timeout_ns", absl::ToInt64Nanoseconds(o.source_timeout));
  i("max_path_steps", o.max_path_steps);
  i("max_events_per_job", o.max_events_per_job);
  i("state.window", o.state.window);
  d("state.enter_threshold", o.state.enter_threshold);
  d("state.leave_threshold", o.state.leave_threshold);
  i("state.min_dwell_steps", o.state.min_dwell_steps);
  d("state.job_transient_fraction", o.state.job_transient_fraction);
  const HealthOptions& h = o.health;
  i("health.window_steps", h.window_steps);
  d("health.gamma.sigma", h.gamma.sigma);
  i("health.gamma.estimator", static_cast<int>(h.gamma.estimator));
  i("health.gamma.closed_form_weights",
    static_cast<int>(h.gamma.closed_form_weights));
  // The replicate count sets only how precisely the intervals of windows
  // that close after a restore are computed (and its default changed from
  // 100 to 50: older data directories must restore).
  i("health.gamma.bootstrap_replicates", h.gamma.bootstrap_replicates,
    /*must_match=*/false);
  i("health.gamma.seed", static_cast<int64_t>(h.gamma.seed));
  d("health.gamma.ci_level", h.gamma.ci_level);
  d("health.gamma.closed_form_min_count", h.gamma.closed_form_min_count);
  d("health.gamma.weak_identification_cv", h.gamma.weak_identification_cv);
  d("health.gamma.weak_identification_noise_ratio",
    h.gamma.weak_identification_noise_ratio);
  i("health.gamma.heldout", h.gamma.heldout);
  i("health.all_estimators", h.all_estimators);
  d("health.dead.alpha_dead", h.dead.alpha_dead);
  i("health.dead.window_steps", h.dead.window_steps);
  i("health.dead.dead_windows", h.dead.dead_windows);
  d("health.dead.min_assignments_per_expert_factor",
    h.dead.min_assignments_per_expert_factor);
  d("health.dead.revive_factor", h.dead.revive_factor);
  i("health.dead.revive_windows", h.dead.revive_windows);
  i("health.dead.sparse_windows", static_cast<int>(h.dead.sparse_windows));
  i("health.phase.fit_windows", h.phase.fit_windows);
  i("health.phase.confirm_windows", h.phase.confirm_windows);
  i("health.phase.min_windows_in_phase", h.phase.min_windows_in_phase);
  d("health.phase.point_ci_level", h.phase.point_ci_level);
  d("health.phase.slope_ci_level", h.phase.slope_ci_level);
  d("health.phase.flat_ci_level", h.phase.flat_ci_level);
  i("health.phase.surge_needs_disjoint_ci", h.phase.surge_needs_disjoint_ci);
  d("health.phase.min_relative_se", h.phase.min_relative_se);
  return e;
}

bool SameValue(const std::variant<int64_t, double>& a,
               const std::variant<int64_t, double>& b) {
  if (a.index() != b.index()) return false;
  if (a.index() == 0) return std::get<0>(a) == std::get<0>(b);
  const double x = std::get<1>(a), y = std::get<1>(b);
  return std::memcmp(&x, &y, sizeof(double)) == 0;
}

std::string ValueText(const std::variant<int64_t, double>& v) {
  return v.index() == 0 ? absl::StrCat(std::get<0>(v))
                        : absl::StrCat(std::get<1>(v));
}

// ---- Events -----------------------------------------------------------------

void PutEvent(SnapshotWriter& out, const Event& e) {
  out.PutI64(e.seq);
  out.PutI64(e.step);
  out.PutU8(static_cast<uint8_t>(e.kind));
  out.PutI32(e.layer);
  out.PutString(e.from);
  out.PutString(e.to);
  out.PutDouble(e.value);
  out.PutString(e.detail);
}

Event ReadEvent(SnapshotReader& in) {
  Event e;
  e.seq = in.I64("event.seq");
  e.step = in.I64("event.step");
  const uint8_t kind = in.U8("event.kind");
  if (kind > static_cast<uint8_t>(EventKind::kShift)) {
    in.Fail("event.kind", absl::StrCat("unknown kind ", kind));
  }
  e.kind = static_cast<EventKind>(kind);
  e.layer = in.I32("event.layer");
  e.from = in.String("event.from", kMaxText);
  e.to = in.String("event.to", kMaxText);
  e.value = in.Double("event.value");
  e.detail = in.String("event.detail", kMaxText);
  return e;
}

LoadState ReadLoadState(SnapshotReader& in, absl::string_view field) {
  const uint8_t v = in.U8(field);
  if (v > 1) in.Fail(field, absl::StrCat("unknown state ", v));
  return v == 1 ? LoadState::kStable : LoadState::kTransient;
}

// A shift summary: count, then the last shift's steps (-1: none) and size.
void PutShiftSummary(const ShiftSummary& s, SnapshotWriter& out) {
  out.PutI64(s.shifts);
  out.PutI64(s.last_step.value_or(-1));
  out.PutI64(s.last_change_step.value_or(-1));
  out.PutDouble(s.last_size);
}

ShiftSummary ReadShiftSummary(SnapshotReader& in) {
  ShiftSummary s;
  s.shifts = in.I64In("shifts", 0, int64_t{1} << 62);
  const int64_t last = in.I64("last_shift");
  const int64_t change = in.I64("last_change");
  s.last_size = in.Double("last_size");
  if (last >= 0) {
    s.last_step = last;
    s.last_change_step = change;
  }
  return s;
}

}  // namespace

// ---- Save ---------------------------------------------------------------------

absl::Status Job::SaveTo(SnapshotWriter& out,
                         const EngineOptions& options) const {
  // A snapshot holds the analysis state as of the last committed step: wait
  // until analysis has caught up, then check under both locks that no step
  // committed in between (else wait again).
  for (;;) {
    (void)AwaitAnalysis(Freshness());
    MutexLock alock(&amu_);
    MutexLock lock(&mu_);
    if (!parked_ && !block_.has_value() &&
        fetch_index_ == info_.committed_steps &&
        analyzer_->analysed_steps() == info_.committed_steps) {
      return SaveLocked(out, options);
    }
  }
}

absl::Status Job::SaveLocked(SnapshotWriter& out,
                             const EngineOptions& options) const {
  size_t section = out.BeginSection(kSpecTag);
  PutSpec(out, spec_);
  out.EndSection(section);

  section = out.BeginSection(kOptionsTag);
  const std::vector<OptionEntry> entries = JobOptionEntries(options);
  out.PutU64(entries.size());
  for (const OptionEntry& e : entries) {
    out.PutString(e.name);
    out.PutU8(static_cast<uint8_t>(e.value.index()));
    if (e.value.index() == 0) {
      out.PutI64(std::get<0>(e.value));
    } else {
      out.PutDouble(std::get<1>(e.value));
    }
  }
  out.EndSection(section);

  section = out.BeginSection(kJobTag);
  out.PutI64(info_.committed_steps);
  out.PutOptionalI64(info_.first_step);
  out.PutOptionalI64(info_.last_step);
  out.PutI64(info_.gaps);
  out.PutI64(info_.missing_steps);
  out.PutI64(info_.incomplete_steps);
  out.PutI64(info_.duplicate_calls);
  out.PutI64(info_.rejected_calls);
  out.PutDouble(info_.tokens);
  out.PutI64s(last_reported_);
  out.PutU64(pending_.size());
  for (const auto& [step, p] : pending_) {
    out.PutI64(step);
    out.PutRawDoubles(p.counts.data(), p.counts.size());
    out.PutRawDoubles(p.logit_sums.data(), p.logit_sums.size());
    out.PutRawDoubles(p.logit_weights.data(), p.logit_weights.size());
    out.PutString(absl::string_view(
        reinterpret_cast<const char*>(p.reported.data()), p.reported.size()));
    out.PutI32(p.num_reported);
    out.PutBool(p.all_tokens);
    out.PutBool(p.all_logits);
    out.PutDouble(p.tokens);
    out.PutI64(absl::ToUnixNanos(p.first_seen));
  }
  out.PutU64(analyzer_->layer_states_.size());
  for (LoadState s : analyzer_->layer_states_) out.PutU8(s == LoadState::kStable ? 1 : 0);
  out.PutU8(analyzer_->job_state_ == LoadState::kStable ? 1 : 0);
  out.PutU64(analyzer_->events_.size());
  for (const Event& e : analyzer_->events_) PutEvent(out, e);
  out.PutI64(analyzer_->next_seq_);
  // Steps whose analysis was degraded by the overload policy: the restored
  // state carries their effect, so the counts carry over too.
  out.PutI64(scoring_shed_count_.load(std::memory_order_relaxed));
  out.PutI64(coalesced_count_.load(std::memory_order_relaxed));
  out.EndSection(section);

  for (int l = 0; l < spec_.num_layers; ++l) {
    const size_t layer = out.BeginSection(kLayerTag);
    section = out.BeginSection(kHistoryTag);
    layers_[l].SaveTo(out);
    out.EndSection(section);
    if (!analyzer_->models_.empty()) {
      section = out.BeginSection(kStateTag);
      analyzer_->models_[l].state->SaveTo(out);
      out.EndSection(section);
      section = out.BeginSection(kBankTag);
      if (absl::Status s = analyzer_->models_[l].bank->SaveTo(out); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("job '", spec_.job_id,
                                                   "', layer ", l, ": ",
                                                   s.message()));
      }
      out.EndSection(section);
    }
    if (!analyzer_->health_.empty()) {
      section = out.BeginSection(kHealthTag);
      analyzer_->health_[l].SaveTo(out);
      out.EndSection(section);
    }
    if (!analyzer_->models_.empty()) {
      section = out.BeginSection(kShiftTag);
      const auto& detectors = analyzer_->models_[l].shift->detectors();
      out.PutU64(detectors.size());
      for (const auto& d : detectors) d->SaveTo(out);
      out.PutI64(analyzer_->models_[l].last_shift_step);
      if (l == 0) out.PutI64(analyzer_->last_job_shift_step_);  // the job's
      PutShiftSummary(analyzer_->models_[l].shifts, out);
      if (l == 0) PutShiftSummary(analyzer_->job_shifts_, out);
      out.EndSection(section);
    }
    out.EndSection(layer);
  }
  return absl::OkStatus();
}

// ---- Restore ------------------------------------------------------------------

absl::StatusOr<JobSpec> Job::ReadSnapshotSpec(SnapshotReader& in) {
  SnapshotReader r = in.Section(kSpecTag, "spec");
  JobSpec s;
  s.job_id = r.String("job_id", 1024);
  s.num_layers = r.I32("num_layers");
  s.num_experts = r.I32("num_experts");
  s.top_k = r.I32("top_k");
  s.num_sources = r.I32("num_sources");
  s.step_unit = static_cast<StepUnit>(
      r.IntIn("step_unit", 0, static_cast<int>(StepUnit::kInterval)));
  s.forecasting = r.Bool("forecasting");
  s.health = r.Bool("health");
  s.predictors = r.Strings("predictors", 1024, 4096);
  s.horizons = r.I32s("horizons", 1024);
  s.router = static_cast<RouterKind>(
      r.IntIn("router", 0, static_cast<int>(RouterKind::kSigmoidWithBias)));
  s.hyper.aux_loss_coef = r.OptionalDouble("hyper.aux_loss_coef");
  s.hyper.router_temperature = r.OptionalDouble("hyper.router_temperature");
  s.hyper.entropy_weight = r.OptionalDouble("hyper.entropy_weight");
  s.hyper.oracle_weight = r.OptionalDouble("hyper.oracle_weight");
  s.hyper.balance_weight = r.OptionalDouble("hyper.balance_weight");
  r.ExpectEnd();
  if (!in.ok()) return in.status();
  return s;
}

absl::Status Job::CheckSnapshotOptions(SnapshotReader& in,
                                       const EngineOptions& options) {
  SnapshotReader r = in.Section(kOptionsTag, "options");
  const std::vector<OptionEntry> mine = JobOptionEntries(options);
  const size_t n = r.Count("options", 4096, 10);
  std::vector<OptionEntry> saved;
  for (size_t k = 0; k < n && r.ok(); ++k) {
    OptionEntry e;
    e.name = r.String("option name", 256);
    const uint8_t type = r.U8("option type");
    if (type == 0) {
      e.value = r.I64("option value");
    } else if (type == 1) {
      e.value = r.Double("option value");
    } else {
      r.Fail("option type", absl::StrCat("unknown type ", type));
    }
    saved.push_back(std::move(e));
  }
  r.ExpectEnd();
  if (!in.ok()) return in.status();
  for (const OptionEntry& m : mine) {
    const OptionEntry* s = nullptr;
    for (const OptionEntry& e : saved) {
      if (e.name == m.name) s = &e;
    }
    if (s == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot does not record EngineOptions.", m.name,
          ", which this engine sets to ", ValueText(m.value)));
    }
    if (m.must_match && !SameValue(s->value, m.value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot was taken with EngineOptions.", m.name, " = ",
          ValueText(s->value), ", this engine has ", ValueText(m.value),
          "; a job restores only under the options that shaped it"));
    }
  }
  for (const OptionEntry& e : saved) {
    bool known = false;
    for (const OptionEntry& m : mine) known |= m.name == e.name;
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot records EngineOptions.", e.name,
          ", which this engine does not know"));
    }
  }
  return absl::OkStatus();
}

std::optional<std::vector<std::string>> Job::PeekBankPredictors(
    absl::string_view rest) {
  SnapshotReader in(rest, "snapshot");
  (void)in.Section(kJobTag, "job");
  SnapshotReader layer = in.Section(kLayerTag, "layer 0");
  (void)layer.Section(kHistoryTag, "history");
  (void)layer.Section(kStateTag, "state");
  SnapshotReader bank = layer.Section(kBankTag, "bank");
  (void)bank.I32("num_experts");
  std::vector<std::string> names = bank.Strings("predictors", 1024, 4096);
  if (!in.ok()) return std::nullopt;
  return names;
}

absl::Status Job::LoadFrom(SnapshotReader& in) {
  MutexLock alock(&amu_);
  MutexLock lock(&mu_);
  const int num_layers = spec_.num_layers;
  const size_t lm = static_cast<size_t>(num_layers) * spec_.num_experts;
  {
    SnapshotReader r = in.Section(kJobTag, "job");
    JobInfo info = info_;
    info.committed_steps = r.I64In("committed_steps", 0, int64_t{1} << 62);
    info.first_step = r.OptionalI64("first_step");
    info.last_step = r.OptionalI64("last_step");
    info.gaps = r.I64("gaps");
    info.missing_steps = r.I64("missing_steps");
    info.incomplete_steps = r.I64("incomplete_steps");
    info.duplicate_calls = r.I64("duplicate_calls");
    info.rejected_calls = r.I64("rejected_calls");
    info.tokens = r.Double("tokens");
    if (r.ok() && (info.first_step.has_value() != info.last_step.has_value() ||
                   info.last_step.has_value() != (info.committed_steps > 0))) {
      r.Fail("last_step", "the step counters disagree");
    }
    std::vector<int64_t> last_reported =
        r.I64s("last_reported", static_cast<size_t>(spec_.num_sources));
    if (r.ok() && last_reported.size() != last_reported_.size()) {
      r.Fail("last_reported", absl::StrCat(last_reported.size(),
                                           " sources, the spec declares ",
                                           spec_.num_sources));
    }
    const size_t step_bytes =
        8 + 16 * lm + 8 * static_cast<size_t>(num_layers) + 8 + 4 + 2 + 16;
    const size_t num_pending =
        r.Count("pending", static_cast<size_t>(max_pending_), step_bytes);
    std::map<int64_t, PendingStep> pending;
    for (size_t k = 0; k < num_pending && r.ok(); ++k) {
      const int64_t step = r.I64("pending.step");
      PendingStep p;
      p.counts.resize(lm);
      p.logit_sums.resize(lm);
      p.logit_weights.resize(num_layers);
      r.RawDoubles("pending.counts", p.counts.data(), lm);
      r.RawDoubles("pending.logit_sums", p.logit_sums.data(), lm);
      r.RawDoubles("pending.logit_weights", p.logit_weights.data(), num_layers);
      const std::string reported = r.String(
          "pending.reported", static_cast<size_t>(spec_.num_sources));
      p.num_reported = r.I32("pending.num_reported");
      p.all_tokens = r.Bool("pending.all_tokens");
      p.all_logits = r.Bool("pending.all_logits");
      p.tokens = r.Double("pending.tokens");
      p.first_seen = absl::FromUnixNanos(r.I64("pending.first_seen"));
      if (!r.ok()) break;
      int set = 0;
      for (char c : reported) set += c == 1;
      if (reported.size() != static_cast<size_t>(spec_.num_sources) ||
          set != p.num_reported || set < 1 ||
          (info.last_step.has_value() && step <= *info.last_step) ||
          (!pending.empty() && step <= pending.rbegin()->first)) {
        r.Fail("pending", absl::StrCat("step ", step, " is inconsistent"));
        break;
      }
      p.reported.assign(reported.begin(), reported.end());
      pending.emplace(step, std::move(p));
    }
    const size_t num_states = r.Count("layer_states", num_layers, 1);
    std::vector<LoadState> layer_states;
    for (size_t k = 0; k < num_states && r.ok(); ++k) {
      layer_states.push_back(ReadLoadState(r, "layer_state"));
    }
    if (r.ok() && layer_states.size() != analyzer_->layer_states_.size()) {
      r.Fail("layer_states", absl::StrCat(layer_states.size(), " layers, expected ",
                                          analyzer_->layer_states_.size()));
    }
    const LoadState job_state = ReadLoadState(r, "job_state");
    const size_t num_events =
        r.Count("events", static_cast<size_t>(analyzer_->max_events_), 8 * 5 + 1 + 4 + 8);
    std::deque<Event> events;
    for (size_t k = 0; k < num_events && r.ok(); ++k) {
      events.push_back(ReadEvent(r));
    }
    const int64_t next_seq = r.I64In("next_seq", 1, int64_t{1} << 62);
    for (size_t k = 0; k < events.size() && r.ok(); ++k) {
      if (events[k].seq >= next_seq || (k > 0 && events[k].seq <= events[k - 1].seq)) {
        r.Fail("events", absl::StrCat("event ", events[k].seq,
                                      " is out of sequence"));
      }
    }
    // The degraded-step counts are newer than the section: older snapshots
    // restore with none counted.
    int64_t shed = 0, coalesced = 0;
    if (r.ok() && r.remaining() > 0) {
      shed = r.I64In("scoring_shed_steps", 0, info.committed_steps);
      coalesced = r.I64In("coalesced_steps", 0, info.committed_steps);
    }
    r.ExpectEnd();
    if (!in.ok()) return in.status();
    info_ = std::move(info);
    last_reported_ = std::move(last_reported);
    pending_ = std::move(pending);
    analyzer_->layer_states_ = std::move(layer_states);
    analyzer_->job_state_ = job_state;
    analyzer_->events_ = std::move(events);
    analyzer_->next_seq_ = next_seq;
    scoring_shed_count_.store(shed, std::memory_order_relaxed);
    coalesced_count_.store(coalesced, std::memory_order_relaxed);
  }
  for (int l = 0; l < num_layers && in.ok(); ++l) {
    SnapshotReader layer = in.Section(kLayerTag, absl::StrCat("layer ", l));
    {
      SnapshotReader r = layer.Section(kHistoryTag, "history");
      layers_[l].LoadFrom(r);
      r.ExpectEnd();
    }
    if (!analyzer_->models_.empty()) {
      {
        SnapshotReader r = layer.Section(kStateTag, "state");
        analyzer_->models_[l].state->LoadFrom(r);
        r.ExpectEnd();
      }
      {
        SnapshotReader r = layer.Section(kBankTag, "bank");
        analyzer_->models_[l].bank->LoadFrom(r);
        r.ExpectEnd();
        analyzer_->models_[l].Restored();
      }
    }
    if (!analyzer_->health_.empty()) {
      SnapshotReader r = layer.Section(kHealthTag, "health");
      analyzer_->health_[l].LoadFrom(r);
      r.ExpectEnd();
    }
    if (!analyzer_->models_.empty() && layer.ok() && layer.remaining() > 0) {
      SnapshotReader r = layer.Section(kShiftTag, "shift");
      const auto& detectors = analyzer_->models_[l].shift->detectors();
      const size_t scales = r.Count("scales", 8, 1);
      if (r.ok() && scales != detectors.size()) {
        r.Fail("scales", absl::StrCat(scales, " shift detectors saved, this job has ",
                                      detectors.size()));
      }
      for (size_t k = 0; k < detectors.size() && r.ok(); ++k) detectors[k]->LoadFrom(r);
      analyzer_->models_[l].last_shift_step = r.I64("last_shift_step");
      if (l == 0) analyzer_->last_job_shift_step_ = r.I64("last_job_shift_step");
      // The summaries (counts and the last shift) are newer than the section:
      // older snapshots restore with none counted.
      if (r.ok() && r.remaining() > 0) {
        analyzer_->models_[l].shifts = ReadShiftSummary(r);
        if (l == 0) analyzer_->job_shifts_ = ReadShiftSummary(r);
      }
      r.ExpectEnd();
    }
    layer.ExpectEnd();
  }
  in.ExpectEnd();
  if (!in.ok()) return in.status();
  // Everything committed was analysed when the snapshot was taken.
  fetch_index_ = info_.committed_steps;
  analyzer_->analysed_steps_ = info_.committed_steps;
  analyzer_->last_step_ = info_.last_step;
  committed_count_.store(info_.committed_steps);
  last_committed_step_.store(info_.last_step.value_or(-1));
  analysed_count_.store(info_.committed_steps);
  last_analysed_step_.store(info_.last_step.value_or(-1));
  return in.status();
}

}  // namespace moecast::internal
