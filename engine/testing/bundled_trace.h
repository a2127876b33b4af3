// Reads a trace bundled under bench/traces/data (e.g. "tiny_moe_aux": its
// counts and router files) for tests; the test target lists both files as
// data. Up to `max_steps` steps, with the layout.
#ifndef MOECAST_ENGINE_TESTING_BUNDLED_TRACE_H_
#define MOECAST_ENGINE_TESTING_BUNDLED_TRACE_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/trace/trace_reader.h"

namespace moecast::testing {

struct BundledTrace {
  int layers = 0;
  int experts = 0;
  std::vector<TraceStep> steps;
};

inline absl::StatusOr<BundledTrace> ReadBundledTrace(const std::string& name,
                                                     size_t max_steps) {
  const std::string base = absl::StrCat("bench/traces/data/", name);
  absl::StatusOr<std::unique_ptr<TraceReader>> reader =
      TraceReader::Open(base + ".counts.csv.gz", base + ".router.csv.gz");
  if (!reader.ok()) return reader.status();
  BundledTrace t;
  t.layers = (*reader)->layout().num_layers();
  t.experts = (*reader)->layout().num_experts;
  TraceStep step;
  while (t.steps.size() < max_steps) {
    absl::StatusOr<bool> more = (*reader)->Next(&step);
    if (!more.ok()) return more.status();
    if (!*more) break;
    t.steps.push_back(step);
  }
  return t;
}

}  // namespace moecast::testing

#endif  // MOECAST_ENGINE_TESTING_BUNDLED_TRACE_H_
