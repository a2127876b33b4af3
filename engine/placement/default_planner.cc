// The default placement mode (placement.h): group packing to nodes,
// replication capped by the GPUs an expert may use, greedy packing without
// duplicates, local search on the most loaded GPU, relabelling to the current
// placement and the move-budget walk.
//
// Vocabulary. A domain is the set of usable GPUs ("bins") one expert may use
// in one layer: a node's under group-limited routing, all of them otherwise.
// Within a domain every bin has exactly k slots, an expert has at most one
// replica per bin, and a replica of expert e carries w[e] / cnt[e].
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/placement/internal.h"

namespace moecast {
namespace placement_internal {
namespace {

constexpr double kRelEps = 1e-12;
// Layers of at most this many experts also try more starts (BuildTarget).
constexpr int kSecondStartMaxExperts = 64;

// One local-search step off the most loaded bin g.
struct Step {
  enum Kind { kNone = 0, kSwap = 1, kReplace = 2 };
  int kind = kNone;
  int g = -1, gi = -1;  // bin and slot index on it
  int h = -1, hj = -1;  // kSwap: the other bin and slot
  int b = -1;           // kReplace: the expert that takes slot (g, gi)
  double gain = 0;      // load[g] - the largest new load of a touched bin
  double score = 0;     // gain, or gain per moved expert
  double tie = 0;       // secondary key (larger wins)
  int dmoves = 0;       // change of moved (bin, expert) pairs
};

class Domain {
 public:
  // An empty domain of n experts (global ids `experts`, loads `w`), nbins
  // bins of k slots.
  void Reset(const std::vector<int>& experts, const double* layer_w, int nbins,
             int k) {
    experts_ = experts;
    n_ = static_cast<int>(experts.size());
    nbins_ = nbins;
    k_ = k;
    w_.resize(n_);
    double total = 0;
    for (int i = 0; i < n_; ++i) {
      w_[i] = layer_w[experts[i]];
      total += w_[i];
    }
    eps_ = kRelEps * total;
    cnt_.assign(n_, 0);
    r_.assign(n_, 0.0);
    rn_.resize(n_);
    for (int i = 0; i < n_; ++i) rn_[i] = w_[i];
    slot_.assign(static_cast<size_t>(nbins_) * k_, -1);
    sr_.assign(slot_.size(), 0.0);
    load_.assign(nbins_, 0.0);
    holds_.assign(static_cast<size_t>(nbins_) * n_, 0);
    orig_.clear();
    moved_ = 0;
  }

  int n() const { return n_; }
  int nbins() const { return nbins_; }
  int k() const { return k_; }
  const std::vector<int>& experts() const { return experts_; }
  double load(int bin) const { return load_[bin]; }
  int slot(int bin, int j) const { return slot_[bin * k_ + j]; }
  int64_t moved() const { return moved_; }
  double weight(int i) const { return w_[i]; }
  // Whether bin `bin` held local expert e in the current placement (only
  // after RepairFromCurrent).
  bool WasHeld(int bin, int e) const { return Orig(bin, e); }

  double MaxLoad() const {
    double m = 0;
    for (double l : load_) m = std::max(m, l);
    return m;
  }
  int MaxBin() const {
    int g = 0;
    for (int b = 1; b < nbins_; ++b) {
      if (load_[b] > load_[g]) g = b;
    }
    return g;
  }

  // Replica counts: one each, then each extra replica to the expert with
  // the largest load per replica among those below the cap (nbins).
  void Replicate() {
    for (int e = 0; e < n_; ++e) SetCount(e, 1);
    const int extra = nbins_ * k_ - n_;
    if (extra <= 16) {  // a few: scan
      for (int i = 0; i < extra; ++i) {
        int best = -1;
        double best_r = -1;  // loads are >= 0
        for (int e = 0; e < n_; ++e) {
          const double v = cnt_[e] < nbins_ ? r_[e] : -1.0;
          const bool gt = v > best_r;
          best_r = gt ? v : best_r;
          best = gt ? e : best;
        }
        SetCount(best, cnt_[best] + 1);
      }
      return;
    }
    // Max-heap on (load per replica, lower index first).
    std::vector<std::pair<double, int>>& heap = bin_order_;
    heap.resize(n_);
    for (int e = 0; e < n_; ++e) heap[e] = {w_[e], -e};
    if (nbins_ < 2) return;
    std::make_heap(heap.begin(), heap.end());
    for (int i = 0; i < extra; ++i) {
      std::pop_heap(heap.begin(), heap.end());
      const int e = -heap.back().second;
      SetCount(e, cnt_[e] + 1);
      if (cnt_[e] < nbins_) {
        heap.back().first = r_[e];
        std::push_heap(heap.begin(), heap.end());
      } else {
        heap.pop_back();
      }
    }
  }

  // Greedy packing: experts by load per replica, heaviest first (ties: lower
  // expert), each replica to the lightest bin with a free slot that does not
  // hold the expert; if every such bin holds it, a replica of another expert
  // is moved to make room (always possible: see Unblock).
  void Pack() {
    std::vector<std::pair<double, int>>& order = scratch_order_;
    order.resize(n_);
    for (int e = 0; e < n_; ++e) order[e] = {-r_[e], e};
    std::sort(order.begin(), order.end());
    fill_.assign(nbins_, 0);
    for (const auto& [neg_r, e] : order) {
      for (int c = 0; c < cnt_[e]; ++c) {
        int best = -1;
        double best_load = std::numeric_limits<double>::infinity();
        for (int b = 0; b < nbins_; ++b) {
          const bool ok = fill_[b] < k_ && !Holds(b, e);
          const double v = ok ? load_[b] : best_load;
          const bool lt = v < best_load;
          best_load = lt ? v : best_load;
          best = lt ? b : best;
        }
        if (best < 0) {
          Unblock(e);
          continue;
        }
        Put(best, fill_[best]++, e);
      }
    }
  }

  // One polishing step off bin g: the best swap, else the best replica
  // move. Returns false when neither lowers g.
  bool Improve(int g) {
    Step s = BestStep(g, /*per_move=*/false, /*swaps=*/true,
                      /*replaces=*/false);
    if (s.kind == Step::kNone) s = BestStep(g, false, false, true);
    if (s.kind == Step::kNone) return false;
    Apply(s);
    return true;
  }

