// The answer of Engine::Health: the router's health per layer as of the last
// completed window, and the E parameter.
//
// Thread-safety: plain value types.
#ifndef MOECAST_ENGINE_HEALTH_REPORT_H_
#define MOECAST_ENGINE_HEALTH_REPORT_H_

#include <cstdint>
#include <vector>

#include "engine/analysis_progress.h"
#include "engine/health/ecology/ecology.h"
#include "engine/health/monitor.h"

namespace moecast {

struct HealthReport {
  int64_t as_of_step = 0;  // the last analysed step (analysis.as_of_step)
  AnalysisProgress analysis;
  // E = T*H/(O+B) from the job's TrainingHyperparams (missing inputs named;
  // unbounded when O+B = 0; a warning below 0.5).
  EParameter e;
  // Per layer, its last completed window (index = layer); a layer without a
  // completed window has step = -1.
  std::vector<HealthWindow> layers;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_HEALTH_REPORT_H_
