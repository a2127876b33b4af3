#!/usr/bin/python3
"""Randomised check of moecast's eplb mode against an independent
re-implementation of DeepSeek's EPLB (eplb.py) in numpy.

Usage: /usr/bin/python3 eplb_reference_comparison.py PATH/TO/placement_tool

The re-implementation below follows the published algorithm step by step,
in float64 (the reference casts to float32; moecast uses double):
  rebalance_experts: hierarchical when num_groups % num_nodes == 0, else the
  hierarchical routine with one group and one node;
  balanced_packing: items by descending weight, each to the lightest pack
  with room (first pack on ties); with one item per pack, item i -> pack i;
  replicate_experts: each extra replica to argmax(weight / count) (first
  index on ties, as torch.max does);
  log2phy[l, e, rank] = physical index, -1 padded to the largest count.
The reference sorts with torch's unstable sort; here ties keep index order
(numpy's stable argsort of the negated weights), as moecast does.

Checks, for every random case (skewed Zipf-like, near-uniform, integer
loads with ties; hierarchical and global shapes; one slot per GPU):
  - per-GPU loads equal (rtol 1e-12) on every input;
  - phy2log, log2phy and logcnt identical on inputs without tied loads
    (continuous random loads), and also on tied inputs since both break
    ties the same way (reported separately);
  - the classic README example (2 layers, 12 experts, S=16, G=4, N=2, P=8)
    gives the README's phy2log.
Also checks default mode on the same inputs: never two replicas of an
expert on a GPU (hard); balancedness at least eplb's on average, and on
every input except where eplb's plan puts an expert twice on a GPU in the
layers where default is worse (such a duplicate amounts to an unused slot,
which the default mode may not have: on tiny shapes that can balance better)
or, at most 1% of inputs, where its greedy and local search simply do worse.
Prints SKIPPED and exits 0 without numpy.
"""
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("SKIPPED: numpy is not installed")
    sys.exit(0)


# ---------------------------------------------------------------------------
# Independent re-implementation of the reference.

def pack_balanced(weights, num_packs):
    """weights: 1-D array. Returns (pack, rank) arrays."""
    n = len(weights)
    per_pack = n // num_packs
    if per_pack == 1:
        return np.arange(n), np.zeros(n, dtype=np.int64)
    pack = np.full(n, -1, dtype=np.int64)
    rank = np.full(n, -1, dtype=np.int64)
    loads = [0.0] * num_packs
    counts = [0] * num_packs
    for item in np.argsort(-weights, kind="stable"):
        choice = None
        for p in range(num_packs):
            if counts[p] == per_pack:
                continue
            if choice is None or loads[p] < loads[choice]:
                choice = p
        pack[item] = choice
        rank[item] = counts[choice]
        counts[choice] += 1
        loads[choice] += float(weights[item])
    return pack, rank


def replicate(weights, num_phy):
    """weights: 1-D. Returns (phy2log, rank, count)."""
    n = len(weights)
    phy2log = list(range(n))
    rank = [0] * n
    count = np.ones(n, dtype=np.int64)
    for _ in range(n, num_phy):
        ratio = weights / count
        best = int(np.argmax(ratio))  # first maximum
        phy2log.append(best)
        rank.append(int(count[best]))
        count[best] += 1
    return np.array(phy2log), np.array(rank), count


