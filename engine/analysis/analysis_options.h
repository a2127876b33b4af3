// AnalysisOptions: where and when the analysis stage runs (EngineOptions::
// analysis). The engine's data walks one way:
//
//   ingest (validate, append to the history ring, count)  -- caller's thread
//     -> history ring (engine/history)
//     -> analysis (state classifier, forecast bank with its scorer, health
//        monitor)                                           -- engine threads
//     -> answers (Forecast, GetState, Health, RecommendPlacement, events)
//
// In the background mode (the default) an Ingest call only validates,
// appends and counts; the analysis stage's threads advance each job over its
// newly committed steps in order, reading them back from the history ring.
// In the inline mode the caller's thread runs the analysis before Ingest
// returns (for tools that want no threads). Both give bit-identical answers
// without overload (docs/design.md, "Analysis stage").
//
// Overload (the analysis falls behind the producers): the producer is never
// blocked. A job whose analysis lags more than shed_scoring_lag_steps
// committed steps analyses further steps without taking new scoring origins
// (predictors, state and health still see every step); one that lags more
// than coalesce_lag_steps has its newly committed steps summed, by the
// writer, into one coalesced step that the analysis observes once when it
// gets there. Every such step is counted (JobInfo::scoring_shed_steps,
// coalesced_steps) and reported with every answer.
//
// Thread-safety: a plain value type.
#ifndef MOECAST_ENGINE_ANALYSIS_ANALYSIS_OPTIONS_H_
#define MOECAST_ENGINE_ANALYSIS_ANALYSIS_OPTIONS_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>

namespace moecast {

// What the analysis is doing when AnalysisOptions::probe is called.
struct AnalysisProbe {
  enum class Kind {
    kStep,        // one committed step (or coalesced block) of one job
    kWindowFit,   // one layer's health-window fit (gamma_eff + bootstrap)
    kRefit,       // one predictor's periodic refit (holt, arima)
  };
  Kind kind = Kind::kStep;
  const std::string* job_id = nullptr;
  int64_t step = 0;   // the step analysed (a block's last step)
  int layer = -1;     // kWindowFit: the layer
};

struct AnalysisOptions {
  enum class Mode {
    kBackground,  // engine-owned threads (the default)
    kInline,      // on the thread that commits the step, before it returns
  };
  Mode mode = Mode::kBackground;

  // Threads advancing jobs step by step. 0: one fewer than the cores (at
  // least 1), so that producers keep a core.
  int step_threads = 0;

  // Threads running periodic heavy work (health-window fits with their
  // bootstrap), so that it never delays other jobs' per-step work. 0: 1.
  int periodic_threads = 0;

  // Niceness added to every analysis thread (Linux; 0..19): under CPU
  // contention the scheduler favours producers' threads, so ingest latency
  // holds while analysis is busy.
  int thread_niceness = 10;

  // Steps a worker analyses of one job before turning to the next queued
  // job (fairness between jobs; larger batches amortise scheduling).
  int batch_steps = 16;

  // Lag (committed but not yet analysed steps) beyond which new scoring
  // origins are shed. 0: history_capacity_steps / 2.
  int shed_scoring_lag_steps = 0;

  // Lag beyond which newly committed steps are coalesced. Must be below
  // history_capacity_steps (the analysis reads steps back from the ring).
  // 0: history_capacity_steps - 1 (as late as the ring allows).
  int coalesce_lag_steps = 0;

  // The bounds in effect for a history ring of `history_capacity_steps`
  // (the 0 defaults resolved).
  int ShedScoringLag(int history_capacity_steps) const {
    return shed_scoring_lag_steps > 0 ? shed_scoring_lag_steps
                                      : std::max(1, history_capacity_steps / 2);
  }
  int CoalesceLag(int history_capacity_steps) const {
    return coalesce_lag_steps > 0 ? coalesce_lag_steps
                                  : std::max(1, history_capacity_steps - 1);
  }

  // Called on the analysing thread before each unit of analysis work. For
  // tests (which thread analyses, a deliberately slowed analysis) and
  // instrumentation; must be thread-safe and must not call the engine.
  std::function<void(const AnalysisProbe&)> probe;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_ANALYSIS_ANALYSIS_OPTIONS_H_
