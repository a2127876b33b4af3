#!/usr/bin/env python3
"""Markdown tables from `moecast bench --json` reports (for BENCHMARKS.md).

    /usr/bin/python3 bench/bench_tables.py errors REPORT.json [STATE]
        L1 error per predictor and horizon, with both floors (STATE: all).
    /usr/bin/python3 bench/bench_tables.py auto REPORT.json [REPORT.json ...]
        auto's L1 over the best single predictor's, per state and horizon.
"""
import json
import sys


def cells(report, state, horizon):
    return {r["predictor"]: r for r in report["results"]
            if r["state"] == state and r["horizon"] == horizon}


def errors(path, state="all"):
    r = json.load(open(path))
    hs = r["horizons"]
    print("| predictor | " + " | ".join("h=%d" % h for h in hs) + " |")
    print("|---" * (len(hs) + 1) + "|")
    best = {h: min(v["l1"] for v in cells(r, state, h).values()) for h in hs}
    for p in r["predictors"]:
        row = []
        for h in hs:
            c = cells(r, state, h).get(p)
            if c is None:
                row.append("-")
            elif c["l1"] == best[h]:
                row.append("**%.4f**" % c["l1"])
            else:
                row.append("%.4f" % c["l1"])
        print("| %s | %s |" % (p, " | ".join(row)))
    for key, label in (("noise_floor", "sampling floor"),
                       ("empirical_floor", "empirical floor")):
        vals = {f["horizon"]: f["l1"] for f in r[key] if f["state"] == state}
        print("| %s | %s |" % (label, " | ".join(
            "%.4f" % vals[h] if h in vals else "-" for h in hs)))


def auto(paths):
    first = json.load(open(paths[0]))
    hs = first["horizons"]
    print("| trace, state | " + " | ".join("h=%d" % h for h in hs) + " |")
    print("|---" * (len(hs) + 1) + "|")
    for path in paths:
        r = json.load(open(path))
        name = r["trace"]["counts"].split("/")[-1].replace(".counts.csv.gz", "")
        for state in ("all", "transient", "stable"):
            row = []
            for h in hs:
                c = cells(r, state, h)
                if "auto" not in c:
                    row.append("-")
                    continue
                best = min(v["l1"] for k, v in c.items() if k != "auto")
                ratio = c["auto"]["l1"] / best
                text = "%.2f" % ratio
                row.append("**%s** (n=%d)" % (text, c["auto"]["n"]) if ratio > 1.05
                           else text)
            print("| %s, %s | %s |" % (name, state, " | ".join(row)))


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("errors", "auto"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "errors":
        errors(sys.argv[2], *sys.argv[3:4])
    else:
        auto(sys.argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
