#include "engine/trace/csv_row.h"

#include <cmath>

#include "absl/strings/numbers.h"

namespace moecast::internal {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r'; }

}  // namespace

void SplitCsvLine(absl::string_view line, std::vector<CsvField>* fields) {
  fields->clear();
  size_t start = 0;
  while (true) {
    size_t end = line.find(',', start);
    if (end == absl::string_view::npos) end = line.size();
    size_t b = start;
    size_t e = end;
    while (b < e && IsSpace(line[b])) ++b;
    while (e > b && IsSpace(line[e - 1])) --e;
    if (e - b >= 2 && line[b] == '"' && line[e - 1] == '"') {
      ++b;
      --e;
    }
    fields->push_back(
        CsvField{line.substr(b, e - b), static_cast<int>(start) + 1});
    if (end == line.size()) break;
    start = end + 1;
  }
}

std::optional<int64_t> ParseNonNegativeInteger(absl::string_view text,
                                               const char** why) {
  if (text.empty()) {
    *why = "is empty";
    return std::nullopt;
  }
  // Fast path: plain digits.
  bool digits = text.size() <= 18;
  int64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      digits = false;
      break;
    }
    v = v * 10 + (c - '0');
  }
  if (digits) return v;
  double d;
  if (!absl::SimpleAtod(text, &d)) {
    *why = "is not a number";
    return std::nullopt;
  }
  if (!std::isfinite(d)) {
    *why = "is not finite";
    return std::nullopt;
  }
  if (d < 0) {
    *why = "is negative";
    return std::nullopt;
  }
  if (d != std::floor(d)) {
    *why = "is not an integer";
    return std::nullopt;
  }
  if (d > 9.0e15) {  // beyond exact integers in double
    *why = "is too large";
    return std::nullopt;
  }
  return static_cast<int64_t>(d);
}

std::optional<double> ParseFiniteDouble(absl::string_view text,
                                        const char** why) {
  if (text.empty()) {
    *why = "is empty";
    return std::nullopt;
  }
  double d;
  if (!absl::SimpleAtod(text, &d)) {
    *why = "is not a number";
    return std::nullopt;
  }
  if (!std::isfinite(d)) {
    *why = "is not finite";
    return std::nullopt;
  }
  return d;
}

}  // namespace moecast::internal
