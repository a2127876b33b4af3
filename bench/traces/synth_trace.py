#!/usr/bin/python3
"""Generate long SYNTHETIC MoE expert-load traces in the moecast trace format
(docs/design.md section 7), or fit the generator's parameters to a recorded trace.

Every file this writes is named synthetic_* (the name must start with "synthetic_"),
and its NAME.meta.json says "kind": "synthetic" and lists the ground-truth events
(regime switches, bursts, deaths, revivals) with their steps.

Outputs:
  NAME.counts.csv.gz   step,layer,tokens,c0..c{M-1}
  NAME.router.csv.gz   (with --router) step,layer,z0..z{M-1}: the step's latent routing
                       logits (log-proportions incl. the step noise), centred over experts.
                       This is a synthetic stand-in for the mean router logit, not a model.
  NAME.meta.json       parameters, seed, events.

Model (per layer, independent layers; x = latent logits of the M experts):
  x_e(t)   = mu_e(t) + d_e(t) + w_e(t) + b_e(t)
  mu_e(t)  target logits: N(0, spread^2), reached from 0 (uniform loads) by a linear ramp over
           `init_ramp` steps at the start; regime switches redraw a fraction `switch_frac`
           of them, ramped linearly over `switch_ramp` steps; a dying expert ramps to
           `dead_logit` below the median of the live ones over `dead_ramp` steps (a revival
           ramps back to a fresh N(0, spread^2) draw).
  d_e(t)   slow drift:  d <- (1 - drift_theta) d + drift * g(t) * xi
  w_e(t)   fast wobble: w <- (1 - wobble_theta) w + wobble * g(t) * xi'
           g(t) = 1 + drift_amp * exp(-t / tau_drift)   (transient: bigger moves early)
  b_e(t)   bursts: at rate `burst_rate` per step and layer one expert gets +burst_size for a
           geometric number of steps with mean `burst_len`.
  Step t:  u = x(t) + step_noise * h(t) * eps,  h(t) = 1 + noise_amp * exp(-t / tau_noise),
           eps ~ N(0, 1) per expert and step (batch heterogeneity: real steps are noisier
           than token sampling alone); then every one of the N tokens draws K DISTINCT
           experts by Gumbel-top-K on u (Plackett-Luce sampling without replacement), so
           sum(c) = N*K exactly.
  Every trace thus has a transient-then-stable start (init ramp, amplified noise and drift).

Defaults (DEFAULTS / PARAM_ORIGIN below, and README.md): step_noise, noise_amp, tau_noise,
wobble, wobble_theta, drift_amp, tau_drift and tokens come from `--fit` on the recorded
20,000-step run bench/traces/data/tiny_moe_aux.counts.csv.gz; the rest is chosen (spread,
slow drift, events, dead experts, shape), bracketed where possible by the two recorded runs.

--fit FILE.counts.csv[.gz] estimates from a trace (simulation-based method of moments; the
"stable part" is the second half of the trace):
  tokens, K, layers, experts: read from the file;
  spread:      so that the simulated sd over live experts of the log stable shares matches;
  step_noise:  so that the simulated step-to-step fluctuation in units of the sampling floor,
               [var(p(t)-p(t-1))/2] / [p(1-Kp)/(KN)], matches the stable part's;
  wobble, wobble_theta, drift: the variogram of 100-step window-mean log-shares at lags 1..H
               windows, minus the step-noise-only level (simulated), fitted as a fast OU
               process plus a slow random walk (drift_theta itself is not identifiable: chosen);
  noise_amp/tau_noise, drift_amp/tau_drift: least squares over the first windows of the
               per-window fluctuation ratio and of the mean change of window log-shares;
  dead experts at the end (design section 6 rule) are reported, not applied.
It prints the estimates, warnings where the model does not fit (e.g. collapsed routing), and
the command-line flags that reproduce them (use --apply-fit to generate with them).
Round trip (README.md): a synthetic trace generated with known parameters is fitted back
to within ~10-25% for the noise, wobble, drift and transient parameters.

numpy only; deterministic for a given --seed (and prefix-stable: a longer trace with the
same parameters starts with the same steps, except for events scheduled relative to --steps).
"""

import argparse
import gzip
import io
import json
import math
import os
import sys
import time

import numpy as np