def plan_layer(w, num_slots, groups, nodes, gpus):
    """One layer of rebalance_experts_hierarchical."""
    m = len(w)
    group_size = m // groups
    groups_per_node = groups // nodes
    slots_per_gpu = num_slots // gpus
    m_node = m // nodes
    s_node = num_slots // nodes
    group_w = np.array([w[g * group_size:(g + 1) * group_size].sum()
                        for g in range(groups)])
    gpack, grank = pack_balanced(group_w, nodes)
    # mlog: experts renumbered node by node.
    mlog_of = np.empty(m, dtype=np.int64)
    for g in range(groups):
        base = (gpack[g] * groups_per_node + grank[g]) * group_size
        for j in range(group_size):
            mlog_of[g * group_size + j] = base + j
    log_of = np.empty(m, dtype=np.int64)
    log_of[mlog_of] = np.arange(m)
    phy2log = np.full(num_slots, -1, dtype=np.int64)
    phyrank = np.full(num_slots, -1, dtype=np.int64)
    logcnt = np.zeros(m, dtype=np.int64)
    for node in range(nodes):
        node_log = log_of[node * m_node:(node + 1) * m_node]
        node_w = w[node_log]
        p2m, prank, mcnt = replicate(node_w, s_node)
        per_replica = node_w[p2m] / mcnt[p2m]
        pack, rank = pack_balanced(per_replica, gpus // nodes)
        for i in range(s_node):
            slot = node * s_node + pack[i] * slots_per_gpu + rank[i]
            phy2log[slot] = node_log[p2m[i]]
            phyrank[slot] = prank[i]
        logcnt[node_log] = mcnt
    return phy2log, phyrank, logcnt


def reference(weights, num_slots, groups, nodes, gpus):
    layers, m = weights.shape
    if groups % nodes != 0:
        groups, nodes = 1, 1
    out = [plan_layer(weights[l], num_slots, groups, nodes, gpus)
           for l in range(layers)]
    phy2log = np.stack([o[0] for o in out])
    phyrank = np.stack([o[1] for o in out])
    logcnt = np.stack([o[2] for o in out])
    maxcnt = int(logcnt.max())
    log2phy = np.full((layers, m, maxcnt), -1, dtype=np.int64)
    for l in range(layers):
        for s in range(num_slots):
            log2phy[l, phy2log[l, s], phyrank[l, s]] = s
    return phy2log, log2phy, logcnt


def gpu_loads(weights, phy2log, logcnt, gpus):
    layers, slots = phy2log.shape
    k = slots // gpus
    out = np.zeros((layers, gpus))
    for l in range(layers):
        for s in range(slots):
            e = phy2log[l, s]
            if e >= 0:
                out[l, s // k] += weights[l, e] / logcnt[l, e]
    return out


def balancedness(loads):
    vals = []
    for row in loads:
        mx = row.max()
        vals.append(row.mean() / mx if mx > 0 else 1.0)
    return float(np.mean(vals))


# ---------------------------------------------------------------------------
# Cases.

def random_weights(rng, layers, m, kind):
    if kind == "zipf":
        s = rng.uniform(0.6, 1.4)
        base = 1.0 / (np.arange(1, m + 1) ** s)
        w = np.stack([rng.permutation(base) * rng.uniform(0.8, 1.2, m)
                      for _ in range(layers)])
        return w * 1000
    if kind == "uniform":
        return rng.uniform(0.9, 1.1, (layers, m)) * 100
    if kind == "ties":
        return rng.integers(0, 6, (layers, m)).astype(float)
    return rng.exponential(1.0, (layers, m))


def random_shape(rng):
    while True:
        nodes = int(rng.choice([1, 2, 4]))
        gpus_per_node = int(rng.choice([1, 2, 4, 8]))
        gpus = nodes * gpus_per_node
        groups = int(rng.choice([1, 2, 3, 4, 8]))
        group_size = int(rng.integers(1, 9))
        m = groups * group_size
        k = int(rng.integers(1, 6))
        slots = gpus * k
        if slots < m:
            continue
        return dict(M=m, S=slots, G=groups, N=nodes, P=gpus)


def write_cases(path, cases):
    with open(path, "w") as f:
        for c in cases:
            w = c["w"]
            f.write("case %d %d %d %d %d %d\n" % (w.shape[0], w.shape[1],
                                                  c["S"], c["G"], c["N"],
                                                  c["P"]))
            for row in w:
                f.write(" ".join(repr(float(v)) for v in row) + "\n")


def run_tool(tool, path, mode):
    out = subprocess.run([tool, "--mode=" + mode, "--input=" + path],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def main():
    tool = sys.argv[1]
    rng = np.random.default_rng(20240611)
    cases = []
    readme = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                       [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16,
                        27]], dtype=float)
    cases.append(dict(w=readme, S=16, G=4, N=2, P=8, kind="readme"))
    kinds = ["zipf", "uniform", "ties", "exp"]
    for i in range(400):
        shape = random_shape(rng)
        kind = kinds[i % len(kinds)]
        layers = int(rng.integers(1, 4))
        cases.append(dict(w=random_weights(rng, layers, shape["M"], kind),
                          kind=kind, **shape))
    # Two DeepSeek-V3-shaped cases (fewer layers to keep Python fast).
    for kind in ("zipf", "exp"):
        cases.append(dict(w=random_weights(rng, 4, 256, kind), S=288, G=8,
                          N=4, P=32, kind=kind))
    cases.append(dict(w=random_weights(rng, 3, 128, "zipf"), S=160, G=8,
                      N=2, P=16, kind="zipf"))
    cases.append(dict(w=random_weights(rng, 3, 128, "zipf"), S=160, G=1,
                      N=2, P=16, kind="zipf"))

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cases.txt")
        write_cases(path, cases)
        eplb = run_tool(tool, path, "eplb")
        default = run_tool(tool, path, "default")

    failures = []
    checked_exact = checked_tied = default_checked = 0
    dup_in_eplb = 0
    worst_ratio = float("inf")
    ratios = []
    worse_dup = 0
    worse_other = []
    for idx, (c, got, dflt) in enumerate(zip(cases, eplb, default)):
        w = c["w"]
        tag = "case %d (%s, L=%d M=%d S=%d G=%d N=%d P=%d)" % (
            idx, c["kind"], w.shape[0], w.shape[1], c["S"], c["G"], c["N"],
            c["P"])
        if not got["ok"]:
            failures.append(tag + ": eplb rejected: " + got["error"])
            continue
        p2l, l2p, cnt = reference(w, c["S"], c["G"], c["N"], c["P"])
        ref_loads = gpu_loads(w, p2l, cnt, c["P"])
        ours = np.array(got["gpu_loads"])
        if not np.allclose(ours, ref_loads, rtol=1e-12, atol=1e-9):
            failures.append(tag + ": per-GPU loads differ:\n  ours %s\n  ref  %s"
                            % (ours.tolist(), ref_loads.tolist()))
            continue
        same = (np.array_equal(np.array(got["phy2log"]), p2l) and
                np.array_equal(np.array(got["logcnt"]), cnt) and
                np.array_equal(np.array(got["log2phy"]), l2p))
        if c["kind"] == "ties":
            checked_tied += 1
        else:
            checked_exact += 1
        if not same:
            failures.append(tag + ": phy2log/log2phy/logcnt differ:\n  ours %s"
                            "\n  ref  %s" % (got["phy2log"], p2l.tolist()))
        if c["kind"] == "readme":
            want = [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                    [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]
            if got["phy2log"] != want:
                failures.append(tag + ": README phy2log differs: %s"
                                % got["phy2log"])
        k = c["S"] // c["P"]
        for row in p2l:
            for g in range(c["P"]):
                gpu = row[g * k:(g + 1) * k]
                if len(set(gpu.tolist())) < len(gpu):
                    dup_in_eplb += 1
                    break
        # Default mode: no duplicates, balancedness >= eplb's.
        if dflt["ok"]:
            default_checked += 1
            for row in dflt["phy2log"]:
                for g in range(c["P"]):
                    gpu = row[g * k:(g + 1) * k]
                    if len(set(gpu)) < len(gpu):
                        failures.append(tag + ": default mode duplicates "
                                        "an expert on GPU %d" % g)
            ref_bal = balancedness(ref_loads)
            d_loads = gpu_loads(w, np.array(dflt["phy2log"]),
                                np.array(dflt["logcnt"]), c["P"])
            d_bal = balancedness(d_loads)
            worst_ratio = min(worst_ratio, d_bal / ref_bal)
            ratios.append(d_bal / ref_bal)
            if d_bal < ref_bal * (1 - 1e-9):
                # Explained when every layer where default's max is higher
                # is one where eplb put an expert twice on a GPU (that is
                # an unused slot, which the default mode may not have).
                explained = True
                for l in range(w.shape[0]):
                    if d_loads[l].max() > ref_loads[l].max() * (1 + 1e-9):
                        row = p2l[l]
                        if all(len(set(row[g * k:(g + 1) * k].tolist())) == k
                               for g in range(c["P"])):
                            explained = False
                if explained:
                    worse_dup += 1
                else:
                    worse_other.append(tag + ": default %.6f < eplb %.6f"
                                       % (d_bal, ref_bal))
    print("cases: %d (%d without ties, %d with integer ties); default mode "
          "accepted %d; eplb layers with a duplicate on a GPU: %d; worst "
          "default/eplb balancedness ratio %.4f"
          % (len(cases), checked_exact, checked_tied, default_checked,
             dup_in_eplb, worst_ratio))
    print("default mode: mean default/eplb balancedness ratio %.5f; "
          "less balanced than eplb on %d inputs where eplb duplicated an "
          "expert on a GPU in each worse layer, on %d others%s"
          % (float(np.mean(ratios)), worse_dup, len(worse_other),
             "".join("\n  " + t for t in worse_other)))
    if float(np.mean(ratios)) < 1.0:
        failures.append("default mode is less balanced than eplb on average")
    if len(worse_other) > 0.01 * default_checked:
        failures.append("default mode is less balanced than a duplicate-free "
                        "eplb plan on more than 1%% of inputs (%d)"
                        % len(worse_other))
    if failures:
        print("%d FAILURES" % len(failures))
        for f in failures[:20]:
            print(f)
        sys.exit(1)
    print("PASSED")


if __name__ == "__main__":
    main()
