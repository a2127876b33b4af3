// The analysis stage: no analysis on an Ingest caller's thread, identical
// answers inline and in the background with 1, 2 and 8 threads, the
// overload policy with a deliberately slowed analysis, stale answers and
// deadlines, snapshots under background analysis, and shutdown while busy.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "engine/engine.h"
#include "engine/testing/status_matchers.h"
#include "engine/testing/bundled_trace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

using Trace = ::moecast::testing::BundledTrace;

// The first 1,200 steps of the bundled tiny_moe_aux training trace, with
// its router-logit means.
const Trace& TinyMoeAux() {
  static const Trace* trace = [] {
    absl::StatusOr<Trace> t = ::moecast::testing::ReadBundledTrace("tiny_moe_aux", 1200);
    EXPECT_OK(t.status());
    return new Trace(t.ok() ? *std::move(t) : Trace());
  }();
  return *trace;
}

JobSpec Spec(const std::string& id) {
  const Trace& t = TinyMoeAux();
  JobSpec spec;
  spec.job_id = id;
  spec.num_layers = t.layers;
  spec.num_experts = t.experts;
  spec.top_k = 2;
  spec.hyper.aux_loss_coef = 0.01;
  return spec;
}

StepInput Input(const TraceStep& s, int64_t step) {
  StepInput in;
  in.step = step;
  in.counts = s.counts;
  in.router_logits = s.router_z;
  return in;
}

EngineOptions Options(AnalysisOptions::Mode mode, int threads) {
  EngineOptions o;
  o.health.window_steps = 50;  // many windows: many fits on the periodic threads
  o.health.dead.window_steps = 50;
  o.health.gamma.bootstrap_replicates = 10;
  o.analysis.mode = mode;
  o.analysis.step_threads = threads;
  o.analysis.periodic_threads = threads;
  return o;
}

// Everything a job answers, as one comparable string of exact bits.
std::string Answers(Engine& engine, const std::string& id) {
  std::string out;
  auto bits = [&out](double v) {
    char b[sizeof(double)];
    std::memcpy(b, &v, sizeof(v));
    out.append(b, sizeof(b));
  };
  ForecastRequest fr;
  fr.path_steps = 20;
  absl::StatusOr<ForecastResult> f = engine.Forecast(id, fr);
  EXPECT_OK(f.status());
  if (f.ok()) {
    absl::StrAppend(&out, "as_of ", f->as_of_step, " lag ", f->analysis.lag_steps, "\n");
    for (const LayerForecast& lf : f->layers) {
      for (const HorizonForecast& hf : lf.horizons) {
        absl::StrAppend(&out, hf.horizon, " ", hf.predictor, "\n");
        for (double v : hf.mean) bits(v);
        for (double v : hf.lower) bits(v);
        for (double v : hf.upper) bits(v);
      }
      for (double v : lf.path) bits(v);
    }
  }
  absl::StatusOr<StateReport> s = engine.GetState(id);
  EXPECT_OK(s.status());
  if (s.ok()) {
    absl::StrAppend(&out, "state ", static_cast<int>(s->job_state), "\n");
    for (const StateSignals& l : s->layers) {
      absl::StrAppend(&out, static_cast<int>(l.state), " ");
      if (l.drift_ratio) bits(*l.drift_ratio);
    }
  }
  absl::StatusOr<HealthReport> h = engine.Health(id);
  EXPECT_OK(h.status());
  if (h.ok()) {
    for (const HealthWindow& w : h->layers) {
      absl::StrAppend(&out, "window ", w.step, " ", w.gamma_status, "\n");
      if (w.gamma) {
        bits(w.gamma->gamma_f);
        bits(w.gamma->ci_low_f);
        bits(w.gamma->ci_high_f);
      }
      for (int e : w.dead_experts) absl::StrAppend(&out, e, ",");
    }
  }
  absl::StatusOr<std::vector<Event>> events = engine.ReadEvents(id, 0, 100000);
  EXPECT_OK(events.status());
  if (events.ok()) {
    for (const Event& e : *events) {
      absl::StrAppend(&out, "event ", e.seq, " ", e.step, " ", static_cast<int>(e.kind),
                      " ", e.layer, " ", e.from, " ", e.to, " ", e.detail, "\n");
      bits(e.value);
    }
  }
  absl::StatusOr<std::vector<ForecastScore>> scores = engine.ForecastScores(id);
  EXPECT_OK(scores.status());
  if (scores.ok()) {
    for (const ForecastScore& sc : *scores) {
      absl::StrAppend(&out, sc.predictor, " ", sc.horizon, " ", sc.scored, "\n");
      bits(sc.recent_l1);
      bits(sc.mean_l1);
    }
  }
  return out;
}

