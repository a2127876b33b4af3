// Fuzz target: `moecast plan`'s input path (integrations/cli/plan.cc): the
// loads / slot_loads and current-placement JSON files, through
// ReadMatrixJson, FoldSlotLoads, PlanPlacement, EvaluatePlacement, Decide
// and PlanToJson, with cluster flags decoded from the input.
//
// Input: 10 bytes of flags and sizes (below), then the --loads file's bytes,
// then (flag bit 1) a NUL and the --current file's bytes.
//   byte 0: bit 0 --mode eplb; bit 1 --current; bit 2 --tradeoff; bit 3 the
//   decision flags; bit 4 --json; bit 5 --overlap; bit 6 --transient
//   bytes 1..9: --gpus, --slots, --nodes, --groups, --move_budget,
//   --max_extra_per_gpu, --bytes_per_expert, then up to two --exclude GPUs.
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_util.h"
#include "integrations/cli/commands.h"

using moecast::fuzz::ByteReader;
using moecast::fuzz::TempDir;
using moecast::fuzz::WriteTempFile;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  const uint8_t flags = in.Byte();
  std::vector<std::string> args = {
      "--gpus",         absl::StrCat(in.IntInRange(1, 16)),
      "--slots",        absl::StrCat(in.IntInRange(1, 64)),
      "--nodes",        absl::StrCat(in.IntInRange(1, 4)),
      "--groups",       absl::StrCat(in.IntInRange(1, 8)),
      "--move_budget",  absl::StrCat(in.IntInRange(-1, 30)),
      "--max_extra_per_gpu", absl::StrCat(in.IntInRange(1, 4)),
      "--bytes_per_expert", absl::StrCat(in.IntInRange(0, 3) * 1000000),
  };
  const int64_t ex0 = in.IntInRange(-1, 16);
  const int64_t ex1 = in.IntInRange(-1, 16);
  if (ex0 >= 0) {
    args.push_back("--exclude");
    args.push_back(ex1 >= 0 ? absl::StrCat(ex0, ",", ex1) : absl::StrCat(ex0));
  }
  if ((flags & 1) != 0) {
    args.push_back("--mode");
    args.push_back("eplb");
  }
  const bool with_current = (flags & 2) != 0;
  const std::string loads = with_current ? in.Until('\0') : in.Rest();
  args.push_back("--loads");
  args.push_back(WriteTempFile("loads.json", loads));
  if (with_current) {
    args.push_back("--current");
    args.push_back(WriteTempFile("current.json", in.Rest()));
  }
  if ((flags & 4) != 0) args.push_back("--tradeoff");
  if ((flags & 8) != 0) {
    for (const char* f : {"--intra_bw=1e11", "--inter_bw=2.5e10",
                          "--tokens_per_step=4096", "--time_per_token=1e-7",
                          "--horizon_steps=100"}) {
      args.push_back(f);
    }
  }
  if ((flags & 16) != 0) {
    args.push_back("--json");
    args.push_back(TempDir() + "/plan.json");
  }
  if ((flags & 32) != 0) args.push_back("--overlap");
  if ((flags & 64) != 0) args.push_back("--transient");

  std::ostringstream out, err;
  const int rc = moecast::cli::RunPlan(args, out, err);
  MOECAST_FUZZ_CHECK(rc == 0 || rc == 1 || rc == 2);
  // A failure says why; a success prints the plan.
  MOECAST_FUZZ_CHECK(rc == 0 ? !out.str().empty() : !err.str().empty());
  return 0;
}
