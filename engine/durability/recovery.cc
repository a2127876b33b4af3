#include "engine/durability/recovery.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/durability/wal_format.h"
#include "engine/durability/wal_reader.h"

namespace moecast::durability {

std::string RecoveryReport::Summary() const {
  std::string s = snapshot_set >= 0
                      ? absl::StrCat("snapshot set ", snapshot_set, " (", jobs_restored,
                                     " jobs), then ")
                      : std::string("no snapshot, ");
  absl::StrAppend(&s, records_replayed, " log records replayed from ", segments_replayed,
                  " segment(s) (", replayed_bytes, " bytes) in ",
                  absl::FormatDuration(elapsed));
  if (replay_rejections > 0) {
    absl::StrAppend(&s, "; ", replay_rejections, " logged steps refused again as logged");
  }
  if (!warnings.empty()) absl::StrAppend(&s, "; warnings: ", absl::StrJoin(warnings, "; "));
  return s;
}

absl::Status ApplyMutation(Engine& engine, const ReplayClock& clock, const Mutation& m) {
  ReplayClock::Pin pin(&clock, absl::FromUnixNanos(m.time_ns));
  switch (m.type) {
    case RecordType::kRegisterJob:
      return engine.RegisterJob(m.spec);
    case RecordType::kDeleteJob:
      return engine.DeleteJob(m.job_id);
    case RecordType::kIngest: {
      absl::Status s = engine.Ingest(m.job_id, m.AsStepInput()).status();
      if (!s.ok()) return s;
      // Replay at the speed analysis sustains: a replayed step must be
      // analysed as it was live, never shed or coalesced (which starts at a
      // lag of shed_scoring_lag_steps), so wait whenever the job's analysis
      // falls half that far behind.
      const EngineOptions& o = engine.options();
      const int64_t bound =
          std::max(1, o.analysis.ShedScoringLag(o.history_capacity_steps) / 2);
      Freshness stale;
      stale.allow_stale = true;
      absl::StatusOr<AnalysisProgress> p = engine.AwaitAnalysis(m.job_id, stale);
      if (p.ok() && p->lag_steps >= bound) {
        return engine.AwaitAnalysis(m.job_id, Freshness()).status();
      }
      return absl::OkStatus();
    }
    case RecordType::kFlushPending:
      return engine.FlushPending(m.job_id).status();
    case RecordType::kPoll:
      engine.Poll();
      return absl::OkStatus();
    case RecordType::kExpireJobs:
      for (const std::string& id : m.job_ids) {
        if (absl::Status s = engine.DeleteJob(id); !s.ok()) return s;
      }
      return absl::OkStatus();
    case RecordType::kRestoreJob:
      return engine.RestoreJob(m.snapshot);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("record type ", static_cast<int>(m.type), " is not a mutation"));
  }
}

absl::StatusOr<std::vector<uint64_t>> ListSegments(Env* env, const std::string& wal_dir) {
  absl::StatusOr<std::vector<std::string>> names = env->ListDir(wal_dir);
  if (!names.ok()) return names.status();
  std::vector<uint64_t> segments;
  for (const std::string& n : *names) {
    uint64_t number;
    if (ParseSegmentFileName(n, &number)) segments.push_back(number);
  }
  std::sort(segments.begin(), segments.end());
  return segments;
}

absl::Status ReplaySegments(Env* env, const std::string& wal_dir,
                            const std::vector<uint64_t>& segments, Engine& engine,
                            const ReplayClock& clock, RecoveryReport* report) {
  for (size_t i = 0; i < segments.size(); ++i) {
    const uint64_t number = segments[i];
    const bool last = i + 1 == segments.size();
    if (i > 0 && number != segments[i - 1] + 1) {
      return absl::DataLossError(absl::StrCat("write-ahead log segment ", segments[i - 1] + 1,
                                              " is missing in '", wal_dir, "'"));
    }
    const std::string path = absl::StrCat(wal_dir, "/", SegmentFileName(number));
    absl::StatusOr<std::string> data = env->ReadFile(path);
    if (!data.ok()) return data.status();
    ++report->segments_replayed;
    if (report->first_segment == 0) report->first_segment = number;
    WalReader reader(*data);
    WalRecord record;
    bool header = false;
    std::string problem;
    while (reader.Next(&record)) {
      if (!header) {
        uint64_t n = 0;
        uint32_t version = 0;
        if (record.type != RecordType::kSegmentHeader ||
            !DecodeSegmentHeader(record.payload, &n, &version) || n != number) {
          return absl::DataLossError(absl::StrCat(
              "write-ahead log segment '", path, "' does not start with its header"));
        }
        if (version != kWalFormatVersion) {
          return absl::InvalidArgumentError(absl::StrCat(
              "write-ahead log segment '", path, "' has format version ", version,
              "; this build reads version ", kWalFormatVersion));
        }
        header = true;
        continue;
      }
      absl::StatusOr<Mutation> m = DecodeMutation(record.type, record.payload);
      if (!m.ok()) {
        return absl::DataLossError(absl::StrCat("write-ahead log segment '", path,
                                                "' offset ", record.offset, ": ",
                                                m.status().message()));
      }
      absl::Status s = ApplyMutation(engine, clock, *m);
      ++report->records_replayed;
      if (!s.ok()) {
        if (m->type == RecordType::kIngest) {
          ++report->replay_rejections;
        } else if (report->warnings.size() < 20) {
          report->warnings.push_back(absl::StrCat("segment ", number, " offset ",
                                                  record.offset, ": replay refused: ",
                                                  s.ToString()));
        }
      }
    }
    report->replayed_bytes += reader.good_bytes();
    if (reader.corrupt()) {
      if (!last) {
        return absl::DataLossError(absl::StrCat(
            "write-ahead log segment '", path, "' is corrupt before its end (",
            reader.problem(), ") and later segments exist; refusing to skip logged data"));
      }
      if (absl::Status s = env->TruncateFile(path, reader.good_bytes()); !s.ok()) return s;
      report->warnings.push_back(absl::StrCat("cut the torn tail of segment ", number,
                                              " at offset ", reader.good_bytes(), " (",
                                              reader.problem(), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace moecast::durability
