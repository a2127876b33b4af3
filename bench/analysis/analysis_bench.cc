// Analysis bench: what the analysis stage costs and what it leaves to the
// producers. Three parts, each a ratio against a baseline measured in the
// same process:
//
//   ingest   in-process Ingest latency of a default job (forecasting and
//            health on, router logits) while background analysis runs,
//            next to a history-only job in the same engine and loop;
//            p50/p99/p999 and a log-scale histogram, at an offered rate.
//   step     per-step analysis cost on one core (inline analysis), per
//            component: history only, + state and forecast bank with
//            scoring, + health statistics; and the periodic health-window
//            fit with its bootstrap for every layer.
//   fits     only the health-window fits, 7 rounds (median), with the mean
//            gamma_f and CI width (to check a faster fit for the same
//            answers); not part of `all` (step prints one round).
//   scale    J jobs analysed in the background: steps/s analysed, cost per
//            series-step (wall time x analysis threads / (steps x L x M)),
//            memory per job.
//
//   bazel build -c opt //bench/analysis:analysis_bench
//   bazel-bin/bench/analysis/analysis_bench --shape=58x256 [--part=all|ingest|step|fits|scale]
//       [--steps=600] [--rate=500] [--jobs=1,4,16] [--history=1024]
//
// Steps come from grpc_load's generator (Zipf-skewed per-layer shares with
// Dirichlet jitter; logits derived from the counts), made before timing.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/grpc_load/load_util.h"
#include "engine/analysis/analysis_stage.h"
#include "engine/engine.h"
#include "engine/health/monitor.h"

