// Fuzz target: ingest validation through raw protobuf bytes, as the gRPC
// front end sees them. Registers a job, parses moecast.v1.IngestBatchRequest
// messages from the input and applies each with grpc_api::ApplyBatch (the
// code IngestBatch and Ingest run), then reads the job back.
//
// Input:
//   byte 0, flags: bit 0 the job spec is a RegisterJobRequest message (a
//     length byte, then the message) instead of 5 structured bytes; bit 1
//     keep each request's job_id (else it names the registered job); bit 2
//     advance the fake clock past the source timeout between batches; bit 3
//     forecast, state, health and placement after ingesting; bit 4 flush
//     pending steps at the end.
//   then the spec, then batches, each a 2-byte little-endian length and an
//   IngestBatchRequest message (the last one takes what is left).
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/clock.h"
#include "engine/engine.h"
#include "fuzz/fuzz_util.h"
#include "google/protobuf/stubs/logging.h"
#include "integrations/grpc/service.h"
#include "moecast/v1/moecast.pb.h"

namespace {

namespace pb = moecast::v1;
using moecast::fuzz::ByteReader;

moecast::EngineOptions SmallEngineOptions(moecast::Clock* clock) {
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
  o.clock = clock;
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Invalid UTF-8 in a string field is a parse failure; don't log each one.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  const uint8_t flags = in.Byte();
  moecast::FakeClock clock;
  auto engine = moecast::Engine::Create(SmallEngineOptions(&clock));
  MOECAST_FUZZ_CHECK(engine.ok());

  moecast::JobSpec spec;
  if ((flags & 1) != 0) {
    pb::RegisterJobRequest req;
    const std::string bytes = in.Bytes(in.Byte());
    if (!req.ParseFromString(bytes)) return 0;
    spec = moecast::grpc_api::JobSpecFromProto(req.spec());
    if (spec.job_id.empty()) spec.job_id = "fz";
  } else {
    spec.job_id = "fz";
    spec.num_layers = static_cast<int>(in.IntInRange(1, 3));
    spec.num_experts = static_cast<int>(in.IntInRange(2, 8));
    spec.top_k = static_cast<int>(in.IntInRange(1, spec.num_experts));
    spec.num_sources = static_cast<int>(in.IntInRange(1, 3));
    const uint8_t on = in.Byte();
    spec.forecasting = (on & 1) == 0;
    spec.health = (on & 2) == 0;
    spec.horizons = {1, 4};
  }
  if (!(*engine)->RegisterJob(spec).ok()) return 0;

  for (int batch = 0; batch < 8 && in.remaining() > 0; ++batch) {
    size_t n = in.Byte();
    n |= static_cast<size_t>(in.Byte()) << 8;
    pb::IngestBatchRequest request;
    if (!request.ParseFromString(in.Bytes(n))) continue;
    if ((flags & 2) == 0) request.set_job_id(spec.job_id);
    pb::IngestBatchResponse response;
    const absl::Status s =
        moecast::grpc_api::ApplyBatch(**engine, request, &response);
    if (s.ok()) {
      MOECAST_FUZZ_CHECK(response.results_size() == request.steps_size());
      int rejected = 0;
      for (const pb::StepResult& r : response.results()) {
        if (r.outcome() == pb::STEP_OUTCOME_REJECTED) {
          ++rejected;
          MOECAST_FUZZ_CHECK(r.error_code() != 0);
        }
      }
      MOECAST_FUZZ_CHECK(rejected == response.rejected());
    } else {
      MOECAST_FUZZ_CHECK(s.code() == absl::StatusCode::kNotFound);
    }
    if ((flags & 4) != 0) clock.Advance(absl::Seconds(31));
    (*engine)->Poll();
  }
  if ((flags & 16) != 0) (void)(*engine)->FlushPending(spec.job_id);

  auto info = (*engine)->GetJobInfo(spec.job_id);
  MOECAST_FUZZ_CHECK(info.ok());
  MOECAST_FUZZ_CHECK(info->committed_steps >= 0);
  if ((flags & 8) != 0) {
    moecast::ForecastRequest fr;
    fr.path_steps = 2;
    auto f = (*engine)->Forecast(spec.job_id, fr);
    if (f.ok()) {
      for (const moecast::LayerForecast& layer : f->layers) {
        for (const moecast::HorizonForecast& h : layer.horizons) {
          MOECAST_FUZZ_CHECK(h.mean.size() ==
                             static_cast<size_t>(spec.num_experts));
          double sum = 0;
          for (double v : h.mean) {
            MOECAST_FUZZ_CHECK(std::isfinite(v) && v >= 0);
            sum += v;
          }
          MOECAST_FUZZ_CHECK(std::abs(sum - 1) < 1e-6);
        }
      }
    }
    (void)(*engine)->GetState(spec.job_id);
    (void)(*engine)->Health(spec.job_id);
    (void)(*engine)->ReadEvents(spec.job_id, 0, 16);
    moecast::PlacementRequest pr;
    pr.num_gpus = 2;
    pr.num_slots = spec.num_experts + (spec.num_experts % 2);
    (void)(*engine)->RecommendPlacement(spec.job_id, pr);
  }
  return 0;
}
