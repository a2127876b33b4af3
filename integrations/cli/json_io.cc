#include "integrations/cli/json_io.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace moecast::cli {
namespace {

using nlohmann::json;

json Rows(const std::vector<int32_t>& flat, int rows, int cols) {
  json out = json::array();
  for (int r = 0; r < rows; ++r) {
    out.push_back(std::vector<int32_t>(flat.begin() + static_cast<size_t>(r) * cols,
                                       flat.begin() + static_cast<size_t>(r + 1) * cols));
  }
  return out;
}

json Rows(const std::vector<double>& flat, int rows, int cols) {
  json out = json::array();
  for (int r = 0; r < rows; ++r) {
    out.push_back(std::vector<double>(flat.begin() + static_cast<size_t>(r) * cols,
                                      flat.begin() + static_cast<size_t>(r + 1) * cols));
  }
  return out;
}

json PlanMetrics(const Plan& p) {
  return json{{"balancedness", p.balancedness},
              {"balancedness_summed", p.balancedness_summed},
              {"max_over_mean", p.max_over_mean}};
}

}  // namespace

absl::StatusOr<Matrix> ReadMatrixJson(const std::string& path,
                                      const std::string& key, bool integers) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  }
  std::stringstream text;
  text << in.rdbuf();
  json doc = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  }
  if (!doc.is_object() || !doc.contains(key)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": expected an object with the key \"", key, "\""));
  }
  const json& rows = doc[key];
  if (!rows.is_array() || rows.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", key, " must be a non-empty array of rows"));
  }
  Matrix m;
  m.rows = static_cast<int>(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    const json& row = rows[r];
    if (!row.is_array() || row.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": ", key, "[", r, "] must be a non-empty array of numbers"));
    }
    if (r == 0) m.cols = static_cast<int>(row.size());
    if (static_cast<int>(row.size()) != m.cols) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", key, "[", r, "] has ", row.size(),
                       " values, ", key, "[0] has ", m.cols));
    }
    for (size_t c = 0; c < row.size(); ++c) {
      const json& v = row[c];
      const std::string where = absl::StrCat(path, ": ", key, "[", r, "][", c, "]");
      if (!v.is_number()) {
        return absl::InvalidArgumentError(absl::StrCat(where, " is not a number"));
      }
      const double d = v.get<double>();
      if (!std::isfinite(d)) {
        return absl::InvalidArgumentError(absl::StrCat(where, " is not finite"));
      }
      if (integers && (d != std::floor(d) || std::abs(d) > 2e9)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, " = ", d, " is not an integer"));
      }
      m.values.push_back(d);
    }
  }
  return m;
}

std::string PlanToJson(const Plan& p,
                       const std::optional<RebalanceDecision>& decision,
                       const std::optional<Plan>& current) {
  json out;
  out["mode"] = std::string(PlacementModeName(p.mode));
  out["phy2log"] = Rows(p.phy2log, p.num_layers, p.num_slots);
  json log2phy = json::array();
  for (int l = 0; l < p.num_layers; ++l) {
    json layer = json::array();
    for (int e = 0; e < p.num_experts; ++e) {
      const size_t off =
          (static_cast<size_t>(l) * p.num_experts + e) * p.max_replicas;
      layer.push_back(std::vector<int32_t>(p.log2phy.begin() + off,
                                           p.log2phy.begin() + off + p.max_replicas));
    }
    log2phy.push_back(std::move(layer));
  }
  out["log2phy"] = std::move(log2phy);
  out["logcnt"] = Rows(p.logcnt, p.num_layers, p.num_experts);
  out["gpu_loads"] = Rows(p.gpu_loads, p.num_layers, p.num_gpus);
  out["balancedness"] = p.balancedness;
  out["balancedness_summed"] = p.balancedness_summed;
  out["max_over_mean"] = p.max_over_mean;
  out["moved_experts"] = p.moved_experts;
  out["moved_bytes"] = p.moved_bytes;
  out["forced_moves"] = p.forced_moves;
  out["plan_ms"] = p.plan_ms;
  out["num_stages"] = p.num_stages;
  json transfers = json::array();
  for (const Transfer& t : p.transfers) {
    transfers.push_back(json{{"layer", t.layer},
                             {"expert", t.expert},
                             {"from_gpu", t.from_gpu},
                             {"to_gpu", t.to_gpu},
                             {"bytes", t.bytes},
                             {"stage", t.stage}});
  }
  out["transfers"] = std::move(transfers);
  if (!p.tradeoff.empty()) {
    json curve = json::array();
    for (const TradeoffPoint& t : p.tradeoff) {
      curve.push_back(json{{"move_budget", t.move_budget},
                           {"moved_experts", t.moved_experts},
                           {"balancedness", t.balancedness},
                           {"balancedness_summed", t.balancedness_summed}});
    }
    out["tradeoff"] = std::move(curve);
  }
  if (current.has_value()) out["current"] = PlanMetrics(*current);
  if (decision.has_value()) {
    const RebalanceDecision& d = *decision;
    out["decision"] = json{{"rebalance", d.rebalance},
                           {"step_time_current_s", d.step_time_current_s},
                           {"step_time_proposed_s", d.step_time_proposed_s},
                           {"saved_s", d.saved_s},
                           {"migration_s", d.migration_s},
                           {"cost_s", d.cost_s},
                           {"required_s", d.required_s},
                           {"moved_experts", d.moved_experts},
                           {"num_stages", d.num_stages},
                           {"reason", d.reason}};
  }
  return out.dump(1) + "\n";
}

}  // namespace moecast::cli
