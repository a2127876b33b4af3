// Ingestion types: one step of per-expert counts in, what happened to it out.
//
//   std::vector<double> counts(L * M);        // layer-major: counts[l*M + e]
//   StepInput in;
//   in.step = 1200;
//   in.counts = counts;
//   in.router_logits = logits;                 // optional, L*M means
//   absl::StatusOr<IngestResult> r = engine->Ingest("pretrain-a", in);
//
// Thread-safety: plain value types.
#ifndef MOECAST_ENGINE_INGEST_H_
#define MOECAST_ENGINE_INGEST_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace moecast {

struct StepInput {
  // Step number, >= 0. Steps of one source increase; gaps are allowed.
  int64_t step = 0;
  // Producer index in [0, num_sources) for multi-source jobs; 0 otherwise.
  int source = 0;
  // Per-expert assignment counts c[l][e] (token, slot pairs), layer-major,
  // L*M values, each finite and >= 0. For multi-source jobs: this source's
  // partial counts. The span need only live for the duration of the call.
  absl::Span<const double> counts;
  // Optional mean pre-softmax router logit of each expert over all tokens of
  // the step (this source's tokens for multi-source jobs), L*M finite values,
  // or empty.
  absl::Span<const double> router_logits;
  // Optional number of tokens N in the step (this source's share for
  // multi-source jobs). When absent, N = sum(c) / top_k per layer. When given,
  // every layer must satisfy sum(c) <= N * top_k.
  std::optional<double> tokens;
};

enum class IngestOutcome {
  // The step was committed to history (and maybe earlier pending ones too).
  kCommitted,
  // Multi-source job: this source's part was accepted; the step waits for the
  // remaining sources (or the timeout). Earlier steps may have committed.
  kPending,
  // The source already sent this step; nothing changed.
  kDuplicate,
};

struct CommittedStep {
  int64_t step = 0;
  // Not every declared source contributed (timeout, or sources moved past it).
  bool incomplete = false;
  // Missing step numbers between the previous committed step and this one.
  int64_t gap_before = 0;
};

struct IngestResult {
  IngestOutcome outcome = IngestOutcome::kCommitted;
  // Steps this call committed, oldest first.
  std::vector<CommittedStep> committed;
  // Human-readable remarks (duplicate, layers without assignments); empty
  // when there is nothing to say.
  std::string note;
};

absl::string_view IngestOutcomeName(IngestOutcome outcome);

}  // namespace moecast

#endif  // MOECAST_ENGINE_INGEST_H_
