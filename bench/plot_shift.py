#!/usr/bin/env python3
"""Figure: auto's forecast against the realised load around load shifts.

    /usr/bin/python3 bench/plot_shift.py RESTART.json NO_RESTART.json OUT.png \\
        [--changes S.changes.json] [--window 300]

RESTART.json and NO_RESTART.json are `moecast bench --json` reports of the same
trace and series (--series_layer, --series_horizon), run with the default
--restart_at_shifts and with --restart_at_shifts=false. One panel per change
(the true change steps from --changes, else the series layer's detected change
points), +-window steps around it: for the series expert that moves most at
that change, the realised mean share over the next h steps and auto's forecast
of it at each origin, with and without the restart; dashed: the true change,
dotted: the detection step. Needs matplotlib (Debian: python3-matplotlib).
"""
import argparse
import json
import sys


def load(path):
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"plot_shift.py: cannot read {path}: {e}")
    if "series" not in report or "shifts" not in report:
        sys.exit(f"plot_shift.py: {path} is not a moecast bench --json report "
                 "with a series and shifts")
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("restart")
    ap.add_argument("no_restart")
    ap.add_argument("out")
    ap.add_argument("--changes", help="the splice's .changes.json (true change steps)")
    ap.add_argument("--window", type=int, default=300)
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_shift.py: matplotlib is not installed "
                 "(apt-get install python3-matplotlib)")

    on, off = load(args.restart), load(args.no_restart)
    s_on, s_off = on["series"], off["series"]
    if s_on["steps"] != s_off["steps"] or s_on["experts"] != s_off["experts"]:
        sys.exit("plot_shift.py: the two reports' series differ (same trace, "
                 "--series_layer and --series_horizon needed)")
    layer, h = s_on["layer"], s_on["horizon"]
    detected = [x for x in on["shifts"] if x["layer"] == layer]
    if args.changes:
        with open(args.changes) as f:
            changes = json.load(f)["change_steps"]
    else:
        changes = [x["change_step"] for x in detected]
    if not changes:
        sys.exit(f"plot_shift.py: no change on series layer {layer}")

    steps = s_on["steps"]
    fig, axes = plt.subplots(1, len(changes), figsize=(4.2 * len(changes), 3.4),
                             sharey=False, squeeze=False)
    for ax, c in zip(axes[0], changes):
        idx = [i for i, t in enumerate(steps) if c - args.window <= t <= c + args.window]
        if not idx:
            ax.set_title(f"change at {c}: no origins")
            continue
        # The series expert whose realised share moves most across c.
        def move(k):
            before = [s_on["actual"][k][i] for i in idx if steps[i] < c - h]
            after = [s_on["actual"][k][i] for i in idx if steps[i] >= c]
            if not before or not after:
                return 0
            return abs(sum(after) / len(after) - sum(before) / len(before))
        k = max(range(len(s_on["experts"])), key=move)
        x = [steps[i] for i in idx]
        ax.plot(x, [s_on["actual"][k][i] for i in idx], color="black", lw=1.2,
                label=f"realised mean of the next {h} steps")
        ax.plot(x, [s_off["forecast"][k][i] for i in idx], color="tab:red", lw=1,
                label="auto, no restart")
        ax.plot(x, [s_on["forecast"][k][i] for i in idx], color="tab:blue", lw=1,
                label="auto, restart at the change point")
        ax.axvline(c, color="gray", ls="--", lw=0.8)
        for d in detected:
            if abs(d["change_step"] - c) <= args.window:
                ax.axvline(d["step"], color="gray", ls=":", lw=0.8)
        ax.set_title(f"layer {layer}, expert {s_on['experts'][k]}: change at {c}",
                     fontsize=9)
        ax.set_xlabel("forecast origin (step)")
    axes[0][0].set_ylabel("share of the layer's load")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