struct RunResult {
  std::string answers;
  std::string snapshot;
  JobInfo info;
};

// Feeds the trace to a fresh engine; a producer that waits for analysis
// every 64 steps never overloads it (lag < shed_scoring_lag_steps = 512).
RunResult Feed(const EngineOptions& options) {
  RunResult r;
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options);
  EXPECT_OK(engine.status());
  if (!engine.ok()) return r;
  const Trace& t = TinyMoeAux();
  EXPECT_OK((*engine)->RegisterJob(Spec("j")));
  for (size_t i = 0; i < t.steps.size(); ++i) {
    EXPECT_OK((*engine)->Ingest("j", Input(t.steps[i], static_cast<int64_t>(i))).status());
    if (i % 64 == 63) EXPECT_OK((*engine)->AwaitAnalysis("j", Freshness()).status());
    // Queries in the middle of the stream, as a scheduler would ask.
    if (i == 700) r.answers += Answers(**engine, "j");
  }
  r.answers += Answers(**engine, "j");
  absl::StatusOr<std::string> snap = (*engine)->SnapshotJob("j");
  EXPECT_OK(snap.status());
  if (snap.ok()) r.snapshot = *snap;
  r.info = *(*engine)->GetJobInfo("j");
  return r;
}

TEST(AnalysisTest, InlineAndBackgroundWith1_2_8ThreadsGiveIdenticalAnswers) {
  ASSERT_GE(TinyMoeAux().steps.size(), 1200u);
  const RunResult inline_run = Feed(Options(AnalysisOptions::Mode::kInline, 0));
  ASSERT_FALSE(inline_run.answers.empty());
  EXPECT_EQ(inline_run.info.analysed_steps, 1200);
  EXPECT_EQ(inline_run.info.scoring_shed_steps, 0);
  EXPECT_EQ(inline_run.info.coalesced_steps, 0);
  for (int threads : {1, 2, 8}) {
    SCOPED_TRACE(absl::StrCat(threads, " analysis threads"));
    const RunResult bg = Feed(Options(AnalysisOptions::Mode::kBackground, threads));
    EXPECT_EQ(bg.info.analysed_steps, 1200);
    EXPECT_EQ(bg.info.analysis_lag_steps, 0);
    EXPECT_EQ(bg.info.scoring_shed_steps, 0);
    EXPECT_EQ(bg.info.coalesced_steps, 0);
    EXPECT_TRUE(bg.answers == inline_run.answers) << "answers differ";
    EXPECT_TRUE(bg.snapshot == inline_run.snapshot) << "snapshots differ";
  }
}

// Records the threads that analysis work runs on.
struct ThreadLog {
  std::mutex mu;
  std::set<std::thread::id> step_threads, fit_threads, refit_threads;
  std::atomic<int> steps{0}, fits{0}, refits{0};
  std::atomic<int> sleep_us{0};

  std::function<void(const AnalysisProbe&)> Probe() {
    return [this](const AnalysisProbe& p) {
      using Kind = AnalysisProbe::Kind;
      {
        std::lock_guard<std::mutex> lock(mu);
        (p.kind == Kind::kStep        ? step_threads
         : p.kind == Kind::kWindowFit ? fit_threads
                                      : refit_threads)
            .insert(std::this_thread::get_id());
      }
      (p.kind == Kind::kStep        ? steps
       : p.kind == Kind::kWindowFit ? fits
                                    : refits)
          .fetch_add(1);
      if (int us = sleep_us.load(); us > 0 && p.kind == AnalysisProbe::Kind::kStep) {
        std::this_thread::sleep_for(std::chrono::microseconds(us));
      }
    };
  }
};

