// Validation of one StepInput against its job, before anything is changed.
//
// Thread-safety: pure functions.
#ifndef MOECAST_ENGINE_INGEST_STEP_VALIDATOR_H_
#define MOECAST_ENGINE_INGEST_STEP_VALIDATOR_H_

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "engine/ingest.h"
#include "engine/job_spec.h"

namespace moecast::internal {

// Checks sizes, source index, step number, tokens and every value of `in`
// against `spec`, and writes each layer's sum(c) to `layer_sums` (L values).
// Returns OK or INVALID_ARGUMENT naming the job, the field, the position
// (layer, expert) and the value that is wrong. Does not look at the job's
// history (ordering is checked by the job).
absl::Status ValidateStep(const JobSpec& spec, const StepInput& in,
                          absl::Span<double> layer_sums);

}  // namespace moecast::internal

#endif  // MOECAST_ENGINE_INGEST_STEP_VALIDATOR_H_
