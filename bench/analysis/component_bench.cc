// Per-component cost of a job's per-step analysis, each component driven
// alone over the same steps on one core (no engine, no locks, no history):
// the state classifier, each default predictor's Observe, the forecast bank
// (its predictors plus the online scorer at every horizon) and the health
// monitor's per-step statistics (router logits included; window fits run
// outside the timed region, they are analysis_bench's "health-window fits"),
// and the periodic refits of holt and arima(5,1,5) for every layer.
//
//   bazel build -c opt //bench/analysis:component_bench
//   bazel-bin/bench/analysis/component_bench --shape=58x256 [--steps=500]
//       [--warmup=1100] [--refits=1]
//
// Each row is the thread CPU time per step in the least disturbed block of
// 100 steps (--steps is rounded up to whole blocks); one row also gives the
// mean over blocks, and one runs state, shift detectors and bank
// interleaved per layer as the engine does (not added to the total). The
// warm-up (default 1,100 steps) lets every horizon up to 1,000 score, so the
// bank row is its steady-state cost. Steps come from grpc_load's
// generator, as in analysis_bench.
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "bench/grpc_load/load_util.h"
#include "engine/health/monitor.h"
#include "engine/options.h"
#include "engine/predict/forecast_bank.h"
#include "engine/predict/predictor_factory.h"
#include "engine/state/shift_detector.h"
#include "engine/state/state_classifier.h"

namespace moecast {
namespace {

using Clock = std::chrono::steady_clock;

struct Step {
  std::vector<double> counts, proportions, logits, assignments;
  double tokens = 0;
};

std::vector<Step> MakeSteps(const grpc_load::Shape& shape, int n) {
  grpc_load::StepGenerator gen(shape, grpc_load::GeneratorOptions(), 11);
  std::vector<Step> steps(n);
  const int m = shape.experts;
  for (Step& s : steps) {
    s.tokens = gen.Next(&s.counts);
    grpc_load::LogitsFromCounts(shape, s.counts, &s.logits);
    s.proportions.resize(s.counts.size());
    s.assignments.assign(shape.layers, 0.0);
    for (int l = 0; l < shape.layers; ++l) {
      double sum = 0;
      for (int e = 0; e < m; ++e) sum += s.counts[size_t(l) * m + e];
      s.assignments[l] = sum;
      for (int e = 0; e < m; ++e) {
        s.proportions[size_t(l) * m + e] = s.counts[size_t(l) * m + e] / sum;
      }
    }
  }
  return steps;
}

// CPU time of the calling thread (time descheduled by other processes on
// this shared machine does not count).
double ThreadMicros() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

// Runs fn(step index, layer) over warmup + measured steps for every layer
// and returns microseconds per step (all layers): the thread's CPU time in
// the least disturbed block of kBlock steps (blocks of 100 steps hold every
// scoring origin of horizons up to 1,000 in proportion).
constexpr int kBlock = 100;
// With `mean`, also the mean over all blocks (the engine's benches report
// means).
template <typename Fn>
double Time(const grpc_load::Shape& shape, int warmup, int measured, Fn fn,
            double* mean = nullptr) {
  for (int t = 0; t < warmup; ++t) {
    for (int l = 0; l < shape.layers; ++l) fn(t, l);
  }
  double best = 1e300, sum = 0;
  int blocks = 0;
  for (int b = warmup; b < warmup + measured; b += kBlock) {
    const double a = ThreadMicros();
    for (int t = b; t < b + kBlock; ++t) {
      for (int l = 0; l < shape.layers; ++l) fn(t, l);
    }
    const double us = (ThreadMicros() - a) / kBlock;
    best = std::min(best, us);
    sum += us;
    ++blocks;
  }
  if (mean != nullptr) *mean = sum / std::max(1, blocks);
  return best;
}

int Main(int argc, char** argv) {
  std::string shape_text = "58x256";
  int measured = 500, warmup = 1100;
  bool refits = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    const std::string name = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    bool ok = eq != std::string::npos;
    if (name == "--shape") {
      shape_text = value;
    } else if (name == "--steps") {
      ok = ok && absl::SimpleAtoi(value, &measured) && measured > 0;
    } else if (name == "--refits") {
      ok = ok && (value == "0" || value == "1");
      refits = value == "1";
    } else if (name == "--warmup") {
      ok = ok && absl::SimpleAtoi(value, &warmup) && warmup >= 0;
    } else {
      ok = false;
    }
    if (!ok) {
      std::fprintf(stderr, "component_bench: bad flag '%s' (flags: --shape=LxM, "
                           "--steps=N > 0, --warmup=N >= 0, --refits=0|1)\n", arg.c_str());
      return 2;
    }
  }
  absl::StatusOr<grpc_load::Shape> parsed = grpc_load::ParseShape(shape_text);
  if (!parsed.ok()) {
    std::fprintf(stderr, "component_bench: %s\n", parsed.status().ToString().c_str());
    return 2;
  }
  const grpc_load::Shape shape = *parsed;
  const int m = shape.experts;
  const int pool = 97;  // distinct steps, cycled
  const std::vector<Step> steps = MakeSteps(shape, pool);
  auto at = [&](int t) -> const Step& { return steps[t % pool]; };
  auto span = [&](const std::vector<double>& v, int l) {
    return absl::MakeConstSpan(v.data() + size_t(l) * m, m);
  };
  std::printf("cpu: %s; load average %s\n", grpc_load::CpuModel().c_str(),
              grpc_load::LoadAverage().c_str());
  std::printf("== per-step analysis components, %dx%d (K = %d), one core, %d steps "
              "after a %d-step warm-up; us per step for all layers\n",
              shape.layers, shape.experts, shape.top_k, measured, warmup);
  std::printf("  %-44s %10s %14s\n", "component", "us/step", "ns/series");
  auto row = [&](const std::string& what, double us) {
    std::printf("  %-44s %10.1f %14.2f\n", what.c_str(), us,
                us * 1e3 / static_cast<double>(shape.values()));
  };