TEST(AnalysisTest, NothingIsAnalysedOnTheIngestCallersThread) {
  const Trace& t = TinyMoeAux();
  for (auto mode : {AnalysisOptions::Mode::kBackground, AnalysisOptions::Mode::kInline}) {
    const bool background = mode == AnalysisOptions::Mode::kBackground;
    SCOPED_TRACE(background ? "background" : "inline");
    ThreadLog log;
    EngineOptions o = Options(mode, 2);
    o.analysis.probe = log.Probe();
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> engine, Engine::Create(o));
    ASSERT_OK(engine->RegisterJob(Spec("j")));
    for (int i = 0; i < 300; ++i) {
      ASSERT_OK(engine->Ingest("j", Input(t.steps[i], i)).status());
    }
    ASSERT_OK(engine->AwaitAnalysis("j", Freshness()).status());
    // 300 steps, 6 windows of 50 steps on each of the 4 layers; holt's
    // first fit (after 100 steps) on each layer.
    EXPECT_EQ(log.steps.load(), 300);
    EXPECT_EQ(log.fits.load(), 6 * t.layers);
    EXPECT_EQ(log.refits.load(), t.layers);
    std::lock_guard<std::mutex> lock(log.mu);
    const std::thread::id me = std::this_thread::get_id();
    if (background) {
      EXPECT_EQ(log.step_threads.count(me), 0u) << "a step was analysed by Ingest";
      EXPECT_EQ(log.fit_threads.count(me), 0u) << "a window was fitted by Ingest";
      EXPECT_EQ(log.refit_threads.count(me), 0u) << "a predictor was refitted by Ingest";
      // Fits and refits run on the periodic threads, not on the step workers.
      for (const auto* threads : {&log.fit_threads, &log.refit_threads}) {
        for (const std::thread::id& id : *threads) {
          EXPECT_EQ(log.step_threads.count(id), 0u);
        }
      }
    } else {
      // The control: inline analysis is seen on this thread.
      EXPECT_EQ(log.step_threads, std::set<std::thread::id>{me});
      EXPECT_EQ(log.fit_threads, std::set<std::thread::id>{me});
      EXPECT_EQ(log.refit_threads, std::set<std::thread::id>{me});
    }
  }
}

