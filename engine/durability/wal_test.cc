// The log format (framing, torn tails, bit flips, empty and garbage files),
// the mutation codec, and WalWriter under injected faults.
#include <unistd.h>

#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/durability/env.h"
#include "engine/durability/fault_injection_env.h"
#include "engine/durability/wal_format.h"
#include "engine/durability/wal_reader.h"
#include "engine/durability/wal_records.h"
#include "engine/durability/wal_writer.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast::durability {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

std::string TestDir(const std::string& name) {
  std::string dir = ::testing::TempDir();
  if (dir.back() != '/') dir += '/';
  dir += name;
  EXPECT_OK(Env::Default()->CreateDir(dir));
  return dir;
}

std::string SegmentPath(const std::string& dir, uint64_t n) {
  return dir + "/" + SegmentFileName(n);
}

// Payloads of varied sizes, including empty and one large record.
std::vector<std::string> Payloads() {
  std::vector<std::string> p;
  std::mt19937 rng(7);
  for (int i = 0; i < 20; ++i) {
    std::string s(i == 5 ? 0 : (i == 9 ? 200000 : 1 + rng() % 300), '\0');
    for (char& c : s) c = static_cast<char>(rng());
    p.push_back(s);
  }
  return p;
}

std::string WriteLog(const std::string& dir, const std::vector<std::string>& payloads) {
  auto w = WalWriter::Create(Env::Default(), dir, 1, {});
  EXPECT_OK(w.status());
  for (const std::string& p : payloads) {
    EXPECT_OK((*w)->Append(RecordType::kIngest, p, 0));
  }
  EXPECT_OK((*w)->Close());
  auto data = Env::Default()->ReadFile(SegmentPath(dir, 1));
  EXPECT_OK(data.status());
  return *data;
}

// Reads all records; checks the segment header.
std::vector<std::string> ReadAll(absl::string_view data, WalReader* reader) {
  std::vector<std::string> out;
  WalRecord r;
  bool first = true;
  while (reader->Next(&r)) {
    if (first) {
      EXPECT_EQ(r.type, RecordType::kSegmentHeader);
      first = false;
      continue;
    }
    out.emplace_back(r.payload);
  }
  return out;
}

TEST(WalFormat, RoundTrip) {
  const std::string dir = TestDir("roundtrip");
  const std::vector<std::string> payloads = Payloads();
  const std::string data = WriteLog(dir, payloads);
  WalReader reader(data);
  EXPECT_EQ(ReadAll(data, &reader), payloads);
  EXPECT_FALSE(reader.corrupt()) << reader.problem();
  EXPECT_EQ(reader.good_bytes(), data.size());
}

TEST(WalFormat, TornTailAtEveryOffsetOfTheLastRecord) {
  const std::string dir = TestDir("torn");
  std::vector<std::string> payloads = Payloads();
  payloads.back() = std::string(1000, 'x');
  const std::string data = WriteLog(dir, payloads);
  const size_t last_start = data.size() - kRecordHeaderBytes - payloads.back().size();
  const std::vector<std::string> expect(payloads.begin(), payloads.end() - 1);
  for (size_t cut = last_start; cut < data.size(); ++cut) {
    const std::string torn = data.substr(0, cut);
    WalReader reader(torn);
    ASSERT_EQ(ReadAll(torn, &reader), expect) << "cut at " << cut;
    EXPECT_EQ(reader.good_bytes(), last_start);
    EXPECT_EQ(reader.corrupt(), cut > last_start) << "cut at " << cut;
    if (cut > last_start) {
      EXPECT_THAT(reader.problem(), HasSubstr(absl::StrCat("offset ", last_start, ": torn")));
    }
  }
}

