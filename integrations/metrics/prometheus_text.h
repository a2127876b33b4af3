// Prometheus text exposition (format 0.0.4) of an engine's jobs and a gRPC
// service's counters.
//
//   MetricsOptions options;             // job-level series only
//   std::string text = RenderMetrics(*engine, &stats, options);
//
// Cardinality: by default one series per job (and per job and horizon for
// forecast errors); per-layer series only with options.per_layer. Rendering
// reads each job's info, state, health and forecast scores (each under the
// job's lock, briefly).
//
// Thread-safety: RenderMetrics is thread-safe (the engine is).
#ifndef MOECAST_INTEGRATIONS_METRICS_PROMETHEUS_TEXT_H_
#define MOECAST_INTEGRATIONS_METRICS_PROMETHEUS_TEXT_H_

#include <string>

#include "absl/strings/string_view.h"
#include "engine/engine.h"
#include "integrations/grpc/service.h"

namespace moecast::metrics {

struct MetricsOptions {
  // Also export per-layer series (state, gamma_eff, dead experts, max/mean).
  bool per_layer = false;
};

// The metrics page. `stats` may be null (no gRPC service, e.g. in-process).
std::string RenderMetrics(const Engine& engine, const grpc_api::ServiceStats* stats,
                          const MetricsOptions& options);

// A label value escaped as the text format requires (\\, \", \n).
std::string EscapeLabelValue(absl::string_view value);

}  // namespace moecast::metrics

#endif  // MOECAST_INTEGRATIONS_METRICS_PROMETHEUS_TEXT_H_
