// Every INVALID_ARGUMENT of PlanPlacement, one case each, by code and the
// phrase that names the problem.
#include <cmath>
#include <limits>
#include <vector>

#include "engine/placement/placement.h"
#include "engine/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moecast {
namespace {

using ::moecast::testing::StatusIs;
using ::testing::HasSubstr;

// 2 layers, 12 experts, 16 slots, 4 groups, 2 nodes, 8 GPUs (the EPLB
// README example).
PlacementProblem Readme() {
  PlacementProblem p;
  p.num_layers = 2;
  p.num_experts = 12;
  p.num_slots = 16;
  p.num_groups = 4;
  p.num_nodes = 2;
  p.num_gpus = 8;
  p.loads = {90, 132, 40,  61,  104, 165, 39,  4,   73,  56,  183, 86,
             20, 107, 104, 64,  19,  197, 187, 157, 172, 86,  16,  27};
  return p;
}

absl::Status Plan(const PlacementProblem& p,
                  PlacementMode mode = PlacementMode::kDefault) {
  PlacementOptions o;
  o.mode = mode;
  return PlanPlacement(p, o).status();
}

void ExpectInvalid(const PlacementProblem& p, const std::string& phrase,
                   PlacementMode mode = PlacementMode::kDefault) {
  EXPECT_THAT(Plan(p, mode),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(phrase)));
}

TEST(PlacementValidation, ReadmeProblemIsValidInBothModes) {
  EXPECT_OK(Plan(Readme(), PlacementMode::kEplb));
  EXPECT_OK(Plan(Readme(), PlacementMode::kDefault));
}

TEST(PlacementValidation, NonPositiveSizes) {
  PlacementProblem p = Readme();
  p.num_layers = 0;
  ExpectInvalid(p, "num_layers must be positive, got 0");
  p = Readme();
  p.num_gpus = -8;
  ExpectInvalid(p, "num_gpus must be positive, got -8");
}

TEST(PlacementValidation, LoadsOfTheWrongSize) {
  PlacementProblem p = Readme();
  p.loads.pop_back();
  ExpectInvalid(p,
                "loads has 23 values, expected num_layers * num_experts = 2 * "
                "12 = 24");
}

TEST(PlacementValidation, NegativeLoad) {
  PlacementProblem p = Readme();
  p.loads[12 + 3] = -1;
  ExpectInvalid(p, "loads[layer 1][expert 3] = -1 is negative");
}

TEST(PlacementValidation, NonFiniteLoad) {
  PlacementProblem p = Readme();
  p.loads[5] = std::numeric_limits<double>::quiet_NaN();
  ExpectInvalid(p, "loads[layer 0][expert 5] = nan is not finite");
  p.loads[5] = std::numeric_limits<double>::infinity();
  ExpectInvalid(p, "is not finite");
}

TEST(PlacementValidation, SlotsNotAMultipleOfGpus) {
  PlacementProblem p = Readme();
  p.num_slots = 18;
  ExpectInvalid(p, "num_slots (18) is not a multiple of num_gpus (8)");
}

TEST(PlacementValidation, FewerSlotsThanExperts) {
  PlacementProblem p = Readme();
  p.num_slots = 8;
  ExpectInvalid(p, "num_slots (8) is less than num_experts (12)");
}

TEST(PlacementValidation, GpusNotAMultipleOfNodes) {
  PlacementProblem p = Readme();
  p.num_nodes = 3;
  ExpectInvalid(p, "num_gpus (8) is not a multiple of num_nodes (3)");
}

TEST(PlacementValidation, GroupsNotDividingExperts) {
  PlacementProblem p = Readme();
  p.num_groups = 5;
  ExpectInvalid(p, "num_groups (5) does not divide num_experts (12)");
}

TEST(PlacementValidation, ExcludedGpuOutOfRange) {
  PlacementProblem p = Readme();
  p.excluded_gpus = {8};
  ExpectInvalid(p, "excluded_gpus: GPU 8 is out of range [0, 8)");
  p.excluded_gpus = {-1};
  ExpectInvalid(p, "excluded_gpus: GPU -1 is out of range");
}

TEST(PlacementValidation, ExcludedGpuListedTwice) {
  PlacementProblem p = Readme();
  p.excluded_gpus = {3, 5, 3};
  ExpectInvalid(p, "excluded_gpus: GPU 3 is listed twice");
}

TEST(PlacementValidation, ExcludedGpusRejectedInEplbMode) {
  PlacementProblem p = Readme();
  p.excluded_gpus = {3};
  ExpectInvalid(p, "not supported in eplb mode", PlacementMode::kEplb);
}

TEST(PlacementValidation, TooFewUsableSlotsOnANode) {
  // Node 1 (GPUs 4..7) keeps 2 GPUs x 2 slots = 4 < 6 experts.
  PlacementProblem p = Readme();
  p.excluded_gpus = {4, 5};
  ExpectInvalid(p, "too few usable slots on node 1: 2 usable GPUs x 2 slots = "
                   "4 < 6 experts");
}

TEST(PlacementValidation, TooFewUsableSlotsGlobal) {
  // 3 groups on 2 nodes: global. 5 usable GPUs x 2 slots = 10 < 12.
  PlacementProblem p = Readme();
  p.num_groups = 3;
  p.excluded_gpus = {0, 1, 2};
  ExpectInvalid(p, "too few usable slots: 5 usable GPUs x 2 slots = 10 < 12 "
                   "experts");
}

