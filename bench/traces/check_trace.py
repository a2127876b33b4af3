#!/usr/bin/env python3
"""Validate moecast trace files (docs/design.md section 7) by streaming them.

Usage:
  check_trace.py NAME.counts.csv.gz [NAME.router.csv.gz] [--top-k K]
  check_trace.py --all DIR          (every *.counts.csv[.gz] in DIR, with its router file if any)

K comes from --top-k, else from the sidecar NAME.meta.json ("top_k"), else it is
inferred (N = sum(c)/K needs the tokens column to be checked; without one, only
divisibility by K can be checked).

Checks (each failure names the file, line and column):
  counts: header has step, layer, c0..c{M-1} (contiguous, M >= 1), optional tokens;
          values are integers, counts >= 0, tokens > 0; steps strictly increase
          between step groups; every step lists every layer 0..L-1 exactly once, in order
          (L taken from the first step); sum(c) == tokens*K (or divisible by K
          when there is no tokens column).
  router: header has step, layer, z0..z{M-1} with the counts file's M, optional complete
          p0..p{M-1} and s0..s{M-1} blocks; same number of rows as the counts file and
          (step, layer) equal row for row; floats finite; sum_e p_e ~= 1 and sum_e s_e ~= 0
          (tolerance --tol, for printed rounding).
Standard library only. Exit status 0 when every file passes.
"""

import argparse
import glob
import gzip
import json
import math
import os
import sys


class TraceError(Exception):
    pass


def open_text(path):
    return gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, "r", newline="")


def base_name(path):
    for suf in (".counts.csv.gz", ".counts.csv"):
        if path.endswith(suf):
            return path[: -len(suf)]
    raise TraceError("%s: not a NAME.counts.csv[.gz] file" % path)


def parse_header(path, line, kind):
    if not line:
        raise TraceError("%s:1: empty file (no header)" % path)
    names = line.rstrip("\r\n").split(",")
    col = {}
    for i, n in enumerate(names):
        if n in col:
            raise TraceError("%s:1: column %d: duplicate column name %r" % (path, i + 1, n))
        col[n] = i
    for req in ("step", "layer"):
        if req not in col:
            raise TraceError("%s:1: missing column %r" % (path, req))

    def block(prefix):
        idx = sorted((int(n[len(prefix):]), i) for n, i in col.items()
                     if n.startswith(prefix) and n[len(prefix):].isdigit())
        if [e for e, _ in idx] != list(range(len(idx))):
            raise TraceError("%s:1: columns %s* are not %s0..%s%d contiguous"
                             % (path, prefix, prefix, prefix, len(idx) - 1))
        return [i for _, i in idx]
    blocks = {p: block(p) for p in (("c",) if kind == "counts" else ("z", "p", "s"))}
    known = {"step", "layer", "tokens"} if kind == "counts" else {"step", "layer"}
    for p, idx in blocks.items():
        known |= {names[i] for i in idx}
    unknown = [n for n in names if n not in known]
    return names, col, blocks, unknown