  // The best step that lowers bin g without raising any bin to g's load.
  // per_move: rank by gain per moved expert (versus orig_) instead of gain.
  Step BestStep(int g, bool per_move, bool swaps, bool replaces) const {
    Step best;
    const double lg = load_[g];
    const double limit = lg - eps_;
    const bool track = per_move && !orig_.empty();
    const int* gslot = slot_.data() + g * k_;
    const double* gsr = sr_.data() + g * k_;
    const uint8_t* gholds = holds_.data() + static_cast<size_t>(g) * n_;
    auto consider = [&](Step& s, double new_max, int dm, double tie) {
      const double gain = lg - new_max;
      const double score =
          track ? gain / std::max(0.5, static_cast<double>(dm)) : gain;
      if (best.kind == Step::kNone || score > best.score ||
          (score == best.score && tie > best.tie)) {
        s.gain = gain;
        s.score = score;
        s.tie = tie;
        s.dmoves = dm;
        best = s;
      }
    };
    if (swaps && nbins_ > 1) {
      // Bins by ascending load: a swap with h leaves max(lg - d, lh + d) >=
      // (lg + lh) / 2, so gain <= (lg - lh) / 2 and gain per move <= lg - lh
      // (moves >= 0.5 in the score); once that bound cannot beat the best,
      // no heavier bin can.
      // The lightest bin goes first (it usually holds the best swap), then
      // the others in index order, each skipped when its bound cannot beat
      // the best so far.
      int lightest = g == 0 ? 1 : 0;
      for (int h = 0; h < nbins_; ++h) {
        if (h != g && load_[h] < load_[lightest]) lightest = h;
      }
      for (int pass = -1; pass < nbins_; ++pass) {
        const int h = pass < 0 ? lightest : pass;
        if (pass >= 0 && h == lightest) continue;
        const double lh = load_[h];
        if (h == g || lh >= limit) continue;
        if (best.kind != Step::kNone &&
            (track ? lg - lh : 0.5 * (lg - lh)) <= best.score) {
          continue;
        }
        // A swap moving d = r_a - r_b from g to h helps iff eps < d and
        // lh + d < limit.
        const double dmax = limit - lh;
        const int* hslot = slot_.data() + h * k_;
        const double* hsr = sr_.data() + h * k_;
        const uint8_t* hholds = holds_.data() + static_cast<size_t>(h) * n_;
        for (int i = 0; i < k_; ++i) {
          const int a = gslot[i];
          if (a < 0 || hholds[a]) continue;
          const double ra = gsr[i];
          for (int j = 0; j < k_; ++j) {
            const double d = ra - hsr[j];
            if (d <= eps_ || d >= dmax) continue;
            const int b = hslot[j];
            if (b < 0 || gholds[b]) continue;
            const double new_max = std::max(lg - d, lh + d);
            int dm = 0;
            if (track) {
              dm = !Orig(h, a) + !Orig(g, b) - !Orig(g, a) - !Orig(h, b);
            }
            Step s;
            s.kind = Step::kSwap;
            s.g = g;
            s.gi = i;
            s.h = h;
            s.hj = j;
            consider(s, new_max, dm, 0.0);
          }
        }
      }
    }
    if (replaces) {
      // Replica moves: the slot of a (replicated) on g goes to b. The new
      // load of g is at least lg - ra + min rn_, which bounds the gain.
      double rn_min = std::numeric_limits<double>::infinity();
      for (int b = 0; b < n_; ++b) rn_min = std::min(rn_min, rn_[b]);
      for (int i = 0; i < k_; ++i) {
        const int a = gslot[i];
        if (a < 0 || cnt_[a] < 2) continue;
        const double ra = gsr[i];
        const double base = lg - ra;
        if (best.kind != Step::kNone &&
            (track ? 2 : 1) * (lg - (base + rn_min)) <= best.score) {
          continue;
        }
        const double da = w_[a] / (cnt_[a] - 1) - ra;
        double max_a = 0;  // the largest new load of a's other holders
        for (int h = 0; h < nbins_; ++h) {
          if (h != g && Holds(h, a)) max_a = std::max(max_a, load_[h] + da);
        }
        if (max_a >= limit) continue;
        const double rn_limit = limit - base;  // rn_[b] must stay below
        for (int b = 0; b < n_; ++b) {
          if (rn_[b] >= rn_limit || gholds[b] || cnt_[b] >= nbins_) continue;
          const double new_max = std::max(base + rn_[b], max_a);
          int dm = 0;
          if (track) dm = !Orig(g, b) - !Orig(g, a);
          Step s;
          s.kind = Step::kReplace;
          s.g = g;
          s.gi = i;
          s.b = b;
          consider(s, new_max, dm, r_[b]);
        }
      }
    }
    if (best.kind != Step::kNone && best.gain <= eps_) best = Step();
    return best;
  }

  void Apply(const Step& s) {
    if (s.kind == Step::kSwap) {
      const int a = slot_[s.g * k_ + s.gi];
      const int b = slot_[s.h * k_ + s.hj];
      SetSlot(s.g, s.gi, b);
      SetSlot(s.h, s.hj, a);
      SetHolds(s.g, a, 0);
      SetHolds(s.h, b, 0);
      SetHolds(s.g, b, 1);
      SetHolds(s.h, a, 1);
      RecomputeLoad(s.g);
      RecomputeLoad(s.h);
    } else if (s.kind == Step::kReplace) {
      const int a = slot_[s.g * k_ + s.gi];
      SetHolds(s.g, a, 0);
      SetHolds(s.g, s.b, 1);
      slot_[s.g * k_ + s.gi] = s.b;
      SetCount(a, cnt_[a] - 1);
      SetCount(s.b, cnt_[s.b] + 1);
      RefreshSlots();
      for (int h = 0; h < nbins_; ++h) {
        if (h == s.g || Holds(h, a) || Holds(h, s.b)) RecomputeLoad(h);
      }
    }
  }

  // Path from a current placement ------------------------------------------

  // Loads bin `bin`'s slots from the current placement (local expert ids or
  // -1; a second copy of an expert on the bin is dropped).
  void LoadBin(int bin, const int* local_ids) {
    for (int j = 0; j < k_; ++j) {
      const int e = local_ids[j];
      if (e < 0 || Holds(bin, e)) continue;
      slot_[bin * k_ + j] = e;
      SetHolds(bin, e, 1);
      ++cnt_[e];  // r_ and rn_ follow in RepairFromCurrent
    }
  }

  // After LoadBin of every bin: remembers what the current placement holds,
  // then repairs: every expert gets a replica (an empty slot, else a slot of
  // the expert that loses least), then every empty slot gets the expert with
  // the largest load per replica that the bin lacks.
  void RepairFromCurrent() {
    for (int e = 0; e < n_; ++e) SetCount(e, cnt_[e]);
    orig_ = holds_;
    // Usually every expert is there (the current placement is a plan): then
    // the order below is not needed.
    bool missing = false;
    for (int e = 0; e < n_; ++e) missing = missing || cnt_[e] == 0;
    std::vector<std::pair<double, int>>& order = scratch_order_;
    order.clear();
    if (missing) {
      order.resize(n_);
      for (int e = 0; e < n_; ++e) order[e] = {-w_[e], e};
      std::sort(order.begin(), order.end());
      RefreshSlots();
      RecomputeAll();
    }
    bool changed = missing;  // holds_ differs from orig_
    for (const auto& [neg_w, e] : order) {
      if (cnt_[e] > 0) continue;
      int bin = -1, j_at = -1;
      for (int b = 0; b < nbins_; ++b) {
        for (int j = 0; j < k_; ++j) {
          if (slot_[b * k_ + j] >= 0) continue;
          if (bin < 0 || load_[b] < load_[bin]) {
            bin = b;
            j_at = j;
          }
          break;
        }
      }
      if (bin < 0) {  // steal a slot from the expert that loses least
        int x = -1;
        for (int c = 0; c < n_; ++c) {
          if (cnt_[c] < 2) continue;
          if (x < 0 || w_[c] / (cnt_[c] - 1) < w_[x] / (cnt_[x] - 1)) x = c;
        }
        for (int b = 0; b < nbins_; ++b) {
          if (!Holds(b, x)) continue;
          if (bin < 0 || load_[b] > load_[bin]) bin = b;
        }
        for (int j = 0; j < k_; ++j) {
          if (slot_[bin * k_ + j] == x) j_at = j;
        }
        SetHolds(bin, x, 0);
        SetCount(x, cnt_[x] - 1);
      }
      slot_[bin * k_ + j_at] = e;
      SetHolds(bin, e, 1);
      SetCount(e, cnt_[e] + 1);
      RefreshSlots();
      RecomputeAll();
    }
    for (int b = 0; b < nbins_; ++b) {
      for (int j = 0; j < k_; ++j) {
        if (slot_[b * k_ + j] >= 0) continue;
        int best = -1;
        for (int e = 0; e < n_; ++e) {
          if (Holds(b, e) || cnt_[e] >= nbins_) continue;
          if (best < 0 || r_[best] < r_[e]) best = e;
        }
        slot_[b * k_ + j] = best;
        SetHolds(b, best, 1);
        SetCount(best, cnt_[best] + 1);
        changed = true;
      }
    }
    RefreshSlots();
    RecomputeAll();
    moved_ = 0;
    if (changed) {
      int64_t moved = 0;
      for (size_t i = 0; i < holds_.size(); ++i) moved += holds_[i] > orig_[i];
      moved_ = moved;
    }
  }

