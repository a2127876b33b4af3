#include "engine/history/layer_history.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::FloatNear;
using ::testing::IsEmpty;

void AppendCounts(LayerHistory& h, int64_t step, std::vector<double> c,
                  const std::vector<double>* logits = nullptr,
                  uint32_t flags = 0) {
  double total = 0;
  for (double v : c) total += v;
  h.Append(step, total / 2, flags, c.data(), total,
           logits == nullptr ? nullptr : logits->data());
}

TEST(LayerHistoryTest, StoresProportionsAndRecoversCounts) {
  LayerHistory h(4, 8);
  AppendCounts(h, 10, {1, 3, 0, 4});
  ASSERT_EQ(h.size(), 1);
  StepView v = h.Recent(0);
  EXPECT_EQ(v.step, 10);
  EXPECT_EQ(v.assignments, 8);
  EXPECT_EQ(v.tokens, 4);
  EXPECT_THAT(v.proportions, ElementsAre(FloatNear(0.125, 1e-7),
                                         FloatNear(0.375, 1e-7), 0.0f,
                                         FloatNear(0.5, 1e-7)));
  EXPECT_NEAR(v.count(1), 3.0, 1e-6);
  EXPECT_THAT(v.logits, IsEmpty());
  EXPECT_EQ(v.flags & kStepHasRouter, 0u);
}

TEST(LayerHistoryTest, RingWrapsAndTotalsKeepEverything) {
  LayerHistory h(2, 3);
  for (int t = 0; t < 7; ++t) AppendCounts(h, t, {double(t), 1});
  EXPECT_EQ(h.size(), 3);
  EXPECT_EQ(h.capacity(), 3);
  EXPECT_EQ(h.Recent(0).step, 6);
  EXPECT_EQ(h.Recent(1).step, 5);
  EXPECT_EQ(h.Recent(2).step, 4);
  const HistoryTotals& t = h.totals();
  EXPECT_EQ(t.steps, 7);
  EXPECT_DOUBLE_EQ(t.counts[0], 0 + 1 + 2 + 3 + 4 + 5 + 6);
  EXPECT_DOUBLE_EQ(t.counts[1], 7);
  EXPECT_DOUBLE_EQ(t.assignments, 21 + 7);
}

TEST(LayerHistoryTest, WindowMeanIsTokenWeighted) {
  LayerHistory h(2, 10);
  AppendCounts(h, 0, {100, 0});  // heavy step: p = (1, 0)
  AppendCounts(h, 1, {0, 1});    // light step: p = (0, 1)
  std::vector<double> mean(2);
  EXPECT_EQ(h.WindowMean(2, absl::MakeSpan(mean)), 2);
  // Token-weighted: 100 / 101, not the plain mean 0.5.
  EXPECT_THAT(mean, ElementsAre(DoubleNear(100.0 / 101, 1e-6),
                                DoubleNear(1.0 / 101, 1e-6)));
  EXPECT_EQ(h.WindowMean(1, absl::MakeSpan(mean)), 1);
  EXPECT_THAT(mean, ElementsAre(0.0, DoubleNear(1.0, 1e-7)));
  // Windows are clamped to what is stored.
  EXPECT_EQ(h.WindowMean(50, absl::MakeSpan(mean)), 2);
}

TEST(LayerHistoryTest, StepWithoutAssignmentsIsFlaggedAndWeightless) {
  LayerHistory h(3, 4);
  AppendCounts(h, 0, {0, 0, 0});
  StepView v = h.Recent(0);
  EXPECT_NE(v.flags & kStepNoAssignments, 0u);
  EXPECT_THAT(v.proportions, ElementsAre(0.0f, 0.0f, 0.0f));
  AppendCounts(h, 1, {1, 1, 2});
  std::vector<double> mean(3);
  h.WindowMean(2, absl::MakeSpan(mean));
  EXPECT_THAT(mean, ElementsAre(DoubleNear(0.25, 1e-7), DoubleNear(0.25, 1e-7),
                                DoubleNear(0.5, 1e-7)));
}

TEST(LayerHistoryTest, LogitsArePerStep) {
  LayerHistory h(2, 4);
  std::vector<double> z = {0.5, -0.5};
  AppendCounts(h, 0, {1, 1}, &z);
  AppendCounts(h, 1, {1, 1});  // no logits this step
  EXPECT_THAT(h.Recent(0).logits, IsEmpty());
  EXPECT_EQ(h.Recent(0).flags & kStepHasRouter, 0u);
  EXPECT_THAT(h.Recent(1).logits, ElementsAre(0.5f, -0.5f));
  EXPECT_NE(h.Recent(1).flags & kStepHasRouter, 0u);
}

TEST(LayerHistoryTest, IncompleteStepsAreCounted) {
  LayerHistory h(2, 4);
  AppendCounts(h, 0, {1, 1}, nullptr, kStepIncomplete);
  AppendCounts(h, 1, {1, 1});
  EXPECT_EQ(h.totals().incomplete_steps, 1);
  EXPECT_NE(h.Recent(1).flags & kStepIncomplete, 0u);
}

TEST(LayerHistoryTest, MemoryGrowsWithLogits) {
  LayerHistory h(64, 100);
  const int64_t before = h.MemoryBytes();
  EXPECT_GE(before, 64 * 100 * 4);
  std::vector<double> c(64, 1.0), z(64, 0.0);
  h.Append(0, 32, 0, c.data(), 64, z.data());
  EXPECT_GE(h.MemoryBytes() - before, 64 * 100 * 4);
}

std::string Saved(const LayerHistory& h) {
  internal::SnapshotWriter w;
  h.SaveTo(w);
  return w.Release();
}

TEST(LayerHistoryTest, ReservedLogitRingChangesNothingUntilLogitsArrive) {
  LayerHistory plain(3, 4), reserved(3, 4);
  reserved.ReserveLogits();
  EXPECT_GE(reserved.MemoryBytes() - plain.MemoryBytes(), 3 * 4 * 4);
  for (int t = 0; t < 6; ++t) {
    AppendCounts(plain, t, {1, 2, 3});
    AppendCounts(reserved, t, {1, 2, 3});
    EXPECT_THAT(reserved.Recent(0).logits, IsEmpty());
  }
  // Same snapshot bytes: "has logits" means a step carried them.
  EXPECT_EQ(Saved(plain), Saved(reserved));
  std::vector<double> z = {0.25, -0.5, 1};
  AppendCounts(plain, 6, {1, 1, 1}, &z);
  AppendCounts(reserved, 6, {1, 1, 1}, &z);
  EXPECT_THAT(reserved.Recent(0).logits, ElementsAre(0.25f, -0.5f, 1.0f));
  EXPECT_EQ(Saved(plain), Saved(reserved));
  // And a reserved history restores either snapshot.
  for (const LayerHistory* from : {&plain, &reserved}) {
    const std::string bytes = Saved(*from);
    internal::SnapshotReader in(bytes, "history");
    LayerHistory restored(3, 4);
    restored.ReserveLogits();
    restored.LoadFrom(in);
    ASSERT_TRUE(in.ok()) << in.status();
    EXPECT_EQ(Saved(restored), bytes);
  }
}

}  // namespace
}  // namespace moecast
