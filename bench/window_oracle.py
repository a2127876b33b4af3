#!/usr/bin/env python3
"""How far below the best hindsight window can a smoother get on a trace?

Issue 14 asks `auto` for <= 0.90x the best plain window mean (W in 10 .. 3000,
chosen in hindsight per trace and horizon) at h = 100 and 1000. This script
bounds what choosing among windows can give, by oracles that pick in
hindsight:

  global     one window for the whole trace, W in 10 .. 1000 (the issue's
             baseline; every ratio printed is against it)
  global+    the same with W = 3000 allowed
  per layer  the best window (10 .. 3000) of each layer
  per expert the best window (10 .. 3000) of each (layer, expert) series

and tries least-squares trend extrapolation over long windows (damped), the
obvious way past a plain mean on a drifting load. Error as in `moecast
bench`'s timescale table: L1 of the forecast mean share over the next h
steps against the realised token-weighted mean, origins every max(1, h/10)
steps from step 1,100, per layer then averaged. Window means here are
unweighted means of the step proportions (`moecast bench`'s windows are too;
small differences from its table come from the origins' start).

  python3 bench/window_oracle.py bench/traces/data/tiny_moe_aux.counts.csv.gz ...

Needs numpy. Prints one line per trace and horizon.
"""
import argparse
import csv
import gzip
import sys

import numpy as np

# The baseline windows; the oracles may also take 3000.
BASELINE = (10, 30, 100, 300, 1000)
WINDOWS = BASELINE + (3000,)
TRENDS = ((300, 0.5), (1000, 0.5), (3000, 0.5), (1000, 1.0))


def load_counts(path):
    """T x L x M counts from a moecast counts trace (step,layer,tokens,c0..)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header[:3] != ["step", "layer", "tokens"]:
            sys.exit(f"{path}: not a counts trace (header {header[:3]})")
        rows = [list(map(float, r)) for r in reader]
    a = np.array(rows)
    layers = int(a[:, 1].max()) + 1
    steps = len(a) // layers
    if steps * layers != len(a):
        sys.exit(f"{path}: {len(a)} rows are not whole steps of {layers} layers")
    order = np.lexsort((a[:, 1], a[:, 0]))
    return a[order, 3:].reshape(steps, layers, -1)


def evaluate(counts, h):
    t_steps, layers, m = counts.shape
    assign = counts.sum(2, keepdims=True)
    zeros = lambda k: np.zeros((1, layers, k))
    cum = np.concatenate([zeros(m), np.cumsum(counts, 0)])
    cum_a = np.concatenate([zeros(1), np.cumsum(assign, 0)])
    p = counts / np.maximum(assign, 1e-300)
    cum_p = np.concatenate([zeros(m), np.cumsum(p, 0)])
    idx = np.arange(t_steps)[:, None, None]
    cum_tp = np.concatenate([zeros(m), np.cumsum(p * idx, 0)])
    origins = range(1100, t_steps - h, max(1, h // 10))
    win_err = np.zeros((len(WINDOWS), layers, m))
    trend_err = np.zeros(len(TRENDS))
    n = 0
    for t in origins:
        y = (cum[t + 1 + h] - cum[t + 1]) / np.maximum(
            cum_a[t + 1 + h] - cum_a[t + 1], 1e-300)
        for i, w in enumerate(WINDOWS):
            a = max(0, t + 1 - w)
            f = (cum_p[t + 1] - cum_p[a]) / (t + 1 - a)
            win_err[i] += np.abs(f - y)
        for i, (w, damp) in enumerate(TRENDS):
            a = max(0, t + 1 - w)
            k = t + 1 - a
            s0 = cum_p[t + 1] - cum_p[a]
            s1 = cum_tp[t + 1] - cum_tp[a]
            x_mean = (a + t) / 2
            slope = (s1 - x_mean * s0) / max(k * (k * k - 1) / 12.0, 1e-300)
            f = s0 / k + damp * slope * (t + (h + 1) / 2 - x_mean)
            f = np.clip(f, 0, None)
            f /= f.sum(-1, keepdims=True)
            trend_err[i] += np.abs(f - y).sum(-1).mean()
        n += 1
    win_err /= n
    trend_err /= n
    per_layer = win_err.sum(-1)                      # windows x layers
    base = per_layer[: len(BASELINE)].mean(1)
    best_global = base.min()
    return {
        "global": best_global,
        "global_w": BASELINE[int(base.argmin())],
        "global_plus": per_layer.mean(1).min() / best_global,
        "layer": per_layer.min(0).mean() / best_global,
        "expert": win_err.min(0).sum(-1).mean() / best_global,
        "trend": {f"{w}/{d}": e / best_global for (w, d), e in zip(TRENDS, trend_err)},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("traces", nargs="+", help="counts traces (.csv or .csv.gz)")
    ap.add_argument("--horizons", default="100,1000")
    args = ap.parse_args()
    horizons = [int(x) for x in args.horizons.split(",")]
    for path in args.traces:
        counts = load_counts(path)
        for h in horizons:
            if counts.shape[0] < 1100 + h + 1:
                print(f"{path} h={h}: too short")
                continue
            r = evaluate(counts, h)
            trends = ", ".join(f"{k} {v:.3f}x" for k, v in r["trend"].items())
            print(f"{path} h={h}: best window W={r['global_w']} L1 {r['global']:.4f}; "
                  f"with W=3000 {r['global_plus']:.3f}x; "
                  f"oracle per layer {r['layer']:.3f}x, per expert {r['expert']:.3f}x; "
                  f"trend (window/damping) {trends}")


if __name__ == "__main__":
    main()