  const EngineOptions options;
  double total = 0;
  {
    std::vector<std::unique_ptr<StateClassifier>> state;
    for (int l = 0; l < shape.layers; ++l) {
      state.push_back(std::make_unique<StateClassifier>(m, shape.top_k, options.state));
    }
    const double us = Time(shape, warmup, measured, [&](int t, int l) {
      (void)state[l]->Observe(t, span(at(t).proportions, l), at(t).tokens, l);
    });
    row("state classifier", us);
    total += us;
  }
  {
    // A layer's detectors at every scale, as the engine runs them.
    std::vector<std::unique_ptr<ShiftMonitor>> shift;
    for (int l = 0; l < shape.layers; ++l) {
      shift.push_back(std::make_unique<ShiftMonitor>(m, options.shift));
    }
    const int scales = static_cast<int>(options.shift.scales.size());
    const double us = Time(shape, warmup, measured, [&](int t, int l) {
      (void)shift[l]->Observe(t, span(at(t).proportions, l), at(t).assignments[l]);
    });
    row("shift detectors (" + std::to_string(scales) + " scales)", us);
    total += us;
  }
  for (const std::string& name : DefaultPredictorNames()) {
    std::vector<std::unique_ptr<Predictor>> p;
    for (int l = 0; l < shape.layers; ++l) p.push_back(MakePredictor(name, m).value());
    row("predictor " + name + ": Observe",
        Time(shape, warmup, measured,
             [&](int t, int l) { p[l]->Observe(span(at(t).proportions, l)); }));
  }
  {
    std::vector<std::unique_ptr<ForecastBank>> banks;
    for (int l = 0; l < shape.layers; ++l) {
      std::vector<std::unique_ptr<Predictor>> p;
      for (const std::string& name : DefaultPredictorNames()) {
        p.push_back(MakePredictor(name, m).value());
      }
      banks.push_back(ForecastBank::Create(std::move(p), ForecastBankOptions()).value());
    }
    const double us = Time(shape, warmup, measured, [&](int t, int l) {
      banks[l]->Observe(t, span(at(t).proportions, l), at(t).assignments[l]);
    });
    row("forecast bank (predictors + scoring)", us);
    total += us;
  }
  {
    // The same three (state, shift detectors, bank) fed layer by layer in
    // one pass per step, as the engine runs them: their caches compete.
    std::vector<std::unique_ptr<StateClassifier>> state;
    std::vector<std::unique_ptr<ShiftMonitor>> shift;
    std::vector<std::unique_ptr<ForecastBank>> banks;
    for (int l = 0; l < shape.layers; ++l) {
      state.push_back(std::make_unique<StateClassifier>(m, shape.top_k, options.state));
      shift.push_back(std::make_unique<ShiftMonitor>(m, options.shift));
      std::vector<std::unique_ptr<Predictor>> p;
      for (const std::string& name : DefaultPredictorNames()) {
        p.push_back(MakePredictor(name, m).value());
      }
      banks.push_back(ForecastBank::Create(std::move(p), ForecastBankOptions()).value());
    }
    double mean = 0;
    const double us = Time(
        shape, warmup, measured,
        [&](int t, int l) {
          (void)state[l]->Observe(t, span(at(t).proportions, l), at(t).tokens, l);
          (void)shift[l]->Observe(t, span(at(t).proportions, l), at(t).assignments[l]);
          banks[l]->Observe(t, span(at(t).proportions, l), at(t).assignments[l]);
        },
        &mean);
    row("state + shift + bank, interleaved per layer", us);
    row("  the same, mean over blocks (not minimum)", mean);
  }
  {
    HealthOptions h = options.health;
    h.gamma.top_k = shape.top_k;
    std::vector<HealthMonitor> monitors;
    for (int l = 0; l < shape.layers; ++l) {
      monitors.emplace_back(l, m, h);
      monitors.back().set_defer_window_close(true);
    }
    // Only Observe is timed: a window's fit runs when it closes, outside
    // the timed region (its cost is analysis_bench's "health-window fits").
    // The clock stops only around the steps that close windows: reading
    // the thread CPU clock costs about 2 us on a virtual machine, so timing
    // each call (58 a step) would mostly time the clock.
    for (int t = 0; t < h.window_steps; ++t) {  // warm-up: one window
      for (int l = 0; l < shape.layers; ++l) {
        (void)monitors[l].Observe(t, span(at(t).counts, l), at(t).tokens,
                                  span(at(t).logits, l));
      }
      for (HealthMonitor& mon : monitors) {
        if (!mon.window_due()) continue;
        HealthMonitor::DueWindow w = mon.TakeDueWindow();
        mon.ApplyWindow(HealthMonitor::FitWindow(w, h));
        (void)mon.TakeEvents();
      }
    }
    double best = 1e300;
    for (int b = h.window_steps; b < h.window_steps + measured; b += kBlock) {
      double block_us = 0;
      double a = ThreadMicros();
      for (int t = b; t < b + kBlock; ++t) {
        for (int l = 0; l < shape.layers; ++l) {
          (void)monitors[l].Observe(t, span(at(t).counts, l), at(t).tokens,
                                    span(at(t).logits, l));
        }
        bool due = false;
        for (const HealthMonitor& mon : monitors) due |= mon.window_due();
        if (!due) continue;
        block_us += ThreadMicros() - a;
        for (HealthMonitor& mon : monitors) {
          if (!mon.window_due()) continue;
          HealthMonitor::DueWindow w = mon.TakeDueWindow();
          mon.ApplyWindow(HealthMonitor::FitWindow(w, h));
          (void)mon.TakeEvents();
        }
        a = ThreadMicros();
      }
      block_us += ThreadMicros() - a;
      best = std::min(best, block_us / kBlock);
    }
    const double stats = best;
    row("health statistics (router logits; fits excluded)", stats);
    total += stats;
  }
  // Periodic refits of the predictors that have them, all layers, one
  // core: each predictor sees its fit window and fits (untimed), then sees
  // refit_every more steps and the refit is timed (first fit and refit).
  // In the engine a refit runs inside the step that takes the first scoring
  // origin after it is due.
  struct Refit {
    std::string name;
    int window, every;
  };
  for (const Refit& r : {Refit{"holt", 200, 500}, Refit{"arima(5,1,5)", 500, 100}}) {
    if (!refits) break;
    std::vector<std::unique_ptr<Predictor>> p;
    for (int l = 0; l < shape.layers; ++l) {
      p.push_back(MakePredictor(r.name, m).value());
      for (int t = 0; t < r.window; ++t) p[l]->Observe(span(at(t).proportions, l));
    }
    double a = ThreadMicros();
    for (int l = 0; l < shape.layers; ++l) p[l]->Refresh();
    const double first_ms = (ThreadMicros() - a) / 1e3;
    for (int l = 0; l < shape.layers; ++l) {
      for (int t = r.window; t < r.window + r.every; ++t) {
        p[l]->Observe(span(at(t).proportions, l));
      }
    }
    a = ThreadMicros();
    for (int l = 0; l < shape.layers; ++l) p[l]->Refresh();
    const double refit_ms = (ThreadMicros() - a) / 1e3;
    std::printf("  %-44s %10.1f ms first fit, %.1f ms refit (every %d steps: "
                "%.1f us/step amortised)\n",
                (r.name + " fits, all layers").c_str(), first_ms, refit_ms, r.every,
                refit_ms * 1e3 / r.every);
  }
  std::printf("  %-44s %10.1f %14.2f\n", "all per-step analysis", total,
              total * 1e3 / static_cast<double>(shape.values()));
  return 0;
}

}  // namespace
}  // namespace moecast

int main(int argc, char** argv) { return moecast::Main(argc, argv); }
