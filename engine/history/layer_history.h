// LayerHistory: the recent steps of one (job, layer), as a ring of load
// proportions, plus running totals over every step ever committed.
//
// Each committed step stores p[e] = c[e] / sum(c) as float (7 significant
// digits, far below sampling noise), the step's assignment total sum(c) and
// token count N as double, and flags. Counts are recovered as p[e] * sum(c).
// Router-logit means, when the job sends them, go to a second ring allocated
// on first use, or up front by ReserveLogits (zeroing a 1 MB ring per layer
// on the step that first carries logits would stall that ingest call). The
// running totals (cumulative counts per expert, assignments, tokens) are
// exact for integer counts up to 2^53 and give token-weighted mean
// proportions over everything seen; windows inside the ring are summed on
// demand. Later stages (state, predictors, health) keep their own incremental
// state and read the ring only for look-backs.
//
//   LayerHistory h(/*num_experts=*/64, /*capacity_steps=*/1024);
//   h.Append(step, tokens, flags, counts.data(), total, /*logits=*/nullptr);
//   StepView newest = h.Recent(0);
//   float p3 = newest.proportions[3];
//
// Thread-safety: not thread-safe; the owning job serializes access.
#ifndef MOECAST_ENGINE_HISTORY_LAYER_HISTORY_H_
#define MOECAST_ENGINE_HISTORY_LAYER_HISTORY_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/internal/snapshot_codec.h"

namespace moecast {

// Per-step flags (bit set).
enum StepFlag : uint32_t {
  // Not every declared source reported this step (timeout or a source moved
  // past it); the counts are partial.
  kStepIncomplete = 1u << 0,
  // The step carries router-logit means for this layer.
  kStepHasRouter = 1u << 1,
  // sum(c) was 0 for this layer: proportions are all 0 and carry no weight.
  kStepNoAssignments = 1u << 2,
  // The step number is not the previous one + 1.
  kStepAfterGap = 1u << 3,
};

// A read-only view of one stored step. Valid until the next Append.
struct StepView {
  int64_t step = 0;
  double tokens = 0;       // N for the step (given, or sum(c) / top_k)
  double assignments = 0;  // sum(c) for this layer
  uint32_t flags = 0;      // StepFlag bits
  absl::Span<const float> proportions;  // M values, sum 1 (or all 0)
  absl::Span<const float> logits;       // M values, or empty

  double count(int expert) const {
    return static_cast<double>(proportions[expert]) * assignments;
  }
};

// Totals over every step committed to this layer, including those that have
// left the ring.
struct HistoryTotals {
  int64_t steps = 0;
  int64_t incomplete_steps = 0;
  double assignments = 0;
  double tokens = 0;
  std::vector<double> counts;  // cumulative c[e], M values
};

class LayerHistory {
 public:
  // Requires num_experts >= 1 and capacity_steps >= 1.
  LayerHistory(int num_experts, int capacity_steps);

  LayerHistory(const LayerHistory&) = delete;
  LayerHistory& operator=(const LayerHistory&) = delete;
  LayerHistory(LayerHistory&&) = default;
  LayerHistory& operator=(LayerHistory&&) = default;

  // Appends one step. `counts` has num_experts() non-negative finite values
  // summing to `total` (the caller has validated and summed them); `logits` is
  // null or has num_experts() finite values. The oldest step is overwritten
  // once the ring is full. The engine guarantees increasing step numbers.
  void Append(int64_t step, double tokens, uint32_t flags,
              const double* counts, double total, const double* logits);

  int num_experts() const { return num_experts_; }
  int capacity() const { return capacity_; }
  // Steps currently held: min(steps appended, capacity).
  int size() const { return size_; }
  bool empty() const { return size_ == 0; }

  // The step `age` steps back from the newest: Recent(0) is the newest.
  // Requires 0 <= age < size().
  StepView Recent(int age) const;

  const HistoryTotals& totals() const { return totals_; }

  // Token-weighted mean proportions over the newest `window` stored steps
  // (clamped to size()): sum_t c_e(t) / sum_t sum_e c_e(t), written to `out`
  // (num_experts() values; all 0 when the window holds no assignments).
  // Returns the number of steps used.
  int WindowMean(int window, absl::Span<double> out) const;

  // Allocates the router-logit ring now (no-op if it exists). The snapshot
  // is the same as without it until a step carries logits.
  void ReserveLogits();

  // Bytes held by the ring and totals.
  int64_t MemoryBytes() const;

  // Snapshots: the ring's occupied slots, its position and the totals.
  // LoadFrom reads them into a history of the same num_experts and
  // capacity (DATA_LOSS through `in` otherwise), after which it is
  // indistinguishable from the saved one.
  void SaveTo(internal::SnapshotWriter& out) const;
  void LoadFrom(internal::SnapshotReader& in);

 private:
  int SlotOf(int age) const;

  int num_experts_;
  int capacity_;
  int size_ = 0;
  int head_ = 0;  // slot the next Append writes
  std::vector<float> proportions_;  // capacity_ x num_experts_
  std::vector<float> logits_;       // allocated on the first logits
  bool has_logits_ = false;         // a step with logits was appended
  std::vector<int64_t> steps_;
  std::vector<double> tokens_;
  std::vector<double> assignments_;
  std::vector<uint32_t> flags_;
  HistoryTotals totals_;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_HISTORY_LAYER_HISTORY_H_
