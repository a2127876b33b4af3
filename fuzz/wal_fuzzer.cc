// Fuzz target: the write-ahead log's reader and record decoders
// (engine/durability: WalReader, DecodeSegmentHeader, DecodeMutation) on
// arbitrary segment bytes.
//
// Input: one flags byte, then the bytes.
//   bit 0: the bytes are a sequence of (type byte, 2-byte little-endian
//          length, payload) that the fuzzer frames with FrameRecord (valid
//          CRCs), so that mutations reach DecodeMutation
//   else:  the bytes are a segment file as read from disk
// Checks: records come in order inside the data, good_bytes() is the end of
// the last one, and a decoded mutation re-encodes to a payload that decodes
// to the same mutation.
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "engine/durability/wal_format.h"
#include "engine/durability/wal_reader.h"
#include "engine/durability/wal_records.h"
#include "fuzz/fuzz_util.h"

namespace {

namespace d = moecast::durability;
using moecast::fuzz::ByteReader;

// Re-encodes a decoded mutation (the types with an encoder).
bool Reencode(const d::Mutation& m, std::string* out) {
  switch (m.type) {
    case d::RecordType::kRegisterJob: *out = d::EncodeRegisterJob(m.time_ns, m.spec); return true;
    case d::RecordType::kDeleteJob:
    case d::RecordType::kFlushPending: *out = d::EncodeJobOnly(m.time_ns, m.job_id); return true;
    case d::RecordType::kIngest: *out = d::EncodeIngest(m.time_ns, m.job_id, m.AsStepInput()); return true;
    case d::RecordType::kPoll: *out = d::EncodePoll(m.time_ns); return true;
    case d::RecordType::kRestoreJob: *out = d::EncodeRestoreJob(m.time_ns, m.snapshot); return true;
    case d::RecordType::kExpireJobs: *out = d::EncodeExpireJobs(m.time_ns, m.job_ids); return true;
    default: return false;
  }
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A segment as the writer frames it: header, register, ingests, flush, poll,
// expire, delete.
std::vector<std::pair<d::RecordType, std::string>> SampleRecords() {
  moecast::JobSpec spec;
  spec.job_id = "job-a";
  spec.num_layers = 2;
  spec.num_experts = 3;
  spec.top_k = 1;
  spec.num_sources = 2;
  spec.predictors = {"last_value", "ema(0.5)"};
  spec.horizons = {1, 4};
  spec.hyper.aux_loss_coef = 0.01;
  std::vector<std::pair<d::RecordType, std::string>> out;
  out.emplace_back(d::RecordType::kSegmentHeader, d::EncodeSegmentHeader(7));
  out.emplace_back(d::RecordType::kRegisterJob, d::EncodeRegisterJob(1000, spec));
  const std::vector<double> counts = {1, 2, 3, 4, 5, 6};
  const std::vector<double> logits = {0.1, -0.1, 0, 0.2, 0.3, -0.5};
  for (int s = 0; s < 3; ++s) {
    moecast::StepInput step;
    step.step = s;
    step.source = s % 2;
    step.counts = counts;
    if (s == 1) step.router_logits = logits;
    if (s == 2) step.tokens = 12;
    out.emplace_back(d::RecordType::kIngest, d::EncodeIngest(2000 + s, "job-a", step));
  }
  out.emplace_back(d::RecordType::kFlushPending, d::EncodeJobOnly(3000, "job-a"));
  out.emplace_back(d::RecordType::kPoll, d::EncodePoll(4000));
  out.emplace_back(d::RecordType::kExpireJobs, d::EncodeExpireJobs(5000, {"job-a", "b"}));
  out.emplace_back(d::RecordType::kRestoreJob, d::EncodeRestoreJob(5500, "MCSNAP..."));
  out.emplace_back(d::RecordType::kDeleteJob, d::EncodeJobOnly(6000, "job-a"));
  return out;
}

void WriteSeeds(const std::string& dir) {
  const auto records = SampleRecords();
  std::string raw(1, '\0'), structured(1, '\1');
  for (const auto& [type, payload] : records) {
    raw += d::FrameRecord(type, payload);
    structured += static_cast<char>(type);
    structured += static_cast<char>(payload.size() & 0xff);
    structured += static_cast<char>((payload.size() >> 8) & 0xff);
    structured += payload;
  }
  WriteFile(dir + "/seed_segment", raw);
  WriteFile(dir + "/seed_segment_torn", raw.substr(0, raw.size() - 5));
  WriteFile(dir + "/seed_records", structured);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("MOECAST_FUZZ_WRITE_SEEDS")) WriteSeeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  const uint8_t flags = in.Byte();
  std::string bytes;
  if ((flags & 1) != 0) {
    while (in.remaining() > 0) {
      const uint8_t type = in.Byte();
      size_t n = in.Byte();
      n |= static_cast<size_t>(in.Byte()) << 8;
      bytes += d::FrameRecord(static_cast<d::RecordType>(type), in.Bytes(n));
    }
  } else {
    bytes = in.Rest();
  }

  d::WalReader reader(bytes);
  d::WalRecord r;
  uint64_t end = 0;
  while (reader.Next(&r)) {
    MOECAST_FUZZ_CHECK(r.offset == end);
    MOECAST_FUZZ_CHECK(r.payload.data() >= bytes.data() &&
                       r.payload.data() + r.payload.size() <= bytes.data() + bytes.size());
    end = r.offset + d::kRecordHeaderBytes + r.payload.size();
    MOECAST_FUZZ_CHECK(reader.good_bytes() == end);
    if (r.type == d::RecordType::kSegmentHeader) {
      uint64_t number = 0;
      uint32_t version = 0;
      (void)d::DecodeSegmentHeader(r.payload, &number, &version);
      continue;
    }
    auto m = d::DecodeMutation(r.type, r.payload);
    if (!m.ok()) continue;
    std::string payload;
    if (!Reencode(*m, &payload)) continue;
    auto m2 = d::DecodeMutation(r.type, payload);
    MOECAST_FUZZ_CHECK(m2.ok());
    std::string payload2;
    MOECAST_FUZZ_CHECK(Reencode(*m2, &payload2));
    MOECAST_FUZZ_CHECK(payload == payload2);
  }
  MOECAST_FUZZ_CHECK(reader.good_bytes() <= bytes.size());
  if (!reader.corrupt()) MOECAST_FUZZ_CHECK(reader.good_bytes() == bytes.size());
  return 0;
}
