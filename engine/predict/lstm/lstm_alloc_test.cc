// Checks that Observe, Refresh, Forecast and ForecastPath do not allocate.
//
// This binary defines malloc: the dynamic linker resolves every malloc call
// in the process (including libstdc++'s operator new and Eigen's aligned
// allocator) to it, and it forwards to glibc's __libc_malloc, so free,
// realloc and friends stay glibc's and work on the same heap.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "engine/predict/lstm/lstm.h"
#include "engine/predict/lstm/lstm_e.h"
#include "engine/predict/lstm/lstm_test_util.h"
#include "gtest/gtest.h"

extern "C" void* __libc_malloc(size_t size);

namespace {
std::atomic<int64_t> g_mallocs{0};
}  // namespace

extern "C" void* malloc(size_t size) {
  g_mallocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(size);
}

namespace moecast {
namespace {

// Observes each row of `data`, refreshing every third step and forecasting
// three horizons each step (a path every 50th); returns the malloc calls made.
// `out` (M) and `path` (path_steps x M) are allocated by the caller.
int64_t MallocsWhileStepping(Predictor* pred, const std::vector<std::vector<double>>& data,
                             int path_steps, std::vector<double>* out,
                             std::vector<double>* path) {
  const int64_t before = g_mallocs.load();
  for (size_t t = 0; t < data.size(); ++t) {
    pred->Observe(data[t]);
    if (t % 3 == 0) pred->Refresh();
    pred->Forecast(1, absl::MakeSpan(*out));
    pred->Forecast(37, absl::MakeSpan(*out));
    pred->Forecast(5000, absl::MakeSpan(*out));
    if (t % 50 == 0) pred->ForecastPath(path_steps, absl::MakeSpan(*path));
  }
  return g_mallocs.load() - before;
}

TEST(LstmAllocTest, NoAllocationAfterConstruction) {
  auto w = LstmWeights::Load("bench/lstm/tiny_moe_m16.lstm");
  ASSERT_TRUE(w.ok()) << w.status();
  const int M = (*w)->model().num_experts;
  const int path_steps = 50;
  // Data and outputs allocated up front.
  std::vector<std::vector<double>> data(600);
  uint64_t s = 1;
  for (auto& row : data) row = lstm_testing::RandomShares(M, &s, 0.01);
  std::vector<double> out(M), path(static_cast<size_t>(path_steps) * M);

  auto p = MakeLstmPredictor(M, *w);
  ASSERT_TRUE(p.ok()) << p.status();
  Predictor* pred = p->get();

  EXPECT_EQ(MallocsWhileStepping(pred, data, path_steps, &out, &path), 0)
      << "malloc calls during Observe/Forecast";
  const int64_t after = g_mallocs.load();
  // The counter works: a vector allocates.
  std::vector<double>* v = new std::vector<double>(100);
  EXPECT_GT(g_mallocs.load(), after);
  delete v;
}

// lstm_e at two numbers of experts, with the trained file (1 layer) and the
// 2-layer test fixture: the batched products must not allocate either.
TEST(LstmAllocTest, PerExpertNoAllocationAfterConstruction) {
  for (const char* file : {"bench/lstm/lstm_e_h16.lstm", "engine/predict/lstm/testdata/tiny_e.lstm"}) {
    for (int M : {16, 256}) {
      const int path_steps = 50;
      std::vector<std::vector<double>> data(400);
      uint64_t s = 7;
      for (auto& row : data) row = lstm_testing::RandomShares(M, &s, 0.01);
      std::vector<double> out(M), path(static_cast<size_t>(path_steps) * M);
      auto p = MakeLstmEPredictor(M, file);
      ASSERT_TRUE(p.ok()) << p.status();
      Predictor* pred = p->get();
      EXPECT_EQ(MallocsWhileStepping(pred, data, path_steps, &out, &path), 0)
          << file << " M=" << M;
    }
  }
}

}  // namespace
}  // namespace moecast
