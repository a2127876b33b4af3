// placement_tool: PlanPlacement from the command line, for the Python
// comparison with an independent re-implementation of the EPLB reference
// (eplb_reference_comparison.py) and for experiments.
//
//   placement_tool --mode=eplb|default --input=FILE
//                  [--local_search_iterations=N] [--move_budget=N]
//                  [--max_extra_per_gpu=N] [--bytes_per_expert=B]
//                  [--marginal] [--intra_bw=B/S] [--inter_bw=B/S]
//                  [--tokens_per_step=N] [--time_per_token=S]
//                  [--horizon_steps=N] [--overlap] [--transient]
//
// The migration model (PlacementOptions::migration, as `moecast plan
// --current` uses it) applies, in default mode to cases with a current
// placement, when --marginal or any model flag (--intra_bw ... --transient)
// is given; unset fields keep DefaultMigrationModel()'s values.
// --bytes_per_expert sets the model's bytes and the plan's moved_bytes.
// A bad flag value (not a number, or one ValidateMigrationModel rejects)
// exits with status 2 and names the flag and the value.
//
// FILE holds one or more cases:
//   case L M S G N P          sizes: layers, experts, slots, groups, nodes,
//                             GPUs
//   exclude g1 g2 ...         optional: excluded GPUs
//   L lines of M loads        (spaces or commas)
//   current                   optional, followed by L lines of S expert ids
// Lines starting with '#' and blank lines are ignored.
//
// Prints one JSON object per case and line:
//   {"ok": true, "phy2log": [[..]], "log2phy": [[[..]]], "logcnt": [[..]],
//    "gpu_loads": [[..]], "balancedness": .., "balancedness_summed": ..,
//    "max_over_mean": .., "moved_experts": .., "plan_ms": ..}
// or {"ok": false, "error": "..."} when the planner rejects the case.
// Exit status 2 on bad arguments or unreadable input.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "engine/placement/placement.h"

