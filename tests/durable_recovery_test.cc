// DurableEngine end to end: a durable engine fed a trace answers, after
// close and reopen (recovery by replay), exactly as a plain engine fed the
// same calls; faults (full disk, failed fdatasync, no fallocate) refuse
// calls without losing anything acknowledged; torn tails are cut; snapshot
// sets are used when the engine can restore them. Answers are compared as
// the gRPC service serializes them (every field, bit for bit).
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/clock.h"
#include "engine/durability/durable_engine.h"
#include "engine/durability/env.h"
#include "engine/durability/fault_injection_env.h"
#include "engine/durability/wal_format.h"
#include "engine/engine.h"
#include "engine/testing/status_matchers.h"
#include "engine/testing/bundled_trace.h"
#include "gmock/gmock.h"
#include "grpcpp/server_context.h"
#include "gtest/gtest.h"
#include "integrations/grpc/service.h"

namespace moecast {
namespace {

namespace pb = ::moecast::v1;
using durability::DurableEngine;
using durability::DurableOptions;
using durability::Env;
using durability::FaultInjectionEnv;
using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

std::string FreshDir(const std::string& name) {
  std::string dir = ::testing::TempDir();
  if (dir.back() != '/') dir += '/';
  dir += name;
  (void)!std::system(absl::StrCat("rm -rf '", dir, "'").c_str());
  return dir;
}

using Trace = ::moecast::testing::BundledTrace;

const Trace& TinyMoeAux() {
  static const Trace* trace = [] {
    absl::StatusOr<Trace> t = ::moecast::testing::ReadBundledTrace("tiny_moe_aux", 1500);
    EXPECT_OK(t.status());
    return new Trace(t.ok() ? *std::move(t) : Trace());
  }();
  return *trace;
}

JobSpec Spec(const std::string& id, int sources = 1) {
  const Trace& t = TinyMoeAux();
  JobSpec spec;
  spec.job_id = id;
  spec.num_layers = t.layers;
  spec.num_experts = t.experts;
  spec.top_k = 2;
  spec.num_sources = sources;
  spec.hyper.aux_loss_coef = 0.01;
  return spec;
}

StepInput Input(const TraceStep& s, int64_t step, int source = 0, double share = 1.0,
                std::vector<double>* scratch = nullptr) {
  StepInput in;
  in.step = step;
  in.source = source;
  if (share == 1.0) {
    in.counts = s.counts;
  } else {
    scratch->assign(s.counts.begin(), s.counts.end());
    for (double& c : *scratch) c = std::floor(c * share);
    in.counts = *scratch;
  }
  in.router_logits = s.router_z;
  return in;
}

EngineOptions Options(Clock* clock) {
  EngineOptions o;
  o.clock = clock;
  o.history_capacity_steps = 256;
  o.health.window_steps = 100;
  o.source_timeout = absl::Seconds(2);
  o.idle_job_expiry = absl::Seconds(3600);
  return o;
}

// Everything a client can read about a job, serialized.
std::string Describe(Engine& engine, const std::string& id) {
  // JobInfo reports analysis progress as it is (it does not wait): compare
  // engines once analysis has caught up.
  (void)engine.AwaitAnalysis(id, Freshness());
  grpc_api::MoecastService service(&engine);
  grpc::ServerContext ctx;
  std::string out;
  auto add = [&](const char* what, const grpc::Status& s,
                 const google::protobuf::Message& m) {
    absl::StrAppend(&out, what, ":", static_cast<int>(s.error_code()), ":",
                    s.error_message(), ":", m.SerializeAsString(), "\n");
  };
  {
    pb::GetJobInfoRequest req;
    req.set_job_id(id);
    pb::JobInfo resp;
    grpc::Status s = service.GetJobInfo(&ctx, &req, &resp);
    // Counters of refused and duplicate calls are not logged.
    resp.clear_duplicate_calls();
    resp.clear_rejected_calls();
    add("info", s, resp);
  }
  {
    pb::ForecastRequest req;
    req.set_job_id(id);
    req.set_path_steps(5);
    pb::ForecastResponse resp;
    add("forecast", service.Forecast(&ctx, &req, &resp), resp);
  }
  {
    pb::GetStateRequest req;
    req.set_job_id(id);
    req.set_per_expert(true);
    pb::GetStateResponse resp;
    add("state", service.GetState(&ctx, &req, &resp), resp);
  }
  {
    pb::GetHealthRequest req;
    req.set_job_id(id);
    pb::GetHealthResponse resp;
    add("health", service.GetHealth(&ctx, &req, &resp), resp);
  }
  {
    pb::RecommendPlacementRequest req;
    req.set_job_id(id);
    req.set_num_gpus(4);
    req.set_num_slots(TinyMoeAux().experts);
    pb::RecommendPlacementResponse resp;
    add("placement", service.RecommendPlacement(&ctx, &req, &resp), resp);
  }
  absl::StatusOr<std::vector<Event>> events = engine.ReadEvents(id, 0, 100000);
  absl::StrAppend(&out, "events:", events.status().ToString(), "\n");
  if (events.ok()) {
    for (const Event& e : *events) {
      absl::StrAppend(&out, absl::StrFormat("%d %d %d %d %s %s %.17g %s\n", e.seq, e.step,
                                            static_cast<int>(e.kind), e.layer, e.from,
                                            e.to, e.value, e.detail));
    }
  }
  return out;
}

std::string DescribeAll(Engine& engine) {
  std::string out;
  for (const std::string& id : engine.ListJobs()) {
    absl::StrAppend(&out, "== ", id, "\n", Describe(engine, id));
  }
  return out;
}

// Drives the same calls into several engines whose clocks move together.
// A producer that never overloads background analysis (which would shed
// and coalesce at lags that depend on thread timing): once a job's analysis
// lags 32 steps, wait for it. Answers are then a function of the steps alone.
void Pace(Engine& e) {
  Freshness stale;
  stale.allow_stale = true;
  for (const std::string& id : e.ListJobs()) {
    absl::StatusOr<AnalysisProgress> p = e.AwaitAnalysis(id, stale);
    if (p.ok() && p->lag_steps >= 32) (void)e.AwaitAnalysis(id, Freshness());
  }
}

class Twin {
 public:
  Twin(Engine* a, FakeClock* ca, Engine* b, FakeClock* cb) : a_(a), b_(b), ca_(ca), cb_(cb) {}
  template <typename F>
  void Both(F f) {
    f(*a_);
    f(*b_);
    Pace(*a_);
    Pace(*b_);
  }
  void Advance(absl::Duration d) {
    ca_->Advance(d);
    cb_->Advance(d);
  }