def check_pair(cpath, rpath, k, tol, quiet=False):
    warnings = []
    cf = open_text(cpath)
    names, col, blocks, unknown = parse_header(cpath, cf.readline(), "counts")
    if unknown:
        warnings.append("%s: unknown columns %s" % (cpath, unknown))
    cidx = blocks["c"]
    M = len(cidx)
    if M < 1:
        raise TraceError("%s:1: no c0.. columns" % cpath)
    si, li, ti = col["step"], col["layer"], col.get("tokens")
    ncol = len(names)

    rf = ridx = None
    if rpath:
        rf = open_text(rpath)
        rnames, rcol, rblocks, runk = parse_header(rpath, rf.readline(), "router")
        if runk:
            warnings.append("%s: unknown columns %s" % (rpath, runk))
        if len(rblocks["z"]) != M:
            raise TraceError("%s:1: %d z columns, counts file has M=%d" % (rpath, len(rblocks["z"]), M))
        for p in ("p", "s"):
            if rblocks[p] and len(rblocks[p]) != M:
                raise TraceError("%s:1: %d %s columns, expected 0 or %d" % (rpath, len(rblocks[p]), p, M))
        rsi, rli, rn = rcol["step"], rcol["layer"], len(rnames)

    def as_int(path, lineno, colname, s):
        try:
            return int(s)
        except ValueError:
            raise TraceError("%s:%d: column %r: not an integer: %r" % (path, lineno, colname, s))

    def as_float(path, lineno, colname, s):
        try:
            v = float(s)
        except ValueError:
            raise TraceError("%s:%d: column %r: not a number: %r" % (path, lineno, colname, s))
        if not math.isfinite(v):
            raise TraceError("%s:%d: column %r: not finite: %r" % (path, lineno, colname, s))
        return v

    rows = 0
    L = None
    cur_step = None
    cur_layers = []
    n_steps = 0
    first_step = last_step = None
    tok_min, tok_max = None, None
    k_seen = set()
    max_p_err = max_s_err = 0.0
    lineno = 1
    prev_step = None

    def close_step(step, layers, lineno):
        nonlocal L
        if L is None:
            L = len(layers)
            if layers != list(range(L)):
                raise TraceError("%s:%d: first step %d lists layers %s, expected 0..%d in order"
                                 % (cpath, lineno, step, layers, L - 1))
        elif layers != list(range(L)):
            raise TraceError("%s:%d: step %d lists layers %s, expected 0..%d in order"
                             " (L = %d from the first step)"
                             % (cpath, lineno, step, layers, L - 1, L))

    for line in cf:
        lineno += 1
        f = line.rstrip("\r\n").split(",")
        if len(f) != ncol:
            raise TraceError("%s:%d: %d fields, header has %d" % (cpath, lineno, len(f), ncol))
        step = as_int(cpath, lineno, "step", f[si])
        layer = as_int(cpath, lineno, "layer", f[li])
        c = [as_int(cpath, lineno, names[i], f[i]) for i in cidx]
        for i, v in zip(cidx, c):
            if v < 0:
                raise TraceError("%s:%d: column %r: negative count %d" % (cpath, lineno, names[i], v))
        total = sum(c)
        if ti is not None:
            n = as_int(cpath, lineno, "tokens", f[ti])
            if n <= 0:
                raise TraceError("%s:%d: column 'tokens': not positive: %d" % (cpath, lineno, n))
            tok_min = n if tok_min is None else min(tok_min, n)
            tok_max = n if tok_max is None else max(tok_max, n)
            if k is not None:
                if total != n * k:
                    raise TraceError("%s:%d: sum(c) = %d but tokens*K = %d*%d = %d"
                                     % (cpath, lineno, total, n, k, n * k))
            else:
                if total % n:
                    raise TraceError("%s:%d: sum(c) = %d not a multiple of tokens = %d"
                                     % (cpath, lineno, total, n))
                k_seen.add(total // n)
        elif k is not None and total % k:
            raise TraceError("%s:%d: sum(c) = %d not divisible by K = %d" % (cpath, lineno, total, k))

        if step != cur_step:
            if cur_step is not None:
                close_step(cur_step, cur_layers, lineno - 1)
                if step <= cur_step:
                    raise TraceError("%s:%d: column 'step': %d after %d (steps must increase)"
                                     % (cpath, lineno, step, cur_step))
            cur_step, cur_layers = step, []
            n_steps += 1
            if first_step is None:
                first_step = step
        cur_layers.append(layer)
        last_step = step
        rows += 1

        if rf is not None:
            rline = rf.readline()
            if not rline:
                raise TraceError("%s: ends at line %d, counts file has more rows (line %d)"
                                 % (rpath, lineno - 1, lineno))
            g = rline.rstrip("\r\n").split(",")
            if len(g) != rn:
                raise TraceError("%s:%d: %d fields, header has %d" % (rpath, lineno, len(g), rn))
            rs = as_int(rpath, lineno, "step", g[rsi])
            rl = as_int(rpath, lineno, "layer", g[rli])
            if (rs, rl) != (step, layer):
                raise TraceError("%s:%d: (step, layer) = (%d, %d) but counts file line %d has (%d, %d)"
                                 % (rpath, lineno, rs, rl, lineno, step, layer))
            vals = {}
            for p in ("z", "p", "s"):
                vals[p] = [as_float(rpath, lineno, rnames[i], g[i]) for i in rblocks[p]]
            if vals["p"]:
                for i, v in zip(rblocks["p"], vals["p"]):
                    if v < 0 or v > 1:
                        raise TraceError("%s:%d: column %r: probability %r outside [0,1]"
                                         % (rpath, lineno, rnames[i], v))
                e = abs(sum(vals["p"]) - 1.0)
                max_p_err = max(max_p_err, e)
                if e > tol:
                    raise TraceError("%s:%d: sum of p = %.8g, expected 1" % (rpath, lineno, sum(vals["p"])))
            if vals["s"]:
                e = abs(sum(vals["s"]))
                max_s_err = max(max_s_err, e)
                if e > tol * M:
                    raise TraceError("%s:%d: sum of s = %.8g, expected 0" % (rpath, lineno, sum(vals["s"])))
    if cur_step is None:
        raise TraceError("%s: no data rows" % cpath)
    close_step(cur_step, cur_layers, lineno)
    if rf is not None:
        extra = rf.readline()
        if extra:
            raise TraceError("%s:%d: more rows than the counts file" % (rpath, lineno + 1))
        rf.close()
    cf.close()
    if k is None and len(k_seen) > 1:
        raise TraceError("%s: sum(c)/tokens takes several values %s (K must be constant)"
                         % (cpath, sorted(k_seen)))
    kk = k if k is not None else (k_seen.pop() if k_seen else None)
    info = {"counts": cpath, "router": rpath, "rows": rows, "steps": n_steps,
            "first_step": first_step, "last_step": last_step, "layers": L, "experts": M,
            "top_k": kk, "tokens": (tok_min, tok_max) if ti is not None else None,
            "router_blocks": ("".join(p for p in "zps" if rblocks[p]) if rpath else None),
            "max_abs_sum_p_minus_1": max_p_err if rpath else None,
            "max_abs_sum_s": max_s_err if rpath else None,
            "warnings": warnings}
    return info


def meta_top_k(cpath):
    try:
        with open(base_name(cpath) + ".meta.json") as fh:
            return int(json.load(fh)["top_k"])
    except (OSError, KeyError, ValueError, TraceError):
        return None


def router_for(cpath):
    b = base_name(cpath)
    for suf in (".router.csv.gz", ".router.csv"):
        if os.path.exists(b + suf):
            return b + suf
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("counts", nargs="?")
    ap.add_argument("router", nargs="?")
    ap.add_argument("--top-k", type=int)
    ap.add_argument("--all", metavar="DIR")
    ap.add_argument("--tol", type=float, default=1e-3,
                    help="tolerance on sum(p) - 1 (and sum(s)/M) for printed rounding")
    args = ap.parse_args()
    jobs = []
    if args.all:
        for c in sorted(glob.glob(os.path.join(args.all, "*.counts.csv*"))):
            if c.endswith(".part"):
                continue
            jobs.append((c, router_for(c), args.top_k if args.top_k else meta_top_k(c)))
        if not jobs:
            sys.exit("no *.counts.csv[.gz] in %s" % args.all)
    elif args.counts:
        jobs.append((args.counts, args.router, args.top_k if args.top_k else meta_top_k(args.counts)))
    else:
        ap.error("give a counts file or --all DIR")
    bad = 0
    for c, r, k in jobs:
        try:
            info = check_pair(c, r, k, args.tol)
        except TraceError as e:
            print("FAIL %s" % e)
            bad += 1
            continue
        print("OK   %s%s: %d rows, steps %d..%d (%d steps), L=%d, M=%d, K=%s, tokens=%s%s"
              % (os.path.basename(c), (" + " + os.path.basename(r) + " [" + info["router_blocks"] + "]") if r else "",
                 info["rows"], info["first_step"], info["last_step"], info["steps"], info["layers"],
                 info["experts"], info["top_k"],
                 "%d" % info["tokens"][0] if info["tokens"] and info["tokens"][0] == info["tokens"][1]
                 else info["tokens"],
                 (", max|sum p-1|=%.2g, max|sum s|=%.2g" % (info["max_abs_sum_p_minus_1"], info["max_abs_sum_s"]))
                 if r and "p" in info["router_blocks"] else ""))
        for w in info["warnings"]:
            print("     warning: %s" % w)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
