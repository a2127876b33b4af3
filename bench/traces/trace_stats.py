#!/usr/bin/python3
"""Summarise a moecast counts trace (NAME.counts.csv[.gz]): how the expert loads evolve.

For each layer and each block of --block steps it prints, on token-weighted shares:
  maxmean   max/mean load over the block (1 = perfectly balanced)
  Hn        normalised entropy H(p)/log(M) of the block share
  dead      experts whose share stays < alpha_dead/M for 3 consecutive 100-step windows
            (design section 6 rule, evaluated on the windows ending inside the block)
  fluct     step-to-step fluctuation in units of the sampling floor:
            mean_e var(p_e(t)-p_e(t-1))/2  /  mean_e p_e(1-K p_e)/(K N)
            (about 1 for pure sampling noise; larger = batch heterogeneity / transient)
  jump100   L1 distance between consecutive 100-step window mean shares, averaged
            over the block (how fast the load moves; high early = transient)
Per layer it also prints when the load settles: the first step after which the 100-step
window L1 jump stays below 2x its median over the second half of the trace (and the same
for the per-window fluctuation ratio), and the experts dead at the end.

Usage: trace_stats.py FILE.counts.csv.gz --top-k 2 [--block 1000]
Needs numpy (/usr/bin/python3 on Debian 12 with python3-numpy).
"""

import argparse
import sys

import numpy as np

sys.dont_write_bytecode = True   # no __pycache__ next to the bundled data
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from synth_trace import read_counts  # noqa: E402


def dead_flags(win_share, thr, need=3):
    """win_share: [W, M] shares of consecutive 100-step windows. Returns [W, M] bool:
    dead at window w (design rule: below thr for `need` consecutive windows, revive when
    above 1.5*thr for 2 consecutive windows)."""
    W, M = win_share.shape
    dead = np.zeros((W, M), bool)
    state = np.zeros(M, bool)
    below = np.zeros(M, int)
    above = np.zeros(M, int)
    for w in range(W):
        s = win_share[w]
        below = np.where(s < thr, below + 1, 0)
        above = np.where(s > 1.5 * thr, above + 1, 0)
        state = np.where(~state & (below >= need), True, state)
        state = np.where(state & (above >= 2), False, state)
        dead[w] = state
    return dead


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("counts")
    ap.add_argument("--top-k", type=int, required=True)
    ap.add_argument("--block", type=int, default=1000)
    ap.add_argument("--alpha-dead", type=float, default=0.16)
    ap.add_argument("--layers", default="", help="comma list of layers to show (default all)")
    args = ap.parse_args()

    steps, tokens, C = read_counts(args.counts)  # C: [T, L, M]
    T, L, M = C.shape
    K = args.top_k
    tot = C.sum(axis=2, keepdims=True).astype(float)
    P = C / tot
    thr = args.alpha_dead / M
    nwin = T // 100
    show = [int(x) for x in args.layers.split(",")] if args.layers else range(L)
    print("file %s: %d steps (%d..%d), %d layers, %d experts, tokens/step %s, K=%d"
          % (args.counts, T, steps[0], steps[-1], L, M,
             np.unique(tokens).tolist()[:3], K))
    for l in show:
        Cw = C[: nwin * 100, l].reshape(nwin, 100, M).sum(axis=1).astype(float)
        win = Cw / Cw.sum(axis=1, keepdims=True)
        dead = dead_flags(win, thr)
        jump = np.abs(np.diff(win, axis=0)).sum(axis=1)  # [nwin-1]
        late = float(np.median(jump[len(jump) // 2:])) if jump.size else float("nan")
        settle = next((i for i in range(len(jump)) if (jump[i:] < 2 * late).all()), len(jump))
        fr_w = []
        for w in range(nwin):
            pw = P[w * 100:(w + 1) * 100, l]
            shw = win[w]
            sampw = (shw * (1 - K * shw) / (K * tokens[w * 100:(w + 1) * 100].mean())).sum()
            fr_w.append((np.diff(pw, axis=0).var(axis=0) / 2).sum() / sampw if sampw > 0 else np.nan)
        fr_w = np.array(fr_w)
        fr_late = float(np.nanmedian(fr_w[nwin // 2:]))
        settle_f = next((i for i in range(nwin) if (fr_w[i:] < 2 * fr_late).all()), nwin)
        print("layer %d: settles at step ~%d (100-step window L1 jump stays < 2x its late median %.4f;"
              " first window jump %.4f); fluct stays < 2x its late median %.2f from step ~%d"
              " (first window %.2f); dead at the end: %s"
              % (l, steps[0] + (settle + 1) * 100, late, jump[0] if jump.size else float("nan"),
                 fr_late, steps[0] + settle_f * 100, fr_w[0],
                 np.flatnonzero(dead[-1]).tolist() if nwin else []))
        print("  %11s %8s %6s %5s %7s %8s  %s" % ("steps", "maxmean", "Hn", "dead", "fluct", "jump100", "top-3 shares"))
        for b0 in range(0, T, args.block):
            b1 = min(T, b0 + args.block)
            cb = C[b0:b1, l].sum(axis=0).astype(float)
            sh = cb / cb.sum()
            hn = -(sh[sh > 0] * np.log(sh[sh > 0])).sum() / np.log(M)
            pb = P[b0:b1, l]
            if b1 - b0 >= 3:
                emp = (np.diff(pb, axis=0).var(axis=0) / 2).mean()
                n = tokens[b0:b1].mean()
                samp = (sh * (1 - K * sh) / (K * n)).mean()
                fl = emp / samp if samp > 0 else float("nan")
            else:
                fl = float("nan")
            w0, w1 = b0 // 100, b1 // 100
            nd = int(dead[min(w1, nwin) - 1].sum()) if nwin and w1 >= 1 else -1
            jb = jump[max(0, w0 - 1): max(0, w1 - 1)]
            jm = jb.mean() if jb.size else float("nan")
            top = np.sort(sh)[::-1][:3]
            print("  %5d-%5d %8.2f %6.3f %5d %7.2f %8.4f  %s"
                  % (steps[b0], steps[b1 - 1], sh.max() * M, hn, nd, fl, jm,
                     " ".join("%.3f" % v for v in top)))


if __name__ == "__main__":
    main()