TEST(AnalysisTest, OverloadShedsScoringThenCoalescesAndCountsEveryStep) {
  const Trace& t = TinyMoeAux();
  ThreadLog log;
  log.sleep_us = 3000;  // a deliberately slow analysis: 3 ms a step
  EngineOptions o = Options(AnalysisOptions::Mode::kBackground, 1);
  o.history_capacity_steps = 64;  // shed past a lag of 32, coalesce past 63
  o.analysis.probe = log.Probe();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> engine, Engine::Create(o));
  ASSERT_OK(engine->RegisterJob(Spec("j")));
  const int n = 400;
  double tokens = 0;
  for (int i = 0; i < n; ++i) {
    ASSERT_OK_AND_ASSIGN(IngestResult r, engine->Ingest("j", Input(t.steps[i], i)));
    ASSERT_EQ(r.outcome, IngestOutcome::kCommitted);
    tokens += *t.steps[i].tokens;
  }
  // The producer ran ahead: it was never blocked, and analysis lags.
  ASSERT_OK_AND_ASSIGN(JobInfo during, engine->GetJobInfo("j"));
  EXPECT_EQ(during.committed_steps, n);
  EXPECT_GT(during.analysis_lag_steps, 0);
  EXPECT_LE(during.analysis_lag_steps, n);

  ForecastRequest fr;
  ASSERT_OK_AND_ASSIGN(ForecastResult f, engine->Forecast("j", fr));
  EXPECT_EQ(f.as_of_step, n - 1);
  EXPECT_EQ(f.analysis.lag_steps, 0);
  ASSERT_OK_AND_ASSIGN(JobInfo info, engine->GetJobInfo("j"));
  EXPECT_EQ(info.analysed_steps, n);
  EXPECT_EQ(info.last_analysed_step, n - 1);
  EXPECT_GT(info.coalesced_steps, 0) << "a 3 ms analysis cannot keep up";
  EXPECT_GT(info.scoring_shed_steps, 0);
  EXPECT_EQ(f.analysis.coalesced_steps, info.coalesced_steps);
  EXPECT_EQ(f.analysis.scoring_shed_steps, info.scoring_shed_steps);
  EXPECT_EQ(f.analysis.degraded_steps(),
            info.coalesced_steps + info.scoring_shed_steps);
  // Steps analysed one by one, plus coalesced blocks, cover every step.
  EXPECT_LT(log.steps.load(), n);
  EXPECT_GE(log.steps.load() + info.coalesced_steps, n);
  // Nothing was lost: the history holds every step's tokens.
  ASSERT_OK(engine->VisitHistory("j", 0, [&](const LayerHistory& h) {
    EXPECT_EQ(h.totals().steps, n);
    EXPECT_DOUBLE_EQ(h.totals().tokens, tokens);
  }));
  for (const LayerForecast& lf : f.layers) {
    double sum = 0;
    for (double v : lf.horizons[0].mean) sum += v;
    EXPECT_NEAR(sum, 1.0, 1e-9);
  }
  // A snapshot carries the degraded-step counts: the restored analysis state
  // includes those steps' effect.
  ASSERT_OK_AND_ASSIGN(std::string snap, engine->SnapshotJob("j"));
  EngineOptions ro = Options(AnalysisOptions::Mode::kInline, 1);
  ro.history_capacity_steps = o.history_capacity_steps;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> restored, Engine::Create(ro));
  ASSERT_OK(restored->RestoreJob(snap));
  ASSERT_OK_AND_ASSIGN(JobInfo again, restored->GetJobInfo("j"));
  EXPECT_EQ(again.coalesced_steps, info.coalesced_steps);
  EXPECT_EQ(again.scoring_shed_steps, info.scoring_shed_steps);
}

TEST(AnalysisTest, StaleAnswersDoNotWaitAndDeadlinesNameTheStepReached) {
  const Trace& t = TinyMoeAux();
  ThreadLog log;
  log.sleep_us = 20000;  // 20 ms a step
  EngineOptions o = Options(AnalysisOptions::Mode::kBackground, 1);
  o.analysis.probe = log.Probe();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> engine, Engine::Create(o));
  ASSERT_OK(engine->RegisterJob(Spec("j")));
  for (int i = 0; i < 50; ++i) {
    ASSERT_OK(engine->Ingest("j", Input(t.steps[i], i)).status());
  }
  ForecastRequest fr;
  fr.freshness.deadline = absl::Now() + absl::Milliseconds(1);
  EXPECT_THAT(engine->Forecast("j", fr),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       HasSubstr("analysis reached step")));
  Freshness soon;
  soon.deadline = absl::Now() + absl::Milliseconds(1);
  EXPECT_THAT(engine->GetState("j", soon),
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("of the 50 steps")));
  // A stale answer comes at once and says how far behind it is.
  Freshness stale;
  stale.allow_stale = true;
  absl::StatusOr<StateReport> s = engine->GetState("j", stale);
  if (s.ok()) {
    EXPECT_LT(s->as_of_step, 49);
    EXPECT_EQ(s->analysis.committed_step, 49);
    EXPECT_EQ(s->analysis.lag_steps, 49 - s->as_of_step);
  } else {
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition,
                            HasSubstr("none analysed yet")));
  }
  // The default waits for everything committed before the call.
  log.sleep_us = 0;
  ASSERT_OK_AND_ASSIGN(StateReport fresh, engine->GetState("j"));
  EXPECT_EQ(fresh.as_of_step, 49);
  EXPECT_EQ(fresh.analysis.lag_steps, 0);
}

