// moecast replay: feeds a trace through an in-process engine and prints a
// summary of what was ingested.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "engine/engine.h"
#include "engine/trace/trace_reader.h"
#include "integrations/cli/commands.h"
#include "integrations/cli/flags.h"
#include "integrations/cli/progress.h"

namespace moecast::cli {
namespace {

// "dir/run-7.counts.csv.gz" -> "run-7"; characters a job id cannot hold
// become '_'.
std::string JobIdFromPath(const std::string& path) {
  std::string base = path.substr(path.find_last_of('/') + 1);
  for (absl::string_view suffix : {".gz", ".csv", ".counts"}) {
    if (absl::EndsWith(base, suffix)) base.resize(base.size() - suffix.size());
  }
  for (char& c : base) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) c = '_';
  }
  if (base.empty() || base == "." || base == "..") base = "replay";
  if (base.size() > 128) base.resize(128);
  return base;
}

std::string Thousands(double v) {
  std::string digits = absl::StrFormat("%.0f", v);
  std::string out;
  const size_t start = digits[0] == '-' ? 1 : 0;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > start && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string Rate(double per_second) {
  if (per_second >= 1e9) return absl::StrFormat("%.2f G", per_second / 1e9);
  if (per_second >= 1e6) return absl::StrFormat("%.2f M", per_second / 1e6);
  if (per_second >= 1e3) return absl::StrFormat("%.2f k", per_second / 1e3);
  return absl::StrFormat("%.1f ", per_second);
}

// A JSON string body: quotes, backslashes and control characters escaped.
std::string JsonEscape(absl::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", static_cast<int>(c));
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

int RunReplay(const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err) {
  std::string counts_path;
  std::string router_path;
  std::string job_id;
  std::string progress_mode = "auto";
  int64_t top_k = 0;
  int64_t max_steps = 0;
  int64_t history_capacity = EngineOptions().history_capacity_steps;
  std::string events_path;
  FlagSet flags("replay");
  flags.AddString("counts", &counts_path,
                  "counts trace NAME.counts.csv[.gz] (design section 7)",
                  /*required=*/true);
  flags.AddString("router", &router_path,
                  "optional router trace NAME.router.csv[.gz] with z0.. columns");
  flags.AddInt("top_k", &top_k, "experts chosen per token (K)",
               /*required=*/true);
  flags.AddString("job", &job_id,
                  "job id (default: the counts file name without suffixes)");
  flags.AddInt("max_steps", &max_steps, "stop after this many steps (0 = all)",
               false, 0);
  flags.AddInt("history_capacity", &history_capacity,
               "steps kept per layer in the engine's history ring", false, 2,
               1 << 24);
  flags.AddString("progress", &progress_mode,
                  "progress bar on stderr: auto (when a terminal), on, off");
  flags.AddString("events", &events_path,
                  "write the job's event log (state changes, load shifts, health "
                  "events) to this file, one JSON object per line");
  if (absl::Status s = flags.Parse(args); !s.ok()) {
    err << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    out << "usage: moecast replay [flags]\n" << flags.Usage();
    return 0;
  }
  if (progress_mode != "auto" && progress_mode != "on" &&
      progress_mode != "off") {
    err << "moecast replay: --progress='" << progress_mode
        << "' must be auto, on or off\n";
    return 2;
  }
  if (job_id.empty()) job_id = JobIdFromPath(counts_path);

  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<TraceReader>> reader_or =
      TraceReader::Open(counts_path, router_path);
  if (!reader_or.ok()) {
    err << "moecast replay: " << reader_or.status().message() << "\n";
    return 1;
  }
  TraceReader& reader = **reader_or;
  const TraceLayout& layout = reader.layout();

  EngineOptions options;
  options.history_capacity_steps = static_cast<int>(history_capacity);
  // A trace is fed as fast as it reads: analyse each step as it is ingested
  // (inline), so that nothing is shed or coalesced and the reported ingest
  // rate includes the analysis, as before.
  options.analysis.mode = AnalysisOptions::Mode::kInline;
  // Keep every event of the trace for the summary and --events.
  options.max_events_per_job = 1 << 20;
  absl::StatusOr<std::unique_ptr<Engine>> engine_or = Engine::Create(options);
  if (!engine_or.ok()) {
    err << "moecast replay: " << engine_or.status().message() << "\n";
    return 1;
  }
  Engine& engine = **engine_or;
  JobSpec spec;
  spec.job_id = job_id;
  spec.num_layers = layout.num_layers();
  spec.num_experts = layout.num_experts;
  spec.top_k = static_cast<int>(std::min<int64_t>(top_k, 1 << 30));
  if (top_k != spec.top_k) spec.top_k = -1;
  if (absl::Status s = engine.RegisterJob(spec); !s.ok()) {
    err << "moecast replay: " << counts_path << ": " << s.message()
        << " (from --top_k and the trace's header)\n";
    return 1;
  }

  ProgressBar progress(progress_mode, "replay");
  TraceStep step;
  int64_t steps = 0;
  absl::Duration ingest_time;
  while (max_steps == 0 || steps < max_steps) {
    absl::StatusOr<bool> more = reader.Next(&step);
    if (!more.ok()) {
      progress.Finish();
      err << "moecast replay: " << more.status().message() << "\n";
      return 1;
    }
    if (!*more) break;
    StepInput in;
    in.step = step.step;
    in.counts = step.counts;
    in.router_logits = step.router_z;
    if (step.tokens.has_value()) in.tokens = static_cast<double>(*step.tokens);
    const absl::Time t0 = absl::Now();
    absl::StatusOr<IngestResult> r = engine.Ingest(job_id, in);
    ingest_time += absl::Now() - t0;
    if (!r.ok()) {
      progress.Finish();
      err << "moecast replay: " << counts_path << ":" << step.first_line
          << ":1: step " << step.step << " rejected: " << r.status().message()
          << "\n";
      return 1;
    }
    ++steps;
    if ((steps & 63) == 0) progress.Update(reader.progress(), steps);
  }
  progress.Finish();
  const absl::Duration wall = absl::Now() - start;

  absl::StatusOr<JobInfo> info_or = engine.GetJobInfo(job_id);
  if (!info_or.ok()) {
    err << "moecast replay: " << info_or.status().message() << "\n";
    return 1;
  }
  const JobInfo& info = *info_or;
  if (info.committed_steps == 0) {
    err << "moecast replay: no steps were ingested\n";
    return 1;
  }
  const int64_t counts_per_step =
      int64_t{layout.num_layers()} * layout.num_experts;
  const double ingest_s = std::max(absl::ToDoubleSeconds(ingest_time), 1e-9);
  const double wall_s = std::max(absl::ToDoubleSeconds(wall), 1e-9);

  out << "moecast replay: " << counts_path << "\n";
  out << absl::StrFormat("  job             %s\n", job_id);
  out << absl::StrFormat(
      "  steps           %s (steps %d..%d; %d gap(s), %d step numbers missing)\n",
      Thousands(info.committed_steps), *info.first_step, *info.last_step,
      info.gaps, info.missing_steps);
  std::string layer_ids =
      layout.num_layers() <= 8
          ? absl::StrJoin(layout.layer_ids, ",")
          : absl::StrCat(layout.layer_ids.front(), "..",
                         layout.layer_ids.back());
  out << absl::StrFormat("  layers          %d (ids %s)\n", layout.num_layers(),
                         layer_ids);
  out << absl::StrFormat("  experts         %d per layer, top_k %d\n",
                         layout.num_experts, spec.top_k);
  out << absl::StrFormat(
      "  tokens          %s (%s per step on average, %s)\n",
      Thousands(info.tokens), Thousands(info.tokens / info.committed_steps),
      layout.has_tokens ? "from the tokens column"
                        : "sum(c)/top_k: no tokens column");
  std::string router = "none";
  if (layout.has_router) {
    router = absl::StrCat(router_path, " (z", layout.has_router_probs ? ",p" : "",
                          layout.has_router_std ? ",s" : "", ")");
  }
  out << absl::StrFormat("  router          %s\n", router);
  out << absl::StrFormat(
      "  ingest          %.3f s in the engine: %s steps/s, %s counts/s, %.2f "
      "us/step\n",
      ingest_s, Rate(steps / ingest_s), Rate(steps * counts_per_step / ingest_s),
      1e6 * ingest_s / steps);
  out << absl::StrFormat("  wall            %.3f s with reading and parsing: %s "
                         "steps/s\n",
                         wall_s, Rate(steps / wall_s));

  // Token-weighted load over the whole trace, per layer.
  out << "  load over the whole trace (token-weighted share of assignments):\n";
  out << "    layer  max/mean  hottest expert   coldest expert   experts < "
         "1/(4M)\n";
  for (int l = 0; l < layout.num_layers(); ++l) {
    std::vector<double> share(layout.num_experts, 0.0);
    absl::Status s = engine.VisitHistory(job_id, l, [&](const LayerHistory& h) {
      const HistoryTotals& t = h.totals();
      for (int e = 0; e < layout.num_experts; ++e) {
        share[e] = t.assignments > 0 ? t.counts[e] / t.assignments : 0.0;
      }
    });
    if (!s.ok()) {
      err << "moecast replay: " << s.message() << "\n";
      return 1;
    }
    const auto [lo, hi] = std::minmax_element(share.begin(), share.end());
    const double mean = 1.0 / layout.num_experts;
    int cold = 0;
    for (double v : share) cold += v < mean / 4;
    out << absl::StrFormat("    %5d  %8.2f  %4d (%5.2f%%)    %4d (%5.2f%%)    %d\n",
                           layout.layer_ids[l], *hi / mean,
                           static_cast<int>(hi - share.begin()), 100 * *hi,
                           static_cast<int>(lo - share.begin()), 100 * *lo,
                           cold);
  }
  // Load shifts the engine saw (its event log; the oldest may have been
  // dropped past EngineOptions::max_events_per_job).
  absl::StatusOr<std::vector<Event>> events = engine.ReadEvents(job_id, 0, 1 << 30);
  if (events.ok()) {
    std::vector<std::string> job_shifts;
    int layer_shifts = 0;
    for (const Event& e : *events) {
      if (e.kind != EventKind::kShift) continue;
      if (e.layer >= 0) {
        ++layer_shifts;
      } else {
        job_shifts.push_back(absl::StrFormat("%d (change ~%s, L1 %.2f)", e.step,
                                             e.from, e.value));
      }
    }
    out << absl::StrFormat("  load shifts     %d in layers; the job's (half of its layers): %s\n",
                           layer_shifts,
                           job_shifts.empty() ? "none" : absl::StrJoin(job_shifts, ", "));
  }
  if (!events_path.empty()) {
    if (!events.ok()) {
      err << "moecast replay: " << events.status().message() << "\n";
      return 1;
    }
    std::ofstream f(events_path);
    for (const Event& e : *events) {
      f << absl::StrFormat(
          "{\"seq\": %d, \"step\": %d, \"kind\": \"%s\", \"layer\": %d, "
          "\"from\": \"%s\", \"to\": \"%s\", \"value\": %.17g, \"detail\": \"%s\"}\n",
          e.seq, e.step, EventKindName(e.kind), e.layer, JsonEscape(e.from),
          JsonEscape(e.to), e.value, JsonEscape(e.detail));
    }
    f.close();
    if (!f) {
      err << "moecast replay: --events: cannot write " << events_path << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace moecast::cli
