// TraceReader: streams a trace (design section 7) one step at a time, in
// memory proportional to one step, validating everything it reads.
//
//   MOECAST_ASSIGN_OR_RETURN(
//       std::unique_ptr<TraceReader> reader,
//       TraceReader::Open("run.counts.csv.gz", "run.router.csv.gz"));
//   TraceStep step;
//   while (true) {
//     MOECAST_ASSIGN_OR_RETURN(bool more, reader->Next(&step));
//     if (!more) break;
//     ...
//   }
//
// Malformed content is INVALID_ARGUMENT with a message of the form
//   "FILE:LINE:COLUMN: what is wrong"
// where COLUMN is the 1-based character column of the offending field. A
// file that cannot be read is NOT_FOUND / PERMISSION_DENIED ("FILE: ..."),
// DATA_LOSS for corrupt or truncated gzip data and RESOURCE_EXHAUSTED for a
// line over 64 MiB ("FILE:LINE: ..."). Bad
// rows are never skipped. Malformed content includes: a missing, unknown or
// duplicated column, c/z/p/s columns not numbered 0..M-1, a ragged row, a
// count that is not a non-negative integer, a router value that is not a
// finite number, a step that does not increase, a step that lacks a layer of
// the first step or repeats one, a layer not in the first step, tokens that
// differ between the layers of one step, and a router file whose rows or
// expert count do not match the counts file.
//
// Thread-safety: not thread-safe.
#ifndef MOECAST_ENGINE_TRACE_TRACE_READER_H_
#define MOECAST_ENGINE_TRACE_TRACE_READER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "engine/trace/trace.h"

namespace moecast {

class TraceReader {
 public:
  // Opens a counts file and, when `router_path` is not empty, its router
  // file; reads the headers and the first step (to learn the layers).
  static absl::StatusOr<std::unique_ptr<TraceReader>> Open(
      const std::string& counts_path, const std::string& router_path = "");

  virtual ~TraceReader() = default;

  // Experts, layers, and which optional columns the trace has.
  virtual const TraceLayout& layout() const = 0;

  // Fills `*out` with the next step and returns true, or returns false at the
  // end of the trace. Errors as described above.
  virtual absl::StatusOr<bool> Next(TraceStep* out) = 0;

  // Fraction of the counts file consumed, in [0, 1], for progress bars.
  virtual double progress() const = 0;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_TRACE_TRACE_READER_H_
