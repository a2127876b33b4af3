// Trace files (design section 7): per-step per-expert counts, and optionally
// router statistics, as CSV with a header line, plain or gzip-compressed.
//
//   NAME.counts.csv[.gz]  step,layer[,tokens],c0,...,c{M-1}
//   NAME.router.csv[.gz]  step,layer,z0..z{M-1}[,p0..p{M-1}][,s0..s{M-1}]
//
// Columns are found by name, in any order. One row per (step, layer); steps
// increase; every step lists the layers of the first step, in any order.
// Layer ids need not start at 0 or be contiguous (a model whose first layers
// are dense records ids 3..60): they are mapped to indices 0..L-1 in
// ascending order. The router file, when given, has the same rows in the same
// order as the counts file.
//
// Thread-safety: plain value types.
#ifndef MOECAST_ENGINE_TRACE_TRACE_H_
#define MOECAST_ENGINE_TRACE_TRACE_H_

#include <cstdint>
#include <optional>
#include <vector>

namespace moecast {

struct TraceLayout {
  int num_experts = 0;
  std::vector<int64_t> layer_ids;  // ascending; index = engine layer
  bool has_tokens = false;         // counts file has a `tokens` column
  bool has_router = false;         // a router file with z columns
  bool has_router_probs = false;   // p columns
  bool has_router_std = false;     // s columns

  int num_layers() const { return static_cast<int>(layer_ids.size()); }
};

// One step of a trace. Vectors are layer-major (index l*M + e, l in layout
// order); router vectors are empty when the trace lacks them.
struct TraceStep {
  int64_t step = 0;
  int64_t first_line = 0;  // line of the step's first row in the counts file
  std::optional<int64_t> tokens;
  std::vector<double> counts;
  std::vector<double> router_z;  // mean router logit over all tokens
  std::vector<double> router_p;  // mean router probability
  std::vector<double> router_s;  // mean per-token standardised logit
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_TRACE_TRACE_H_
