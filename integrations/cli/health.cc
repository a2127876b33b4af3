// moecast health: replays a trace (counts, and router statistics when given)
// through per-layer health monitors and reports gamma_eff with its CI and
// phase, imbalance and dead experts per consecutive W-step window, plus the
// events (phase changes, deaths, revivals) and E = T*H/(O+B).
#include <cmath>
#include <fstream>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/health/ecology/ecology.h"
#include "engine/health/monitor.h"
#include "engine/trace/trace_reader.h"
#include "integrations/cli/commands.h"
#include "integrations/cli/flags.h"
#include "nlohmann/json.hpp"

namespace moecast::cli {
namespace {

using nlohmann::json;

json Number(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

double Pearson(const std::vector<double>& a, const std::vector<double>& b) {
  double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
  int n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) continue;
    sa += a[i];
    sb += b[i];
    saa += a[i] * a[i];
    sbb += b[i] * b[i];
    sab += a[i] * b[i];
    ++n;
  }
  if (n < 3) return NAN;
  const double cov = sab - sa * sb / n;
  const double va = saa - sa * sa / n, vb = sbb - sb * sb / n;
  return va > 0 && vb > 0 ? cov / std::sqrt(va * vb) : NAN;
}

}  // namespace

int RunHealth(const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err) {
  std::string counts_path, router_path, json_path;
  int64_t top_k = 0, window = 100, max_steps = 0, bootstrap = 200;
  double aux_coef = -1, temperature = -1, entropy_w = -1, oracle_w = -1,
         balance_w = -1;
  FlagSet flags("health");
  flags.AddString("counts", &counts_path, "counts trace NAME.counts.csv[.gz]", true);
  flags.AddString("router", &router_path,
                  "router trace with z0.. (and p0.., s0..) columns; gamma_eff needs it");
  flags.AddInt("top_k", &top_k, "experts chosen per token (K)", true, 1, 1 << 20);
  flags.AddDouble("aux_coef", &aux_coef,
                  "aux-loss coefficient alpha (gamma_explicit = alpha*M); -1: unknown");
  flags.AddInt("window", &window, "steps per gamma_eff window", false, 2, 1 << 24);
  flags.AddInt("bootstrap", &bootstrap, "bootstrap replicates for the CI", false, 0,
               100000);
  flags.AddInt("max_steps", &max_steps, "replay at most this many steps (0 = all)",
               false, 0);
  flags.AddDouble("temperature", &temperature, "router temperature T, for E (-1: unknown)");
  flags.AddDouble("entropy_weight", &entropy_w, "routing-entropy weight H, for E");
  flags.AddDouble("oracle_weight", &oracle_w, "oracle weight O, for E");
  flags.AddDouble("balance_weight", &balance_w, "balance weight B, for E");
  flags.AddString("json", &json_path, "write windows and events as JSON to this file");
  if (absl::Status s = flags.Parse(args); !s.ok()) {
    err << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    out << "usage: moecast health [flags]\n" << flags.Usage();
    return 0;
  }
  auto optional_param = [](double v) -> std::optional<double> {
    return v == -1 ? std::nullopt : std::optional<double>(v);
  };
  absl::StatusOr<EParameter> e_param =
      ComputeE(optional_param(temperature), optional_param(entropy_w),
               optional_param(oracle_w), optional_param(balance_w));
  if (!e_param.ok()) {
    err << "moecast health: " << e_param.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<TraceReader>> reader =
      TraceReader::Open(counts_path, router_path);
  if (!reader.ok()) {
    err << "moecast health: " << reader.status().message() << "\n";
    return 1;
  }
  const TraceLayout& layout = (*reader)->layout();
  const int num_layers = layout.num_layers();
  const int m = layout.num_experts;
  if (top_k > m) {
    err << "moecast health: --top_k=" << top_k << " exceeds the trace's " << m
        << " experts\n";
    return 1;
  }
  HealthOptions options;
  options.window_steps = static_cast<int>(window);
  options.gamma.top_k = static_cast<int>(top_k);
  options.gamma.bootstrap_replicates = static_cast<int>(bootstrap);
  if (aux_coef >= 0) options.gamma.aux_loss_alpha = aux_coef;
  if (absl::Status s = ValidateHealthOptions(options); !s.ok()) {
    err << "moecast health: " << s.message() << "\n";
    return 2;
  }
  std::vector<HealthMonitor> monitors;
  for (int l = 0; l < num_layers; ++l) monitors.emplace_back(l, m, options);

  std::vector<HealthWindow> windows;
  std::vector<HealthEvent> events;
  TraceStep step;
  int64_t steps = 0;
  while (max_steps == 0 || steps < max_steps) {
    absl::StatusOr<bool> more = (*reader)->Next(&step);
    if (!more.ok()) {
      err << "moecast health: " << more.status().message() << "\n";
      return 1;
    }
    if (!*more) break;
    ++steps;
    for (int l = 0; l < num_layers; ++l) {
      const size_t off = static_cast<size_t>(l) * m;
      auto part = [&](const std::vector<double>& v) {
        return v.empty() ? absl::Span<const double>()
                         : absl::MakeConstSpan(v.data() + off, m);
      };
      double total = 0;
      for (int e = 0; e < m; ++e) total += step.counts[off + e];
      const double tokens = step.tokens.has_value()
                                ? static_cast<double>(*step.tokens)
                                : total / static_cast<double>(top_k);
      if (!(tokens > 0)) continue;  // a step without tokens carries no load
      absl::Status s = monitors[l].Observe(step.step, part(step.counts), tokens,
                                           part(step.router_z), part(step.router_p),
                                           part(step.router_s));
      if (!s.ok()) {
        err << "moecast health: " << counts_path << ":" << step.first_line << ": "
            << s.message() << "\n";
        return 1;
      }
      for (HealthWindow& w : monitors[l].TakeWindows()) windows.push_back(std::move(w));
      for (HealthEvent& e : monitors[l].TakeEvents()) events.push_back(std::move(e));
    }
  }
  std::stable_sort(windows.begin(), windows.end(),
                   [](const HealthWindow& a, const HealthWindow& b) {
                     return a.step != b.step ? a.step < b.step : a.layer < b.layer;
                   });
  std::stable_sort(events.begin(), events.end(),
                   [](const HealthEvent& a, const HealthEvent& b) {
                     return a.step != b.step ? a.step < b.step : a.layer < b.layer;
                   });

  // Report.
  out << absl::StrFormat(
      "moecast health: %s\n  %d steps, %d layers x %d experts, top_k %d, windows of %d "
      "steps\n",
      counts_path, steps, num_layers, m, top_k, window);
  if (!layout.has_router) {
    out << "  no --router: gamma_eff needs the router-logit means; imbalance and dead "
           "experts only\n";
  }
  out << "  E = T*H/(O+B): " << e_param->message << "\n";
  out << "\n  layer  window_end   gamma_f [95% CI]                 R^2    T      phase"
         "          max/mean  dead\n";
  for (int l = 0; l < num_layers; ++l) {
    // The first, a middle and the last window of each layer.
    std::vector<const HealthWindow*> mine;
    for (const HealthWindow& w : windows) {
      if (w.layer == l) mine.push_back(&w);
    }
    if (mine.empty()) continue;
    for (size_t i : {size_t{0}, mine.size() / 2, mine.size() - 1}) {
      const HealthWindow& w = *mine[i];
      std::string gamma = "-";
      std::string r2 = "-", temp = "-";
      if (w.gamma.has_value() && w.gamma->at_upper_bound) {
        gamma = "unbounded (flatter loads)";
      } else if (w.gamma.has_value() && w.gamma->at_lower_bound) {
        gamma = "at the lower bound";
      } else if (w.gamma.has_value()) {
        gamma = absl::StrFormat("%8.3f [%7.3f, %7.3f]%s", w.gamma->gamma_f,
                                w.gamma->ci_low_f, w.gamma->ci_high_f,
                                w.gamma->weakly_identified ? " weak" : "");
        r2 = absl::StrFormat("%.3f", w.gamma->r2);
        temp = absl::StrFormat("%.3f", w.gamma->temperature);
      }
      out << absl::StrFormat("  %5d  %10d  %-32s %6s %6s %-14s %8.2f  %d\n",
                             layout.layer_ids[l], w.step, gamma, r2, temp,
                             PhaseName(w.phase), w.imbalance.max_over_mean,
                             w.dead_experts.size());
    }
  }
  int fitted = 0, upper = 0, lower = 0, weak = 0;
  for (const HealthWindow& w : windows) {
    if (!w.gamma.has_value()) continue;
    ++fitted;
    upper += w.gamma->at_upper_bound;
    lower += w.gamma->at_lower_bound;
    weak += w.gamma->weakly_identified;
  }
  if (fitted > 0) {
    out << absl::StrFormat(
        "\n  gamma_eff windows: %d fitted; %d unbounded (loads flatter than any "
        "equilibrium of the logits), %d at the lower bound, %d weakly identified\n",
        fitted, upper, lower, weak);
  }
  int phase_events = 0, deaths = 0, revivals = 0;
  for (const HealthEvent& e : events) {
    phase_events += e.kind == "phase_change";
    deaths += e.kind == "expert_dead";
    revivals += e.kind == "expert_revived";
  }
  out << absl::StrFormat("\n  events: %d phase changes, %d deaths, %d revivals\n",
                         phase_events, deaths, revivals);
  for (const HealthEvent& e : events) {
    if (e.kind == "phase_change") {
      out << absl::StrFormat("    step %d layer %d: %s\n", e.step,
                             layout.layer_ids[e.layer], e.detail);
    }
  }

  // Correlation of the gamma_eff trajectories under the quality estimators.
  json correlation = json::object();
  {
    const char* names[kNumQualityEstimators];
    for (int q = 0; q < kNumQualityEstimators; ++q) {
      names[q] = QualityEstimatorName(static_cast<QualityEstimator>(q)).data();
    }
    for (int a = 0; a < kNumQualityEstimators; ++a) {
      for (int b = a + 1; b < kNumQualityEstimators; ++b) {
        std::vector<double> xa, xb;
        for (const HealthWindow& w : windows) {
          xa.push_back(w.gamma_f_by_estimator[a]);
          xb.push_back(w.gamma_f_by_estimator[b]);
        }
        const double r = Pearson(xa, xb);
        correlation[absl::StrCat(names[a], "~", names[b])] = Number(r);
        if (std::isfinite(r)) {
          out << absl::StrFormat("  gamma_f trajectories, %s vs %s: r = %.3f\n",
                                 names[a], names[b], r);
        }
      }
    }
  }

  if (!json_path.empty()) {
    json doc;
    doc["trace"] = {{"counts", counts_path},
                    {"router", router_path},
                    {"steps", steps},
                    {"layers", num_layers},
                    {"experts", m},
                    {"top_k", top_k},
                    {"window", window},
                    {"layer_ids", layout.layer_ids}};
    doc["units"] =
        "gamma_f: f units (f_e = n_e/N sums to K); gamma_rho = K*gamma_f = M*gamma_l";
    json jw = json::array();
    for (const HealthWindow& w : windows) {
      json x = {{"step", w.step},
                {"layer", w.layer},
                {"phase", std::string(PhaseName(w.phase))},
                {"max_over_mean", Number(w.imbalance.max_over_mean)},
                {"max_vio", Number(w.imbalance.max_vio)},
                {"cv", Number(w.imbalance.coefficient_of_variation)},
                {"normalized_entropy", Number(w.imbalance.normalized_entropy)},
                {"dead_experts", w.dead_experts}};
      if (w.gamma.has_value()) {
        const GammaFit& g = *w.gamma;
        x["gamma_f"] = Number(g.gamma_f);
        x["ci_lo"] = Number(g.ci_low_f);
        x["ci_hi"] = Number(g.ci_high_f);
        x["se"] = Number(g.se_f);
        x["r2"] = Number(g.r2);
        x["temperature"] = Number(g.temperature);
        x["gamma_closed_form_f"] = Number(g.closed_form.gamma_f);
        x["weakly_identified"] = g.weakly_identified;
        x["at_lower_bound"] = g.at_lower_bound;
        x["at_upper_bound"] = g.at_upper_bound;
        x["warnings"] = g.warnings;
        x["zero_count_experts"] = g.zero_count_experts;
        x["heldout_l1"] = Number(g.heldout_l1);
        if (g.has_aux_loss) {
          x["gamma_explicit_f"] = Number(g.gamma_explicit_f);
          x["gamma_implicit_f"] = Number(g.gamma_implicit_f);
        }
      } else {
        x["gamma_f"] = nullptr;
        x["ci_lo"] = nullptr;
        x["ci_hi"] = nullptr;
        x["r2"] = nullptr;
        x["temperature"] = nullptr;
        x["gamma_status"] = w.gamma_status;
      }
      json by = json::object();
      for (int q = 0; q < kNumQualityEstimators; ++q) {
        by[std::string(QualityEstimatorName(static_cast<QualityEstimator>(q)))] =
            Number(w.gamma_f_by_estimator[q]);
      }
      x["gamma_f_by_estimator"] = std::move(by);
      jw.push_back(std::move(x));
    }
    doc["windows"] = std::move(jw);
    json je = json::array();
    for (const HealthEvent& e : events) {
      je.push_back({{"step", e.step}, {"layer", e.layer}, {"kind", e.kind},
                    {"detail", e.detail}});
    }
    doc["events"] = std::move(je);
    doc["quality_correlation"] = std::move(correlation);
    doc["e_parameter"] = {{"message", e_param->message},
                          {"value", e_param->value.has_value() ? json(*e_param->value)
                                                               : json(nullptr)},
                          {"below_threshold", e_param->below_threshold}};
    std::ofstream f(json_path);
    f << doc.dump(1) << "\n";
    f.close();
    if (!f) {
      err << "moecast health: cannot write " << json_path << "\n";
      return 1;
    }
    out << "\n  JSON: " << json_path << "\n";
  }
  return 0;
}

}  // namespace moecast::cli
