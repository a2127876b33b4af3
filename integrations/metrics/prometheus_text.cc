#include "integrations/metrics/prometheus_text.h"

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moecast::metrics {
namespace {

// Collects samples per metric family so that each family is written once,
// with its HELP and TYPE lines, whatever order the jobs are visited in.
class Page {
 public:
  void Family(const std::string& name, const char* type, const char* help) {
    if (families_.count(name) == 0) order_.push_back(name);
    Entry& e = families_[name];
    e.type = type;
    e.help = help;
  }
  // `labels` is the inside of {...}, already escaped, or empty.
  void Sample(const std::string& name, const std::string& labels, double value) {
    std::string& body = families_[name].body;
    absl::StrAppend(&body, name);
    if (!labels.empty()) absl::StrAppend(&body, "{", labels, "}");
    absl::StrAppend(&body, " ", FormatValue(value), "\n");
  }
  std::string Text() const {
    std::string out;
    for (const std::string& name : order_) {
      const Entry& e = families_.at(name);
      absl::StrAppend(&out, "# HELP ", name, " ", e.help, "\n# TYPE ", name, " ", e.type,
                      "\n", e.body);
    }
    return out;
  }

 private:
  static std::string FormatValue(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrFormat("%.0f", v);
    return absl::StrFormat("%.9g", v);
  }
  struct Entry {
    std::string type, help, body;
  };
  std::vector<std::string> order_;
  std::map<std::string, Entry> families_;
};

std::string JobLabel(const std::string& job) {
  return absl::StrCat("job_id=\"", EscapeLabelValue(job), "\"");
}

void RenderService(const grpc_api::ServiceStats& s, Page& page) {
  page.Family("moecast_steps_received_total", "counter",
              "Steps received by IngestBatch and Ingest calls.");
  page.Sample("moecast_steps_received_total", "", s.steps_received);
  page.Family("moecast_steps_committed_total", "counter",
              "Steps committed to history by IngestBatch and Ingest calls.");
  page.Sample("moecast_steps_committed_total", "", s.steps_committed);
  page.Family("moecast_rejected_steps_total", "counter",
              "Steps rejected, by gRPC status code.");
  for (const auto& [code, n] : s.rejected_steps_by_code) {
    page.Sample("moecast_rejected_steps_total",
                absl::StrCat("code=\"", EscapeLabelValue(code), "\""), n);
  }
  page.Family("moecast_unauthenticated_calls_total", "counter",
              "Calls refused for a missing or wrong bearer token.");
  page.Sample("moecast_unauthenticated_calls_total", "", s.unauthenticated_calls);
  page.Family("moecast_refused_streams_total", "counter",
              "Streams refused over max_concurrent_streams.");
  page.Sample("moecast_refused_streams_total", "", s.refused_streams);
}

void RenderJob(const Engine& engine, const std::string& id,
               const grpc_api::ServiceStats* stats, const MetricsOptions& options,
               Page& page) {
  absl::StatusOr<JobInfo> info = engine.GetJobInfo(id);
  if (!info.ok()) return;  // deleted meanwhile
  const std::string job = JobLabel(id);
  page.Sample("moecast_job_committed_steps_total", job, info->committed_steps);
  page.Sample("moecast_job_rejected_calls_total", job, info->rejected_calls);
  page.Sample("moecast_job_duplicate_calls_total", job, info->duplicate_calls);
  page.Sample("moecast_job_missing_steps_total", job, info->missing_steps);
  page.Sample("moecast_job_incomplete_steps_total", job, info->incomplete_steps);
  if (info->last_step) page.Sample("moecast_job_last_step", job, *info->last_step);
  page.Sample("moecast_job_memory_bytes", job, info->history_bytes + info->forecast_bytes);
  page.Sample("moecast_job_idle_seconds", job, absl::ToDoubleSeconds(info->idle));

  if (absl::StatusOr<StateReport> state = engine.GetState(id); state.ok()) {
    page.Sample("moecast_job_stable", job, state->job_state == LoadState::kStable ? 1 : 0);
    int transient = 0;
    for (size_t l = 0; l < state->layers.size(); ++l) {
      const bool stable = state->layers[l].state == LoadState::kStable;
      transient += stable ? 0 : 1;
      if (options.per_layer) {
        page.Sample("moecast_layer_stable", absl::StrCat(job, ",layer=\"", l, "\""),
                    stable ? 1 : 0);
      }
    }
    page.Sample("moecast_job_transient_layers", job, transient);
    page.Sample("moecast_job_shifts_total", job, state->job_shifts.shifts);
    int64_t layer_shifts = 0;
    for (size_t l = 0; l < state->layer_shifts.size(); ++l) {
      layer_shifts += state->layer_shifts[l].shifts;
      if (options.per_layer) {
        page.Sample("moecast_layer_shifts_total", absl::StrCat(job, ",layer=\"", l, "\""),
                    state->layer_shifts[l].shifts);
      }
    }
    page.Sample("moecast_job_layer_shifts_total", job, layer_shifts);
    if (state->job_shifts.last_change_step) {
      page.Sample("moecast_job_last_shift_change_step", job,
                  *state->job_shifts.last_change_step);
      page.Sample("moecast_job_last_shift_size", job, state->job_shifts.last_size);
    }
  }
  if (absl::StatusOr<std::vector<ForecastScore>> scores = engine.ForecastScores(id);
      scores.ok()) {
    for (const ForecastScore& s : *scores) {
      if (s.predictor != "auto" || s.layers_scored == 0) continue;
      page.Sample("moecast_forecast_error",
                  absl::StrCat(job, ",horizon=\"", s.horizon, "\""), s.recent_l1);
    }
  }
  if (absl::StatusOr<HealthReport> health = engine.Health(id); health.ok()) {
    double gamma_sum = 0, mom_sum = 0;
    int gamma_n = 0, mom_n = 0, dead = 0;
    for (size_t l = 0; l < health->layers.size(); ++l) {
      const HealthWindow& w = health->layers[l];
      if (w.steps == 0) continue;  // no completed window
      const std::string layer = absl::StrCat(job, ",layer=\"", l, "\"");
      dead += static_cast<int>(w.dead_experts.size());
      mom_sum += w.imbalance.max_over_mean;
      ++mom_n;
      // Only identified fits: one at a search bound (e.g. near-uniform loads,
      // where any large gamma fits) is not a value to average or graph.
      const bool identified = w.gamma && w.gamma->converged && !w.gamma->at_lower_bound &&
                              !w.gamma->at_upper_bound && !w.gamma->weakly_identified;
      if (identified) {
        gamma_sum += w.gamma->gamma_f;
        ++gamma_n;
      }
      if (options.per_layer) {
        page.Sample("moecast_layer_dead_experts", layer, w.dead_experts.size());
        page.Sample("moecast_layer_max_over_mean", layer, w.imbalance.max_over_mean);
        if (identified) page.Sample("moecast_layer_gamma_eff", layer, w.gamma->gamma_f);
      }
    }
    if (mom_n > 0) {
      page.Sample("moecast_job_dead_experts", job, dead);
      page.Sample("moecast_job_max_over_mean", job, mom_sum / mom_n);
    }
    if (gamma_n > 0) page.Sample("moecast_job_gamma_eff", job, gamma_sum / gamma_n);
  }
  if (stats != nullptr) {
    auto it = stats->last_plan_balancedness.find(id);
    if (it != stats->last_plan_balancedness.end()) {
      page.Sample("moecast_plan_balancedness", job, it->second);
    }
  }
}

}  // namespace

std::string EscapeLabelValue(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

std::string RenderMetrics(const Engine& engine, const grpc_api::ServiceStats* stats,
                          const MetricsOptions& options) {
  Page page;
  const std::vector<std::string> jobs = engine.ListJobs();
  page.Family("moecast_jobs", "gauge", "Registered jobs.");
  page.Sample("moecast_jobs", "", jobs.size());
  if (stats != nullptr) RenderService(*stats, page);
  // Families in a fixed order, declared before the samples.
  page.Family("moecast_job_committed_steps_total", "counter", "Steps committed, per job.");
  page.Family("moecast_job_rejected_calls_total", "counter", "Ingest calls rejected, per job.");
  page.Family("moecast_job_duplicate_calls_total", "counter", "Re-sent steps, per job.");
  page.Family("moecast_job_missing_steps_total", "counter", "Step numbers skipped, per job.");
  page.Family("moecast_job_incomplete_steps_total", "counter",
              "Steps committed without every source, per job.");
  page.Family("moecast_job_last_step", "gauge", "Last committed step.");
  page.Family("moecast_job_memory_bytes", "gauge", "History and forecasting memory, bytes.");
  page.Family("moecast_job_idle_seconds", "gauge", "Seconds since the last step.");
  page.Family("moecast_job_stable", "gauge", "1 when the job's load is stable, 0 when transient.");
  page.Family("moecast_job_transient_layers", "gauge", "Layers in the transient state.");
  page.Family("moecast_job_shifts_total", "counter",
              "Load shifts of the job (most of its layers within two windows).");
  page.Family("moecast_job_layer_shifts_total", "counter",
              "Load shifts of the job's layers, summed over layers.");
  page.Family("moecast_job_last_shift_change_step", "gauge",
              "Estimated change point of the job's last load shift.");
  page.Family("moecast_job_last_shift_size", "gauge",
              "Size (L1 between mean shares before and after) of the job's last shift.");
  page.Family("moecast_forecast_error", "gauge",
              "Recent L1 error of auto's forecasts of expert shares (0..2), by horizon.");
  page.Family("moecast_job_dead_experts", "gauge", "Dead experts over all layers.");
  page.Family("moecast_job_max_over_mean", "gauge",
              "Max over mean expert load, mean over layers (last health window).");
  page.Family("moecast_job_gamma_eff", "gauge",
              "gamma_eff in f units, mean over layers with an identified fit.");
  page.Family("moecast_plan_balancedness", "gauge",
              "Balancedness (mean/max GPU load) of the last recommended plan.");
  if (options.per_layer) {
    page.Family("moecast_layer_stable", "gauge", "1 when the layer's load is stable.");
    page.Family("moecast_layer_shifts_total", "counter", "Load shifts of the layer.");
    page.Family("moecast_layer_dead_experts", "gauge", "Dead experts of the layer.");
    page.Family("moecast_layer_max_over_mean", "gauge", "Max over mean load of the layer.");
    page.Family("moecast_layer_gamma_eff", "gauge",
                "gamma_eff of the layer, f units (identified fits only).");
  }
  for (const std::string& id : jobs) RenderJob(engine, id, stats, options, page);
  return page.Text();
}

}  // namespace moecast::metrics
