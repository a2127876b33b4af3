#!/usr/bin/env python3
"""Figures from a `moecast health --json` report.

    /usr/bin/python3 bench/plot_health.py REPORT.json OUT.png

One row per layer: gamma_eff (f units) with its bootstrap CI band and the
phase of each window as background colour (surge, stabilization,
relaxation); on a second axis, the layer's max/mean load; dead experts marked
by count. Needs matplotlib (Debian: python3-matplotlib).
"""
import json
import sys

PHASE_COLOURS = {"surge": "#f4a582", "stabilization": "#d9d9d9",
                 "relaxation": "#92c5de"}


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        print("plot_health.py: matplotlib is not installed "
              "(apt-get install python3-matplotlib)", file=sys.stderr)
        return 1
    report = json.load(open(sys.argv[1]))
    trace = report["trace"]
    layers = trace["layers"]
    fig, axes = plt.subplots(layers, 1, figsize=(12, 2.6 * layers), sharex=True,
                             squeeze=False)
    for layer in range(layers):
        ax = axes[layer][0]
        rows = [w for w in report["windows"] if w["layer"] == layer]
        steps = [w["step"] for w in rows]
        width = trace["window"]
        for w in rows:
            colour = PHASE_COLOURS.get(w["phase"])
            if colour:
                ax.axvspan(w["step"] - width + 1, w["step"], color=colour, alpha=0.5, lw=0)
        # Windows at a search bound (unidentified) are left out of the curve.
        g = [None if (w.get("at_upper_bound") or w.get("at_lower_bound")) else
             w["gamma_f"] for w in rows]
        if any(v is not None for v in g):
            lo = [w["ci_lo"] for w in rows]
            hi = [w["ci_hi"] for w in rows]
            ok = [i for i, v in enumerate(g) if v is not None and lo[i] is not None]
            ax.fill_between([steps[i] for i in ok], [lo[i] for i in ok],
                            [hi[i] for i in ok], color="black", alpha=0.2, lw=0)
            ax.plot([steps[i] for i in ok], [g[i] for i in ok], color="black", lw=1.2)
            ax.set_ylabel("gamma_f (layer %d)" % trace["layer_ids"][layer])
        ax2 = ax.twinx()
        ax2.plot(steps, [w["max_over_mean"] for w in rows], color="tab:red", lw=1)
        ax2.set_ylabel("max/mean load", color="tab:red")
        dead = [len(w["dead_experts"]) for w in rows]
        if any(dead):
            ax2.step(steps, dead, color="tab:purple", lw=1, where="post")
        ax.grid(True, alpha=0.3)
    axes[-1][0].set_xlabel("step (window end)")
    handles = [Patch(color=c, alpha=0.5, label=p) for p, c in PHASE_COLOURS.items()]
    handles.append(Patch(color="tab:red", label="max/mean load"))
    handles.append(Patch(color="tab:purple", label="dead experts"))
    axes[0][0].legend(handles=handles, fontsize=8, loc="upper right")
    fig.suptitle("%s: gamma_eff with 95%% CI, phases, imbalance"
                 % trace["counts"].split("/")[-1])
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
