// moecast simulate: replays a trace against placement policies and scores
// each plan on the loads that follow (engine/eval/simulator.h).
#include <algorithm>
#include <fstream>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/eval/simulator.h"
#include "engine/trace/trace_reader.h"
#include "integrations/cli/commands.h"
#include "integrations/cli/flags.h"

namespace moecast::cli {

int RunSimulate(const std::vector<std::string>& args, std::ostream& out,
                std::ostream& err) {
  SimulateOptions o;
  std::string counts_path, json_path, policy = "all";
  int64_t top_k = 0, slots = 0, groups = 1, nodes = 1, gpus = 0;
  int64_t window = o.window, interval = o.interval, check_every = 0, max_steps = 0;
  double bytes_per_expert = o.migration.bytes_per_expert;
  double intra_bw = o.migration.intra_node_bandwidth;
  double inter_bw = o.migration.inter_node_bandwidth;
  double tokens_per_step = 0, time_per_token = o.migration.time_per_token_s;
  bool overlap = false;
  FlagSet flags("simulate");
  flags.AddString("counts", &counts_path, "counts trace NAME.counts.csv[.gz]", true);
  constexpr int64_t kMaxSize = 1 << 24;
  flags.AddInt("top_k", &top_k, "experts chosen per token (K)", true, 1, kMaxSize);
  flags.AddInt("slots", &slots, "total physical slots S", true, 1, kMaxSize);
  flags.AddInt("groups", &groups, "expert groups G", false, 1, kMaxSize);
  flags.AddInt("nodes", &nodes, "nodes N", false, 1, kMaxSize);
  flags.AddInt("gpus", &gpus, "GPUs P", true, 1, kMaxSize);
  flags.AddString("policy", &policy, "periodic, oracle, moecast, or all (the three)");
  flags.AddInt("window", &window, "periodic: steps of history summed (vLLM: 1000)",
               false, 1, kMaxSize);
  flags.AddInt("interval", &interval,
               "steps between decisions, and the planning horizon (vLLM: 3000)",
               false, 1, kMaxSize);
  flags.AddInt("check_every", &check_every,
               "moecast: steps between its checks (0: min(--interval, 100))", false, 0, kMaxSize);
  flags.AddInt("max_steps", &max_steps, "replay at most this many steps (0 = all)",
               false, 0);
  flags.AddDouble("bytes_per_expert", &bytes_per_expert, "bytes of one expert");
  flags.AddDouble("intra_bw", &intra_bw, "intra-node bandwidth, bytes/s");
  flags.AddDouble("inter_bw", &inter_bw, "inter-node bandwidth, bytes/s");
  flags.AddDouble("tokens_per_step", &tokens_per_step,
                  "token-expert assignments per layer per step (0: the trace's)");
  flags.AddDouble("time_per_token", &time_per_token,
                  "seconds per token-expert assignment on one GPU");
  flags.AddBool("overlap", &overlap, "migration overlaps compute (else it stalls)");
  flags.AddString("json", &json_path, "write the reports as JSON to this file");
  if (absl::Status s = flags.Parse(args); !s.ok()) {
    err << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    out << "usage: moecast simulate [flags]\n" << flags.Usage();
    return 0;
  }
  std::vector<std::string> policies;
  if (policy == "all") {
    policies = {"periodic", "oracle", "moecast"};
  } else if (policy == "periodic" || policy == "oracle" || policy == "moecast") {
    policies = {policy};
  } else {
    err << "moecast simulate: --policy='" << policy
        << "' must be periodic, oracle, moecast or all\n";
    return 2;
  }
  o.top_k = static_cast<int>(top_k);
  o.num_slots = static_cast<int>(slots);
  o.num_groups = static_cast<int>(groups);
  o.num_nodes = static_cast<int>(nodes);
  o.num_gpus = static_cast<int>(gpus);
  o.window = static_cast<int>(window);
  o.interval = static_cast<int>(interval);
  o.check_every = static_cast<int>(check_every);
  o.max_steps = max_steps;
  o.migration.bytes_per_expert = bytes_per_expert;
  o.migration.intra_node_bandwidth = intra_bw;
  o.migration.inter_node_bandwidth = inter_bw;
  o.migration.tokens_per_step = tokens_per_step;
  o.migration.time_per_token_s = time_per_token;
  o.migration.overlap = overlap;

  std::vector<SimulateReport> reports;
  for (const std::string& p : policies) {
    absl::StatusOr<std::unique_ptr<TraceReader>> reader = TraceReader::Open(counts_path);
    if (!reader.ok()) {
      err << "moecast simulate: " << reader.status().message() << "\n";
      return 1;
    }
    o.policy = p;
    absl::StatusOr<SimulateReport> r = Simulate(**reader, o);
    if (!r.ok()) {
      err << "moecast simulate: " << r.status().message() << "\n";
      return 1;
    }
    reports.push_back(*std::move(r));
  }
  const SimulateReport& first = reports[0];
  out << absl::StrFormat(
      "moecast simulate: %s\n  %d steps, %d layers x %d experts -> %d slots on %d "
      "GPUs (%d nodes, %d groups); decisions every %d steps",
      counts_path, first.steps, first.layers, first.experts, o.num_slots, o.num_gpus,
      o.num_nodes, o.num_groups, o.interval);
  out << " (moecast checks every "
      << (o.check_every > 0 ? o.check_every
                            : std::min(o.interval, SimulateOptions::kDefaultCheckEvery))
      << ")";
  out << "\n\n";
  out << absl::StrFormat(
      "  token volume: %.6g assignments per layer per step (the trace's mean: %.6g) "
      "for decisions and scoring\n\n",
      first.tokens_per_step, first.trace_tokens_per_step);
  out << absl::StrFormat("  %-9s %12s %10s %11s %9s %12s %14s %13s %12s\n", "policy",
                         "balancedness", "worst step", "rebalances", "moved",
                         "moved bytes", "migration s", "MoE time s", "total s");
  for (const SimulateReport& r : reports) {
    out << absl::StrFormat(
        "  %-9s %12.4f %10.4f %11d %9d %12.4g %14.4g %13.4g %12.6g\n", r.policy,
        r.mean_balancedness, r.min_balancedness, r.rebalances, r.moved_experts,
        static_cast<double>(r.moved_bytes), r.migration_s, r.moe_time_s,
        r.total_time_s);
  }
  if (!json_path.empty()) {
    std::ofstream f(json_path);
    f << "[\n";
    for (size_t i = 0; i < reports.size(); ++i) {
      f << (i ? ",\n" : "") << SimulateReportToJson(reports[i]);
    }
    f << "]\n";
    f.close();
    if (!f) {
      err << "moecast simulate: cannot write " << json_path << "\n";
      return 1;
    }
    out << "\n  JSON: " << json_path << "\n";
  }
  return 0;
}

}  // namespace moecast::cli
