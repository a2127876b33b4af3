#include "kernels/engine_batch.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "engine/history/layer_history.h"
#include "engine/predict/lstm/lstm.h"
#include "engine/predict/predictor.h"

namespace moecast {
namespace kernels {
namespace {

#define MOECAST_EB_RETURN_IF_ERROR(expr) \
  do {                                   \
    absl::Status _st = (expr);           \
    if (!_st.ok()) return _st;           \
  } while (0)

enum class Kind { kSwAvg, kEma, kHolt, kArima, kLstm };

struct Plan {
  Kind kind = Kind::kSwAvg;
  std::string name;
  int window = 100;    // sw_avg
  double theta = 0.9;  // ema
  int ema_steps = 1;   // ema: K, theta^K <= 1e-17
  ArimaOptions arima;
  int arima_min_obs = 0;
  std::vector<std::shared_ptr<const LstmWeights>> lstm;  // lstm
};

absl::Status BadName(absl::string_view name, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "ForecastJobs: predictor '", name, "': ", why,
      " (supported: sw_avg(W), ema(theta), holt, arima(p,d,q)[+drift], lstm, lstm(PATH))"));
}

absl::StatusOr<Plan> ParsePredictor(const BatchForecastRequest& r) {
  Plan plan;
  absl::string_view name = r.predictor;
  bool drift = false;
  if (absl::EndsWith(name, "+drift")) {
    drift = true;
    name.remove_suffix(6);
  }
  absl::string_view kind = name;
  std::vector<std::string> args;
  const size_t open = name.find('(');
  if (open != absl::string_view::npos) {
    if (name.back() != ')') return BadName(r.predictor, "missing ')'");
    kind = name.substr(0, open);
    absl::string_view inner = name.substr(open + 1, name.size() - open - 2);
    if (kind == "lstm") {
      args.emplace_back(inner);
    } else {
      for (absl::string_view a : absl::StrSplit(inner, ',')) {
        args.emplace_back(absl::StripAsciiWhitespace(a));
      }
    }
  }
  if (drift && kind != "arima") return BadName(r.predictor, "only arima takes +drift");
  if (kind == "sw_avg") {
    plan.kind = Kind::kSwAvg;
    if (args.size() > 1) return BadName(r.predictor, "takes one parameter");
    if (!args.empty() && !absl::SimpleAtoi(args[0], &plan.window)) {
      return BadName(r.predictor, "bad window");
    }
    if (plan.window < 1 || plan.window > 100000) {
      return BadName(r.predictor, "window must be in [1, 100000]");
    }
    plan.name = absl::StrCat("sw_avg(", plan.window, ")");
  } else if (kind == "ema") {
    plan.kind = Kind::kEma;
    if (args.size() > 1) return BadName(r.predictor, "takes one parameter");
    if (!args.empty() && (!absl::SimpleAtod(args[0], &plan.theta) || !std::isfinite(plan.theta))) {
      return BadName(r.predictor, "bad theta");
    }
    if (!(plan.theta >= 0 && plan.theta < 1)) {
      return BadName(r.predictor, "theta must be in [0, 1)");
    }
    plan.name = absl::StrCat("ema(", plan.theta, ")");
    // Steps after which a restart is forgotten to 1e-17 (of a value <= 1).
    plan.ema_steps =
        plan.theta == 0 ? 1
                        : static_cast<int>(std::min(
                              1e9, std::ceil(std::log(1e-17) / std::log(plan.theta))));
    plan.ema_steps = std::max(plan.ema_steps, 1);
  } else if (kind == "holt") {
    plan.kind = Kind::kHolt;
    if (!args.empty()) return BadName(r.predictor, "takes no parameters");
    plan.name = "holt";
    const HoltOptions& o = r.holt_options;
    if (o.fit_window < 4 || o.refit_every < 1 || o.fit_experts < 1 || o.alphas.empty() ||
        o.betas.empty() || o.phis.empty()) {
      return BadName(r.predictor, "bad holt_options");
    }
    if (r.holt_params.has_value()) {
      const HoltGroupParams& p = *r.holt_params;
      if (!(p.alpha > 0 && p.alpha <= 1 && p.beta > 0 && p.beta <= 1 && p.phi > 0 &&
            p.phi <= 1)) {
        return BadName(r.predictor, "holt_params must each be in (0, 1]");
      }
    }
  } else if (kind == "arima") {
    plan.kind = Kind::kArima;
    plan.arima = r.arima_options;
    plan.arima.drift = drift;
    if (!args.empty()) {
      if (args.size() != 3) return BadName(r.predictor, "takes (p,d,q) or nothing");
      int* orders[3] = {&plan.arima.p, &plan.arima.d, &plan.arima.q};
      for (int i = 0; i < 3; ++i) {
        if (!absl::SimpleAtoi(args[i], orders[i])) return BadName(r.predictor, "bad order");
      }
    } else {
      plan.arima.p = 5;
      plan.arima.d = 1;
      plan.arima.q = 5;
    }
    if (absl::Status s = ValidateArimaOptions(plan.arima); !s.ok()) {
      return BadName(r.predictor, s.message());
    }
    plan.arima_min_obs = ArimaMinFitObservations(plan.arima);
    plan.name = absl::StrCat("arima(", plan.arima.p, ",", plan.arima.d, ",", plan.arima.q, ")",
                             plan.arima.d >= 1 && plan.arima.drift ? "+drift" : "");
  } else if (kind == "lstm") {
    plan.kind = Kind::kLstm;
    plan.name = "lstm";
    if (!args.empty()) {
      if (args[0].empty()) return BadName(r.predictor, "empty weights path");
      absl::StatusOr<std::shared_ptr<const LstmWeights>> w = LstmWeights::Load(args[0]);
      if (!w.ok()) return BadName(r.predictor, w.status().message());
      plan.lstm.push_back(*std::move(w));
    } else {
      plan.lstm = r.lstm_models;
      if (plan.lstm.empty()) {
        return BadName(r.predictor, "no model: set lstm_models or name a file, lstm(PATH)");
      }
      for (const auto& w : plan.lstm) {
        if (w == nullptr) return BadName(r.predictor, "a null entry in lstm_models");
      }
    }
  } else {
    return BadName(r.predictor, "unknown predictor");
  }
  return plan;
}

const LstmWeights* ModelFor(const Plan& plan, int m) {
  for (const auto& w : plan.lstm) {
    if (w->model().num_experts == m) return w.get();
  }
  return nullptr;
}

template <typename Fn>
void ParallelFor(int64_t n, int threads, Fn fn) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t workers = std::min<int64_t>(threads, n);
  if (workers <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::vector<std::thread> pool;
  for (int64_t w = 0; w < workers; ++w) {
    pool.emplace_back([&, w] {
      for (int64_t i = w; i < n; i += workers) fn(i);
    });
  }
  for (std::thread& t : pool) t.join();
}

// One (job, layer) as read from its ring.
struct LayerData {
  int job = 0, layer = 0, m = 0;
  int rows = 0;             // steps kept (with assignments), oldest first
  std::vector<float> data;  // rows x m
  int64_t as_of_step = -1;
  bool truncated = false;
  int fit_rows = 0;         // holt: the engine's fit window (the first rows)
  bool arima_mean = false;  // arima before its first fit: the mean
  HoltGroupParams holt;
};

// Which of the ring's steps (with assignments) the predictor needs, given
// nz of them in the ring and n_engine seen by the engine's predictor.
void PlanRows(const Plan& plan, const BatchForecastRequest& r, int64_t n_engine, int nz,
              LayerData* d) {
  auto last = [&](int64_t want) {
    d->rows = static_cast<int>(std::min<int64_t>(want, nz));
    d->truncated = d->rows < want && n_engine > nz;
  };
  switch (plan.kind) {
    case Kind::kSwAvg:
      last(plan.window);
      break;
    case Kind::kEma:
      last(plan.ema_steps);
      break;
    case Kind::kLstm: {
      const LstmWeights* w = ModelFor(plan, d->m);
      last(w == nullptr ? 1 : w->model().window());
      break;
    }
    case Kind::kArima:
      if (n_engine < plan.arima_min_obs) {
        d->arima_mean = true;
        last(n_engine);  // every step seen
      } else {
        last(plan.arima.fit_window);
      }
      break;
    case Kind::kHolt: {
      if (r.holt_params.has_value()) {
        last(n_engine);
        d->holt = *r.holt_params;
        break;
      }
      const HoltOptions& o = r.holt_options;
      const int64_t first = o.fit_window / 2;
      if (n_engine < first) {  // not fitted yet: defaults from the first step
        last(n_engine);
        d->fit_rows = 0;
        break;
      }
      const int64_t n_fit = first + (n_engine - first) / o.refit_every * o.refit_every;
      const int64_t w = std::min<int64_t>(n_fit, o.fit_window);
      last(n_engine - n_fit + w);
      // If the window has partly left the ring, fit on what is left of it.
      d->fit_rows = static_cast<int>(std::max<int64_t>(0, w - (n_engine - n_fit + w - d->rows)));
      break;
    }
  }
}

absl::Status ReadJob(const Engine& engine, const std::string& id, int job_index, int num_layers,
                     int m, const Plan& plan, const BatchForecastRequest& r,
                     std::vector<LayerData>* out) {
  out->resize(num_layers);
  for (int l = 0; l < num_layers; ++l) {
    LayerData& d = (*out)[l];
    d.job = job_index;
    d.layer = l;
    d.m = m;
    absl::Status s = engine.VisitHistory(id, l, [&](const LayerHistory& h) {
      const int size = h.size();
      if (size > 0) d.as_of_step = h.Recent(0).step;
      int nz = 0;
      for (int age = 0; age < size; ++age) nz += h.Recent(age).assignments > 0;
      const int64_t n_engine = h.totals().steps - size + nz;
      PlanRows(plan, r, n_engine, nz, &d);
      d.data.resize(static_cast<size_t>(d.rows) * m);
      int row = d.rows - 1;  // newest first, from the back
      for (int age = 0; age < size && row >= 0; ++age) {
        const StepView v = h.Recent(age);
        if (!(v.assignments > 0)) continue;
        std::copy(v.proportions.begin(), v.proportions.end(),
                  d.data.begin() + static_cast<size_t>(row) * m);
        --row;
      }
    });
    if (!s.ok()) {
      if (absl::IsNotFound(s)) {
        return absl::NotFoundError(absl::StrCat("ForecastJobs: job '", id, "': ", s.message()));
      }
      return s;
    }
  }
  return absl::OkStatus();
}

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

HoltGroupParams FitHoltLikeEngine(const float* rows, int count, int m, const HoltOptions& o) {
  auto row = [&](int i) { return rows + static_cast<size_t>(i) * m; };
  // As engine/predict/holt.cc Fit(): the fit_experts experts of largest mean
  // share in the window (all when M <= fit_experts).
  std::vector<int> experts;
  if (m > o.fit_experts) {
    std::vector<double> mean(m, 0.0);
    for (int i = 0; i < count; ++i) {
      const float* x = row(i);
      for (int e = 0; e < m; ++e) mean[e] += x[e];
    }
    experts.resize(m);
    std::iota(experts.begin(), experts.end(), 0);
    std::partial_sort(experts.begin(), experts.begin() + o.fit_experts, experts.end(),
                      [&](int a, int b) { return mean[a] > mean[b]; });
    experts.resize(o.fit_experts);
  } else {
    experts.resize(m);
    std::iota(experts.begin(), experts.end(), 0);
  }
  const int n = static_cast<int>(experts.size());
  std::vector<double> level(n), trend(n);
  const int burn_in = std::min(10, count / 4);
  HoltGroupParams best;  // the engine's defaults until its first fit
  double best_sse = std::numeric_limits<double>::infinity();
  for (double a : o.alphas) {
    for (double b : o.betas) {
      for (double f : o.phis) {
        for (int j = 0; j < n; ++j) {
          level[j] = row(0)[experts[j]];
          trend[j] = 0;
        }
        double sse = 0;
        for (int i = 1; i < count; ++i) {
          const float* x = row(i);
          double step_sse = 0;
          for (int j = 0; j < n; ++j) {
            const double damped = f * trend[j];
            const double predicted = level[j] + damped;
            const double err = x[experts[j]] - predicted;
            step_sse += err * err;
            const double new_level = predicted + a * err;
            trend[j] = damped + b * (new_level - level[j] - damped);
            level[j] = new_level;
          }
          if (i > burn_in) sse += step_sse;
        }
        if (sse < best_sse) {
          best_sse = sse;
          best = HoltGroupParams{a, b, f};
        }
      }
    }
  }
  return best;
}

absl::StatusOr<BatchForecastResult> ForecastJobs(const Engine& engine,
                                                 absl::Span<const std::string> job_ids,
                                                 const BatchForecastRequest& request) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  if (job_ids.empty()) return absl::InvalidArgumentError("ForecastJobs: no jobs");
  if (request.horizon < 1 || request.horizon > 1000000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ForecastJobs: horizon ", request.horizon, " must be in [1, 1000000]"));
  }
  absl::StatusOr<Plan> parsed = ParsePredictor(request);
  if (!parsed.ok()) return parsed.status();
  const Plan& plan = *parsed;

