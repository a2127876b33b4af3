// Splitting and parsing CSV fields for trace files, with the 1-based
// character column of every field so that errors can point at it.
//
// Fields are separated by ','; surrounding ASCII whitespace and one pair of
// surrounding double quotes are removed. Quoted commas are not supported
// (trace files hold names and numbers only).
//
// Thread-safety: pure functions and a plain value type.
#ifndef MOECAST_ENGINE_TRACE_CSV_ROW_H_
#define MOECAST_ENGINE_TRACE_CSV_ROW_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/strings/string_view.h"

namespace moecast::internal {

struct CsvField {
  absl::string_view text;
  int column = 0;  // 1-based character column where the field starts
};

// Splits `line` into `fields` (cleared first).
void SplitCsvLine(absl::string_view line, std::vector<CsvField>* fields);

// Parses a non-negative integer up to 9e15 (exact as a double), also written
// as an integer-valued decimal ("12", "12.0", "1.2e1"). Returns nullopt and
// sets `*why` otherwise.
std::optional<int64_t> ParseNonNegativeInteger(absl::string_view text,
                                               const char** why);

// Parses a finite decimal number. Returns nullopt and sets `*why` otherwise.
std::optional<double> ParseFiniteDouble(absl::string_view text,
                                        const char** why);

}  // namespace moecast::internal

#endif  // MOECAST_ENGINE_TRACE_CSV_ROW_H_
