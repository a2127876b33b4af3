// Fuzz target: Engine::RestoreJob (the snapshot decoder, engine/internal/
// snapshot_codec.h and Job's readers) on arbitrary bytes.
//
// Input: one flags byte, then the bytes.
//   bit 0: the bytes are a payload; frame them (FrameSnapshot: magic,
//          version, length, CRC32C) first, so that mutations reach the
//          decoder instead of stopping at the checksum
//   bit 1: after a successful restore, ingest a step, forecast, snapshot
//          again and restore that into a second engine (must succeed and
//          give the same bytes)
// Seeds: MOECAST_FUZZ_WRITE_SEEDS=DIR makes LLVMFuzzerInitialize write the
// payloads of a few real snapshots to DIR (fuzz/run_fuzzers.sh does).
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/clock.h"
#include "engine/engine.h"
#include "engine/internal/snapshot_codec.h"
#include "fuzz/fuzz_util.h"

namespace {

using moecast::fuzz::ByteReader;

moecast::EngineOptions SmallEngineOptions() {
  moecast::EngineOptions o;
  o.max_jobs = 4;
  o.max_layers = 8;
  o.max_experts = 64;
  o.max_layer_experts = 256;
  o.max_sources = 8;
  o.history_capacity_steps = 16;
  o.max_job_history_bytes = int64_t{8} << 20;
  o.max_total_history_bytes = int64_t{16} << 20;
  o.max_pending_steps = 8;
  o.max_events_per_job = 64;
  o.max_path_steps = 8;
  o.health.window_steps = 4;
  o.health.gamma.bootstrap_replicates = 4;
  // One fixed time for every engine, so that snapshots compare equal.
  static moecast::FakeClock* clock = new moecast::FakeClock();
  o.clock = clock;
  return o;
}

// Writes the payloads (flags byte 1 + payload) of a few real snapshots.
void WriteSeeds(const std::string& dir) {
  auto engine = moecast::Engine::Create(SmallEngineOptions());
  if (!engine.ok()) std::abort();
  struct Case {
    const char* id;
    int layers, experts, top_k, sources, steps;
    bool logits;
    std::vector<std::string> predictors;
  };
  const std::vector<Case> cases = {
      {"empty", 1, 2, 1, 1, 0, false, {}},
      {"default_bank", 2, 4, 2, 1, 9, true, {}},
      {"multi_source", 1, 3, 1, 2, 5, false, {"last_value", "ema(0.5)"}},
      {"arima", 1, 4, 2, 1, 12, false, {"arima(1,0,0)", "sw_avg(3)"}},
  };
  for (const Case& c : cases) {
    moecast::JobSpec spec;
    spec.job_id = c.id;
    spec.num_layers = c.layers;
    spec.num_experts = c.experts;
    spec.top_k = c.top_k;
    spec.num_sources = c.sources;
    spec.predictors = c.predictors;
    spec.horizons = {1, 4};
    if (!(*engine)->RegisterJob(spec).ok()) std::abort();
    const size_t lm = static_cast<size_t>(c.layers) * c.experts;
    for (int s = 0; s < c.steps; ++s) {
      std::vector<double> counts(lm), logits(lm);
      for (size_t i = 0; i < lm; ++i) {
        counts[i] = static_cast<double>((s * 7 + i * 3) % 11);
        logits[i] = 0.1 * static_cast<double>((s + i) % 5) - 0.2;
      }
      moecast::StepInput in;
      in.step = s;
      in.counts = counts;
      if (c.logits) in.router_logits = logits;
      for (int src = 0; src < c.sources - (s % 2); ++src) {
        in.source = src;
        (void)(*engine)->Ingest(c.id, in);
      }
    }
    auto snap = (*engine)->SnapshotJob(c.id);
    if (!snap.ok()) continue;
    auto payload = moecast::internal::UnframeSnapshot(*snap);
    if (!payload.ok()) std::abort();
    std::ofstream f(dir + "/seed_" + c.id, std::ios::binary);
    f.put('\x03');
    f.write(payload->data(), static_cast<std::streamsize>(payload->size()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("MOECAST_FUZZ_WRITE_SEEDS")) WriteSeeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  const uint8_t flags = in.Byte();
  std::string bytes = in.Rest();
  if ((flags & 1) != 0) bytes = moecast::internal::FrameSnapshot(bytes);

  auto engine = moecast::Engine::Create(SmallEngineOptions());
  MOECAST_FUZZ_CHECK(engine.ok());
  const absl::Status s = (*engine)->RestoreJob(bytes);
  if (!s.ok()) {
    MOECAST_FUZZ_CHECK((*engine)->ListJobs().empty());
    return 0;
  }
  const std::vector<std::string> jobs = (*engine)->ListJobs();
  MOECAST_FUZZ_CHECK(jobs.size() == 1);
  const std::string& id = jobs[0];
  auto info = (*engine)->GetJobInfo(id);
  MOECAST_FUZZ_CHECK(info.ok());
  // A restored job snapshots to the bytes it was restored from... unless
  // the input held non-canonical encodings; at least it must restore again.
  auto again = (*engine)->SnapshotJob(id);
  MOECAST_FUZZ_CHECK(again.ok());
  if ((flags & 2) != 0) {
    const moecast::JobSpec& spec = info->spec;
    std::vector<double> counts(
        static_cast<size_t>(spec.num_layers) * spec.num_experts, 1.0);
    moecast::StepInput step;
    step.step = info->last_step.value_or(0) + 1;
    step.counts = counts;
    (void)(*engine)->Ingest(id, step);
    (void)(*engine)->Forecast(id, moecast::ForecastRequest());
    (void)(*engine)->Health(id);
    again = (*engine)->SnapshotJob(id);
    MOECAST_FUZZ_CHECK(again.ok());
  }
  auto second = moecast::Engine::Create(SmallEngineOptions());
  MOECAST_FUZZ_CHECK(second.ok());
  const absl::Status s2 = (*second)->RestoreJob(*again);
  if (!s2.ok()) {
    std::fprintf(stderr, "re-restore failed: %s\n", s2.ToString().c_str());
    std::abort();
  }
  auto third = (*second)->SnapshotJob(id);
  MOECAST_FUZZ_CHECK(third.ok() && *third == *again);
  return 0;
}
