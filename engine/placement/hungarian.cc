// Maximum-weight perfect assignment (Hungarian algorithm with potentials,
// O(n^3); greedy above kExactAssignmentMax), used to relabel nodes and GPUs
// of a plan to overlap the current placement.
#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "engine/placement/internal.h"

namespace moecast {
namespace placement_internal {

namespace {

// Greedy: pairs by descending score (ties: row, then column), each taken if
// both ends are free; then the rest in index order. O(n^2 log n).
void GreedyAssignment(const std::vector<double>& score, int n,
                      std::vector<int>* col_of_row) {
  std::vector<std::pair<double, int>> pairs;
  pairs.reserve(static_cast<size_t>(n) * n);
  for (int i = 0; i < n * n; ++i) {
    if (score[i] > 0) pairs.push_back({-score[i], i});
  }
  std::sort(pairs.begin(), pairs.end());
  std::vector<char> col_used(n, 0);
  for (const auto& [neg, idx] : pairs) {
    const int r = idx / n, c = idx % n;
    if ((*col_of_row)[r] >= 0 || col_used[c]) continue;
    (*col_of_row)[r] = c;
    col_used[c] = 1;
  }
  int c = 0;
  for (int r = 0; r < n; ++r) {
    if ((*col_of_row)[r] >= 0) continue;
    while (col_used[c]) ++c;
    (*col_of_row)[r] = c;
    col_used[c] = 1;
  }
}

}  // namespace

void MaxWeightAssignment(const std::vector<double>& score, int n,
                         std::vector<int>* col_of_row) {
  col_of_row->assign(n, -1);
  if (n == 0) return;
  if (n > kExactAssignmentMax) {
    GreedyAssignment(score, n, col_of_row);
    return;
  }
  double top = 0;
  for (int i = 0; i < n * n; ++i) top = std::max(top, score[i]);
  // Minimise cost = top - score. 1-based arrays as in the classic
  // formulation; p[j] = row matched to column j.
  const double kInf = std::numeric_limits<double>::infinity();
  std::vector<double> u(n + 1, 0.0), v(n + 1, 0.0), minv(n + 1);
  std::vector<int> p(n + 1, 0), way(n + 1, 0);
  std::vector<char> used(n + 1);
  for (int i = 1; i <= n; ++i) {
    p[0] = i;
    int j0 = 0;
    std::fill(minv.begin(), minv.end(), kInf);
    std::fill(used.begin(), used.end(), 0);
    do {
      used[j0] = 1;
      const int i0 = p[j0];
      double delta = kInf;
      int j1 = 0;
      for (int j = 1; j <= n; ++j) {
        if (used[j]) continue;
        const double cur =
            (top - score[(i0 - 1) * n + (j - 1)]) - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int j = 0; j <= n; ++j) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      const int j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  for (int j = 1; j <= n; ++j) (*col_of_row)[p[j] - 1] = j - 1;
}

}  // namespace placement_internal
}  // namespace moecast
