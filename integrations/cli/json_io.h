// JSON files of the placement commands: reading loads and placements, and
// writing plans. Errors name the file and the element that is wrong.
//
//   {"loads": [[...M numbers...], ...L rows...]}     --loads
//   {"phy2log": [[...S integers...], ...L rows...]}  --current
//
// Thread-safety: pure functions.
#ifndef MOECAST_INTEGRATIONS_CLI_JSON_IO_H_
#define MOECAST_INTEGRATIONS_CLI_JSON_IO_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/placement/placement.h"

namespace moecast::cli {

struct Matrix {
  int rows = 0;
  int cols = 0;
  std::vector<double> values;  // row-major
};

// Reads `key` of the JSON object in `path` as a non-empty rectangular array
// of arrays of finite numbers (integers only when `integers`). NOT_FOUND if
// the file is missing; INVALID_ARGUMENT naming the file and the element
// (e.g. "loads.json: loads[2][5] is not a number") otherwise.
absl::StatusOr<Matrix> ReadMatrixJson(const std::string& path,
                                      const std::string& key, bool integers);

// The plan as a JSON object with phy2log, log2phy, logcnt, gpu_loads,
// balancedness, balancedness_summed, max_over_mean, moved_experts,
// moved_bytes, plan_ms, transfers, and decision / tradeoff when present.
std::string PlanToJson(const Plan& plan,
                       const std::optional<RebalanceDecision>& decision,
                       const std::optional<Plan>& current);

}  // namespace moecast::cli

#endif  // MOECAST_INTEGRATIONS_CLI_JSON_IO_H_