TEST(WalFormat, BitFlipsCutAtTheDamagedRecord) {
  const std::string dir = TestDir("flips");
  const std::vector<std::string> payloads = {"alpha", std::string(300, 'b'), "gamma",
                                             std::string(50, 'd')};
  const std::string data = WriteLog(dir, payloads);
  // Start offsets of each record (index 0: the segment header).
  std::vector<size_t> starts;
  {
    WalReader reader(data);
    WalRecord r;
    while (reader.Next(&r)) starts.push_back(r.offset);
  }
  ASSERT_EQ(starts.size(), payloads.size() + 1);
  for (size_t pos = 0; pos < data.size(); ++pos) {
    for (int bit : {0, 5}) {
      std::string bad = data;
      bad[pos] = static_cast<char>(bad[pos] ^ (1 << bit));
      size_t rec = 0;
      while (rec + 1 < starts.size() && starts[rec + 1] <= pos) ++rec;
      WalReader reader(bad);
      WalRecord r;
      size_t n = 0;
      while (reader.Next(&r)) ++n;
      ASSERT_TRUE(reader.corrupt()) << "flip at " << pos;
      EXPECT_EQ(n, rec) << "flip at " << pos;
      EXPECT_EQ(reader.good_bytes(), starts[rec]);
      EXPECT_THAT(reader.problem(), HasSubstr(absl::StrCat("offset ", starts[rec], ":")));
    }
  }
}

TEST(WalFormat, EmptyAndGarbage) {
  WalReader empty("");
  WalRecord r;
  EXPECT_FALSE(empty.Next(&r));
  EXPECT_FALSE(empty.corrupt());
  EXPECT_EQ(empty.good_bytes(), 0u);

  std::mt19937 rng(3);
  for (size_t size : {1, 8, 9, 100, 5000}) {
    std::string garbage(size, '\0');
    for (char& c : garbage) c = static_cast<char>(rng());
    WalReader reader(garbage);
    EXPECT_FALSE(reader.Next(&r));
    EXPECT_TRUE(reader.corrupt());
    EXPECT_EQ(reader.good_bytes(), 0u);
    EXPECT_THAT(reader.problem(), HasSubstr("offset 0:"));
  }
  // A huge length is refused before anything is read.
  std::string header;
  PutFixed32(&header, 0);
  PutFixed32(&header, 0xffffffffu);
  header.push_back(static_cast<char>(RecordType::kIngest));
  WalReader huge(header);
  EXPECT_FALSE(huge.Next(&r));
  EXPECT_THAT(huge.problem(), HasSubstr("out of range"));
}

TEST(WalFormat, SegmentNames) {
  uint64_t n = 0;
  EXPECT_EQ(SegmentFileName(42), "00000000000000000042.log");
  EXPECT_TRUE(ParseSegmentFileName("00000000000000000042.log", &n));
  EXPECT_EQ(n, 42u);
  for (const char* bad : {"42.log", "0000000000000000004x.log", "../00000000000000000042",
                          "00000000000000000042.log.tmp"}) {
    EXPECT_FALSE(ParseSegmentFileName(bad, &n)) << bad;
  }
}

TEST(WalRecords, RoundTrip) {
  JobSpec spec;
  spec.job_id = "job-a";
  spec.num_layers = 2;
  spec.num_experts = 3;
  spec.top_k = 2;
  spec.num_sources = 4;
  spec.step_unit = StepUnit::kInterval;
  spec.forecasting = false;
  spec.predictors = {"ema(0.5)", "holt"};
  spec.horizons = {1, 7};
  spec.router = RouterKind::kSigmoidWithBias;
  spec.hyper.aux_loss_coef = 0.01;
  spec.hyper.balance_weight = 2.5;
  auto reg = DecodeMutation(RecordType::kRegisterJob, EncodeRegisterJob(123, spec));
  ASSERT_OK(reg.status());
  EXPECT_EQ(reg->time_ns, 123);
  EXPECT_EQ(reg->spec.job_id, "job-a");
  EXPECT_EQ(reg->spec.num_sources, 4);
  EXPECT_EQ(reg->spec.step_unit, StepUnit::kInterval);
  EXPECT_FALSE(reg->spec.forecasting);
  EXPECT_TRUE(reg->spec.health);
  EXPECT_EQ(reg->spec.predictors, spec.predictors);
  EXPECT_EQ(reg->spec.horizons, spec.horizons);
  EXPECT_EQ(reg->spec.router, RouterKind::kSigmoidWithBias);
  EXPECT_EQ(reg->spec.hyper.aux_loss_coef, 0.01);
  EXPECT_FALSE(reg->spec.hyper.router_temperature.has_value());
  EXPECT_EQ(reg->spec.hyper.balance_weight, 2.5);

  const std::vector<double> counts = {1, 2, 3, 4, 5, 6};
  const std::vector<double> logits = {0.5, -1, 2, 0, 1e-300, 3};
  StepInput in;
  in.step = 99;
  in.source = 3;
  in.counts = counts;
  in.router_logits = logits;
  in.tokens = 7.5;
  const std::string payload = EncodeIngest(-5, "job-a", in);
  EXPECT_EQ(payload.size(), IngestPayloadBytes("job-a", in));
  auto ing = DecodeMutation(RecordType::kIngest, payload);
  ASSERT_OK(ing.status());
  EXPECT_EQ(ing->time_ns, -5);
  EXPECT_EQ(ing->step, 99);
  EXPECT_EQ(ing->source, 3);
  EXPECT_EQ(ing->counts, counts);
  EXPECT_EQ(ing->router_logits, logits);
  EXPECT_EQ(ing->tokens, 7.5);
  // Every truncation fails cleanly.
  for (size_t n = 0; n < payload.size(); ++n) {
    EXPECT_THAT(DecodeMutation(RecordType::kIngest, payload.substr(0, n)),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("does not parse")));
  }
  auto exp = DecodeMutation(RecordType::kExpireJobs, EncodeExpireJobs(1, {"a", "b"}));
  ASSERT_OK(exp.status());
  EXPECT_EQ(exp->job_ids, (std::vector<std::string>{"a", "b"}));
}

