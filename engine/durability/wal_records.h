// The payloads of the write-ahead log's mutation records: what each accepted
// Engine mutation needs to be replayed, with the engine clock's time at
// which it was applied (replay sets a ReplayClock to it, so timeouts and
// expiry decide exactly as they did).
//
//   std::string p = EncodeIngest(now_ns, "job-a", input);
//   ...
//   MOECAST_ASSIGN_OR_RETURN(Mutation m, DecodeMutation(RecordType::kIngest, p));
//   m.AsStepInput();   // points into m
//
// Encoding: little-endian fixed-width integers, IEEE doubles, strings and
// arrays as a 32-bit count followed by the elements. Decoding checks every
// length against the payload (DATA_LOSS for a payload that does not parse).
//
// Thread-safety: pure functions and value types.
#ifndef MOECAST_ENGINE_DURABILITY_WAL_RECORDS_H_
#define MOECAST_ENGINE_DURABILITY_WAL_RECORDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/durability/wal_format.h"
#include "engine/ingest.h"
#include "engine/job_spec.h"

namespace moecast::durability {

struct Mutation {
  RecordType type = RecordType::kPoll;
  int64_t time_ns = 0;  // engine clock, Unix nanoseconds
  JobSpec spec;                      // kRegisterJob
  std::string job_id;                // kDeleteJob, kIngest, kFlushPending
  std::vector<std::string> job_ids;  // kExpireJobs
  std::string snapshot;              // kRestoreJob
  // kIngest:
  int64_t step = 0;
  int source = 0;
  std::vector<double> counts;
  std::vector<double> router_logits;
  std::optional<double> tokens;

  // The kIngest fields as an Engine input (spans into this Mutation).
  StepInput AsStepInput() const;
};

std::string EncodeRegisterJob(int64_t time_ns, const JobSpec& spec);
std::string EncodeJobOnly(int64_t time_ns, absl::string_view job_id);  // delete, flush
std::string EncodeIngest(int64_t time_ns, absl::string_view job_id, const StepInput& in);
// Payload bytes EncodeIngest will produce (to reserve space before).
uint64_t IngestPayloadBytes(absl::string_view job_id, const StepInput& in);
std::string EncodePoll(int64_t time_ns);
std::string EncodeRestoreJob(int64_t time_ns, absl::string_view snapshot);
std::string EncodeExpireJobs(int64_t time_ns, const std::vector<std::string>& ids);

// DATA_LOSS for a payload that does not parse, INVALID_ARGUMENT for a type
// that is not a mutation.
absl::StatusOr<Mutation> DecodeMutation(RecordType type, absl::string_view payload);

}  // namespace moecast::durability

#endif  // MOECAST_ENGINE_DURABILITY_WAL_RECORDS_H_