// A predictor refit runs on a periodic thread while its step is open; a
// stale answer in the meantime waits for it (it would otherwise read a
// predictor being refitted) and then covers the refit's step.
TEST(AnalysisTest, StaleAnswersWaitForRefitsInFlight) {
  const Trace& t = TinyMoeAux();
  std::atomic<int64_t> refit_step{-1};
  std::atomic<bool> release{false};
  EngineOptions o = Options(AnalysisOptions::Mode::kBackground, 1);
  o.analysis.probe = [&](const AnalysisProbe& p) {
    if (p.kind != AnalysisProbe::Kind::kRefit) return;
    int64_t expected = -1;
    if (refit_step.compare_exchange_strong(expected, p.step)) {
      // The first refit holds its step open until the test has asked.
      while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  };
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> engine, Engine::Create(o));
  ASSERT_OK(engine->RegisterJob(Spec("j")));
  for (int i = 0; i < 150; ++i) {
    ASSERT_OK(engine->Ingest("j", Input(t.steps[i], i)).status());
  }
  while (refit_step.load() < 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // holt's first fit comes after 100 observed steps.
  EXPECT_EQ(refit_step.load(), 99);
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    release = true;
  });
  ForecastRequest fr;
  fr.freshness.allow_stale = true;
  absl::StatusOr<ForecastResult> f = engine->Forecast("j", fr);
  const bool released = release.load();
  releaser.join();
  ASSERT_OK(f.status());
  EXPECT_TRUE(released) << "the answer did not wait for the refit";
  EXPECT_GE(f->as_of_step, refit_step.load());
  ASSERT_OK(engine->AwaitAnalysis("j", Freshness()).status());
}

TEST(AnalysisTest, SnapshotUnderBackgroundAnalysisRestoresAndContinuesIdentically) {
  const Trace& t = TinyMoeAux();
  EngineOptions bg = Options(AnalysisOptions::Mode::kBackground, 2);
  EngineOptions in = Options(AnalysisOptions::Mode::kInline, 0);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> a, Engine::Create(bg));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> ref, Engine::Create(in));
  ASSERT_OK(a->RegisterJob(Spec("j")));
  ASSERT_OK(ref->RegisterJob(Spec("j")));
  for (int i = 0; i < 400; ++i) {
    ASSERT_OK(a->Ingest("j", Input(t.steps[i], i)).status());
    ASSERT_OK(ref->Ingest("j", Input(t.steps[i], i)).status());
    if (i % 64 == 63) ASSERT_OK(a->AwaitAnalysis("j", Freshness()).status());
  }
  // Taken without waiting first: SnapshotJob waits for analysis itself.
  ASSERT_OK_AND_ASSIGN(std::string snap, a->SnapshotJob("j"));
  ASSERT_OK_AND_ASSIGN(std::string ref_snap, ref->SnapshotJob("j"));
  EXPECT_TRUE(snap == ref_snap) << "snapshot differs from inline analysis";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> b, Engine::Create(bg));
  ASSERT_OK(b->RestoreJob(snap));
  for (int i = 400; i < 700; ++i) {
    ASSERT_OK(b->Ingest("j", Input(t.steps[i], i)).status());
    ASSERT_OK(ref->Ingest("j", Input(t.steps[i], i)).status());
    if (i % 64 == 63) ASSERT_OK(b->AwaitAnalysis("j", Freshness()).status());
  }
  EXPECT_TRUE(Answers(*b, "j") == Answers(*ref, "j"));
}