# Defaults, with their provenance next to them (also written into every meta.json).
# "fit(aux)" = synth_trace.py --fit bench/traces/data/tiny_moe_aux.counts.csv.gz (rounded).
DEFAULTS = dict(
    steps=50000, layers=2, experts=32, top_k=2, tokens=512, seed=1,
    spread=0.5, step_noise=0.158, drift=0.002, drift_theta=2e-5,
    wobble=0.0246, wobble_theta=0.040,
    noise_amp=0.84, tau_noise=1250.0, drift_amp=1.16, tau_drift=2300.0, init_ramp=500,
    switch_rate=1.0 / 15000, switch_frac=0.25, switch_ramp=200,
    burst_rate=1.0 / 4000, burst_size=1.5, burst_len=30.0,
    dead=2, dead_logit=-4.0, dead_ramp=300, dead_window=(0.02, 0.5), revive_prob=0.5,
)
PARAM_ORIGIN = {
    "steps,layers,experts,seed": "chosen (bundled trace shape)",
    "top_k,tokens": "as both recorded runs (K=2, 512 tokens/step)",
    "step_noise": "fit(aux): 0.1575 (stable fluctuation 2.59x the sampling floor)",
    "noise_amp,tau_noise": "fit(aux): 0.838, 1251 (first 100-step window 15.9x the floor)",
    "wobble,wobble_theta": "fit(aux): 0.0246/step, 0.0398 (time scale ~25 steps)",
    "drift_amp,tau_drift": "fit(aux): 1.16, 2305",
    "drift": "chosen 0.002/step: fit(aux) gives 0 (no slow drift with the balance loss), "
             "fit(noaux) 0.0063/step (flagged fit: collapsed routing)",
    "drift_theta": "chosen (not identifiable): 2e-5, time scale 50k steps",
    "spread": "chosen 0.5: fit(aux) gives 0.051 (near-uniform under the balance loss); "
              "the no-aux run is collapsed beyond the model (fit hits its bound)",
    "init_ramp": "chosen 500: the no-aux run's imbalance forms within the first few hundred steps",
    "switch_*,burst_*": "chosen (neither recorded run has regime switches or bursts)",
    "dead,dead_logit,dead_ramp,dead_window,revive_prob": "chosen: 2 of 32 experts per layer die "
             "(the no-aux run ends with 1, 8, 9, 10 of 16 dead per layer by the design section 6 "
             "rule; the aux run with none)",
}
FIT_ORIGIN = {}


# ----------------------------------------------------------------------------- I/O
def gz_text_writer(path, level):
    """Text writer to PATH.part, gzip with a fixed header (no mtime, clean file name) so that
    regenerating a trace gives byte-identical files; os.replace() it to PATH when done."""
    raw = open(path + ".part", "wb")
    gz = gzip.GzipFile(filename=os.path.basename(path)[:-3] if path.endswith(".gz") else "",
                       mode="wb", compresslevel=level, fileobj=raw, mtime=0)
    w = io.TextIOWrapper(gz, encoding="ascii", newline="\n")
    w._raw_file = raw  # closed by gz_close
    return w


def gz_close(w):
    w.close()          # flushes and closes the GzipFile (not the raw file it wraps)
    w._raw_file.close()



def open_text(path, mode="rt"):
    if path.endswith(".gz"):
        return gzip.open(path, mode, newline="\n") if "w" in mode else gzip.open(path, mode)
    return open(path, mode)


def read_counts(path):
    """Read a counts trace. Returns steps [T] (int64), tokens [T] (float; N or sum/K
    unknown -> NaN), counts [T, L, M] (int64). Requires every step to list layers 0..L-1."""
    with open_text(path) as fh:
        header = fh.readline().strip().split(",")
        col = {n: i for i, n in enumerate(header)}
        cc = sorted((int(n[1:]), i) for n, i in col.items() if n[:1] == "c" and n[1:].isdigit())
        M = len(cc)
        cidx = [i for _, i in cc]
        si, li, ti = col["step"], col["layer"], col.get("tokens")
        steps, layers, toks, rows = [], [], [], []
        for line in fh:
            f = line.rstrip("\n").split(",")
            steps.append(int(f[si]))
            layers.append(int(f[li]))
            toks.append(float(f[ti]) if ti is not None else float("nan"))
            rows.append([int(f[i]) for i in cidx])
    steps = np.asarray(steps)
    layers = np.asarray(layers)
    L = int(layers.max()) + 1
    T = len(steps) // L
    C = np.asarray(rows, dtype=np.int64).reshape(T, L, M)
    if not (layers.reshape(T, L) == np.arange(L)).all():
        raise ValueError("%s: layers are not 0..L-1 in order for every step" % path)
    return steps.reshape(T, L)[:, 0], np.asarray(toks).reshape(T, L)[:, 0], C


