// A data directory written by moecastd as first released (snapshot format
// version 1, write-ahead log: tests/testdata/compat/README.md) recovers under
// today's engine with its background analysis: the snapshot set is restored,
// the log tail after it is replayed and analysed, and the job answers as the
// old server did before it was killed.
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/durability/durable_engine.h"
#include "engine/testing/status_matchers.h"
#include "engine/testing/temp_files.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "integrations/grpc/daemon_config.h"

namespace moecast {
namespace {

using durability::DurableEngine;
using durability::DurableOptions;

TEST(CompatDataDir, Version1DataDirectoryRecoversAndAnswers) {
  // A writable copy: recovery cuts torn tails and may write new segments.
  const std::string dir = absl::StrCat(::testing::TempDir(), "/datadir_v1");
  ASSERT_EQ(std::system(absl::StrCat("rm -rf '", dir, "' && cp -rL "
                                     "tests/testdata/compat/datadir_v1 '", dir,
                                     "' && chmod -R u+w '", dir, "'")
                            .c_str()),
            0);
  // moecastd's default engine options, as the fixture was written with.
  ASSERT_OK_AND_ASSIGN(grpc_api::DaemonConfig config, grpc_api::ParseDaemonFlags({}));
  DurableOptions d;
  d.dir = dir;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DurableEngine> engine,
                       DurableEngine::Open(config.engine, d));
  EXPECT_EQ(engine->recovery().snapshot_set, 1) << engine->recovery().Summary();
  EXPECT_EQ(engine->ListJobs(), std::vector<std::string>{"compat-v1"});

  ASSERT_OK_AND_ASSIGN(JobInfo info, engine->GetJobInfo("compat-v1"));
  EXPECT_EQ(info.committed_steps, 300);
  EXPECT_EQ(info.first_step, 0);
  EXPECT_EQ(info.last_step, 299);
  EXPECT_DOUBLE_EQ(info.tokens, 76800);
  EXPECT_EQ(info.spec.num_layers, 2);
  EXPECT_EQ(info.spec.num_experts, 8);

  // Every step analysed, none degraded (replay keeps within the bounds).
  ASSERT_OK_AND_ASSIGN(AnalysisProgress p, engine->AwaitAnalysis("compat-v1", Freshness()));
  EXPECT_EQ(p.as_of_step, 299);
  EXPECT_EQ(p.lag_steps, 0);
  EXPECT_EQ(p.degraded_steps(), 0);

  // Events 1-2 came from the snapshot, 3-4 from replaying the log tail
  // (expected/final_events.jsonl).
  ASSERT_OK_AND_ASSIGN(std::vector<Event> events, engine->ReadEvents("compat-v1", 0, 100));
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(events[0].step, 199);
  EXPECT_EQ(events[0].layer, 1);
  EXPECT_EQ(events[1].step, 199);
  EXPECT_EQ(events[1].layer, -1);
  EXPECT_EQ(events[2].step, 247);
  EXPECT_EQ(events[2].layer, 0);
  EXPECT_EQ(events[2].kind, EventKind::kStateChange);
  EXPECT_EQ(events[3].step, 299);
  EXPECT_EQ(events[3].kind, EventKind::kExpertDead);
  EXPECT_EQ(events[3].layer, 1);
  EXPECT_EQ(events[3].value, 7);

  // The window closing at step 299 was fitted on replay (expected/
  // final_health.json: gamma_f -0.5609 and -0.8761; the history ring keeps
  // proportions as float, so not bit for bit).
  ASSERT_OK_AND_ASSIGN(HealthReport h, engine->Health("compat-v1"));
  ASSERT_EQ(h.layers.size(), 2u);
  EXPECT_EQ(h.layers[0].step, 299);
  ASSERT_TRUE(h.layers[0].gamma.has_value());
  ASSERT_TRUE(h.layers[1].gamma.has_value());
  EXPECT_NEAR(h.layers[0].gamma->gamma_f, -0.5609180448844096, 1e-3);
  EXPECT_NEAR(h.layers[1].gamma->gamma_f, -0.8761039368995232, 1e-3);
  EXPECT_EQ(h.layers[1].dead_experts, std::vector<int>{7});

  ASSERT_OK_AND_ASSIGN(ForecastResult f, engine->Forecast("compat-v1", ForecastRequest()));
  EXPECT_EQ(f.as_of_step, 299);
  ASSERT_EQ(f.layers.size(), 2u);
  EXPECT_EQ(f.layers[0].horizons.size(), 4u);  // 1, 10, 100, 1000

  // And it goes on: step 300 commits and is analysed.
  StepInput in;
  in.step = 300;
  std::vector<double> counts(16, 32.0);
  in.counts = counts;
  ASSERT_OK(engine->Ingest("compat-v1", in).status());
  ASSERT_OK_AND_ASSIGN(p, engine->AwaitAnalysis("compat-v1", Freshness()));
  EXPECT_EQ(p.as_of_step, 300);
}

}  // namespace
}  // namespace moecast