TEST(WalWriter, FullDiskIsRefusedAtReserveAndRecoversWhenSpaceIsFreed) {
  const std::string dir = TestDir("enospc");
  FaultInjectionEnv env(Env::Default());
  WalWriterOptions o;
  o.preallocate_bytes = 4096;
  auto w = WalWriter::Create(&env, dir, 1, o);
  ASSERT_OK(w.status());
  env.SetSpaceLimit(env.SpaceUsed() + 10000);
  const std::string payload(1000, 'p');
  const uint64_t bytes = WalWriter::RecordBytes(payload.size());
  int appended = 0;
  absl::Status s;
  while ((s = (*w)->Reserve(bytes)).ok()) {
    ASSERT_OK((*w)->Append(RecordType::kIngest, payload, bytes));
    ++appended;
  }
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kResourceExhausted,
                          HasSubstr("no space left on device")));
  EXPECT_GE(appended, 8);
  EXPECT_OK((*w)->status());  // not sticky
  EXPECT_OK((*w)->Sync());
  env.SetSpaceLimit(-1);
  ASSERT_OK((*w)->Reserve(bytes));
  ASSERT_OK((*w)->Append(RecordType::kIngest, payload, bytes));
  ASSERT_OK((*w)->Close());
  auto data = env.ReadFile(SegmentPath(dir, 1));
  ASSERT_OK(data.status());
  WalReader reader(*data);
  EXPECT_EQ(ReadAll(*data, &reader).size(), static_cast<size_t>(appended + 1));
  EXPECT_FALSE(reader.corrupt()) << reader.problem();
}

TEST(WalWriter, TornAppendIsCutBack) {
  const std::string dir = TestDir("tornappend");
  FaultInjectionEnv env(Env::Default());
  env.SetAllocateSupported(false);
  auto w = WalWriter::Create(&env, dir, 1, {});
  ASSERT_OK(w.status());
  ASSERT_OK((*w)->Append(RecordType::kIngest, "first", 0));
  env.SetSpaceLimit(env.SpaceUsed() + 100);  // the next record tears
  EXPECT_THAT((*w)->Append(RecordType::kIngest, std::string(500, 'x'), 0),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::_));
  EXPECT_OK((*w)->status());
  env.SetSpaceLimit(-1);
  ASSERT_OK((*w)->Append(RecordType::kIngest, "third", 0));
  ASSERT_OK((*w)->Close());
  auto data = env.ReadFile(SegmentPath(dir, 1));
  ASSERT_OK(data.status());
  WalReader reader(*data);
  EXPECT_EQ(ReadAll(*data, &reader), (std::vector<std::string>{"first", "third"}));
  EXPECT_FALSE(reader.corrupt()) << reader.problem();
}

