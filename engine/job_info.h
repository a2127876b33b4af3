// JobInfo: a snapshot of one job's spec and ingestion counters.
//
// Thread-safety: a plain value type.
#ifndef MOECAST_ENGINE_JOB_INFO_H_
#define MOECAST_ENGINE_JOB_INFO_H_

#include <cstdint>
#include <optional>

#include "absl/time/time.h"
#include "engine/job_spec.h"

namespace moecast {

struct JobInfo {
  JobSpec spec;
  int64_t committed_steps = 0;
  std::optional<int64_t> first_step;  // unset until a step commits
  std::optional<int64_t> last_step;
  int64_t gaps = 0;             // times a committed step skipped numbers
  int64_t missing_steps = 0;    // step numbers skipped in all
  int64_t incomplete_steps = 0; // committed without every source
  int64_t duplicate_calls = 0;  // re-sent steps answered as no-ops
  int64_t rejected_calls = 0;   // calls refused with an error
  int64_t pending_steps = 0;    // multi-source steps waiting for sources
  double tokens = 0;            // total tokens committed (layer 0)
  int64_t history_bytes = 0;    // memory held by the history rings
  int64_t forecast_bytes = 0;   // predictors, scorer and state classifiers
  // Analysis (engine/analysis): steps analysed, the last one, the lag
  // behind the committed steps, and steps degraded by the overload policy.
  int64_t analysed_steps = 0;
  std::optional<int64_t> last_analysed_step;
  int64_t analysis_lag_steps = 0;
  int64_t scoring_shed_steps = 0;
  int64_t coalesced_steps = 0;
  // Time since the job's last step, FlushPending or registration.
  absl::Duration idle = absl::ZeroDuration();
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_JOB_INFO_H_
