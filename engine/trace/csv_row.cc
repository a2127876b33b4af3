#include "engine/trace/csv_row.h"

#include <cmath>

#include "absl/strings/numbers.h"

namespace moecast::internal {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// Counts are held as doubles; integers above this are not all exact.
constexpr int64_t kMaxExactCount = 9'000'000'000'000'000;

// strtod (behind absl::SimpleAtod) also reads C99 hexadecimal floats
// ("0x1p4"); trace files hold decimals only.
bool IsDecimal(absl::string_view text) {
  for (char c : text) {
    if (c == 'x' || c == 'X') return false;
  }
  return true;
}

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
  if (!IsDecimal(text)) {
    *why = "is not a number";
    return std::nullopt;
  }
  // Fast path: at most 16 plain digits (cannot overflow int64).
  if (text.size() <= 16) {
    bool digits = true;
    int64_t v = 0;
    for (char c : text) {
      if (c < '0' || c > '9') {
        digits = false;
        break;
      }
      v = v * 10 + (c - '0');
    }
    if (digits && v <= kMaxExactCount) return v;
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
  if (d < 0) {
    *why = "is negative";
    return std::nullopt;
  }
  if (d != std::floor(d)) {
    *why = "is not an integer";
    return std::nullopt;
  }
  if (d > static_cast<double>(kMaxExactCount)) {
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
  if (!IsDecimal(text) || !absl::SimpleAtod(text, &d)) {
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