# ----------------------------------------------------------------------------- sampling

def sample_counts(rng, u, n_tokens, k):
    """u: [B, L, M] logits. Every token draws K distinct experts by Gumbel-top-K.
    Returns counts [B, L, M] (int64), each row summing to n_tokens*k."""
    B, L, M = u.shape
    g = rng.random((B, L, n_tokens, M), dtype=np.float32)
    # Gumbel(0,1) = -log(-log U); U in [0,1): guard the 0.
    np.maximum(g, np.float32(1e-30), out=g)
    np.log(g, out=g)
    np.negative(g, out=g)
    np.log(g, out=g)
    np.negative(g, out=g)
    g += u[:, :, None, :].astype(np.float32)
    if k == 1:
        top = g.argmax(axis=-1)[..., None]
    else:
        top = np.argpartition(-g, k - 1, axis=-1)[..., :k]   # K distinct per token
    flat = top.reshape(B * L, -1) + (np.arange(B * L) * M)[:, None]
    c = np.bincount(flat.ravel(), minlength=B * L * M).reshape(B, L, M)
    return c


# ----------------------------------------------------------------------------- generator

class Generator:
    def __init__(self, p, steps_total):
        self.p = p
        L, M = p["layers"], p["experts"]
        ss = np.random.SeedSequence(p["seed"])
        s_init, s_dyn, s_ev, s_tok = ss.spawn(4)
        self.rng_dyn = np.random.default_rng(s_dyn)
        self.rng_tok = np.random.default_rng(s_tok)
        self.rng_ev = np.random.default_rng(s_ev)
        ri = np.random.default_rng(s_init)
        mu0 = ri.normal(0, p["spread"], (L, M))
        mu0 -= mu0.mean(axis=1, keepdims=True)
        self.mu = mu0.copy()
        self.o_slow = np.zeros((L, M))
        self.o_fast = np.zeros((L, M))
        self.burst = np.zeros((L, M))
        self.burst_left = np.zeros((L, M), int)
        self.ramps = []          # (layer, expert, start, length, from, to)
        self.events = []
        self.dead = np.zeros((L, M), bool)
        # Deaths (and revivals) are scheduled up front, relative to steps_total.
        self.sched = []          # (step, kind, layer, expert)
        lo, hi = p["dead_window"]
        for l in range(L):
            if p["dead"] <= 0:
                continue
            who = ri.choice(M, size=min(p["dead"], M - p["top_k"]), replace=False)
            for e in who:
                t = int(ri.uniform(lo, hi) * steps_total)
                self.sched.append((t, "death", l, int(e)))
                if ri.random() < p["revive_prob"]:
                    tr = t + int(ri.uniform(0.1, 0.3) * steps_total)
                    if tr < steps_total:
                        self.sched.append((tr, "revival", l, int(e)))
        self.sched.sort()
        if p["init_ramp"] > 0:   # transient start: from uniform loads to the drawn targets
            self.mu[:] = 0.0
            for l in range(L):
                for e in range(M):
                    self.ramps.append((l, e, 0, p["init_ramp"], 0.0, float(mu0[l, e])))

    def _ramp(self, l, e, t, length, target):
        self.ramps = [r for r in self.ramps if not (r[0] == l and r[1] == e)]
        self.ramps.append((l, e, t, max(1, length), self.mu[l, e], target))

    def step_logits(self, t):
        p = self.p
        L, M = p["layers"], p["experts"]
        rd, re_ = self.rng_dyn, self.rng_ev
        # scheduled deaths / revivals
        while self.sched and self.sched[0][0] <= t:
            _, kind, l, e = self.sched.pop(0)
            if kind == "death":
                base = np.median(self.mu[l][~self.dead[l]])
                self._ramp(l, e, t, p["dead_ramp"], base + p["dead_logit"])
                self.dead[l, e] = True
            else:
                self._ramp(l, e, t, p["dead_ramp"], float(re_.normal(0, p["spread"])))
                self.dead[l, e] = False
            self.events.append({"step": t, "type": kind, "layer": l, "expert": e})
        # regime switches
        for l in range(L):
            if re_.random() < p["switch_rate"]:
                alive = np.flatnonzero(~self.dead[l])
                nsw = max(1, int(round(p["switch_frac"] * len(alive))))
                who = re_.choice(alive, size=nsw, replace=False)
                for e in who:
                    self._ramp(l, int(e), t, p["switch_ramp"], float(re_.normal(0, p["spread"])))
                self.events.append({"step": t, "type": "regime_switch", "layer": l,
                                    "experts": sorted(int(e) for e in who),
                                    "ramp_steps": p["switch_ramp"]})
            if re_.random() < p["burst_rate"]:
                e = int(re_.integers(M))
                n = int(re_.geometric(1.0 / max(1.0, p["burst_len"])))
                self.burst[l, e] = p["burst_size"]
                self.burst_left[l, e] = n
                self.events.append({"step": t, "type": "burst", "layer": l, "expert": e,
                                    "steps": n, "logit": p["burst_size"]})
        # ramps of targets
        keep = []
        for (l, e, t0, n, a, b) in self.ramps:
            f = min(1.0, (t - t0 + 1) / n)
            self.mu[l, e] = a + (b - a) * f
            if f < 1.0:
                keep.append((l, e, t0, n, a, b))
        self.ramps = keep
        # drift: slow OU + fast OU ("wobble"), both with the transient amplitude g(t)
        gd = 1.0 + p["drift_amp"] * math.exp(-t / p["tau_drift"]) if p["tau_drift"] > 0 else 1.0
        xi = rd.standard_normal((2, L, M))
        self.o_slow += -p["drift_theta"] * self.o_slow + p["drift"] * gd * xi[0]
        self.o_fast += -p["wobble_theta"] * self.o_fast + p["wobble"] * gd * xi[1]
        # step noise (batch heterogeneity, transient amplitude)
        gn = 1.0 + p["noise_amp"] * math.exp(-t / p["tau_noise"]) if p["tau_noise"] > 0 else 1.0
        u = self.mu + self.o_slow + self.o_fast + self.burst + p["step_noise"] * gn * rd.standard_normal((L, M))
        self.burst_left -= 1
        self.burst[self.burst_left <= 0] = 0.0
        self.burst_left[self.burst_left < 0] = 0
        return u