  void AddMoved(int dm) { moved_ += dm; }
  // Replicas of local expert i.
  int count(int i) const { return cnt_[i]; }

  // Between Replicate and Pack: the replica counts' marginal choices, as
  // (from, to) pairs that move one replica of `from` (an expert with more
  // than one) to `to` (one below the cap): the `donors` experts whose
  // replicas carry the least load, each with the `receivers` experts that
  // would carry the most per replica with one more.
  void ReplicaShifts(int donors, int receivers,
                     std::vector<std::pair<int, int>>* out) const {
    out->clear();
    std::vector<std::pair<double, int>> give, take;
    for (int e = 0; e < n_; ++e) {
      if (cnt_[e] > 1) give.push_back({r_[e], e});
      if (cnt_[e] < nbins_) take.push_back({-rn_[e], e});
    }
    const size_t nd = std::min<size_t>(give.size(), donors);
    const size_t nr = std::min<size_t>(take.size(), receivers);
    std::partial_sort(give.begin(), give.begin() + nd, give.end());
    std::partial_sort(take.begin(), take.begin() + nr, take.end());
    for (size_t i = 0; i < nd; ++i) {
      for (size_t j = 0; j < nr; ++j) {
        if (give[i].second != take[j].second) {
          out->push_back({give[i].second, take[j].second});
        }
      }
    }
  }
  // Moves one replica of `from` to `to` (a pair from ReplicaShifts).
  void ShiftReplica(int from, int to) {
    SetCount(from, cnt_[from] - 1);
    SetCount(to, cnt_[to] + 1);
  }

 private:
  bool Holds(int bin, int e) const { return holds_[bin * n_ + e] != 0; }
  bool Orig(int bin, int e) const { return orig_[bin * n_ + e] != 0; }
  void SetHolds(int bin, int e, uint8_t v) { holds_[bin * n_ + e] = v; }
  void SetCount(int e, int c) {
    cnt_[e] = c;
    r_[e] = c > 0 ? w_[e] / c : 0.0;
    rn_[e] = w_[e] / (c + 1);
  }
  void SetSlot(int bin, int j, int e) {
    slot_[bin * k_ + j] = e;
    sr_[bin * k_ + j] = e >= 0 ? r_[e] : 0.0;
  }
  void RefreshSlots() {
    for (size_t i = 0; i < slot_.size(); ++i) {
      sr_[i] = slot_[i] >= 0 ? r_[slot_[i]] : 0.0;
    }
  }

  void Put(int bin, int j, int e) {
    SetSlot(bin, j, e);
    SetHolds(bin, e, 1);
    load_[bin] += r_[e];
  }

  void RecomputeLoad(int bin) {
    double sum = 0;
    for (int j = 0; j < k_; ++j) sum += sr_[bin * k_ + j];
    load_[bin] = sum;
  }
  void RecomputeAll() {
    for (int b = 0; b < nbins_; ++b) RecomputeLoad(b);
  }

  // Every bin with a free slot holds e. Some full bin h lacks e (e has fewer
  // than nbins replicas placed), and h holds k distinct experts while the
  // lightest free bin g holds at most k - 1, so some f on h is not on g:
  // move f to g and put e where f was.
  void Unblock(int e) {
    const double re = r_[e];
    int g = -1;
    for (int b = 0; b < nbins_; ++b) {
      if (fill_[b] < k_ && (g < 0 || load_[b] < load_[g])) g = b;
    }
    int best_h = -1, best_j = -1;
    double best_max = std::numeric_limits<double>::infinity();
    for (int h = 0; h < nbins_; ++h) {
      if (fill_[h] < k_ || Holds(h, e)) continue;
      for (int j = 0; j < k_; ++j) {
        const int f = slot_[h * k_ + j];
        if (Holds(g, f)) continue;
        const double m =
            std::max(load_[g] + r_[f], load_[h] - r_[f] + re);
        if (m < best_max) {
          best_max = m;
          best_h = h;
          best_j = j;
        }
      }
    }
    const int f = slot_[best_h * k_ + best_j];
    Put(g, fill_[g]++, f);
    SetHolds(best_h, f, 0);
    SetSlot(best_h, best_j, e);
    SetHolds(best_h, e, 1);
    load_[best_h] += re - r_[f];
  }

