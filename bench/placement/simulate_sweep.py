#!/usr/bin/env python3
"""The --tokens_per_step sweep of `moecast simulate` (BENCHMARKS.md,
"Placement policies on the bundled traces").

For each trace, W = 1000 and I in {300, 1000, 3000}, and each token volume
N (token-expert assignments per layer per step, the volume used both for
decisions and for scoring), runs the three policies and prints one markdown
row: total time (MoE + migration) and GB moved per policy, and whether
moecast's total is <= periodic's.

  bazel build //:moecast   # or //integrations/cli:moecast
  /usr/bin/python3 bench/placement/simulate_sweep.py [--moecast bazel-bin/moecast]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

TRACES = [
    # name, path, top_k, slots, gpus, nodes, groups
    ("tiny_moe_aux", "bench/traces/data/tiny_moe_aux.counts.csv.gz", 2, 24, 8, 2, 4),
    ("tiny_moe_noaux", "bench/traces/data/tiny_moe_noaux.counts.csv.gz", 2, 24, 8, 2, 4),
    ("synthetic_moe_2x32", "bench/traces/data/synthetic_moe_2x32.counts.csv.gz", 2, 48, 8, 2, 4),
    ("gptoss20b_dev_b32", "/work/shared/data/serving/gptoss20b_dev_b32.counts.csv.gz", 4, 48, 8, 2, 4),
]
INTERVALS = [300, 1000, 3000]
VOLUMES = [128, 1024, 8192, 65536, 524288]


def run(binary, trace, interval, volume):
    name, path, top_k, slots, gpus, nodes, groups = trace
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [binary, "simulate", "--counts", path, f"--top_k={top_k}",
               f"--slots={slots}", f"--gpus={gpus}", f"--nodes={nodes}",
               f"--groups={groups}", "--window=1000", f"--interval={interval}",
               f"--tokens_per_step={volume}", "--json", out]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return {r["policy"]: r for r in json.load(f)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moecast", default="bazel-bin/moecast")
    ap.add_argument("--traces", default="", help="comma-separated subset")
    args = ap.parse_args()
    keep = set(args.traces.split(",")) if args.traces else None
    print("| trace | I | N | periodic total s | GB | oracle total s | GB | "
          "moecast total s | GB | moecast / periodic | moecast rebalances |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    losses = 0
    for trace in TRACES:
        if keep and trace[0] not in keep:
            continue
        if not os.path.exists(trace[1]):
            print(f"skipping {trace[0]}: {trace[1]} not found", file=sys.stderr)
            continue
        for interval in INTERVALS:
            for volume in VOLUMES:
                r = run(args.moecast, trace, interval, volume)
                p, o, m = r["periodic"], r["oracle"], r["moecast"]
                ratio = m["total_time_s"] / p["total_time_s"]
                losses += m["total_time_s"] > p["total_time_s"]
                print(f"| {trace[0]} | {interval} | {volume} | "
                      f"{p['total_time_s']:.4g} | {p['moved_bytes'] / 1e9:.3g} | "
                      f"{o['total_time_s']:.4g} | {o['moved_bytes'] / 1e9:.3g} | "
                      f"{m['total_time_s']:.4g} | {m['moved_bytes'] / 1e9:.3g} | "
                      f"{ratio:.4f}{' (loses)' if ratio > 1 else ''} | "
                      f"{m['rebalances']} |", flush=True)
    print(f"\nruns where moecast's total time exceeds periodic's: {losses}")


if __name__ == "__main__":
    main()