def generate(p, name, out_dir, router=False, block=32, gzip_level=9, quiet=False):
    if not name.startswith("synthetic_"):
        sys.exit("synthetic trace names must start with 'synthetic_' (got %r)" % name)
    T, L, M, K, N = p["steps"], p["layers"], p["experts"], p["top_k"], p["tokens"]
    if not 1 <= K < M:
        sys.exit("need 1 <= top_k < experts")
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, name)
    gen = Generator(p, T)
    cf = gz_text_writer(base + ".counts.csv.gz", gzip_level)
    cf.write(",".join(["step", "layer", "tokens"] + ["c%d" % e for e in range(M)]) + "\n")
    rf = None
    if router:
        rf = gz_text_writer(base + ".router.csv.gz", gzip_level)
        rf.write(",".join(["step", "layer"] + ["z%d" % e for e in range(M)]) + "\n")
    t0 = time.time()
    for b0 in range(0, T, block):
        b1 = min(T, b0 + block)
        U = np.stack([gen.step_logits(t) for t in range(b0, b1)])   # [B, L, M]
        C = sample_counts(gen.rng_tok, U, N, K)
        assert (C.sum(axis=2) == N * K).all()
        lines = []
        for i, t in enumerate(range(b0, b1)):
            for l in range(L):
                lines.append("%d,%d,%d,%s\n" % (t, l, N, ",".join(map(str, C[i, l].tolist()))))
        cf.write("".join(lines))
        if rf is not None:
            Z = U - U.mean(axis=2, keepdims=True)
            rf.write("".join("%d,%d,%s\n" % (t, l, ",".join("%.5g" % v for v in Z[i, l].tolist()))
                             for i, t in enumerate(range(b0, b1)) for l in range(L)))
        if not quiet and (b1 // block) % max(1, 5000 // block) == 0:
            print("  %d/%d steps, %.0fs" % (b1, T, time.time() - t0), file=sys.stderr, flush=True)
    gz_close(cf)
    os.replace(base + ".counts.csv.gz.part", base + ".counts.csv.gz")
    if rf is not None:
        gz_close(rf)
        os.replace(base + ".router.csv.gz.part", base + ".router.csv.gz")
    wall = time.time() - t0
    meta = {
        "name": name, "kind": "synthetic",
        "note": "SYNTHETIC trace from bench/traces/synth_trace.py, not a training run",
        "generator": "bench/traces/synth_trace.py",
        "command": "python3 bench/traces/synth_trace.py " + " ".join(sys.argv[1:]),
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
        "param_origin": PARAM_ORIGIN if not FIT_ORIGIN else dict(PARAM_ORIGIN, **FIT_ORIGIN),
        "layers": L, "experts": M, "top_k": K, "tokens_per_step": N, "steps": T,
        "first_step": 0, "router_file": bool(router), "wall_time_s": round(wall, 1),
        "numpy_version": np.__version__,
        "events": gen.events,
    }
    with open(base + ".meta.json", "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.write("\n")
    if not quiet:
        print("wrote %s.* (%d steps, %.1fs, %d events)" % (base, T, wall, len(gen.events)),
              file=sys.stderr)
    return meta


# ----------------------------------------------------------------------------- statistics / fit

def fluct_ratio(C, N, K):
    """Step-to-step fluctuation in units of the sampling floor (design section 2), pooled
    over layers and experts: sum var(p(t)-p(t-1))/2 / sum p(1-Kp)/(KN). C: [T, L, M]."""
    P = C / C.sum(axis=2, keepdims=True)
    emp = (np.diff(P, axis=0).var(axis=0) / 2)           # [L, M]
    sh = C.sum(axis=0) / C.sum(axis=(0, 2))[:, None]
    samp = sh * (1 - K * sh) / (K * N)
    return float(emp.sum() / samp.sum())


def live_mask(C, alpha_dead=0.16):
    M = C.shape[2]
    sh = C.sum(axis=0) / C.sum(axis=(0, 2))[:, None]
    return sh > alpha_dead / M                            # [L, M]


def window_logshares(C, W):
    T, L, M = C.shape
    nw = T // W
    Cw = C[: nw * W].reshape(nw, W, L, M).sum(axis=1).astype(float)
    return np.log((Cw + 0.5) / (Cw.sum(axis=2, keepdims=True) + 0.5 * M))   # [nw, L, M]


def variogram(C, W, lags):
    """Mean over live (layer, expert) series of the mean square difference of W-step
    window-mean log-shares at the given lags (in windows)."""
    LS = window_logshares(C, W)
    live = live_mask(C)
    return np.array([float(((LS[h:] - LS[:-h]) ** 2).mean(axis=0)[live].mean()) for h in lags])


def ou_window_variogram(theta, W, lag):
    """E[(mean_{w+lag} - mean_w)^2] of W-step window means of a stationary discrete OU
    process x <- (1-theta) x + xi with unit stationary variance (autocorrelation (1-theta)^k)."""
    d = np.arange(-(W - 1), W)
    wt = (W - np.abs(d)) / float(W * W)
    r = 1.0 - theta
    var = float((wt * r ** np.abs(d)).sum())
    cov = float((wt * r ** np.abs(d + lag * W)).sum())
    return 2.0 * (var - cov)


def rw_window_variogram(W, lag):
    """E[(mean_{w+lag} - mean_w)^2] of W-step window means of a random walk with unit
    per-step variance."""
    j = np.arange(1, lag * W + W)
    i0 = np.maximum(0, j - lag * W)          # i in [i0, min(W-1, j-1)]
    i1 = np.minimum(W - 1, j - 1)
    cnt = np.maximum(0, i1 - i0 + 1).astype(float)
    return float((cnt ** 2).sum() / (W * W))


def nnls2(X, y):
    """Least squares with two non-negative coefficients."""
    c, *_ = np.linalg.lstsq(X, y, rcond=None)
    if (c >= 0).all():
        return c
    best = np.zeros(2)
    berr = float((y ** 2).sum())
    for k in range(2):
        xk = X[:, k]
        ck = max(0.0, float(xk @ y) / float(xk @ xk)) if float(xk @ xk) > 0 else 0.0
        err = float(((y - ck * xk) ** 2).sum())
        if err < berr:
            berr, best = err, np.eye(2)[k] * ck
    return best


def logshare_sd(C):
    sh = C.sum(axis=0) / C.sum(axis=(0, 2))[:, None]
    live = live_mask(C)
    return float(np.mean([np.log(sh[l][live[l]]).std() for l in range(C.shape[1])]))


def dead_at_end(C, alpha_dead=0.16):
    """Experts per layer below alpha_dead/M in each of the last three 100-step windows."""
    T, L, M = C.shape
    nw = T // 100
    Cw = C[: nw * 100].reshape(nw, 100, L, M).sum(axis=1).astype(float)
    S = Cw / Cw.sum(axis=2, keepdims=True)
    return (S[-3:] < alpha_dead / M).all(axis=0).sum(axis=1)


def _simulate(params, steps, seed=12345):
    """Simulate a stationary stretch (no transient, no events) and return counts."""
    p = dict(params)
    p.update(seed=seed, steps=steps, noise_amp=0.0, drift_amp=0.0, switch_rate=0.0,
             burst_rate=0.0, dead=0, init_ramp=0)
    gen = Generator(p, steps)
    out = []
    for b0 in range(0, steps, 64):
        U = np.stack([gen.step_logits(t) for t in range(b0, min(steps, b0 + 64))])
        out.append(sample_counts(gen.rng_tok, U, p["tokens"], p["top_k"]))
    return np.concatenate(out)


def _bisect(f, target, lo, hi, iters=14, log=True, increasing=True):
    """Find x in [lo, hi] with f(x) ~= target, f monotone."""
    for _ in range(iters):
        mid = math.sqrt(lo * hi) if log else 0.5 * (lo + hi)
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi) if log else 0.5 * (lo + hi)


def fit(path, sim_steps=3000, quiet=False):
    steps, tokens, C = read_counts(path)
    T, L, M = C.shape
    if not np.isfinite(tokens).any():
        sys.exit("trace has no tokens column; cannot infer K")
    N = int(round(float(np.nanmedian(tokens))))
    K = int(round(float(np.median(C.sum(axis=2) / tokens[:, None]))))
    W = 100
    if T < 20 * W:
        sys.exit("trace too short to fit (need >= %d steps)" % (20 * W))
    stable = C[T // 2:]
    est = {"tokens": N, "top_k": K, "layers": L, "experts": M}
    log = (lambda *a: print(*a, file=sys.stderr)) if not quiet else (lambda *a: None)
    log("fit %s: %d steps, L=%d, M=%d, N=%d, K=%d; stable part = steps %d..%d"
        % (path, T, L, M, N, K, steps[T // 2], steps[-1]))
    base = dict(DEFAULTS)
    base.update(est)
    base.update(drift=0.0, wobble=0.0, step_noise=0.0)

    # 1. spread: sd over live experts of the stable part's log-shares (simulated, so that
    #    the top-K compression of Gumbel-top-K sampling is accounted for)
    target_sd = logshare_sd(stable)

    def sd_of(spread):
        q = dict(base, spread=spread)
        return float(np.mean([logshare_sd(_simulate(q, 200, seed=s)) for s in (1, 2, 3, 4)]))
    est["spread"] = _bisect(sd_of, target_sd, 0.01, 3.0, iters=12)
    log("  log-share sd over live experts (stable part) %.4f -> spread %.4f" % (target_sd, est["spread"]))
    base["spread"] = est["spread"]

    # 2. step noise: match the stable part's step-to-step fluctuation / sampling floor
    target_fr = fluct_ratio(stable, N, K)

    def fr_of(sn):
        return fluct_ratio(_simulate(dict(base, step_noise=sn), sim_steps), N, K)
    fr0 = fr_of(0.0)
    est["step_noise"] = 0.0 if target_fr <= fr0 else _bisect(fr_of, target_fr, 1e-3, 3.0, iters=12)
    log("  fluctuation / sampling floor (stable part) %.3f (pure-sampling simulation %.3f) -> step_noise %.4f"
        % (target_fr, fr0, est["step_noise"]))
    base["step_noise"] = est["step_noise"]

    # 3. drift: variogram V(h) of 100-step window-mean log-shares at lags h = 1..H windows,
    #    minus what the fitted step noise alone gives (simulated), fitted as a fast OU
    #    ("wobble": theta_f, s_f^2) plus a slow random walk ("drift": d^2 per step):
    #    V(h) - V0 = s_f^2 A(theta_f, h) + d^2 B(h); grid over theta_f, non-negative LS for
    #    (s_f^2, d^2), relative errors.
    nws = stable.shape[0] // W
    H = max(3, min(20, nws // 4))
    lags = list(range(1, H + 1))
    V = variogram(stable, W, lags)
    V0 = float(variogram(_simulate(base, max(sim_steps, 60 * W)), W, lags).mean())
    Vx = V - V0
    Bh = np.array([rw_window_variogram(W, h) for h in lags])
    best = None
    for th in np.geomspace(1e-4, 1.0, 81):
        Ah = np.array([ou_window_variogram(th, W, h) for h in lags])
        X = np.stack([Ah, Bh], axis=1) / V[:, None]
        y = Vx / V
        coef = nnls2(X, y)
        err = float(((X @ coef - y) ** 2).sum())
        if best is None or err < best[0]:
            best = (err, th, coef)
    _, th, (sf2, d2) = best
    est["wobble_theta"] = float(th)
    est["wobble"] = math.sqrt(max(sf2, 0.0) * (2 * th - th * th))
    est["drift"] = math.sqrt(max(d2, 0.0))
    log("  window-mean log-share variogram (%d-step windows) lag 1, 2, %d: %.3e, %.3e, %.3e "
        "(no-drift simulation %.3e)" % (W, H, V[0], V[1], V[-1], V0))
    log("    -> fast OU wobble %.5f/step, wobble_theta %.3g (time scale %.0f steps, stationary sd %.4f);"
        " slow drift %.5f/step (random walk; drift_theta is chosen, not fitted)"
        % (est["wobble"], th, 1 / th, math.sqrt(max(sf2, 0.0)), est["drift"]))
    base.update(drift=est["drift"], wobble=est["wobble"], wobble_theta=est["wobble_theta"])

    # 4. transient: the first windows against the stable level
    nw = T // W
    fr_w = np.array([fluct_ratio(C[w * W:(w + 1) * W], N, K) for w in range(nw)])
    fr_late = float(np.median(fr_w[nw // 2:]))
    LS = window_logshares(C, W)
    live = live_mask(stable)
    jump = np.array([float(np.abs(LS[w + 1] - LS[w])[live].mean()) for w in range(nw - 1)])
    j_late = float(np.median(jump[nw // 2:]))
    sim = _simulate(base, 20 * W)
    LSs = window_logshares(sim, W)
    j_noise = float(np.mean(np.abs(np.diff(LSs, axis=0))))   # stationary model, incl. drift

    def first_below(series, level, start=0):
        run = np.convolve(series, np.ones(3) / 3, mode="same")
        for i in range(start, len(run)):
            if (run[i:] < level).all():
                return i
        return len(run)

    # Transient amplitudes and decay times: least squares on log scale over the first
    # windows (up to a quarter of the trace), grid search over (amp, tau). A window's
    # statistic is modelled with the multiplier averaged over the window's steps.
    nfit = max(4, min(nw // 4, 60))
    t_steps = np.arange(nfit * W, dtype=float)
    amps = np.concatenate([[0.0], np.geomspace(0.05, 30, 60)])
    taus = np.geomspace(W / 4.0, 10000, 50)

    def fit_decay(obs, model):
        best = (np.inf, 0.0, 0.0)
        for tau in taus:
            e = np.exp(-t_steps / tau)
            for amp in amps:
                mdl = model(((1 + amp * e) ** 2).reshape(nfit, W).mean(axis=1))
                err = float(((np.log(obs[:nfit]) - np.log(mdl)) ** 2).sum())
                if err < best[0]:
                    best = (err, amp, tau)
        return best[1], (best[2] if best[1] > 0 else 0.0)

    # step noise: F_w = 1 + (F_stable - 1) * <h^2>_w
    if fr_late > 1.05:
        est["noise_amp"], est["tau_noise"] = fit_decay(np.maximum(fr_w, 1e-6),
                                                       lambda h2: 1 + (fr_late - 1) * h2)
    else:
        est["noise_amp"], est["tau_noise"] = 0.0, 0.0
    # drift: J_w^2 = Jn^2 <h^2>_w + (J_stable^2 - Jn^2) <g^2>_w, Jn from a no-drift simulation
    simn = _simulate(dict(base, drift=0.0, wobble=0.0), 20 * W)
    LSn = window_logshares(simn, W)
    j_nodrift = float(np.mean(np.abs(np.diff(LSn, axis=0))))
    tn = np.arange((nfit + 1) * W, dtype=float)
    hmult = ((1 + est["noise_amp"] * np.exp(-tn / max(est["tau_noise"], 1e-9))) ** 2
             ).reshape(nfit + 1, W).mean(axis=1)
    hm = 0.5 * (hmult[:-1] + hmult[1:])          # a jump spans windows w and w+1
    jd2 = max(j_late ** 2 - j_nodrift ** 2, 1e-12)
    est["drift_amp"], est["tau_drift"] = fit_decay(
        np.maximum(jump, 1e-9) ** 2, lambda g2: j_nodrift ** 2 * hm + jd2 * g2)
    # spread over experts of 25-step window log-shares (reported only; init_ramp is chosen:
    # a round trip on synthetic data could not recover it next to the transient noise)
    LS25 = window_logshares(C, 25)
    sig = np.array([float(np.mean([LS25[w, l][live[l]].std() for l in range(L)]))
                    for w in range(LS25.shape[0])])
    sd_late = float(np.median(sig[len(sig) // 2:]))
    dist = sig
    d_late = sd_late
    jamp = est["drift_amp"]
    settle_f = first_below(fr_w / fr_late - 1, 1.0) * W
    settle_j = first_below(jump / j_late - 1, 1.0) * W
    log("  fluctuation ratio per %d-step window: first %.2f, stable median %.2f -> noise_amp %.3f (sd), tau_noise %.0f"
        % (W, fr_w[0], fr_late, est["noise_amp"], est["tau_noise"]))
    log("  mean |change| of window log-shares: first %.4f, stable median %.4f (model without drift %.4f, with %.4f)"
        " -> drift_amp %.2f, tau_drift %.0f" % (jump[0], j_late, j_nodrift, j_noise, jamp, est["tau_drift"]))
    log("  sd over experts of 25-step window log-shares: first %.3f, stable %.3f (init_ramp not fitted)"
        % (dist[0], d_late))
    log("  transient settles (within 2x of stable) after ~%d steps (fluctuation) / ~%d steps (window moves)"
        % (settle_f, settle_j))
    dead = dead_at_end(C)
    log("  experts below alpha_dead/M in each of the last three 100-step windows, per layer"
        " (not applied): %s" % dead.tolist())
    est["_diag"] = {"fluct_stable": target_fr, "fluct_pure_sampling_sim": fr0,
                    "fluct_first_window": float(fr_w[0]), "window_jump_first": float(jump[0]),
                    "window_jump_stable": j_late, "window_jump_model": j_noise,
                    "window_jump_model_no_drift": j_nodrift,
                    "settle_fluct_steps": int(settle_f), "settle_jump_steps": int(settle_j),
                    "logshare_sd": target_sd, "dead_per_layer_at_end": dead.tolist()}
    warn = []
    if est["spread"] > 2.9:
        warn.append("spread at the search bound (3.0): shares too uneven for the model (top-K saturation?)")
    if est["drift_amp"] >= amps[-1] or (est["tau_drift"] >= taus[-1]) or \
            est["noise_amp"] >= amps[-1] or est["tau_noise"] >= taus[-1]:
        warn.append("a transient parameter is at its grid bound (amp 30, tau 10000)")
    if j_late ** 2 <= j_nodrift ** 2:
        warn.append("stable window moves are not above the no-drift model: drift transient not identifiable")
    for w in warn:
        log("  WARNING: " + w)
    est["_diag"]["warnings"] = warn
    log("  flags: " + " ".join("--%s %.4g" % (k.replace("_", "-"), est[k]) for k in FIT_KEYS))
    return est


FIT_KEYS = ("spread", "step_noise", "drift", "wobble", "wobble_theta", "noise_amp",
            "tau_noise", "drift_amp", "tau_drift")


# ----------------------------------------------------------------------------- CLI

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="synthetic_trace", help="must start with synthetic_")
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    ap.add_argument("--fit", metavar="FROM.counts.csv.gz",
                    help="estimate parameters from a trace; print them; with --apply-fit also generate with them")
    ap.add_argument("--apply-fit", action="store_true",
                    help="with --fit: use the fitted spread/noise/drift/transient (shape flags still apply)")
    ap.add_argument("--router", action="store_true", help="also write NAME.router.csv.gz (z only)")
    ap.add_argument("--gzip-level", type=int, default=9)
    ap.add_argument("--block", type=int, default=32, help="steps sampled per numpy batch")
    ap.add_argument("--quiet", action="store_true")
    for k, v in DEFAULTS.items():
        if k == "dead_window":
            ap.add_argument("--dead-window", type=float, nargs=2, default=v,
                            help="deaths happen at a uniform fraction of --steps in this range (default %(default)s)")
            continue
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v,
                        help="default %(default)s")
    args = ap.parse_args()
    p = {k: getattr(args, k) for k in DEFAULTS}
    p["dead_window"] = tuple(p["dead_window"])
    if args.fit:
        est = fit(args.fit)
        print(json.dumps({k: v for k, v in est.items()}, indent=1))
        if not args.apply_fit:
            return
        for k in FIT_KEYS:
            p[k] = est[k]
        FIT_ORIGIN["applied_fit"] = args.fit
    generate(p, args.name, args.out_dir, router=args.router, block=args.block,
             gzip_level=args.gzip_level, quiet=args.quiet)


if __name__ == "__main__":
    main()