  // Jobs: existence, steps, shapes (before any ring is read).
  const int nj = static_cast<int>(job_ids.size());
  std::vector<JobInfo> infos(nj);
  for (int j = 0; j < nj; ++j) {
    absl::StatusOr<JobInfo> info = engine.GetJobInfo(job_ids[j]);
    if (!info.ok()) {
      if (absl::IsNotFound(info.status())) {
        return absl::NotFoundError(
            absl::StrCat("ForecastJobs: job '", job_ids[j], "' not found"));
      }
      return info.status();
    }
    if (info->committed_steps == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("ForecastJobs: job '", job_ids[j], "' has no committed steps yet"));
    }
    if (plan.kind == Kind::kLstm && ModelFor(plan, info->spec.num_experts) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ForecastJobs: no lstm model for job '", job_ids[j], "' with ",
          info->spec.num_experts, " experts"));
    }
    infos[j] = *std::move(info);
  }

  // Gather: every layer's needed steps (jobs in parallel).
  std::vector<std::vector<LayerData>> per_job(nj);
  std::vector<absl::Status> errors(nj);
  ParallelFor(nj, request.batch.cpu_threads, [&](int64_t j) {
    errors[j] = ReadJob(engine, job_ids[j], static_cast<int>(j), infos[j].spec.num_layers,
                        infos[j].spec.num_experts, plan, request, &per_job[j]);
  });
  for (const absl::Status& s : errors) MOECAST_EB_RETURN_IF_ERROR(s);

  BatchForecastResult result;
  result.predictor = plan.name;
  result.horizon = request.horizon;
  result.jobs.resize(nj);
  for (int j = 0; j < nj; ++j) {
    BatchJobForecast& jf = result.jobs[j];
    jf.job_id = job_ids[j];
    jf.num_experts = infos[j].spec.num_experts;
    jf.layers.resize(per_job[j].size());
  }

  // Groups: (M, steps) -> layers. Layers without steps, and arima before its
  // first fit, are answered here.
  std::map<std::pair<int, int>, std::vector<LayerData*>> groups;
  for (auto& layers : per_job) {
    for (LayerData& d : layers) {
      BatchLayerForecast& out = result.jobs[d.job].layers[d.layer];
      out.as_of_step = d.as_of_step;
      out.steps_used = d.rows;
      out.history_truncated = d.truncated;
      if (d.rows == 0 || d.arima_mean) {
        out.mean.assign(d.m, d.rows == 0 ? 1.0 / d.m : 0.0);
        for (int t = 0; t < d.rows; ++t) {
          for (int e = 0; e < d.m; ++e) out.mean[e] += d.data[static_cast<size_t>(t) * d.m + e];
        }
        NormalizeForecast(absl::MakeSpan(out.mean));
        ++result.host_layers;
        continue;
      }
      groups[{d.m, d.rows}].push_back(&d);
    }
  }
  const bool doubles = plan.kind == Kind::kArima || plan.kind == Kind::kLstm;
  struct Group {
    int m = 0, n = 0;
    std::vector<LayerData*> layers;
    std::vector<float> f;   // [n][S] (cheap predictors)
    std::vector<double> d;  // [n][S] (arima, lstm)
    std::vector<double> out;
  };
  std::vector<Group> work;
  for (auto& [key, layers] : groups) {
    Group g;
    g.m = key.first;
    g.n = key.second;
    g.layers = std::move(layers);
    work.push_back(std::move(g));
  }
  // Lay out [n][S], series s = g*M + e; free each layer's copy as it goes.
  for (Group& g : work) {
    const int64_t S = static_cast<int64_t>(g.layers.size()) * g.m;
    if (doubles) {
      g.d.resize(static_cast<size_t>(g.n) * S);
    } else {
      g.f.resize(static_cast<size_t>(g.n) * S);
    }
    ParallelFor(static_cast<int64_t>(g.layers.size()), request.batch.cpu_threads, [&](int64_t i) {
      LayerData& d = *g.layers[i];
      for (int t = 0; t < g.n; ++t) {
        const float* src = d.data.data() + static_cast<size_t>(t) * g.m;
        const size_t dst = static_cast<size_t>(t) * S + static_cast<size_t>(i) * g.m;
        if (doubles) {
          std::copy(src, src + g.m, g.d.begin() + dst);
        } else {
          std::copy(src, src + g.m, g.f.begin() + dst);
        }
      }
      // holt's engine fit (compute, below) still needs the fit window.
      const bool keep =
          plan.kind == Kind::kHolt && !request.holt_params.has_value() && d.fit_rows >= 2;
      if (!keep) {
        std::vector<float>().swap(d.data);
      }
    });
  }
  const auto t1 = Clock::now();

  // Compute: one batched call per group.
  bool any_cpu = false, any_gpu = false;
  for (Group& g : work) {
    const int64_t layers = static_cast<int64_t>(g.layers.size());
    const int64_t S = layers * g.m;
    g.out.assign(S, 0.0);
    BatchGroupRun run;
    run.num_experts = g.m;
    run.steps = g.n;
    run.layers = static_cast<int>(layers);
    run.series = S;
    if (plan.kind == Kind::kArima || plan.kind == Kind::kLstm) {
      run.backend = ResolveBackend(request.batch, S);
      if (plan.kind == Kind::kArima) {
        ArimaBatchConfig c;
        c.p = plan.arima.p;
        c.d = plan.arima.d;
        c.q = plan.arima.q;
        c.drift = plan.arima.drift;
        c.max_iterations = plan.arima.max_iterations;
        c.tolerance = plan.arima.tolerance;
        std::vector<double> params(static_cast<size_t>(c.p + c.q + 1) * S, 0.0);
        absl::StatusOr<ArimaBatchResult> r =
            ArimaFitForecastBatch(c, S, g.n, g.d, {}, request.horizon,
                                  absl::MakeSpan(params), request.batch);
        if (!r.ok()) return r.status();
        g.out = std::move(r->forecast);
      } else {
        MOECAST_EB_RETURN_IF_ERROR(LstmForecastBatch(*ModelFor(plan, g.m), layers, g.n, g.d,
                                                     request.horizon, absl::MakeSpan(g.out),
                                                     request.batch));
      }
      std::vector<double>().swap(g.d);
    } else {
      absl::StatusOr<std::unique_ptr<CheapBatch>> b;
      if (plan.kind == Kind::kSwAvg) {
        b = MakeSwAvgBatch(S, g.m, plan.window, request.batch);
      } else if (plan.kind == Kind::kEma) {
        b = MakeEmaBatch(S, g.m, plan.theta, request.batch);
      } else {
        // The engine's parameter fit, per layer, on the CPU.
        if (!request.holt_params.has_value()) {
          ParallelFor(layers, request.batch.cpu_threads, [&](int64_t i) {
            LayerData& d = *g.layers[i];
            if (d.fit_rows >= 2) {
              d.holt = FitHoltLikeEngine(d.data.data(), d.fit_rows, d.m, request.holt_options);
              std::vector<float>().swap(d.data);
            }
          });
        }
        std::vector<HoltGroupParams> params(layers);
        for (int64_t i = 0; i < layers; ++i) params[i] = g.layers[i]->holt;
        b = MakeHoltBatch(S, g.m, std::move(params), request.batch);
      }
      if (!b.ok()) return b.status();
      CheapBatch& batch = **b;
      run.backend = batch.backend();
      std::vector<double> x(S);
      for (int t = 0; t < g.n; ++t) {
        const float* row = g.f.data() + static_cast<size_t>(t) * S;
        std::copy(row, row + S, x.begin());
        MOECAST_EB_RETURN_IF_ERROR(batch.Observe(x));
      }
      std::vector<float>().swap(g.f);
      MOECAST_EB_RETURN_IF_ERROR(batch.Forecast(request.horizon, absl::MakeSpan(g.out)));
    }
    (run.backend == Backend::kGpu ? any_gpu : any_cpu) = true;
    result.groups.push_back(run);
  }
  const auto t2 = Clock::now();

  // Scatter: per layer, clipped and renormalised as the engine does.
  for (Group& g : work) {
    for (size_t i = 0; i < g.layers.size(); ++i) {
      const LayerData& d = *g.layers[i];
      std::vector<double>& mean = result.jobs[d.job].layers[d.layer].mean;
      const double* src = g.out.data() + i * g.m;
      mean.assign(src, src + g.m);
      NormalizeForecast(absl::MakeSpan(mean));
    }
  }
  result.backend = any_gpu && any_cpu ? Backend::kAuto : any_gpu ? Backend::kGpu : Backend::kCpu;
  const auto t3 = Clock::now();
  result.gather = absl::Seconds(Seconds(t0, t1));
  result.compute = absl::Seconds(Seconds(t1, t2));
  result.scatter = absl::Seconds(Seconds(t2, t3));
  return result;
}

}  // namespace kernels
}  // namespace moecast