TEST(AnalysisTest, DeletingJobsAndDestroyingTheEngineWhileAnalysing) {
  const Trace& t = TinyMoeAux();
  ThreadLog log;
  log.sleep_us = 500;
  EngineOptions o = Options(AnalysisOptions::Mode::kBackground, 2);
  o.analysis.probe = log.Probe();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> engine, Engine::Create(o));
  for (const char* id : {"a", "b", "c"}) ASSERT_OK(engine->RegisterJob(Spec(id)));
  // Producers on three threads; one job is deleted mid-stream.
  std::vector<std::thread> producers;
  for (const char* id : {"a", "b", "c"}) {
    producers.emplace_back([&engine, &t, id] {
      for (int i = 0; i < 200; ++i) {
        absl::StatusOr<IngestResult> r = engine->Ingest(id, Input(t.steps[i], i));
        if (!r.ok()) {
          EXPECT_THAT(r, StatusIs(absl::StatusCode::kNotFound, ::testing::_));
          return;
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_OK(engine->DeleteJob("b"));
  for (std::thread& p : producers) p.join();
  ASSERT_OK_AND_ASSIGN(JobInfo a, engine->GetJobInfo("a"));
  EXPECT_EQ(a.committed_steps, 200);
  // Destroyed with analysis still queued: threads stop, nothing leaks or
  // crashes (ASan/TSan run this test).
  engine.reset();
}

TEST(AnalysisTest, MultiSourceStepsCommittedByPollAreAnalysed) {
  const Trace& t = TinyMoeAux();
  EngineOptions o = Options(AnalysisOptions::Mode::kBackground, 1);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> engine, Engine::Create(o));
  JobSpec spec = Spec("m");
  spec.num_sources = 2;
  ASSERT_OK(engine->RegisterJob(spec));
  for (int i = 0; i < 20; ++i) {
    StepInput in = Input(t.steps[i], i);
    in.source = 0;
    ASSERT_OK(engine->Ingest("m", in).status());
  }
  ASSERT_OK(engine->FlushPending("m").status());
  ASSERT_OK_AND_ASSIGN(AnalysisProgress p, engine->AwaitAnalysis("m", Freshness()));
  EXPECT_EQ(p.as_of_step, 19);
  EXPECT_EQ(p.lag_steps, 0);
}

TEST(AnalysisTest, JobsWithoutAnalysisAreNeverDegraded) {
  const Trace& t = TinyMoeAux();
  ThreadLog log;
  log.sleep_us = 2000;  // slow analysis threads; nothing to analyse anyway
  EngineOptions o = Options(AnalysisOptions::Mode::kBackground, 1);
  o.history_capacity_steps = 8;  // would coalesce past a lag of 7
  o.analysis.probe = log.Probe();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Engine> engine, Engine::Create(o));
  JobSpec spec = Spec("h");
  spec.forecasting = false;
  spec.health = false;
  ASSERT_OK(engine->RegisterJob(spec));
  for (int i = 0; i < 300; ++i) {
    ASSERT_OK(engine->Ingest("h", Input(t.steps[i], i)).status());
  }
  ASSERT_OK_AND_ASSIGN(AnalysisProgress p, engine->AwaitAnalysis("h", Freshness()));
  EXPECT_EQ(p.as_of_step, 299);
  EXPECT_EQ(p.degraded_steps(), 0);
  ASSERT_OK_AND_ASSIGN(JobInfo info, engine->GetJobInfo("h"));
  EXPECT_EQ(info.analysed_steps, 300);
  EXPECT_EQ(info.coalesced_steps, 0);
  EXPECT_EQ(info.scoring_shed_steps, 0);
  // Pending steps are accounted for in batches, not copied one by one.
  EXPECT_LT(log.steps.load(), 300);
}

TEST(AnalysisTest, OptionsAreValidated) {
  EngineOptions o;
  o.history_capacity_steps = 64;
  o.analysis.coalesce_lag_steps = 64;
  EXPECT_THAT(Engine::Create(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("coalesce_lag_steps = 64")));
  o = EngineOptions();
  o.analysis.thread_niceness = 20;
  EXPECT_THAT(Engine::Create(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("thread_niceness = 20")));
  o = EngineOptions();
  o.analysis.step_threads = -1;
  EXPECT_THAT(Engine::Create(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("step_threads = -1")));
  o = EngineOptions();
  o.analysis.batch_steps = 0;
  EXPECT_THAT(Engine::Create(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("batch_steps = 0")));
  o = EngineOptions();
  o.analysis.shed_scoring_lag_steps = -3;
  EXPECT_THAT(Engine::Create(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("shed_scoring_lag_steps = -3")));
}

}  // namespace
}  // namespace moecast
