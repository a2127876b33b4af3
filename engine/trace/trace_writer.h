// TraceWriter: writes a trace (design section 7), gzip-compressed when a path
// ends in ".gz", one step at a time.
//
//   TraceLayout layout;  // experts, layer ids, which optional columns
//   MOECAST_ASSIGN_OR_RETURN(auto writer,
//       TraceWriter::Open("out.counts.csv.gz", "out.router.csv.gz", layout));
//   MOECAST_RETURN_IF_ERROR(writer->Write(step));
//   MOECAST_RETURN_IF_ERROR(writer->Close());   // flushes; reports I/O errors
//
// Thread-safety: not thread-safe.
#ifndef MOECAST_ENGINE_TRACE_TRACE_WRITER_H_
#define MOECAST_ENGINE_TRACE_TRACE_WRITER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/trace/trace.h"

namespace moecast {

class TraceWriter {
 public:
  // Creates (truncates) the files. `router_path` must be given exactly when
  // layout.has_router. INVALID_ARGUMENT for an unusable layout,
  // PERMISSION_DENIED / NOT_FOUND when a file cannot be created.
  static absl::StatusOr<std::unique_ptr<TraceWriter>> Open(
      const std::string& counts_path, const std::string& router_path,
      const TraceLayout& layout);

  ~TraceWriter();
  TraceWriter(const TraceWriter&) = delete;
  TraceWriter& operator=(const TraceWriter&) = delete;

  // Appends one step. INVALID_ARGUMENT if its sizes do not match the layout,
  // a count is not a non-negative integer, a router value is not finite, or
  // the step does not increase; DATA_LOSS on a write error.
  absl::Status Write(const TraceStep& step);

  // Flushes and closes both files. Further writes fail.
  absl::Status Close();

 private:
  class File;
  TraceWriter(TraceLayout layout, std::unique_ptr<File> counts,
              std::unique_ptr<File> router);

  TraceLayout layout_;
  std::unique_ptr<File> counts_;
  std::unique_ptr<File> router_;
  std::optional<int64_t> last_step_;
  std::string line_;
};

}  // namespace moecast

#endif  // MOECAST_ENGINE_TRACE_TRACE_WRITER_H_
