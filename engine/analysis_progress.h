// Freshness and AnalysisProgress: how current an answer is.
//
// Steps are committed by Ingest on the caller's thread and analysed later by
// the analysis stage (engine/analysis). Every answer built from the analysis
// (Forecast, GetState, Health, RecommendPlacement, ForecastScores, events)
// states the step it is as of and how far analysis lags the committed steps.
// By default a call first waits until every step committed before it is
// analysed, up to `deadline` (DEADLINE_EXCEEDED names the step reached); with
// allow_stale it answers at once from whatever has been analysed.
//
//   ForecastRequest r;
//   r.freshness.deadline = absl::Now() + absl::Milliseconds(50);
//   // or: r.freshness.allow_stale = true;
//
// Thread-safety: plain value types.
#ifndef MOECAST_ENGINE_ANALYSIS_PROGRESS_H_
#define MOECAST_ENGINE_ANALYSIS_PROGRESS_H_

#include <cstdint>

#include "absl/time/time.h"

namespace moecast {

struct Freshness {
  // Answer from the steps analysed so far, without waiting.
  bool allow_stale = false;
  // Latest time to wait for analysis to reach the steps committed before
  // the call (ignored with allow_stale).
  absl::Time deadline = absl::InfiniteFuture();
};

struct AnalysisProgress {
  // The last step the answer covers (-1: none analysed yet).
  int64_t as_of_step = -1;
  // The last committed step when the answer was made (-1: none).
  int64_t committed_step = -1;
  // Committed steps not yet analysed when the answer was made.
  int64_t lag_steps = 0;
  // Steps whose analysis was degraded by the overload policy so far
  // (analysis_options.h): analysed without new scoring origins, and
  // committed while analysis lagged too far and so analysed coalesced.
  int64_t scoring_shed_steps = 0;
  int64_t coalesced_steps = 0;
  int64_t degraded_steps() const { return scoring_shed_steps + coalesced_steps; }
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_ANALYSIS_PROGRESS_H_