 private:
  Engine *a_, *b_;
  FakeClock *ca_, *cb_;
};

// The workload: a single-source job over the trace, a multi-source job with
// a straggler (timeouts, Poll commits, a late part, a duplicate, a flush), a
// deleted job and an expired one.
void Feed(Twin& twin, size_t steps) {
  const Trace& t = TinyMoeAux();
  twin.Both([](Engine& e) { ASSERT_OK(e.RegisterJob(Spec("single"))); });
  twin.Both([](Engine& e) { ASSERT_OK(e.RegisterJob(Spec("multi", 3))); });
  twin.Both([](Engine& e) { ASSERT_OK(e.RegisterJob(Spec("deleted"))); });
  twin.Both([](Engine& e) {
    JobSpec s = Spec("idle");
    s.forecasting = false;
    ASSERT_OK(e.RegisterJob(s));
  });
  std::vector<double> scratch;
  for (size_t i = 0; i < steps && i < t.steps.size(); ++i) {
    const TraceStep& s = t.steps[i];
    const int64_t step = s.step;
    twin.Both([&](Engine& e) {
      ASSERT_OK(e.Ingest("single", Input(s, step)).status());
      // Sources 0 and 1 always report; source 2 skips every 7th step block.
      for (int src = 0; src < 3; ++src) {
        if (src == 2 && (i / 20) % 7 == 3) continue;
        (void)e.Ingest("multi", Input(s, step, src, 1.0 / 3, &scratch));
      }
    });
    if (i % 10 == 0) {
      twin.Both([&](Engine& e) {
        EXPECT_THAT(e.Ingest("single", Input(s, step)),
                    ::testing::Truly([](const absl::StatusOr<IngestResult>& r) {
                      return r.ok() && r->outcome == IngestOutcome::kDuplicate;
                    }));
        (void)e.Ingest("single", Input(s, step - 1));  // older: refused
      });
    }
    twin.Advance(absl::Milliseconds(i % 50 == 49 ? 3000 : 10));
    if (i % 25 == 0) twin.Both([](Engine& e) { e.Poll(); });
    if (i == 100) twin.Both([](Engine& e) { ASSERT_OK(e.DeleteJob("deleted")); });
    if (i == 300) twin.Both([](Engine& e) { ASSERT_OK(e.FlushPending("multi").status()); });
  }
  twin.Advance(absl::Seconds(3601));
  twin.Both([&](Engine& e) {
    (void)e.Ingest("single", Input(TinyMoeAux().steps[steps - 1], 1000000));
    ASSERT_OK(e.FlushPending("multi").status());
    EXPECT_EQ(e.ExpireIdleJobs(), std::vector<std::string>{"idle"});
  });
}

TEST(DurableRecovery, ReplayReproducesEveryAnswer) {
  for (auto sync : {durability::WalSyncMode::kBatch, durability::WalSyncMode::kInterval,
                    durability::WalSyncMode::kNone}) {
    SCOPED_TRACE(durability::WalSyncModeName(sync));
    const std::string dir = FreshDir(absl::StrCat("replay_", WalSyncModeName(sync)));
    FakeClock plain_clock(absl::FromUnixSeconds(1700000000));
    FakeClock durable_clock(absl::FromUnixSeconds(1700000000));
    ASSERT_OK_AND_ASSIGN(auto plain, Engine::Create(Options(&plain_clock)));
    DurableOptions d;
    d.dir = dir;
    d.sync = sync;
    d.segment_bytes = 256 << 10;  // several segments
    std::string before;
    {
      ASSERT_OK_AND_ASSIGN(auto durable,
                           DurableEngine::Open(Options(&durable_clock), d));
      Twin twin(plain.get(), &plain_clock, durable.get(), &durable_clock);
      Feed(twin, 1200);
      before = DescribeAll(*durable);
      EXPECT_EQ(before, DescribeAll(*plain));
      ASSERT_OK(durable->Close());
    }
    FakeClock reopened_clock(durable_clock.Now());
    ASSERT_OK_AND_ASSIGN(auto reopened, DurableEngine::Open(Options(&reopened_clock), d));
    EXPECT_EQ(reopened->recovery().replay_rejections, 0);
    EXPECT_TRUE(reopened->recovery().warnings.empty()) << reopened->recovery().Summary();
    EXPECT_GT(reopened->recovery().segments_replayed, 2);
    const std::string after = DescribeAll(*reopened);
    EXPECT_EQ(after, before);
    EXPECT_THAT(after, HasSubstr("== multi"));
    EXPECT_THAT(after, ::testing::Not(HasSubstr("== idle")));
    // It goes on as the plain engine does.
    Twin twin(plain.get(), &plain_clock, reopened.get(), &reopened_clock);
    twin.Both([](Engine& e) {
      ASSERT_OK(e.Ingest("single", Input(TinyMoeAux().steps[0], 1000001)).status());
    });
    EXPECT_EQ(DescribeAll(*reopened), DescribeAll(*plain));
  }
}

TEST(DurableRecovery, TornTailIsCutAndReported) {
  const std::string dir = FreshDir("torn_tail");
  FakeClock clock;
  DurableOptions d;
  d.dir = dir;
  std::string before;
  int64_t segment_size = 0;
  {
    ASSERT_OK_AND_ASSIGN(auto durable, DurableEngine::Open(Options(&clock), d));
    ASSERT_OK(durable->RegisterJob(Spec("single")));
    for (int i = 0; i < 50; ++i) {
      ASSERT_OK(durable->Ingest("single", Input(TinyMoeAux().steps[i], i)).status());
    }
    before = DescribeAll(*durable);
    ASSERT_OK(durable->Close());
  }
  const std::string seg = dir + "/wal/" + durability::SegmentFileName(1);
  {
    auto data = Env::Default()->ReadFile(seg);
    ASSERT_OK(data.status());
    segment_size = static_cast<int64_t>(data->size());
    // A torn 51st record: a header promising more than is there.
    auto f = std::fopen(seg.c_str(), "ab");
    const char junk[] = "\x01\x02\x03\x04\xff\x00\x00\x00\x04partial";
    std::fwrite(junk, 1, sizeof(junk) - 1, f);
    std::fclose(f);
  }
  ASSERT_OK_AND_ASSIGN(auto reopened, DurableEngine::Open(Options(&clock), d));
  ASSERT_EQ(reopened->recovery().warnings.size(), 1u);
  EXPECT_THAT(reopened->recovery().warnings[0],
              HasSubstr(absl::StrCat("segment 1 at offset ", segment_size)));
  EXPECT_EQ(DescribeAll(*reopened), before);
  // The cut is durable: a later reopen is clean.
  ASSERT_OK(reopened->Ingest("single", Input(TinyMoeAux().steps[50], 50)).status());
  const std::string now = DescribeAll(*reopened);
  reopened.reset();
  ASSERT_OK_AND_ASSIGN(auto again, DurableEngine::Open(Options(&clock), d));
  EXPECT_TRUE(again->recovery().warnings.empty()) << again->recovery().Summary();
  EXPECT_EQ(DescribeAll(*again), now);
}

TEST(DurableRecovery, CorruptionBeforeTheLastSegmentRefusesToStart) {
  const std::string dir = FreshDir("mid_corrupt");
  FakeClock clock;
  DurableOptions d;
  d.dir = dir;
  {
    ASSERT_OK_AND_ASSIGN(auto durable, DurableEngine::Open(Options(&clock), d));
    ASSERT_OK(durable->RegisterJob(Spec("single")));
    ASSERT_OK(durable->Ingest("single", Input(TinyMoeAux().steps[0], 0)).status());
  }
  { ASSERT_OK(DurableEngine::Open(Options(&clock), d).status()); }  // segment 2
  const std::string seg = dir + "/wal/" + durability::SegmentFileName(1);
  auto data = Env::Default()->ReadFile(seg);
  ASSERT_OK(data.status());
  std::string bad = *data;
  bad[bad.size() - 10] ^= 0x40;
  auto f = std::fopen(seg.c_str(), "wb");
  std::fwrite(bad.data(), 1, bad.size(), f);
  std::fclose(f);
  EXPECT_THAT(DurableEngine::Open(Options(&clock), d).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum mismatch")));
}

TEST(DurableRecovery, FullDiskRefusesIngestAndLosesNothingAcknowledged) {
  for (bool fallocate : {true, false}) {
    SCOPED_TRACE(fallocate ? "with fallocate" : "without fallocate");
    const std::string dir = FreshDir(absl::StrCat("enospc_", fallocate));
    FaultInjectionEnv env(Env::Default());
    env.SetAllocateSupported(fallocate);
    FakeClock clock;
    FakeClock plain_clock;
    DurableOptions d;
    d.dir = dir;
    d.env = &env;
    ASSERT_OK_AND_ASSIGN(auto plain, Engine::Create(Options(&plain_clock)));
    ASSERT_OK(plain->RegisterJob(Spec("single")));
    env.SetSpaceLimit(300000);  // a tiny disk: room for a couple of hundred steps
    ASSERT_OK_AND_ASSIGN(auto durable, DurableEngine::Open(Options(&clock), d));
    ASSERT_OK(durable->RegisterJob(Spec("single")));
    const auto& steps = TinyMoeAux().steps;
    int64_t acked = -1;
    absl::Status refused;
    for (size_t i = 0; i + 2 < steps.size(); ++i) {
      auto r = durable->Ingest("single", Input(steps[i], i));
      if (!r.ok()) {
        refused = r.status();
        break;
      }
      ASSERT_OK(plain->Ingest("single", Input(steps[i], i)).status());
      acked = static_cast<int64_t>(i);
      Pace(*durable);
      Pace(*plain);
    }
    EXPECT_GT(acked, 50);
    EXPECT_THAT(refused, StatusIs(absl::StatusCode::kResourceExhausted,
                                  HasSubstr("write-ahead log: no space left on device")));
    if (fallocate) {
      // Refused before it was applied; once space is freed ingest goes on.
      ASSERT_OK_AND_ASSIGN(JobInfo info, durable->GetJobInfo("single"));
      EXPECT_EQ(info.last_step, acked);
      env.SetSpaceLimit(-1);
      ++acked;
      ASSERT_OK(durable->Ingest("single", Input(steps[acked], acked)).status());
      ASSERT_OK(plain->Ingest("single", Input(steps[acked], acked)).status());
    } else {
      // Detected after applying: fail stop.
      env.SetSpaceLimit(-1);
      EXPECT_THAT(durable->Ingest("single", Input(steps[acked + 1], acked + 1)),
                  StatusIs(absl::StatusCode::kUnavailable, HasSubstr("restarts")));
      ASSERT_OK(durable->GetJobInfo("single").status());  // reads still work
    }
    durable.reset();
    env.DropUnsyncedData();  // batch mode: nothing acknowledged is unsynced
    FakeClock reopened_clock(clock.Now());
    ASSERT_OK_AND_ASSIGN(auto reopened, DurableEngine::Open(Options(&reopened_clock), d));
    ASSERT_OK_AND_ASSIGN(JobInfo info, reopened->GetJobInfo("single"));
    EXPECT_EQ(info.last_step, acked);
    EXPECT_EQ(Describe(*reopened, "single"), Describe(*plain, "single"));
  }
}

TEST(DurableRecovery, FailedSyncFailsStopAndRecoversAcknowledgedSteps) {
  const std::string dir = FreshDir("syncfail");
  FaultInjectionEnv env(Env::Default());
  FakeClock clock;
  DurableOptions d;
  d.dir = dir;
  d.env = &env;
  ASSERT_OK_AND_ASSIGN(auto durable, DurableEngine::Open(Options(&clock), d));
  ASSERT_OK(durable->RegisterJob(Spec("single")));
  const auto& steps = TinyMoeAux().steps;
  for (int i = 0; i < 20; ++i) {
    ASSERT_OK(durable->Ingest("single", Input(steps[i], i)).status());
  }
  env.SetFailSync(true);
  EXPECT_THAT(durable->Ingest("single", Input(steps[20], 20)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("write-ahead log: ")));
  env.SetFailSync(false);
  EXPECT_THAT(durable->Ingest("single", Input(steps[21], 21)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("refused")));
  EXPECT_THAT(durable->RegisterJob(Spec("other")),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  durable.reset();
  env.DropUnsyncedData();
  ASSERT_OK_AND_ASSIGN(auto reopened, DurableEngine::Open(Options(&clock), d));
  ASSERT_OK_AND_ASSIGN(JobInfo info, reopened->GetJobInfo("single"));
  EXPECT_EQ(info.last_step, 19);  // every acknowledged step, not the refused one
  ASSERT_OK(reopened->Ingest("single", Input(steps[20], 20)).status());
}

TEST(DurableRecovery, DataDirectoryIsLockedAndNotASymlink) {
  const std::string dir = FreshDir("locked");
  FakeClock clock;
  DurableOptions d;
  d.dir = dir;
  ASSERT_OK_AND_ASSIGN(auto durable, DurableEngine::Open(Options(&clock), d));
  EXPECT_THAT(DurableEngine::Open(Options(&clock), d).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("locked")));
  const std::string link = FreshDir("link_to_locked");
  ASSERT_EQ(::symlink(dir.c_str(), link.c_str()), 0);
  d.dir = link;
  EXPECT_THAT(DurableEngine::Open(Options(&clock), d).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("symbolic link")));
}

TEST(DurableRecovery, SnapshotsWhenTheEngineCanRestore) {
  const std::string dir = FreshDir("snapshots");
  FakeClock clock(absl::FromUnixSeconds(1700000000));
  FakeClock plain_clock(absl::FromUnixSeconds(1700000000));
  DurableOptions d;
  d.dir = dir;
  ASSERT_OK_AND_ASSIGN(auto durable, DurableEngine::Open(Options(&clock), d));
  if (!durable->snapshots_supported()) {
    EXPECT_THAT(durable->Checkpoint().status(),
                StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("replays the whole log")));
    GTEST_SKIP() << "Engine::RestoreJob returns UNIMPLEMENTED: snapshots are off and "
                    "recovery replays the whole log (covered above); snapshot part skipped";
  }
  ASSERT_OK_AND_ASSIGN(auto plain, Engine::Create(Options(&plain_clock)));
  Twin twin(plain.get(), &plain_clock, durable.get(), &clock);
  twin.Both([](Engine& e) { ASSERT_OK(e.RegisterJob(Spec("single"))); });
  const auto& steps = TinyMoeAux().steps;
  for (int round = 0; round < 4; ++round) {
    for (int i = round * 100; i < (round + 1) * 100; ++i) {
      twin.Both([&](Engine& e) { ASSERT_OK(e.Ingest("single", Input(steps[i], i)).status()); });
      twin.Advance(absl::Milliseconds(10));
    }
    ASSERT_OK(durable->Checkpoint().status());
  }
  for (int i = 400; i < 450; ++i) {
    twin.Both([&](Engine& e) { ASSERT_OK(e.Ingest("single", Input(steps[i], i)).status()); });
  }
  durable.reset();
  {
    FakeClock c(clock.Now());
    ASSERT_OK_AND_ASSIGN(auto reopened, DurableEngine::Open(Options(&c), d));
    EXPECT_EQ(reopened->recovery().snapshot_set, 4) << reopened->recovery().Summary();
    EXPECT_EQ(DescribeAll(*reopened), DescribeAll(*plain));
  }
  // Corrupt the newest set: recovery falls back to the previous one.
  (void)!std::system(absl::StrCat("for f in '", dir, "'/snapshots/00000000000000000004/job-*; do "
                           "printf X | dd of=$f bs=1 seek=20 conv=notrunc 2>/dev/null; done")
                  .c_str());
  FakeClock c(clock.Now());
  ASSERT_OK_AND_ASSIGN(auto reopened, DurableEngine::Open(Options(&c), d));
  EXPECT_EQ(reopened->recovery().snapshot_set, 3) << reopened->recovery().Summary();
  EXPECT_THAT(reopened->recovery().Summary(), HasSubstr("snapshot set 4 skipped"));
  EXPECT_EQ(DescribeAll(*reopened), DescribeAll(*plain));
}

}  // namespace
}  // namespace moecast