TEST(WalWriter, SyncFailureIsSticky) {
  const std::string dir = TestDir("syncfail");
  FaultInjectionEnv env(Env::Default());
  auto w = WalWriter::Create(&env, dir, 1, {});
  ASSERT_OK(w.status());
  ASSERT_OK((*w)->Append(RecordType::kIngest, "a", 0));
  env.SetFailSync(true);
  EXPECT_THAT((*w)->Commit(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("fdatasync")));
  env.SetFailSync(false);
  EXPECT_THAT((*w)->Append(RecordType::kIngest, "b", 0),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT((*w)->Reserve(10), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
}

TEST(WalWriter, PowerLossKeepsWhatWasSynced) {
  for (WalSyncMode mode : {WalSyncMode::kBatch, WalSyncMode::kInterval, WalSyncMode::kNone}) {
    const std::string dir = TestDir(absl::StrCat("power_", WalSyncModeName(mode)));
    FaultInjectionEnv env(Env::Default());
    WalWriterOptions o;
    o.sync = mode;
    o.sync_interval = absl::Milliseconds(5);
    auto w = WalWriter::Create(&env, dir, 1, o);
    ASSERT_OK(w.status());
    for (int i = 0; i < 10; ++i) {
      ASSERT_OK((*w)->Append(RecordType::kIngest, absl::StrCat("r", i), 0));
      ASSERT_OK((*w)->Commit());
    }
    if (mode == WalSyncMode::kInterval) absl::SleepFor(absl::Milliseconds(50));
    env.DropUnsyncedData();
    auto data = env.ReadFile(SegmentPath(dir, 1));
    ASSERT_OK(data.status());
    WalReader reader(*data);
    const size_t kept = ReadAll(*data, &reader).size();
    EXPECT_FALSE(reader.corrupt());
    if (mode == WalSyncMode::kNone) {
      EXPECT_EQ(kept, 0u);  // nothing synced since the header
    } else {
      EXPECT_EQ(kept, 10u) << WalSyncModeName(mode);
    }
  }
}

TEST(WalWriter, RotationStartsNumberedSegments) {
  const std::string dir = TestDir("rotate");
  WalWriterOptions o;
  o.segment_bytes = 1000;
  auto w = WalWriter::Create(Env::Default(), dir, 5, o);
  ASSERT_OK(w.status());
  for (int i = 0; i < 10; ++i) {
    const uint64_t bytes = WalWriter::RecordBytes(400);
    ASSERT_OK((*w)->Reserve(bytes));
    ASSERT_OK((*w)->Append(RecordType::kIngest, std::string(400, 'a' + i), bytes));
  }
  EXPECT_GT((*w)->segment(), 5u);
  auto next = (*w)->Rotate();
  ASSERT_OK(next.status());
  EXPECT_EQ(*next, (*w)->segment());
  ASSERT_OK((*w)->Close());
  int records = 0;
  for (uint64_t n = 5; n <= *next; ++n) {
    auto data = Env::Default()->ReadFile(SegmentPath(dir, n));
    ASSERT_OK(data.status());
    WalReader reader(*data);
    WalRecord r;
    ASSERT_TRUE(reader.Next(&r));
    uint64_t number;
    uint32_t version;
    ASSERT_TRUE(DecodeSegmentHeader(r.payload, &number, &version));
    EXPECT_EQ(number, n);
    while (reader.Next(&r)) ++records;
    EXPECT_FALSE(reader.corrupt());
  }
  EXPECT_EQ(records, 10);
}

TEST(Env, RefusesSymbolicLinks) {
  const std::string dir = TestDir("symlinks");
  const std::string link = dir + "/link";
  ASSERT_EQ(::symlink("/tmp", link.c_str()), 0);
  EXPECT_THAT(Env::Default()->CreateDir(link),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("symbolic link")));
  const std::string flink = dir + "/flink";
  ASSERT_EQ(::symlink("/etc/hostname", flink.c_str()), 0);
  EXPECT_THAT(Env::Default()->ReadFile(flink),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("symbolic link")));
  EXPECT_THAT(Env::Default()->NewWritableFile(flink).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::_));
}

}  // namespace
}  // namespace moecast::durability
