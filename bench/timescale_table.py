#!/usr/bin/env python3
"""auto against the best plain window mean chosen in hindsight, per horizon.

For each trace, runs `moecast bench` once with plain window means sw_avg(W),
W in {10, 30, 100, 300, 1000}, and once per candidate bank, and prints auto's
L1 error at h = 1, 10, 100, 1000 (all states) next to the best window's, as a
ratio (below 1: auto beats every window, including the one a user would pick
knowing the future).

  bazel build -c opt //:moecast
  python3 bench/timescale_table.py                       # default bank only
  python3 bench/timescale_table.py 'mine=last_value,ewm(300)' ...
  options: --trace NAME=PATH:K (repeatable; default: the three bundled traces
           and the serving development trace), --moecast PATH
"""
import argparse
import concurrent.futures
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOWS = "sw_avg(10),sw_avg(30),sw_avg(100),sw_avg(300),sw_avg(1000)"
DEFAULT_TRACES = [
    "tiny_moe_aux=bench/traces/data/tiny_moe_aux.counts.csv.gz:2",
    "tiny_moe_noaux=bench/traces/data/tiny_moe_noaux.counts.csv.gz:2",
    "synthetic_moe_2x32=bench/traces/data/synthetic_moe_2x32.counts.csv.gz:2",
    "serving_dev_b32=../shared/data/serving/gptoss20b_dev_b32.counts.csv.gz:4",
]


def parse_table(text):
    """Rows of the 'all states' table: name -> [h1, h10, h100, h1000]."""
    if "all states" not in text:
        raise ValueError("no 'all states' table in the output of moecast bench")
    section = text.split("all states", 1)[1].split("sampling floor", 1)[0]
    rows = {}
    for line in section.splitlines()[2:]:
        parts = line.split()
        if len(parts) == 5:
            rows[parts[0]] = [float(x) for x in parts[1:]]
    return rows


def run(moecast, path, top_k, predictors):
    out = subprocess.run(
        [moecast, "bench", "--counts", path, "--top_k", str(top_k),
         "--predictors", predictors],
        capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"moecast bench on {path} failed:\n{out.stderr}")
    return parse_table(out.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("banks", nargs="*", help="NAME=comma-separated predictors")
    ap.add_argument("--trace", action="append", help="NAME=PATH:K")
    ap.add_argument("--moecast", default=os.path.join(ROOT, "bazel-bin/moecast"))
    args = ap.parse_args()
    banks = {"default": "default"}
    for b in args.banks:
        if "=" not in b:
            ap.error(f"bank '{b}' must be NAME=PREDICTORS")
        name, spec = b.split("=", 1)
        banks[name] = spec
    traces = {}
    for t in args.trace or DEFAULT_TRACES:
        name, rest = t.split("=", 1)
        path, k = rest.rsplit(":", 1)
        traces[name] = (path, int(k))
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        jobs = {}
        for t, (path, k) in traces.items():
            jobs[(t, None)] = ex.submit(run, args.moecast, path, k, WINDOWS)
            for b, spec in banks.items():
                jobs[(t, b)] = ex.submit(run, args.moecast, path, k, spec)
        results = {key: f.result() for key, f in jobs.items()}
    print("| trace | bank | auto h=1 / 10 / 100 / 1000 | best window | ratio |")
    print("|---|---|---|---|---|")
    for t in traces:
        windows = results[(t, None)]
        best = [min(r[i] for r in windows.values()) for i in range(4)]
        for b in banks:
            a = results[(t, b)]["auto"]
            print(f"| {t} | {b} | " + " / ".join(f"{x:.4f}" for x in a) + " | " +
                  " / ".join(f"{x:.4f}" for x in best) + " | " +
                  " / ".join(f"{x / y:.2f}x" for x, y in zip(a, best)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