  std::vector<int> experts_;
  int n_ = 0, nbins_ = 0, k_ = 0;
  std::vector<double> w_;
  std::vector<int> cnt_;
  std::vector<double> r_;      // w / cnt (0 without replicas)
  std::vector<double> rn_;     // w / (cnt + 1)
  std::vector<int> slot_;      // nbins x k local expert ids, -1 empty
  std::vector<double> sr_;     // nbins x k: r_ of the slot's expert
  std::vector<double> load_;   // per bin
  std::vector<uint8_t> holds_; // nbins x n
  std::vector<uint8_t> orig_;  // nbins x n, the current placement (path)
  std::vector<int> fill_;
  int64_t moved_ = 0;
  double eps_ = 0;
  std::vector<std::pair<double, int>> scratch_order_;
  mutable std::vector<std::pair<double, int>> bin_order_;
};

// Groups to packs (one per node) with groups_per_pack groups each: heaviest
// group first to the pack with the smallest load per usable GPU (ties: lower
// pack), then swaps of two groups off the pack with the largest load per GPU
// while that lowers it. cap[p] = usable GPUs of node p.
void PackGroups(const std::vector<double>& gw, const std::vector<int>& cap,
                int iterations, std::vector<int>* group_pack) {
  const int groups = static_cast<int>(gw.size());
  const int packs = static_cast<int>(cap.size());
  const int per = groups / packs;
  group_pack->assign(groups, -1);
  bool equal_caps = true;
  for (int c : cap) equal_caps = equal_caps && c == cap[0];
  if (per == 1 && equal_caps) {
    for (int g = 0; g < groups; ++g) (*group_pack)[g] = g;
    return;
  }
  std::vector<int> order(groups);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&gw](int a, int b) { return gw[a] > gw[b]; });
  std::vector<double> pw(packs, 0.0);
  std::vector<int> items(packs, 0);
  for (int g : order) {
    // Equal caps: the lightest pack (the reference's rule). Else the pack
    // with the smallest load per GPU after taking the group.
    int best = -1;
    for (int p = 0; p < packs; ++p) {
      if (items[p] >= per) continue;
      if (best < 0) {
        best = p;
      } else if (equal_caps ? pw[p] < pw[best]
                            : (pw[p] + gw[g]) * cap[best] <
                                  (pw[best] + gw[g]) * cap[p]) {
        best = p;
      }
    }
    (*group_pack)[g] = best;
    ++items[best];
    pw[best] += gw[g];
  }
  double total = 0;
  for (double v : gw) total += v;
  const double eps = kRelEps * total;
  for (int it = 0; it < iterations; ++it) {
    int m = 0;
    for (int p = 1; p < packs; ++p) {
      if (pw[p] / cap[p] > pw[m] / cap[m]) m = p;
    }
    const double limit = pw[m] / cap[m] - eps;
    double best_max = limit;
    int best_a = -1, best_b = -1;
    for (int a = 0; a < groups; ++a) {
      if ((*group_pack)[a] != m) continue;
      for (int b = 0; b < groups; ++b) {
        const int p = (*group_pack)[b];
        if (p == m) continue;
        const double d = gw[a] - gw[b];
        if (d <= 0) continue;
        const double nm =
            std::max((pw[m] - d) / cap[m], (pw[p] + d) / cap[p]);
        if (nm < best_max) {
          best_max = nm;
          best_a = a;
          best_b = b;
        }
      }
    }
    if (best_a < 0) break;
    const int p = (*group_pack)[best_b];
    const double d = gw[best_a] - gw[best_b];
    pw[m] -= d;
    pw[p] += d;
    (*group_pack)[best_a] = p;
    (*group_pack)[best_b] = m;
  }
}

// Writes GPU `gpu`'s k experts (global ids, distinct) into row, keeping an
// expert in the slot it had in `cur` (the current row, or null) where
// possible. pos: num_experts entries, all -1 (left so on return).
void ArrangeGpu(int gpu, int k, const int* experts, const int32_t* cur,
                int32_t* row, std::vector<char>* used_buf, int* pos) {
  int32_t* out = row + static_cast<size_t>(gpu) * k;
  used_buf->assign(k, 0);
  char* used = used_buf->data();
  for (int j = 0; j < k; ++j) out[j] = -1;
  if (cur != nullptr) {
    const int32_t* c = cur + static_cast<size_t>(gpu) * k;
    for (int i = 0; i < k; ++i) pos[experts[i]] = i;
    for (int j = 0; j < k; ++j) {
      if (c[j] < 0) continue;
      const int i = pos[c[j]];
      if (i >= 0 && !used[i]) {
        out[j] = c[j];
        used[i] = 1;
      }
    }
    for (int i = 0; i < k; ++i) pos[experts[i]] = -1;
  }
  int next = 0;
  for (int j = 0; j < k; ++j) {
    if (out[j] >= 0) continue;
    while (used[next]) ++next;
    out[j] = experts[next];
    used[next] = 1;
  }
}

struct HullPoint {
  int64_t moves = 0;
  double max_load = 0;
  int option = 0;  // path point index, or -1: the relabelled balanced plan
};

// Per-layer work of the default planner.
struct LayerWork {
  double total = 0;
  // The balanced plan (relabelled when there is a current placement), if
  // built (has_target).
  bool has_target = false;
  std::vector<int32_t> target_row;
  double target_max = 0;
  int64_t target_moves = 0;
  // The walk from the repaired current placement.
  bool has_path = false;
  // The repaired current placement (L x S row, -1 on excluded GPUs) and the
  // walk's steps as edits of it: a swap exchanges row[p] and row[q], a
  // replica move sets row[p] = q (an expert).
  std::vector<int32_t> start_row;
  struct Edit {
    bool swap;
    int p, q;
  };
  std::vector<Edit> steps;
  std::vector<int64_t> path_moves;
  std::vector<double> path_max;
  std::vector<HullPoint> hull;
  int chosen = 0;  // index into hull
  // With a migration model: experts each GPU receives (P entries), then
  // those of them that come from another node (P entries), at the start of
  // the walk, per walk step (sparse: gpu, total, inter deltas), and per hull
  // point (2P entries each).
  std::vector<int> start_recv;
  std::vector<std::array<int, 3>> step_deltas;
  std::vector<int> step_delta_end;  // per step, end index into step_deltas
  std::vector<std::vector<int>> hull_recv;
};

class Planner {
 public:
  Planner(const PlacementProblem& problem, const PlacementOptions& options,
          const Layout& layout)
      : problem_(problem), options_(options), layout_(layout) {
    const int nd = static_cast<int>(layout.domain_gpus.size());
    caps_.resize(nd);
    for (int d = 0; d < nd; ++d) {
      caps_[d] = static_cast<int>(layout.domain_gpus[d].size());
    }
    group_of_.resize(layout.num_experts);
    for (int e = 0; e < layout.num_experts; ++e) {
      group_of_[e] = e / layout.group_size;
    }
  }

  absl::Status Run(std::vector<int32_t>* phy2log, int64_t* forced_moves,
                   std::vector<TradeoffPoint>* tradeoff);

 private:
  const double* LayerW(int l) const {
    return problem_.loads.data() + static_cast<size_t>(l) * layout_.num_experts;
  }
  const int32_t* CurRow(int l) const {
    if (problem_.current_phy2log.empty()) return nullptr;
    return problem_.current_phy2log.data() +
           static_cast<size_t>(l) * layout_.num_slots;
  }
  // cur_holds_ for layer l (before BuildTarget and BuildPath).
  void BuildCurHolds(int l);
  // dom_experts_: the experts of each domain under the balanced plan's
  // group packing.
  void TargetDomains(int l);
  // A lower bound on the max GPU load of layer l's balanced plan (from the
  // first start: under its group packing, max over domains of the domain's
  // load, or its heaviest expert, spread over its GPUs).
  double TargetLowerBound(int l);
  void BuildTarget(int l, LayerWork* work);
  void BuildPath(int l, LayerWork* work);
  static void BuildHull(LayerWork* work);
  void WritePathRow(const LayerWork& work, int upto, int32_t* row) const;
  // With a migration model: node_holds_ for layer l (after BuildCurHolds).
  void BuildNodeHolds();
  bool Inter(int gpu, int e) const {
    return !node_holds_[static_cast<size_t>(layout_.node_of_gpu(gpu)) *
                            layout_.num_experts +
                        e];
  }
  void BuildHullRecv(LayerWork* work) const;
  // Local search on the most loaded bin of `doms` (one layer's domains) until
  // no step lowers it, the step limit, or good enough; returns the layer's
  // max bin load.
  double Polish(std::vector<Domain>* doms, double total) const;
  // max over domains of max(mean bin load, heaviest expert / bins).
  static double LowerBound(const std::vector<Domain>& doms);

