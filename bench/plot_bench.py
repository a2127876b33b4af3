#!/usr/bin/env python3
"""Figures from a `moecast bench --json` report.

    /usr/bin/python3 bench/plot_bench.py REPORT.json OUT_PREFIX

writes
    OUT_PREFIX.errors.png    L1 error versus horizon for every predictor, one
                             panel per state, with the sampling and empirical
                             noise floors;
    OUT_PREFIX.series.png    forecast (auto, at the series horizon) versus the
                             realised mean for the busiest experts of the
                             series layer, transient origins shaded.
Needs matplotlib (Debian: python3-matplotlib).
"""
import json
import sys


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, prefix = sys.argv[1], sys.argv[2]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_bench.py: matplotlib is not installed "
              "(apt-get install python3-matplotlib)", file=sys.stderr)
        return 1
    with open(path) as f:
        report = json.load(f)
    trace = report["trace"]
    title = "%s: %d steps, %d layers x %d experts, top-%d" % (
        trace["counts"].split("/")[-1], trace["steps"], trace["layers"],
        trace["experts"], trace["top_k"])

    states = ["all", "transient", "stable"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    for ax, state in zip(axes, states):
        for pred in report["predictors"]:
            rows = sorted((r["horizon"], r["l1"]) for r in report["results"]
                          if r["predictor"] == pred and r["state"] == state)
            if not rows:
                continue
            style = dict(lw=2.5, color="black") if pred == "auto" else dict(lw=1.3)
            ax.plot([h for h, _ in rows], [v for _, v in rows], marker="o",
                    label=pred, **style)
        for key, label, ls in (("noise_floor", "sampling floor", ":"),
                               ("empirical_floor", "empirical floor", "--")):
            rows = sorted((r["horizon"], r["l1"]) for r in report[key]
                          if r["state"] == state)
            if rows:
                ax.plot([h for h, _ in rows], [v for _, v in rows], ls=ls,
                        color="gray", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("horizon h (steps)")
        ax.set_title("%s state%s" % (state, "s" if state == "all" else ""))
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("L1 error of the mean share over the next h steps")
    axes[-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(prefix + ".errors.png", dpi=110)
    plt.close(fig)

    s = report["series"]
    if s["steps"]:
        fig, ax = plt.subplots(figsize=(15, 4.5))
        steps = s["steps"]
        # Shade origins in the transient state.
        start = None
        for i, st in enumerate(s["state"] + ["stable"]):
            if st == "transient" and start is None:
                start = steps[i]
            elif st != "transient" and start is not None:
                end = steps[i] if i < len(steps) else steps[-1]
                ax.axvspan(start, end, color="orange", alpha=0.15, lw=0)
                start = None
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for k, e in enumerate(s["experts"]):
            c = colors[k % len(colors)]
            ax.plot(steps, s["actual"][k], color=c, lw=0.8, alpha=0.6,
                    label="expert %d realised" % e)
            ax.plot(steps, s["forecast"][k], color=c, lw=1.6,
                    label="expert %d forecast (auto)" % e)
        ax.set_xlabel("forecast origin (step)")
        ax.set_ylabel("mean share over the next %d steps" % s["horizon"])
        ax.set_title("%s, layer %d; transient origins shaded" % (title, s["layer"]))
        ax.legend(fontsize=8, ncol=2)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(prefix + ".series.png", dpi=110)
        plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