namespace moecast {
namespace {

bool ParseNumbers(absl::string_view line, std::vector<double>* out) {
  out->clear();
  for (absl::string_view f :
       absl::StrSplit(line, absl::ByAnyChar(" ,\t"), absl::SkipEmpty())) {
    double v;
    if (!absl::SimpleAtod(f, &v)) return false;
    out->push_back(v);
  }
  return true;
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

template <typename T>
void PrintMatrix(const std::vector<T>& v, int rows, int cols, const char* fmt) {
  std::printf("[");
  for (int r = 0; r < rows; ++r) {
    std::printf(r ? ",[" : "[");
    for (int c = 0; c < cols; ++c) {
      if (c) std::printf(",");
      std::printf(fmt, v[static_cast<size_t>(r) * cols + c]);
    }
    std::printf("]");
  }
  std::printf("]");
}

void PrintPlan(const Plan& p) {
  std::printf("{\"ok\": true, \"phy2log\": ");
  PrintMatrix(p.phy2log, p.num_layers, p.num_slots, "%d");
  std::printf(", \"log2phy\": [");
  for (int l = 0; l < p.num_layers; ++l) {
    std::printf(l ? ",[" : "[");
    for (int e = 0; e < p.num_experts; ++e) {
      std::printf(e ? ",[" : "[");
      for (int r = 0; r < p.max_replicas; ++r) {
        std::printf(r ? ",%d" : "%d", p.log2phy_at(l, e, r));
      }
      std::printf("]");
    }
    std::printf("]");
  }
  std::printf("], \"logcnt\": ");
  PrintMatrix(p.logcnt, p.num_layers, p.num_experts, "%d");
  std::printf(", \"gpu_loads\": ");
  PrintMatrix(p.gpu_loads, p.num_layers, p.num_gpus, "%.17g");
  std::printf(
      ", \"balancedness\": %.17g, \"balancedness_summed\": %.17g, "
      "\"max_over_mean\": %.17g, \"moved_experts\": %lld, \"plan_ms\": %.6g}\n",
      p.balancedness, p.balancedness_summed, p.max_over_mean,
      static_cast<long long>(p.moved_experts), p.plan_ms);
}

// Parses `arg` as --name=<number>: kNoMatch if it is another flag, kBad
// (after printing why) if the value is not a number.
enum class FlagResult { kNoMatch, kOk, kBad };
template <typename T>
FlagResult NumberFlag(absl::string_view arg, absl::string_view name, T* out) {
  if (!absl::ConsumePrefix(&arg, "--") || !absl::ConsumePrefix(&arg, name) ||
      !absl::ConsumePrefix(&arg, "=")) {
    return FlagResult::kNoMatch;
  }
  bool ok;
  if constexpr (std::is_same_v<T, double>) {
    ok = absl::SimpleAtod(arg, out);
  } else {
    ok = absl::SimpleAtoi(arg, out);
  }
  if (!ok) {
    std::fprintf(stderr, "bad value for --%s: '%s' is not a number\n",
                 std::string(name).c_str(), std::string(arg).c_str());
    return FlagResult::kBad;
  }
  return FlagResult::kOk;
}

int Main(int argc, char** argv) {
  PlacementOptions options;
  MigrationModel model = DefaultMigrationModel();
  bool use_model = false, transient = false;
  std::string input;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg(argv[i]);
    int64_t v;
    double bytes = 0;
    FlagResult r = FlagResult::kNoMatch;
    // Model fields: each also turns the model on.
    const std::pair<const char*, double*> model_fields[] = {
        {"intra_bw", &model.intra_node_bandwidth},
        {"inter_bw", &model.inter_node_bandwidth},
        {"tokens_per_step", &model.tokens_per_step},
        {"time_per_token", &model.time_per_token_s},
        {"horizon_steps", &model.horizon_steps},
    };
    for (const auto& [name, field] : model_fields) {
      if (r == FlagResult::kNoMatch) {
        r = NumberFlag(arg, name, field);
        use_model = use_model || r == FlagResult::kOk;
      }
    }
    if (r == FlagResult::kNoMatch) {
      r = NumberFlag(arg, "bytes_per_expert", &bytes);
      if (r == FlagResult::kOk && !(bytes >= 0 && std::isfinite(bytes))) {
        std::fprintf(stderr,
                     "bad value for --bytes_per_expert: %g (must be finite "
                     "and >= 0)\n",
                     bytes);
        return 2;
      }
      if (r == FlagResult::kOk) {
        model.bytes_per_expert = bytes;
        options.bytes_per_expert = static_cast<int64_t>(bytes);
      }
    }
    if (r == FlagResult::kNoMatch) {
      r = NumberFlag(arg, "local_search_iterations", &v);
      if (r == FlagResult::kOk) {
        options.local_search_iterations = static_cast<int>(v);
      }
    }
    if (r == FlagResult::kNoMatch) {
      r = NumberFlag(arg, "move_budget", &v);
      if (r == FlagResult::kOk) options.move_budget = v;
    }
    if (r == FlagResult::kNoMatch) {
      r = NumberFlag(arg, "max_extra_per_gpu", &v);
      if (r == FlagResult::kOk) {
        options.max_extra_experts_per_gpu = static_cast<int>(v);
      }
    }
    if (r == FlagResult::kBad) return 2;
    if (r == FlagResult::kOk) continue;
    if (arg == "--marginal") {
      use_model = true;
    } else if (arg == "--overlap") {
      model.overlap = true;
      use_model = true;
    } else if (arg == "--transient") {
      transient = true;
      use_model = true;
    } else if (absl::ConsumePrefix(&arg, "--mode=")) {
      auto mode = ParsePlacementMode(arg);
      if (!mode.ok()) {
        std::fprintf(stderr, "%s\n", mode.status().ToString().c_str());
        return 2;
      }
      options.mode = *mode;
    } else if (absl::ConsumePrefix(&arg, "--input=")) {
      input = std::string(arg);
    } else {
      std::fprintf(stderr, "unknown argument: %s\n", argv[i]);
      return 2;
    }
  }
  if (use_model) {
    if (absl::Status s = ValidateMigrationModel(model, "migration model");
        !s.ok()) {
      std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
      return 2;
    }
  }
  std::ifstream in(input);
  if (input.empty() || !in) {
    std::fprintf(stderr, "cannot open --input=%s\n", input.c_str());
    return 2;
  }
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view t = absl::StripAsciiWhitespace(line);
    if (t.empty() || t[0] == '#') continue;
    lines.emplace_back(t);
  }
  size_t at = 0;
  std::vector<double> nums;
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "%s: line %zu: %s\n", input.c_str(), at + 1,
                 why.c_str());
    return 2;
  };
  while (at < lines.size()) {
    absl::string_view head = lines[at];
    if (!absl::ConsumePrefix(&head, "case") || !ParseNumbers(head, &nums) ||
        nums.size() != 6) {
      return fail("expected: case L M S G N P");
    }
    ++at;
    PlacementProblem p;
    p.num_layers = static_cast<int>(nums[0]);
    p.num_experts = static_cast<int>(nums[1]);
    p.num_slots = static_cast<int>(nums[2]);
    p.num_groups = static_cast<int>(nums[3]);
    p.num_nodes = static_cast<int>(nums[4]);
    p.num_gpus = static_cast<int>(nums[5]);
    if (at < lines.size()) {
      absl::string_view ex = lines[at];
      if (absl::ConsumePrefix(&ex, "exclude")) {
        if (!ParseNumbers(ex, &nums)) return fail("bad exclude line");
        for (double g : nums) p.excluded_gpus.push_back(static_cast<int>(g));
        ++at;
      }
    }
    for (int l = 0; l < p.num_layers; ++l, ++at) {
      if (at >= lines.size() || !ParseNumbers(lines[at], &nums) ||
          static_cast<int>(nums.size()) != p.num_experts) {
        return fail("expected a row of num_experts loads");
      }
      p.loads.insert(p.loads.end(), nums.begin(), nums.end());
    }
    if (at < lines.size() && lines[at] == "current") {
      ++at;
      for (int l = 0; l < p.num_layers; ++l, ++at) {
        if (at >= lines.size() || !ParseNumbers(lines[at], &nums) ||
            static_cast<int>(nums.size()) != p.num_slots) {
          return fail("expected a row of num_slots expert ids");
        }
        for (double v : nums) p.current_phy2log.push_back(static_cast<int>(v));
      }
    }
    PlacementOptions case_options = options;
    if (use_model && options.mode == PlacementMode::kDefault &&
        !p.current_phy2log.empty()) {
      case_options.migration = model;
      case_options.transient = transient;
    }
    absl::StatusOr<Plan> plan = PlanPlacement(p, case_options);
    if (!plan.ok()) {
      std::printf("{\"ok\": false, \"error\": %s}\n",
                  JsonString(plan.status().ToString()).c_str());
    } else {
      PrintPlan(*plan);
    }
  }
  return 0;
}

}  // namespace
}  // namespace moecast

int main(int argc, char** argv) { return moecast::Main(argc, argv); }