  const PlacementProblem& problem_;
  const PlacementOptions& options_;
  const Layout& layout_;
  std::vector<int> caps_;
  std::vector<int> group_of_;  // M: expert -> group
  // Scratch.
  std::vector<Domain> domains_;
  std::vector<uint8_t> cur_holds_;  // P x M, current row on usable GPUs
  std::vector<uint8_t> node_holds_;  // N x M: a usable GPU of the node holds e
  bool track_recv_ = false;          // options_.migration is set
  std::vector<int> group_pack_, pack_node_, local_;
  std::vector<double> score_, gw_;
  std::vector<int> assign_, bin_experts_;
  std::vector<char> used_;
  std::vector<int> pos_;  // M entries, -1 between ArrangeGpu calls
  std::vector<int> node_held_;  // nd x M
  std::vector<int> done_, cls_, ids_;
  std::vector<std::vector<int>> dom_experts_;
  // BuildTarget's other starts: the plan being tried, and for the replica
  // shifts a domain's greedy counts and the shifts to try.
  std::vector<Domain> alt_;
  Domain replicated_;
  std::vector<std::pair<int, int>> shifts_;
  // The walk from the current placement (BuildPath).
  std::vector<Domain> path_;
  std::vector<std::vector<int>> alt_experts_;
  std::vector<int> group_node_;
  std::vector<int32_t> eplb_row_, eplb_rank_, eplb_cnt_;
  EplbScratch eplb_scratch_;
};

double Planner::Polish(std::vector<Domain>* doms, double total) const {
  const int nd = static_cast<int>(doms->size());
  const int max_steps = options_.local_search_iterations * nd;
  const double good_enough =
      total / layout_.num_usable * (1 + options_.good_enough_max_vio);
  double layer_max = 0;
  for (int step = 0;; ++step) {
    int d_max = 0, b_max = 0;
    layer_max = -1;
    for (int d = 0; d < nd; ++d) {
      const int b = (*doms)[d].MaxBin();
      if ((*doms)[d].load(b) > layer_max) {
        layer_max = (*doms)[d].load(b);
        d_max = d;
        b_max = b;
      }
    }
    if (step >= max_steps || layer_max <= good_enough ||
        !(*doms)[d_max].Improve(b_max)) {
      break;
    }
  }
  return layer_max;
}

double Planner::LowerBound(const std::vector<Domain>& doms) {
  double lb = 0;
  for (const Domain& dom : doms) {
    double sum = 0, heaviest = 0;
    for (int i = 0; i < dom.n(); ++i) {
      sum += dom.weight(i);
      heaviest = std::max(heaviest, dom.weight(i));
    }
    lb = std::max(lb, std::max(sum, heaviest) / dom.nbins());
  }
  return lb;
}

void Planner::BuildCurHolds(int l) {
  const int m = layout_.num_experts, k = layout_.slots_per_gpu;
  cur_holds_.assign(static_cast<size_t>(layout_.num_gpus) * m, 0);
  const int32_t* cur = CurRow(l);
  for (int g = 0; g < layout_.num_gpus; ++g) {
    if (!layout_.usable[g]) continue;
    for (int j = 0; j < k; ++j) {
      const int e = cur[g * k + j];
      if (e >= 0) cur_holds_[static_cast<size_t>(g) * m + e] = 1;
    }
  }
}

void Planner::TargetDomains(int l) {
  const double* w = LayerW(l);
  const int m = layout_.num_experts;
  const int nd = static_cast<int>(layout_.domain_gpus.size());
  std::vector<std::vector<int>>& dom_experts = dom_experts_;
  dom_experts.resize(nd);
  for (std::vector<int>& v : dom_experts) v.clear();
  if (layout_.hierarchical) {
    const int groups = layout_.num_groups, gs = layout_.group_size;
    gw_.assign(groups, 0.0);
    for (int g = 0; g < groups; ++g) {
      double sum = 0;
      for (int j = 0; j < gs; ++j) sum += w[g * gs + j];
      gw_[g] = sum;
    }
    PackGroups(gw_, caps_, options_.local_search_iterations, &group_pack_);
    for (int g = 0; g < groups; ++g) {
      for (int j = 0; j < gs; ++j) {
        dom_experts[group_pack_[g]].push_back(g * gs + j);
      }
    }
  } else {
    dom_experts[0].resize(m);
    std::iota(dom_experts[0].begin(), dom_experts[0].end(), 0);
  }
}

double Planner::TargetLowerBound(int l) {
  TargetDomains(l);
  const double* w = LayerW(l);
  double lb = 0;
  for (size_t d = 0; d < dom_experts_.size(); ++d) {
    double sum = 0, heaviest = 0;
    for (int e : dom_experts_[d]) {
      sum += w[e];
      heaviest = std::max(heaviest, w[e]);
    }
    lb = std::max(lb, std::max(sum, heaviest) / caps_[d]);
  }
  return lb;
}

void Planner::BuildTarget(int l, LayerWork* work) {
  const double* w = LayerW(l);
  const int m = layout_.num_experts, k = layout_.slots_per_gpu;
  const int nd = static_cast<int>(layout_.domain_gpus.size());
  const int32_t* cur = CurRow(l);
  domains_.resize(nd);
  // Experts of each domain.
  TargetDomains(l);
  const std::vector<std::vector<int>>& dom_experts = dom_experts_;
  for (int d = 0; d < nd; ++d) {
    Domain& dom = domains_[d];
    dom.Reset(dom_experts[d], w, caps_[d], k);
    dom.Replicate();
    dom.Pack();
  }
  // Local search on the layer's most loaded GPU (whatever its domain) until
  // it cannot be lowered: only that GPU sets the layer's balance, so the
  // other domains are left as packed once they are below it.
  double total = 0;
  for (int e = 0; e < m; ++e) total += w[e];
  double layer_max = Polish(&domains_, total);
  // A second start: the reference's plan for this layer (its group packing
  // and replica counts), repaired (a second replica of an expert on a GPU
  // goes to the expert with the largest load per replica that the GPU
  // lacks) and polished the same way. It is built only when the first plan
  // is above a lower bound on the layer's max GPU load (the larger of a
  // domain's mean bin load and its heaviest expert spread over every bin),
  // and only for layers of at most kSecondStartMaxExperts experts: there a
  // greedy plan has few items to balance with and the reference's uneven
  // replica counts often do better; on larger layers the greedy plan with
  // local search already beats it (BENCHMARKS.md) and the second start would
  // double the planning time. The better plan is kept.
  if (layout_.num_usable == layout_.num_gpus &&
      layout_.num_experts <= kSecondStartMaxExperts &&
      layer_max > LowerBound(domains_) * (1 + 1e-9)) {
    const int s = layout_.num_slots;
    eplb_row_.resize(s);
    eplb_rank_.resize(s);
    eplb_cnt_.resize(m);
    EplbLayer(w, layout_, eplb_row_.data(), eplb_rank_.data(), eplb_cnt_.data(),
              eplb_scratch_);
    alt_.resize(nd);
    std::vector<std::vector<int>>& alt_experts = alt_experts_;
    alt_experts.assign(nd, {});
    if (layout_.hierarchical) {
      const int gs = layout_.group_size;
      std::vector<int>& group_node = group_node_;
      group_node.assign(layout_.num_groups, -1);
      for (int slot = 0; slot < s; ++slot) {
        group_node[eplb_row_[slot] / gs] = layout_.node_of_gpu(slot / k);
      }
      for (int g = 0; g < layout_.num_groups; ++g) {
        for (int j = 0; j < gs; ++j) alt_experts[group_node[g]].push_back(g * gs + j);
      }
    } else {
      alt_experts[0].resize(m);
      std::iota(alt_experts[0].begin(), alt_experts[0].end(), 0);
    }
    local_.assign(m, -1);
    std::vector<int>& ids = ids_;
    ids.resize(k);
    for (int d = 0; d < nd; ++d) {
      Domain& dom = alt_[d];
      dom.Reset(alt_experts[d], w, caps_[d], k);
      for (int i = 0; i < dom.n(); ++i) local_[dom.experts()[i]] = i;
      const std::vector<int>& gpus = layout_.domain_gpus[d];
      for (int b = 0; b < static_cast<int>(gpus.size()); ++b) {
        for (int j = 0; j < k; ++j) ids[j] = local_[eplb_row_[gpus[b] * k + j]];
        dom.LoadBin(b, ids.data());
      }
      dom.RepairFromCurrent();
    }
    const double alt_max = Polish(&alt_, total);
    if (alt_max < layer_max) {
      std::swap(domains_, alt_);
      layer_max = alt_max;
    }
  }
  // More starts on the same small layers while above the bound: the greedy
  // replica counts with one marginal replica moved (ReplicaShifts: 6 donors
  // x 4 receivers per domain), packed and polished. Which experts get the
  // last extra replicas decides what the packing can balance: with two
  // GPUs, one replica more for a lighter expert often lets the others split
  // evenly (BENCHMARKS.md: this start turns most of the small-shape inputs
  // the default mode lost to eplb).
  if (layout_.num_usable == layout_.num_gpus &&
      layout_.num_experts <= kSecondStartMaxExperts) {
    const double bound = LowerBound(domains_) * (1 + 1e-9);
    for (int d = 0; d < nd && layer_max > bound; ++d) {
      // The greedy counts of the domain's experts as the plan kept them
      // (the second start may have packed groups to nodes differently),
      // replicated once; each start copies them and moves one replica.
      replicated_.Reset(domains_[d].experts(), w, caps_[d], k);
      replicated_.Replicate();
      replicated_.ReplicaShifts(6, 4, &shifts_);
      for (const auto& [from, to] : shifts_) {
        alt_ = domains_;
        Domain& dom = alt_[d];
        dom = replicated_;
        dom.ShiftReplica(from, to);
        dom.Pack();
        const double alt_max = Polish(&alt_, total);
        if (alt_max < layer_max) {
          std::swap(domains_, alt_);
          layer_max = alt_max;
          if (layer_max <= bound) break;
        }
      }
    }
  }
  work->target_max = layer_max;

  // Packs to nodes and bins to GPUs.
  pack_node_.resize(nd);
  std::iota(pack_node_.begin(), pack_node_.end(), 0);
  pos_.resize(m, -1);
  if (cur != nullptr && nd > 1) {
    // Relabel packs among nodes with the same number of usable GPUs: score
    // = replicas that could stay, sum over the pack's experts of
    // min(replicas, node's GPUs holding the expert now).
    // node_held_[d * m + e]: usable GPUs of node d that hold e now.
    node_held_.assign(static_cast<size_t>(nd) * m, 0);
    for (int d = 0; d < nd; ++d) {
      int* nh = node_held_.data() + static_cast<size_t>(d) * m;
      for (int gpu : layout_.domain_gpus[d]) {
        const uint8_t* ch = cur_holds_.data() + static_cast<size_t>(gpu) * m;
        for (int e = 0; e < m; ++e) nh[e] += ch[e];
      }
    }
    std::vector<int>& done = done_;
    done.assign(nd, 0);
    std::vector<int>& cls = cls_;
    for (int d0 = 0; d0 < nd; ++d0) {
      if (done[d0]) continue;
      cls.clear();
      for (int d = d0; d < nd; ++d) {
        if (!done[d] && caps_[d] == caps_[d0]) {
          cls.push_back(d);
          done[d] = 1;
        }
      }
      const int c = static_cast<int>(cls.size());
      if (c == 1) continue;
      score_.assign(static_cast<size_t>(c) * c, 0.0);
      for (int a = 0; a < c; ++a) {
        const Domain& dom = domains_[cls[a]];
        for (int q = 0; q < c; ++q) {
          const int* nh = node_held_.data() + static_cast<size_t>(cls[q]) * m;
          int s = 0;
          for (int i = 0; i < dom.n(); ++i) {
            s += std::min(nh[dom.experts()[i]], dom.count(i));
          }
          score_[a * c + q] = s;
        }
      }
      MaxWeightAssignment(score_, c, &assign_);
      for (int a = 0; a < c; ++a) pack_node_[cls[a]] = cls[assign_[a]];
    }
  }
  work->target_row.assign(layout_.num_slots, -1);
  work->target_moves = 0;
  for (int d = 0; d < nd; ++d) {
    const Domain& dom = domains_[d];
    const std::vector<int>& gpus = layout_.domain_gpus[pack_node_[d]];
    const int nb = dom.nbins();
    assign_.resize(nb);
    std::iota(assign_.begin(), assign_.end(), 0);
    if (cur != nullptr && nb > 1) {
      // score[b][i]: experts of bin b that GPU gpus[i] holds now.
      score_.resize(static_cast<size_t>(nb) * nb);
      for (int i = 0; i < nb; ++i) {
        const uint8_t* ch =
            cur_holds_.data() + static_cast<size_t>(gpus[i]) * m;
        for (int b = 0; b < nb; ++b) {
          int s = 0;
          for (int j = 0; j < k; ++j) s += ch[dom.experts()[dom.slot(b, j)]];
          score_[b * nb + i] = s;
        }
      }
      MaxWeightAssignment(score_, nb, &assign_);
    }
    bin_experts_.resize(k);
    for (int b = 0; b < nb; ++b) {
      const int gpu = gpus[assign_[b]];
      for (int j = 0; j < k; ++j) {
        bin_experts_[j] = dom.experts()[dom.slot(b, j)];
        if (cur != nullptr &&
            !cur_holds_[static_cast<size_t>(gpu) * m + bin_experts_[j]]) {
          ++work->target_moves;
        }
      }
      ArrangeGpu(gpu, k, bin_experts_.data(), cur, work->target_row.data(),
                 &used_, pos_.data());
    }
  }
}

void Planner::BuildPath(int l, LayerWork* work) {
  const double* w = LayerW(l);
  const int32_t* cur = CurRow(l);
  const int m = layout_.num_experts, k = layout_.slots_per_gpu;
  const int nd = static_cast<int>(layout_.domain_gpus.size());
  // The experts of each domain in the current placement.
  std::vector<std::vector<int>>& dom_experts = dom_experts_;
  dom_experts.resize(nd);
  for (std::vector<int>& v : dom_experts) v.clear();
  if (layout_.hierarchical) {
    const int groups = layout_.num_groups, gs = layout_.group_size;
    std::vector<int>& group_node = group_node_;
    group_node.assign(groups, -1);
    for (int g = 0; g < layout_.num_gpus; ++g) {
      const int node = layout_.node_of_gpu(g);
      for (int j = 0; j < k; ++j) {
        const int e = cur[g * k + j];
        if (e < 0) continue;
        int& gn = group_node[group_of_[e]];
        if (gn >= 0 && gn != node) return;  // a group spans nodes: no path
        gn = node;
      }
    }
    for (int g = 0; g < groups; ++g) {
      for (int j = 0; j < gs; ++j) {
        dom_experts[group_node[g]].push_back(g * gs + j);
      }
    }
    const size_t per = static_cast<size_t>(m / layout_.num_nodes);
    for (int d = 0; d < nd; ++d) {
      if (dom_experts[d].size() != per) return;  // unequal group counts
    }
  } else {
    dom_experts[0].resize(m);
    std::iota(dom_experts[0].begin(), dom_experts[0].end(), 0);
  }
  work->has_path = true;
  local_.assign(m, -1);
  std::vector<int>& ids = ids_;
  ids.resize(k);
  std::vector<Domain>& doms = path_;
  doms.resize(nd);
  work->start_row.assign(layout_.num_slots, -1);
  for (int d = 0; d < nd; ++d) {
    Domain& dom = doms[d];
    dom.Reset(dom_experts[d], w, caps_[d], k);
    for (int i = 0; i < dom.n(); ++i) local_[dom.experts()[i]] = i;
    const std::vector<int>& gpus = layout_.domain_gpus[d];
    for (int b = 0; b < static_cast<int>(gpus.size()); ++b) {
      for (int j = 0; j < k; ++j) {
        const int e = cur[gpus[b] * k + j];
        ids[j] = e < 0 ? -1 : local_[e];
      }
      dom.LoadBin(b, ids.data());
    }
    dom.RepairFromCurrent();
    for (int b = 0; b < dom.nbins(); ++b) {
      for (int j = 0; j < k; ++j) {
        work->start_row[static_cast<size_t>(gpus[b]) * k + j] =
            dom.experts()[dom.slot(b, j)];
      }
    }
  }
  const int num_gpus = layout_.num_gpus;
  if (track_recv_) {
    work->start_recv.assign(2 * static_cast<size_t>(num_gpus), 0);
    for (int d = 0; d < nd; ++d) {
      const Domain& dom = doms[d];
      const std::vector<int>& gpus = layout_.domain_gpus[d];
      for (int b = 0; b < dom.nbins(); ++b) {
        for (int j = 0; j < k; ++j) {
          const int e = dom.slot(b, j);
          if (e < 0 || dom.WasHeld(b, e)) continue;
          ++work->start_recv[gpus[b]];
          if (Inter(gpus[b], dom.experts()[e])) {
            ++work->start_recv[num_gpus + gpus[b]];
          }
        }
      }
    }
  }
  // The receive-count change of a step (before it is applied).
  auto record = [&](int d, const Step& st) {
    const Domain& dom = doms[d];
    const std::vector<int>& gpus = layout_.domain_gpus[d];
    auto add = [&](int bin, int e, int sign) {
      if (dom.WasHeld(bin, e)) return;
      const int gpu = gpus[bin];
      work->step_deltas.push_back(
          {gpu, sign, Inter(gpu, dom.experts()[e]) ? sign : 0});
    };
    if (st.kind == Step::kSwap) {
      const int a = dom.slot(st.g, st.gi), b = dom.slot(st.h, st.hj);
      add(st.g, a, -1);
      add(st.g, b, +1);
      add(st.h, b, -1);
      add(st.h, a, +1);
    } else {
      const int a = dom.slot(st.g, st.gi);
      add(st.g, a, -1);
      add(st.g, st.b, +1);
    }
    work->step_delta_end.push_back(static_cast<int>(work->step_deltas.size()));
  };
  // Walk: the step with the best gain per moved expert off the layer's most
  // loaded GPU, until none improves it.
  auto layer_state = [&](int* dom_of_max, int* bin_of_max) {
    double mx = -1;
    int64_t moved = 0;
    for (int d = 0; d < nd; ++d) {
      moved += doms[d].moved();
      const int b = doms[d].MaxBin();
      if (doms[d].load(b) > mx) {
        mx = doms[d].load(b);
        *dom_of_max = d;
        *bin_of_max = b;
      }
    }
    work->path_moves.push_back(moved);
    work->path_max.push_back(mx);
  };
  int d_max = 0, b_max = 0;
  layer_state(&d_max, &b_max);
  double total = 0;
  for (int e = 0; e < m; ++e) total += w[e];
  const double good_enough =
      total / layout_.num_usable * (1 + options_.good_enough_max_vio);
  for (int it = 0; it < options_.local_search_iterations; ++it) {
    if (work->path_max.back() <= good_enough) break;
    Domain& dom = doms[d_max];
    const Step s = dom.BestStep(b_max, /*per_move=*/true, /*swaps=*/true,
                                /*replaces=*/true);
    if (s.kind == Step::kNone) break;
    if (track_recv_) record(d_max, s);
    const std::vector<int>& gpus = layout_.domain_gpus[d_max];
    const int p = gpus[s.g] * k + s.gi;
    if (s.kind == Step::kSwap) {
      work->steps.push_back({true, p, gpus[s.h] * k + s.hj});
    } else {
      work->steps.push_back({false, p, dom.experts()[s.b]});
    }
    dom.Apply(s);
    dom.AddMoved(s.dmoves);
    layer_state(&d_max, &b_max);
  }
}

void Planner::BuildHull(LayerWork* work) {
  std::vector<HullPoint> pts;
  if (work->has_path) {
    for (size_t i = 0; i < work->path_moves.size(); ++i) {
      pts.push_back({work->path_moves[i], work->path_max[i],
                     static_cast<int>(i)});
    }
  }
  if (work->has_target) {
    pts.push_back({work->target_moves, work->target_max, -1});
  }
  // Fewest moves first; among equal moves the smallest max, then the path.
  std::stable_sort(pts.begin(), pts.end(),
                   [](const HullPoint& a, const HullPoint& b) {
                     if (a.moves != b.moves) return a.moves < b.moves;
                     if (a.max_load != b.max_load) return a.max_load < b.max_load;
                     return a.option > b.option;
                   });
  std::vector<HullPoint> pareto;
  for (const HullPoint& p : pts) {
    if (pareto.empty() || p.max_load < pareto.back().max_load) {
      if (!pareto.empty() && pareto.back().moves == p.moves) continue;
      pareto.push_back(p);
    }
  }
  // Lower convex hull (diminishing gain per move).
  std::vector<HullPoint>& hull = work->hull;
  hull.clear();
  for (const HullPoint& p : pareto) {
    while (hull.size() >= 2) {
      const HullPoint& o = hull[hull.size() - 2];
      const HullPoint& a = hull.back();
      const double cross =
          static_cast<double>(a.moves - o.moves) * (p.max_load - o.max_load) -
          (a.max_load - o.max_load) * static_cast<double>(p.moves - o.moves);
      if (cross > 0) break;
      hull.pop_back();
    }
    hull.push_back(p);
  }
  work->chosen = 0;
}

void Planner::BuildNodeHolds() {
  const int m = layout_.num_experts;
  node_holds_.assign(static_cast<size_t>(layout_.num_nodes) * m, 0);
  for (int g = 0; g < layout_.num_gpus; ++g) {
    uint8_t* nh = node_holds_.data() +
                  static_cast<size_t>(layout_.node_of_gpu(g)) * m;
    const uint8_t* ch = cur_holds_.data() + static_cast<size_t>(g) * m;
    for (int e = 0; e < m; ++e) nh[e] |= ch[e];
  }
}

void Planner::BuildHullRecv(LayerWork* work) const {
  const int num_gpus = layout_.num_gpus, m = layout_.num_experts;
  const int k = layout_.slots_per_gpu;
  work->hull_recv.resize(work->hull.size());
  for (size_t i = 0; i < work->hull.size(); ++i) {
    std::vector<int>& v = work->hull_recv[i];
    const int option = work->hull[i].option;
    if (option < 0) {
      v.assign(2 * static_cast<size_t>(num_gpus), 0);
      for (int g = 0; g < num_gpus; ++g) {
        if (!layout_.usable[g]) continue;
        for (int j = 0; j < k; ++j) {
          const int e = work->target_row[static_cast<size_t>(g) * k + j];
          if (e < 0 || cur_holds_[static_cast<size_t>(g) * m + e]) continue;
          ++v[g];
          if (Inter(g, e)) ++v[num_gpus + g];
        }
      }
    } else {
      v = work->start_recv;
      const int end = option == 0 ? 0 : work->step_delta_end[option - 1];
      for (int q = 0; q < end; ++q) {
        const std::array<int, 3>& dlt = work->step_deltas[q];
        v[dlt[0]] += dlt[1];
        v[num_gpus + dlt[0]] += dlt[2];
      }
    }
  }
}

void Planner::WritePathRow(const LayerWork& work, int upto,
                           int32_t* row) const {
  std::copy(work.start_row.begin(), work.start_row.end(), row);
  for (int i = 0; i < upto; ++i) {
    const LayerWork::Edit& e = work.steps[i];
    if (e.swap) {
      std::swap(row[e.p], row[e.q]);
    } else {
      row[e.p] = e.q;
    }
  }
}

absl::Status Planner::Run(std::vector<int32_t>* phy2log, int64_t* forced_moves,
                          std::vector<TradeoffPoint>* tradeoff) {
  const int num_layers = layout_.num_layers, s = layout_.num_slots;
  phy2log->assign(static_cast<size_t>(num_layers) * s, -1);
  *forced_moves = 0;
  tradeoff->clear();
  const bool has_current = !problem_.current_phy2log.empty();
  if (!has_current) {
    LayerWork work;
    work.has_target = true;
    for (int l = 0; l < num_layers; ++l) {
      BuildTarget(l, &work);
      std::copy(work.target_row.begin(), work.target_row.end(),
                phy2log->begin() + static_cast<size_t>(l) * s);
    }
    return absl::OkStatus();
  }

  track_recv_ = options_.migration.has_value();
  // With a migration model, the balanced plan is built only for layers
  // where the walk stops above (1 + good_enough_max_vio) x a lower bound on
  // that plan's max GPU load: elsewhere it could lower the layer's max by
  // less than the tolerance at which local search stops anyway, for a
  // from-scratch number of moves (typically 10x the walk's). This is most of
  // the planning time saved from a current placement. Layers of at most
  // kSecondStartMaxExperts experts always build it: it is cheap there, the
  // second start's group packing differs from the bound's, and on such few
  // items the from-scratch plan more often pays.
  const bool lazy_target =
      track_recv_ && layout_.num_experts > kSecondStartMaxExperts;
  std::vector<LayerWork> works(num_layers);
  for (int l = 0; l < num_layers; ++l) {
    LayerWork& work = works[l];
    const double* w = LayerW(l);
    for (int e = 0; e < layout_.num_experts; ++e) work.total += w[e];
    BuildCurHolds(l);
    if (track_recv_) BuildNodeHolds();
    BuildPath(l, &work);
    work.has_target = !lazy_target || !work.has_path ||
                      work.path_max.back() >
                          TargetLowerBound(l) *
                              (1 + options_.good_enough_max_vio);
    if (work.has_target) BuildTarget(l, &work);
    BuildHull(&work);
    if (track_recv_) BuildHullRecv(&work);
    *forced_moves += work.hull[0].moves;
  }

  // Increments of every layer's hull, best gain per move first.
  struct Increment {
    double rate;
    int layer;
    int to;  // hull index reached
    int64_t dmoves;
  };
  std::vector<Increment> incs;
  for (int l = 0; l < num_layers; ++l) {
    const LayerWork& work = works[l];
    if (work.total <= 0) continue;
    for (size_t i = 1; i < work.hull.size(); ++i) {
      const int64_t dm = work.hull[i].moves - work.hull[i - 1].moves;
      const double rate =
          (work.hull[i - 1].max_load - work.hull[i].max_load) / work.total / dm;
      if (rate <= options_.min_gain_per_moved_expert) break;
      incs.push_back({rate, l, static_cast<int>(i), dm});
    }
  }
  std::stable_sort(incs.begin(), incs.end(),
                   [](const Increment& a, const Increment& b) {
                     return a.rate > b.rate;
                   });
  // Balancedness bookkeeping for the trade-off curve.
  const int usable = layout_.num_usable;
  std::vector<double> max_now(num_layers);
  double sum_bal = 0, sum_mean = 0, sum_max = 0;
  auto bal = [&](int l, double mx) {
    return mx > 0 ? works[l].total / usable / mx : 1.0;
  };
  for (int l = 0; l < num_layers; ++l) {
    max_now[l] = works[l].hull[0].max_load;
    sum_bal += bal(l, max_now[l]);
    sum_mean += works[l].total / usable;
    sum_max += max_now[l];
  }
  std::vector<TradeoffPoint> curve;
  auto point = [&](int64_t spent) {
    TradeoffPoint p;
    p.move_budget = spent;
    p.moved_experts = *forced_moves + spent;
    p.balancedness = sum_bal / num_layers;
    p.balancedness_summed = sum_max > 0 ? sum_mean / sum_max : 1.0;
    return p;
  };
  // With a migration model: J = horizon x MoE step time + migration cost
  // of each prefix; the chosen prefix minimises it (ties: fewer moves).
  const int num_gpus = layout_.num_gpus;
  const int cap = options_.max_extra_experts_per_gpu;
  double moe_unit = 0, t_intra = 0, t_inter = 0, cost_factor = 0;
  double share = 0;  // sum over layers of max GPU load / layer total
  std::vector<int64_t> recv;  // total then inter, per GPU, over all layers
  if (track_recv_) {
    const MigrationModel& mm = *options_.migration;
    moe_unit = mm.horizon_steps * mm.tokens_per_step * mm.time_per_token_s;
    const double bytes = mm.bytes_per_expert > 0
                             ? mm.bytes_per_expert
                             : static_cast<double>(options_.bytes_per_expert);
    t_intra = bytes / mm.intra_node_bandwidth;
    t_inter = bytes / mm.inter_node_bandwidth;
    cost_factor = (mm.overlap ? mm.overlap_cost_fraction : 1.0) *
                  (options_.transient ? 1 + mm.transient_margin : 1.0);
    recv.assign(2 * static_cast<size_t>(num_gpus), 0);
    for (int l = 0; l < num_layers; ++l) {
      if (works[l].total > 0) share += max_now[l] / works[l].total;
      const std::vector<int>& v = works[l].hull_recv[0];
      for (size_t i = 0; i < v.size(); ++i) recv[i] += v[i];
    }
  }
  // Staged migration time (placement.cc, FillMoves): per destination GPU
  // inter-node transfers first, max_extra_experts_per_gpu per stage; a
  // stage lasts as long as its slowest transfer.
  auto cost_now = [&]() {
    int64_t st = 0, si = 0;
    for (int g = 0; g < num_gpus; ++g) {
      st = std::max<int64_t>(st, (recv[g] + cap - 1) / cap);
      si = std::max<int64_t>(si, (recv[num_gpus + g] + cap - 1) / cap);
    }
    return cost_factor * (si * t_inter + (st - si) * t_intra);
  };
  auto fill_time = [&](TradeoffPoint* p) {
    if (!track_recv_) return;
    p->moe_time_s = moe_unit * share;
    p->cost_s = cost_now();
  };
  if (options_.compute_tradeoff) {
    curve.push_back(point(0));
    fill_time(&curve.back());
  }
  double best_j = track_recv_ ? moe_unit * share + cost_now() : 0;
  size_t best_prefix = 0;  // increments taken (with a model)
  int64_t spent = 0;
  bool within = true;
  for (size_t n = 0; n < incs.size(); ++n) {
    const Increment& inc = incs[n];
    if (options_.move_budget >= 0 && spent + inc.dmoves > options_.move_budget) {
      within = false;
    }
    if (!within && !options_.compute_tradeoff) break;
    LayerWork& work = works[inc.layer];
    const double mx = work.hull[inc.to].max_load;
    sum_bal += bal(inc.layer, mx) - bal(inc.layer, max_now[inc.layer]);
    sum_max += mx - max_now[inc.layer];
    if (track_recv_) {
      share += (mx - max_now[inc.layer]) / work.total;
      const std::vector<int>& to = work.hull_recv[inc.to];
      const std::vector<int>& from = work.hull_recv[inc.to - 1];
      for (size_t i = 0; i < to.size(); ++i) recv[i] += to[i] - from[i];
    }
    max_now[inc.layer] = mx;
    if (within && !track_recv_) {
      work.chosen = inc.to;
    }
    spent += inc.dmoves;
    if (track_recv_ && within) {
      const double j = moe_unit * share + cost_now();
      if (j < best_j) {
        best_j = j;
        best_prefix = n + 1;
      }
    }
    if (options_.compute_tradeoff) {
      curve.push_back(point(spent));
      fill_time(&curve.back());
    }
  }
  if (track_recv_) {
    for (size_t n = 0; n < best_prefix; ++n) {
      works[incs[n].layer].chosen = incs[n].to;
    }
  }
  if (options_.compute_tradeoff) {
    const int want = std::max(2, options_.tradeoff_points);
    if (static_cast<int>(curve.size()) <= want) {
      *tradeoff = std::move(curve);
    } else {
      const size_t n = curve.size();
      size_t last = n;  // index last taken
      for (int i = 0; i < want; ++i) {
        const size_t idx = static_cast<size_t>(
            static_cast<double>(i) * (n - 1) / (want - 1) + 0.5);
        if (idx == last) continue;
        tradeoff->push_back(curve[idx]);
        last = idx;
      }
    }
  }

  for (int l = 0; l < num_layers; ++l) {
    const LayerWork& work = works[l];
    const HullPoint& p = work.hull[work.chosen];
    int32_t* row = phy2log->data() + static_cast<size_t>(l) * s;
    if (p.option < 0) {
      std::copy(work.target_row.begin(), work.target_row.end(), row);
    } else {
      WritePathRow(work, p.option, row);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status PlanDefault(const PlacementProblem& problem,
                         const PlacementOptions& options,
                         const Layout& layout, std::vector<int32_t>* phy2log,
                         int64_t* forced_moves,
                         std::vector<TradeoffPoint>* tradeoff) {
  Planner planner(problem, options, layout);
  return planner.Run(phy2log, forced_moves, tradeoff);
}

}  // namespace placement_internal
}  // namespace moecast
