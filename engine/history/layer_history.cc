#include "engine/history/layer_history.h"

#include <algorithm>
#include <cassert>

#include "absl/strings/str_cat.h"
#include "engine/internal/cpu_dispatch.h"

namespace moecast {
namespace {

// p[e] = c[e] * inv_total as float; cum[e] += c[e]. The hot loop of every
// ingest: cloned for AVX2 (picked at load time on CPUs that have it) and
// plain x86-64.
MOECAST_AVX2_CLONES void StoreProportions(
    const double* __restrict__ counts, double inv_total, int n,
    float* __restrict__ p, double* __restrict__ cum) {
  for (int e = 0; e < n; ++e) {
    p[e] = static_cast<float>(counts[e] * inv_total);
    cum[e] += counts[e];
  }
}

MOECAST_AVX2_CLONES void StoreFloats(
    const double* __restrict__ in, int n, float* __restrict__ out) {
  for (int e = 0; e < n; ++e) out[e] = static_cast<float>(in[e]);
}

}  // namespace

LayerHistory::LayerHistory(int num_experts, int capacity_steps)
    : num_experts_(num_experts),
      capacity_(capacity_steps),
      proportions_(static_cast<size_t>(num_experts) * capacity_steps, 0.0f),
      steps_(capacity_steps, 0),
      tokens_(capacity_steps, 0.0),
      assignments_(capacity_steps, 0.0),
      flags_(capacity_steps, 0) {
  assert(num_experts >= 1 && capacity_steps >= 1);
  totals_.counts.assign(num_experts, 0.0);
}

void LayerHistory::Append(int64_t step, double tokens, uint32_t flags,
                          const double* counts, double total,
                          const double* logits) {
  const int slot = head_;
  const size_t base = static_cast<size_t>(slot) * num_experts_;
  float* p = proportions_.data() + base;
  if (total > 0) {
    StoreProportions(counts, 1.0 / total, num_experts_, p,
                     totals_.counts.data());
  } else {
    std::fill(p, p + num_experts_, 0.0f);
    flags |= kStepNoAssignments;
  }
  if (logits != nullptr) {
    ReserveLogits();
    has_logits_ = true;
    StoreFloats(logits, num_experts_, logits_.data() + base);
    flags |= kStepHasRouter;
  } else {
    flags &= ~kStepHasRouter;
  }
  steps_[slot] = step;
  tokens_[slot] = tokens;
  assignments_[slot] = total;
  flags_[slot] = flags;

  head_ = head_ + 1 == capacity_ ? 0 : head_ + 1;
  if (size_ < capacity_) ++size_;
  ++totals_.steps;
  if (flags & kStepIncomplete) ++totals_.incomplete_steps;
  totals_.assignments += total;
  totals_.tokens += tokens;
}

void LayerHistory::ReserveLogits() {
  if (logits_.empty()) {
    logits_.assign(static_cast<size_t>(num_experts_) * capacity_, 0.0f);
  }
}

int LayerHistory::SlotOf(int age) const {
  int slot = head_ - 1 - age;
  if (slot < 0) slot += capacity_;
  return slot;
}

StepView LayerHistory::Recent(int age) const {
  assert(age >= 0 && age < size_);
  const int slot = SlotOf(age);
  const size_t base = static_cast<size_t>(slot) * num_experts_;
  StepView v;
  v.step = steps_[slot];
  v.tokens = tokens_[slot];
  v.assignments = assignments_[slot];
  v.flags = flags_[slot];
  v.proportions =
      absl::MakeConstSpan(proportions_.data() + base, num_experts_);
  if (v.flags & kStepHasRouter) {
    v.logits = absl::MakeConstSpan(logits_.data() + base, num_experts_);
  }
  return v;
}

int LayerHistory::WindowMean(int window, absl::Span<double> out) const {
  assert(static_cast<int>(out.size()) == num_experts_);
  std::fill(out.begin(), out.end(), 0.0);
  const int n = std::min(std::max(window, 0), size_);
  double total = 0;
  for (int age = 0; age < n; ++age) {
    const int slot = SlotOf(age);
    const double a = assignments_[slot];
    if (a <= 0) continue;
    const float* p = proportions_.data() + static_cast<size_t>(slot) * num_experts_;
    for (int e = 0; e < num_experts_; ++e) out[e] += p[e] * a;
    total += a;
  }
  if (total > 0) {
    for (double& v : out) v /= total;
  }
  return n;
}

int64_t LayerHistory::MemoryBytes() const {
  return static_cast<int64_t>(proportions_.capacity() * sizeof(float) +
                              logits_.capacity() * sizeof(float) +
                              steps_.capacity() * sizeof(int64_t) +
                              tokens_.capacity() * sizeof(double) +
                              assignments_.capacity() * sizeof(double) +
                              flags_.capacity() * sizeof(uint32_t) +
                              totals_.counts.capacity() * sizeof(double));
}

void LayerHistory::SaveTo(internal::SnapshotWriter& out) const {
  out.PutI32(num_experts_);
  out.PutI32(capacity_);
  out.PutI32(size_);
  out.PutI32(head_);
  // The ring fills from slot 0, so the occupied slots are [0, size_).
  const size_t n = static_cast<size_t>(size_);
  const size_t values = n * num_experts_;
  out.PutRawFloats(proportions_.data(), values);
  out.PutBool(has_logits_);
  if (has_logits_) out.PutRawFloats(logits_.data(), values);
  out.PutI64s(absl::MakeConstSpan(steps_.data(), n));
  out.PutDoubles(absl::MakeConstSpan(tokens_.data(), n));
  out.PutDoubles(absl::MakeConstSpan(assignments_.data(), n));
  out.PutU32s(absl::MakeConstSpan(flags_.data(), n));
  out.PutI64(totals_.steps);
  out.PutI64(totals_.incomplete_steps);
  out.PutDouble(totals_.assignments);
  out.PutDouble(totals_.tokens);
  out.PutDoubles(totals_.counts);
}

void LayerHistory::LoadFrom(internal::SnapshotReader& in) {
  const int m = in.I32("num_experts");
  const int capacity = in.I32("capacity_steps");
  if (in.ok() && (m != num_experts_ || capacity != capacity_)) {
    in.Fail("shape", absl::StrCat("saved for ", m, " experts x ", capacity,
                                  " steps, this history has ", num_experts_,
                                  " x ", capacity_));
    return;
  }
  const int size = in.IntIn("size", 0, capacity_);
  const int head = in.IntIn("head", 0, capacity_ - 1);
  if (in.ok() && head != (size == capacity_ ? head : size)) {
    in.Fail("head", absl::StrCat(head, " does not follow a ring of ", size,
                                 " steps"));
  }
  if (!in.ok()) return;
  const size_t n = static_cast<size_t>(size);
  const size_t values = n * num_experts_;
  in.RawFloats("proportions", proportions_.data(), values);
  if (in.Bool("has_logits")) {
    ReserveLogits();
    has_logits_ = true;
    in.RawFloats("logits", logits_.data(), values);
  }
  std::vector<int64_t> steps = in.I64s("steps", n);
  std::vector<double> tokens = in.Doubles("tokens", n);
  std::vector<double> assignments = in.Doubles("assignments", n);
  std::vector<uint32_t> flags = in.U32s("flags", n);
  if (in.ok() && (steps.size() != n || tokens.size() != n ||
                  assignments.size() != n || flags.size() != n)) {
    in.Fail("steps", absl::StrCat("per-step arrays do not all hold ", n,
                                  " values"));
  }
  if (!in.ok()) return;
  std::copy(steps.begin(), steps.end(), steps_.begin());
  std::copy(tokens.begin(), tokens.end(), tokens_.begin());
  std::copy(assignments.begin(), assignments.end(), assignments_.begin());
  std::copy(flags.begin(), flags.end(), flags_.begin());
  for (size_t i = 0; i < n; ++i) {
    if ((flags_[i] & kStepHasRouter) && !has_logits_) {
      in.Fail("flags", "a step has router logits but the ring holds none");
      return;
    }
  }
  totals_.steps = in.I64("totals.steps");
  totals_.incomplete_steps = in.I64("totals.incomplete_steps");
  totals_.assignments = in.Double("totals.assignments");
  totals_.tokens = in.Double("totals.tokens");
  in.DoublesExact("totals.counts", absl::MakeSpan(totals_.counts));
  size_ = size;
  head_ = head;
}

}  // namespace moecast