namespace moecast {
namespace {

using grpc_load::Shape;
using Clock = std::chrono::steady_clock;

struct Flags {
  Shape shape;
  std::string part = "all";
  int steps = 600;
  double rate = 500;
  std::vector<int> jobs = {1, 4, 16};
  int history = 1024;
};

struct Pool {
  std::vector<std::vector<double>> counts, logits;
  std::vector<double> tokens;
};

Pool MakePool(const Shape& shape, int n, uint64_t seed) {
  Pool p;
  grpc_load::StepGenerator gen(shape, grpc_load::GeneratorOptions(), seed);
  for (int i = 0; i < n; ++i) {
    std::vector<double> c, z;
    p.tokens.push_back(gen.Next(&c));
    grpc_load::LogitsFromCounts(shape, c, &z);
    p.counts.push_back(std::move(c));
    p.logits.push_back(std::move(z));
  }
  return p;
}

JobSpec Spec(const std::string& id, const Shape& s, bool forecasting, bool health) {
  JobSpec spec;
  spec.job_id = id;
  spec.num_layers = s.layers;
  spec.num_experts = s.experts;
  spec.top_k = s.top_k;
  spec.forecasting = forecasting;
  spec.health = health;
  return spec;
}

StepInput Input(const Pool& p, int64_t step, bool logits) {
  const size_t i = static_cast<size_t>(step) % p.counts.size();
  StepInput in;
  in.step = step;
  in.counts = p.counts[i];
  if (logits) in.router_logits = p.logits[i];
  in.tokens = p.tokens[i];
  return in;
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void PrintHistogram(const char* name, const std::vector<int64_t>& ns) {
  // Log-scale buckets from 1 us: [1,2), [2,4), ... us.
  std::vector<int64_t> buckets(24, 0);
  for (int64_t v : ns) {
    const double us = std::max(1.0, v / 1000.0);
    const int b = std::min<int>(23, static_cast<int>(std::floor(std::log2(us))));
    ++buckets[b];
  }
  std::printf("  histogram %s (us: count)\n", name);
  for (int b = 0; b < 24; ++b) {
    if (buckets[b] == 0) continue;
    std::printf("    [%7.0f, %7.0f): %lld\n", std::pow(2.0, b), std::pow(2.0, b + 1),
                static_cast<long long>(buckets[b]));
  }
}

// Part 1: Ingest latency of a default job with logits under background
// analysis, next to a history-only job, one producer at `rate` steps/s.
void IngestPart(const Flags& f) {
  std::printf("== ingest: %dx%d, default job with logits vs history-only, %d steps at %.0f "
              "steps/s offered, background analysis (%d step thread(s))\n",
              f.shape.layers, f.shape.experts, f.steps, f.rate,
              AnalysisStage::DefaultStepThreads());
  const Pool pool = MakePool(f.shape, 64, 1);
  EngineOptions o;
  o.history_capacity_steps = f.history;
  std::unique_ptr<Engine> engine = *Engine::Create(o);
  const Clock::time_point r0 = Clock::now();
  (void)engine->RegisterJob(Spec("hist", f.shape, false, false));
  const Clock::time_point r1 = Clock::now();
  (void)engine->RegisterJob(Spec("full", f.shape, true, true));
  const Clock::time_point r2 = Clock::now();
  std::printf("  RegisterJob: history-only job %.1f ms, default job %.1f ms (its history ring, "
              "the logit ring with health on, and predictor state allocated and zeroed)\n",
              Seconds(r1 - r0) * 1e3, Seconds(r2 - r1) * 1e3);
  std::vector<int64_t> hist_ns, full_ns;
  const auto period = std::chrono::duration<double>(1.0 / f.rate);
  const Clock::time_point t0 = Clock::now();
  for (int i = 0; i < f.steps; ++i) {
    std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(period * i));
    StepInput h = Input(pool, i, false);
    Clock::time_point a = Clock::now();
    (void)engine->Ingest("hist", h);
    Clock::time_point b = Clock::now();
    StepInput d = Input(pool, i, true);
    (void)engine->Ingest("full", d);
    Clock::time_point c = Clock::now();
    hist_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
    full_ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(c - b).count());
  }
  const Clock::time_point end = Clock::now();
  JobInfo during = *engine->GetJobInfo("full");
  (void)engine->AwaitAnalysis("full", Freshness());
  const Clock::time_point caught_up = Clock::now();
  JobInfo info = *engine->GetJobInfo("full");
  const grpc_load::LatencySummary hs = grpc_load::Summarize(hist_ns);
  const grpc_load::LatencySummary fs = grpc_load::Summarize(full_ns);
  std::printf("  %-28s %9s %9s %9s %9s\n", "Ingest latency (us)", "p50", "p99", "p999", "max");
  std::printf("  %-28s %9.1f %9.1f %9.1f %9.1f\n", "history-only job", hs.p50_us, hs.p99_us,
              hs.p999_us, hs.max_us);
  std::printf("  %-28s %9.1f %9.1f %9.1f %9.1f\n", "default job + logits", fs.p50_us,
              fs.p99_us, fs.p999_us, fs.max_us);
  std::printf("  p50 ratio default/history-only: %.2fx\n", fs.p50_us / hs.p50_us);
  std::printf("  lag at the end: %lld steps; caught up %.3f s later; degraded: %lld shed + %lld "
              "coalesced of %lld\n",
              static_cast<long long>(during.analysis_lag_steps), Seconds(caught_up - end),
              static_cast<long long>(info.scoring_shed_steps),
              static_cast<long long>(info.coalesced_steps),
              static_cast<long long>(info.committed_steps));
  PrintHistogram("history-only", hist_ns);
  PrintHistogram("default + logits", full_ns);
}

// Mean seconds per step of inline analysis for one job configuration.
double InlineCost(const Flags& f, const Pool& pool, bool forecasting, bool health,
                  bool logits, int warmup, int steps) {
  EngineOptions o;
  o.history_capacity_steps = f.history;
  o.analysis.mode = AnalysisOptions::Mode::kInline;
  std::unique_ptr<Engine> engine = *Engine::Create(o);
  (void)engine->RegisterJob(Spec("j", f.shape, forecasting, health));
  for (int i = 0; i < warmup; ++i) (void)engine->Ingest("j", Input(pool, i, logits));
  const Clock::time_point a = Clock::now();
  for (int i = warmup; i < warmup + steps; ++i) {
    (void)engine->Ingest("j", Input(pool, i, logits));
  }
  return Seconds(Clock::now() - a) / steps;
}

void FitsPart(const Flags& f, int rounds);

// Part 2: per-step analysis on one core, per component, and window fits.
void StepPart(const Flags& f) {
  std::printf("== step: %dx%d, inline analysis on one core, %d measured steps after a warm-up "
              "of 1100 (every horizon scoring)\n",
              f.shape.layers, f.shape.experts, f.steps);
  const Pool pool = MakePool(f.shape, 64, 2);
  const int warm = 1100;
  const double hist = InlineCost(f, pool, false, false, true, warm, f.steps);
  const double bank = InlineCost(f, pool, true, false, true, warm, f.steps);
  const double health = InlineCost(f, pool, false, true, true, 0, std::min(f.steps, 99));
  const double full = InlineCost(f, pool, true, true, true, warm, f.steps);
  std::printf("  %-52s %10s %12s\n", "configuration", "us/step", "steps/s");
  auto row = [](const char* name, double s) {
    std::printf("  %-52s %10.1f %12.0f\n", name, s * 1e6, 1.0 / s);
  };
  row("history only (write path)", hist);
  row("+ state classifier + bank with scoring", bank);
  row("+ health statistics (no window close)", health);
  row("default job: all of it (windows closing included)", full);
  std::printf("  analysis alone, default job: %.1f us/step (%.0f steps/s)\n",
              (full - hist) * 1e6, 1.0 / (full - hist));

  FitsPart(f, 1);
}

// Window fits: one 100-step window per layer, fitted with the engine's
// options (its bootstrap replicate count), all layers timed together,
// `rounds` times (the median is printed). Also prints the mean gamma_f and CI width
// over the layers, so that a faster fit can be checked for the same answers.
void FitsPart(const Flags& f, int rounds) {
  const Pool pool = MakePool(f.shape, 64, 2);
  EngineOptions o;
  HealthOptions h = o.health;
  h.gamma.top_k = f.shape.top_k;
  const int m = f.shape.experts;
  std::vector<HealthMonitor::DueWindow> due;
  for (int l = 0; l < f.shape.layers; ++l) {
    HealthMonitor monitor(l, m, h);
    monitor.set_defer_window_close(true);
    for (int s = 0; s < h.window_steps; ++s) {
      const StepInput in = Input(pool, s + 7 * l, true);
      (void)monitor.Observe(s, absl::MakeConstSpan(in.counts.data() + size_t(l) * m, m),
                            *in.tokens,
                            absl::MakeConstSpan(in.router_logits.data() + size_t(l) * m, m));
    }
    due.push_back(monitor.TakeDueWindow());
  }
  std::vector<double> times;
  int identified = 0;
  double sum_gamma = 0, sum_width = 0;
  for (int r = 0; r < rounds; ++r) {
    identified = 0;
    sum_gamma = sum_width = 0;
    const Clock::time_point a = Clock::now();
    for (const HealthMonitor::DueWindow& w : due) {
      HealthWindow fit = HealthMonitor::FitWindow(w, h);
      if (!fit.gamma.has_value()) continue;
      ++identified;
      sum_gamma += fit.gamma->gamma_f;
      sum_width += fit.gamma->ci_high_f - fit.gamma->ci_low_f;
    }
    times.push_back(Seconds(Clock::now() - a));
  }
  std::sort(times.begin(), times.end());
  std::printf("  health-window fits (gamma_eff + %d bootstrap replicates), all %d layers: "
              "%.1f ms on one core (median of %d; %d with a fit; mean gamma_f %.6g, mean "
              "95%% CI width %.6g)\n",
              h.gamma.bootstrap_replicates, f.shape.layers, times[times.size() / 2] * 1e3,
              rounds, identified, sum_gamma / std::max(1, identified),
              sum_width / std::max(1, identified));
}

// Part 3: J jobs analysed in the background.
void ScalePart(const Flags& f) {
  const int threads = AnalysisStage::DefaultStepThreads();
  std::printf("== scale: %dx%d default jobs with logits, %d steps each, background analysis "
              "(%d step thread(s)), history %d\n",
              f.shape.layers, f.shape.experts, f.steps, threads, f.history);
  std::printf("  %6s %14s %18s %16s %12s\n", "jobs", "analysed/s", "ns/series-step",
              "MiB/job", "degraded");
  const Pool pool = MakePool(f.shape, 64, 3);
  for (int jobs : f.jobs) {
    EngineOptions o;
    o.history_capacity_steps = f.history;
    std::unique_ptr<Engine> engine = *Engine::Create(o);
    for (int j = 0; j < jobs; ++j) {
      (void)engine->RegisterJob(Spec(absl::StrCat("j", j), f.shape, true, true));
    }
    const Clock::time_point a = Clock::now();
    for (int i = 0; i < f.steps; ++i) {
      for (int j = 0; j < jobs; ++j) {
        const std::string id = absl::StrCat("j", j);
        (void)engine->Ingest(id, Input(pool, i, true));
        // A producer that keeps within the overload bound.
        if (i % 64 == 63) (void)engine->AwaitAnalysis(id, Freshness());
      }
    }
    int64_t degraded = 0, bytes = 0;
    for (int j = 0; j < jobs; ++j) {
      const std::string id = absl::StrCat("j", j);
      (void)engine->AwaitAnalysis(id, Freshness());
      JobInfo info = *engine->GetJobInfo(id);
      degraded += info.scoring_shed_steps + info.coalesced_steps;
      bytes += info.history_bytes + info.forecast_bytes;
    }
    const double s = Seconds(Clock::now() - a);
    const double steps = double(jobs) * f.steps;
    std::printf("  %6d %14.0f %18.2f %16.1f %12lld\n", jobs, steps / s,
                s * threads * 1e9 / (steps * f.shape.values()), bytes / jobs / 1048576.0,
                static_cast<long long>(degraded));
  }
}

int Main(int argc, char** argv) {
  Flags f;
  std::string shape = "58x256";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    std::vector<std::string> kv = absl::StrSplit(arg, absl::MaxSplits('=', 1));
    const std::string name = kv[0];
    const std::string value = kv.size() > 1 ? kv[1] : "";
    bool ok = true;
    if (name == "--shape") {
      shape = value;
    } else if (name == "--part") {
      f.part = value;
      ok = value == "all" || value == "ingest" || value == "step" || value == "scale" ||
           value == "fits";
    } else if (name == "--steps") {
      ok = absl::SimpleAtoi(value, &f.steps) && f.steps > 0;
    } else if (name == "--rate") {
      ok = absl::SimpleAtod(value, &f.rate) && f.rate > 0;
    } else if (name == "--history") {
      ok = absl::SimpleAtoi(value, &f.history) && f.history >= 2;
    } else if (name == "--jobs") {
      absl::StatusOr<std::vector<int>> j = grpc_load::ParseIntList(value);
      ok = j.ok();
      if (ok) f.jobs = *j;
    } else {
      std::fprintf(stderr, "unknown flag '%s'\n", arg.c_str());
      return 2;
    }
    if (!ok) {
      std::fprintf(stderr, "bad value in '%s'\n", arg.c_str());
      return 2;
    }
  }
  absl::StatusOr<Shape> s = grpc_load::ParseShape(shape);
  if (!s.ok()) {
    std::fprintf(stderr, "--shape: %s\n", std::string(s.status().message()).c_str());
    return 2;
  }
  f.shape = *s;
  std::printf("cpu: %s; load average %s\n", grpc_load::CpuModel().c_str(),
              grpc_load::LoadAverage().c_str());
  if (f.part == "all" || f.part == "step") StepPart(f);
  if (f.part == "fits") FitsPart(f, 7);
  if (f.part == "all" || f.part == "ingest") IngestPart(f);
  if (f.part == "all" || f.part == "scale") ScalePart(f);
  return 0;
}

}  // namespace
}  // namespace moecast

int main(int argc, char** argv) { return moecast::Main(argc, argv); }
