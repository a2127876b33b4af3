// EngineOptions: everything fixed when an Engine is created.
//
// Every limit exists so that a misbehaving producer gets RESOURCE_EXHAUSTED or
// INVALID_ARGUMENT instead of taking the process's memory. Memory per job is
// dominated by the history ring:
//
//   ring bytes = layers * experts * history_capacity_steps * 4
//                (x2 with router-logit means: a job with health on
//                reserves their ring at registration, since gamma_eff
//                needs them; other jobs on their first step with logits)
//
// e.g. 58 layers x 256 experts x 1024 steps = 61 MB (122 MB with logits).
// Forecasting adds the predictors, the scorer and the state classifier per
// layer; docs/forecasting.md states the bytes per job.
//
// Thread-safety: a plain value type.
#ifndef MOECAST_ENGINE_OPTIONS_H_
#define MOECAST_ENGINE_OPTIONS_H_

#include <cstdint>

#include "absl/time/time.h"
#include "engine/analysis/analysis_options.h"
#include "engine/health/monitor.h"
#include "engine/state/shift_detector.h"
#include "engine/state/state_classifier.h"

namespace moecast {

class Clock;

struct EngineOptions {
  // Most jobs registered at once. Registering one more is RESOURCE_EXHAUSTED.
  int max_jobs = 1024;

  // Most MoE layers per job, experts per layer and layers*experts per job.
  // DeepSeek-V3 is 58 x 256 = 14,848; the defaults leave room for larger
  // models while bounding one job's ingest payload.
  int max_layers = 1024;
  int max_experts = 16384;
  int64_t max_layer_experts = int64_t{1} << 20;

  // Most producers (data- or expert-parallel ranks) declared by one job.
  int max_sources = 65536;

  // Steps kept per (job, layer) in the history ring. Older steps fall out of
  // the ring but stay in the running totals. Larger rings let later stages
  // look further back at the memory cost above. Must be >= 2.
  int history_capacity_steps = 1024;

  // Upper bound on one job's memory, in bytes: its history ring counting
  // router logits, plus its forecasting state (predictors, scorer, state
  // classifier; JobInfo::forecast_bytes). A job that would exceed it is
  // rejected at registration with RESOURCE_EXHAUSTED.
  int64_t max_job_history_bytes = int64_t{2} << 30;  // 2 GiB

  // Upper bound on all jobs' memory together (as above), in bytes.
  int64_t max_total_history_bytes = int64_t{16} << 30;  // 16 GiB

  // Multi-source jobs: most steps a job may hold partially reported at once.
  // A source running further ahead of the slowest one is RESOURCE_EXHAUSTED.
  int max_pending_steps = 64;

  // Multi-source jobs: a step still missing sources this long after its first
  // partial report is committed, marked incomplete. Checked on every ingest
  // into the job and by Engine::Poll().
  absl::Duration source_timeout = absl::Seconds(30);

  // Transient/stable classification of every layer (see
  // engine/state/state_classifier.h for the statistic and its calibration).
  StateOptions state;

  // Shift detection on every layer (engine/state/shift_detector.h): window
  // sizing from the assignments per step, and the calibrated threshold.
  ShiftOptions shift;

  // Health monitoring of every layer (engine/health/monitor.h): window
  // length, gamma_eff fits, dead-expert and phase rules. gamma.top_k and the
  // aux-loss coefficient come from each job's spec. The fits run on the
  // analysis stage's periodic threads when a window completes (with 50
  // bootstrap replicates, about 1 ms per 256-expert layer; docs/health.md:
  // the 95% interval covered 95.0% at M = 256 with 50). A job restores
  // from a snapshot taken under another replicate count.
  HealthOptions health = [] {
    HealthOptions h;
    h.gamma.bootstrap_replicates = 50;
    h.all_estimators = false;  // the engine receives router-logit means only
    return h;
  }();

  // Longest per-step forecast path a Forecast call may ask for, in steps.
  int max_path_steps = 1000;

  // Events kept per job for readers (oldest dropped first).
  int max_events_per_job = 4096;

  // A job that received no step (and no FlushPending) for this long is
  // deleted by Engine::ExpireIdleJobs (a server calls it periodically), so
  // that a producer that died does not hold its memory forever. Must be > 0;
  // infinite (the default) means never.
  absl::Duration idle_job_expiry = absl::InfiniteDuration();

  // Where the analysis runs (background threads by default, or inline),
  // its threads and its overload policy: engine/analysis/analysis_options.h.
  AnalysisOptions analysis;

  // Source of time for timeouts. Null means the real clock. Not owned; must
  // outlive the engine.
  Clock* clock = nullptr;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_OPTIONS_H_