TEST(PlacementValidation, SlotsThatNeedADuplicateOnANode) {
  // 8 GPUs, 56 slots: 7 slots per GPU, but a node has only 6 experts.
  PlacementProblem p = Readme();
  p.num_slots = 56;
  ExpectInvalid(p, "cannot fill 28 slots on node 0 without two replicas of one "
                   "expert on one GPU: 7 slots per GPU but only 6 experts per "
                   "node");
  // The reference accepts it (and duplicates).
  EXPECT_OK(Plan(p, PlacementMode::kEplb));
}

TEST(PlacementValidation, SlotsThatNeedADuplicateGlobal) {
  // Global (3 groups on 2 nodes): 13 slots per GPU > 12 experts.
  PlacementProblem p = Readme();
  p.num_groups = 3;
  p.num_slots = 8 * 13;
  ExpectInvalid(p, "cannot fill 104 slots without two replicas of one expert "
                   "on one GPU: 13 slots per GPU but only 12 experts");
  EXPECT_OK(Plan(p, PlacementMode::kEplb));
}

TEST(PlacementValidation, CurrentPlacementOfTheWrongSize) {
  PlacementProblem p = Readme();
  p.current_phy2log = {0, 1, 2};
  ExpectInvalid(p, "current_phy2log has 3 values, expected num_layers * "
                   "num_slots = 2 * 16 = 32");
}

TEST(PlacementValidation, CurrentPlacementNamesAnUnknownExpert) {
  PlacementProblem p = Readme();
  p.current_phy2log.assign(32, 0);
  for (int s = 0; s < 32; ++s) p.current_phy2log[s] = s % 12;
  p.current_phy2log[2] = 12;
  ExpectInvalid(p, "current_phy2log[layer 0][slot 2] = 12 is not an expert in "
                   "[0, 12) or -1 (empty)");
}

TEST(PlacementValidation, CurrentPlacementMissesAnExpert) {
  PlacementProblem p = Readme();
  p.current_phy2log.assign(32, 0);
  // Each layer: slot s holds expert s % 12 for s < 12, then experts 0..3.
  for (int s = 0; s < 32; ++s) p.current_phy2log[s] = (s % 16) % 12;
  p.current_phy2log[16 + 5] = -1;  // layer 1 slot 5 was expert 5's only one
  ExpectInvalid(p, "current_phy2log layer 1 does not place expert 5");
}

TEST(PlacementValidation, BadOptions) {
  const PlacementProblem p = Readme();
  auto expect = [&p](PlacementOptions o, const std::string& phrase) {
    EXPECT_THAT(PlanPlacement(p, o).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(phrase)));
  };
  PlacementOptions o;
  o.move_budget = -2;
  expect(o, "move_budget must be >= 0 or -1 (no limit), got -2");
  o = PlacementOptions();
  o.tradeoff_points = 1;
  expect(o, "tradeoff_points must be >= 2, got 1");
  o = PlacementOptions();
  o.max_extra_experts_per_gpu = 0;
  expect(o, "max_extra_experts_per_gpu must be >= 1, got 0");
  o = PlacementOptions();
  o.bytes_per_expert = -1;
  expect(o, "bytes_per_expert must be >= 0, got -1");
  o = PlacementOptions();
  o.local_search_iterations = -1;
  expect(o, "local_search_iterations must be >= 0, got -1");
  o = PlacementOptions();
  o.min_gain_per_moved_expert = -0.5;
  expect(o, "min_gain_per_moved_expert must be finite and >= 0, got -0.5");
  o = PlacementOptions();
  o.good_enough_max_vio = -1;
  expect(o, "good_enough_max_vio must be finite and >= 0, got -1");
}

TEST(PlacementValidation, ModeNames) {
  EXPECT_EQ(PlacementModeName(PlacementMode::kEplb), "eplb");
  ASSERT_OK_AND_ASSIGN(PlacementMode m, ParsePlacementMode("default"));
  EXPECT_EQ(m, PlacementMode::kDefault);
  EXPECT_THAT(ParsePlacementMode("greedy").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("got \"greedy\"")));
}

TEST(PlacementValidation, EvaluatePlacementChecksItsPlacement) {
  const PlacementProblem p = Readme();
  std::vector<int32_t> phy2log(32);
  for (int s = 0; s < 32; ++s) phy2log[s] = s % 12;
  EXPECT_OK(EvaluatePlacement(p, phy2log));
  phy2log[16 + 7] = 13;
  EXPECT_THAT(EvaluatePlacement(p, phy2log).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("phy2log[layer 1][slot 7] = 13")));
  phy2log.resize(31);
  EXPECT_THAT(EvaluatePlacement(p, phy2log).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("phy2log has 31 values")));
}

TEST(FoldSlotLoads, SumsReplicas) {
  // 1 layer, 3 experts, 4 slots: e1 has two replicas, slot 3 is empty.
  ASSERT_OK_AND_ASSIGN(std::vector<double> w,
                       FoldSlotLoads(1, 3, 4, {1, 0, 1, -1}, {5, 2, 7, 0}));
  EXPECT_EQ(w, (std::vector<double>{2, 12, 0}));
  EXPECT_THAT(FoldSlotLoads(1, 3, 4, {1, 0, 1, -1}, {5, 2, 7, 1}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("slot_loads[layer 0][slot 3] = 1 on an empty "
                                 "slot")));
  EXPECT_THAT(FoldSlotLoads(1, 3, 4, {1, 0, 3, -1}, {5, 2, 7, 0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("phy2log[layer 0][slot 2] = 3")));
  EXPECT_THAT(FoldSlotLoads(1, 3, 4, {1, 0, 1}, {5, 2, 7, 0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("phy2log has 3 and slot_loads 4 values")));
  EXPECT_THAT(FoldSlotLoads(1, 3, 4, {1, 0, 1, -1}, {5, -2, 7, 0}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("slot_loads[layer 0][slot 1] = -2")));
}

}  // namespace
}  // namespace moecast
