// MaxWeightAssignment (relabelling) against brute force.
#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "engine/placement/internal.h"
#include "gtest/gtest.h"

namespace moecast {
namespace placement_internal {
namespace {

double Total(const std::vector<double>& score, int n,
             const std::vector<int>& col_of_row) {
  double sum = 0;
  for (int r = 0; r < n; ++r) sum += score[r * n + col_of_row[r]];
  return sum;
}

bool IsPermutation(std::vector<int> v) {
  std::sort(v.begin(), v.end());
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != static_cast<int>(i)) return false;
  }
  return true;
}

TEST(MaxWeightAssignment, MatchesBruteForce) {
  std::mt19937_64 rng(9);
  for (int it = 0; it < 300; ++it) {
    const int n = 1 + it % 7;
    std::vector<double> score(n * n);
    // Small integer scores (many ties), as overlap counts are.
    for (double& v : score) v = static_cast<double>(rng() % 5);
    std::vector<int> got;
    MaxWeightAssignment(score, n, &got);
    ASSERT_TRUE(IsPermutation(got));
    std::vector<int> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    double best = -1;
    do {
      best = std::max(best, Total(score, n, perm));
    } while (std::next_permutation(perm.begin(), perm.end()));
    EXPECT_EQ(Total(score, n, got), best) << "n = " << n;
  }
}

TEST(MaxWeightAssignment, LargeUsesAGreedyPermutation) {
  const int n = kExactAssignmentMax + 6;
  // A hidden permutation with score 1, everything else 0: greedy finds it.
  std::mt19937_64 rng(3);
  std::vector<int> hidden(n);
  std::iota(hidden.begin(), hidden.end(), 0);
  std::shuffle(hidden.begin(), hidden.end(), rng);
  std::vector<double> score(n * n, 0.0);
  for (int r = 0; r < n; ++r) score[r * n + hidden[r]] = 1;
  std::vector<int> got;
  MaxWeightAssignment(score, n, &got);
  EXPECT_EQ(got, hidden);
  // All zero: still a permutation.
  std::fill(score.begin(), score.end(), 0.0);
  MaxWeightAssignment(score, n, &got);
  EXPECT_TRUE(IsPermutation(got));
}

}  // namespace
}  // namespace placement_internal
}  // namespace moecast
