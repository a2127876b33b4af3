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
  x_e(t)   = mu_e(t) + o_e(t) + b_e(t)
  mu_e(t)  target logits: N(0, spread^2) at the start; regime switches redraw a fraction
           `switch_frac` of them, ramped linearly over `switch_ramp` steps; a dying expert
           ramps to `dead_logit` below the mean (a revival ramps back to a fresh draw).
  o_e(t)   slow drift: OU process o <- o - theta*o + drift*g(t)*xi,  g(t) = 1 + drift_amp*exp(-t/tau_drift)
           (transient: large, fast moves early, decaying to the stable drift rate).
  b_e(t)   bursts: at rate `burst_rate` per step and layer one expert gets +burst_size for a
           geometric number of steps with mean `burst_len`.
  Step t:  u = x(t) + step_noise*h(t)*eps,  h(t) = 1 + noise_amp*exp(-t/tau_noise),  eps ~ N(0,1)
           (batch heterogeneity: real steps are noisier than sampling alone);
           every one of the N tokens draws K DISTINCT experts by Gumbel-top-K on u
           (Plackett-Luce sampling without replacement), so sum(c) = N*K exactly.
  The generator starts from x = 0 plus the transient (uniform-ish loads that move fast), so
  every trace has a transient-then-stable start.

Defaults: fitted with --fit to bench/traces/data/tiny_moe_aux.counts.csv.gz (the recorded
20,000-step run with load-balancing loss), except those marked "chosen" in FIT_ORIGIN below;
README.md gives the fit output. The default shape (2 layers x 32 experts, 256 tokens/step)
is chosen, not fitted.

--fit FILE.counts.csv[.gz] estimates from a trace (simulation-based method of moments):
  tokens, K, layers, experts: read from the file;
  spread:      matched so that the simulated sd of log stable shares equals the trace's;
  step_noise:  matched so that the simulated step-to-step fluctuation, in units of the
               sampling floor (var(p(t)-p(t-1))/2 over p(1-Kp)/(KN)), equals the trace's
               (stable part = second half);
  drift:       from the variance of differences of consecutive 100-step window means of
               log-shares, minus what the fitted step noise alone gives (simulated);
  noise_amp/tau_noise, drift_amp/tau_drift: from the first windows' excess over the stable level;
  dead:        experts dead at the end (design section 6 rule) per layer, averaged.
It prints the estimates and the command-line flags that reproduce them.

numpy only; deterministic for a given --seed (and prefix-stable: a longer trace with the
same parameters starts with the same steps, except for events scheduled relative to --steps).
"""

import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np

# Defaults. Provenance in FIT_ORIGIN (kept next to the numbers on purpose).
DEFAULTS = dict(
    steps=50000, layers=2, experts=32, top_k=2, tokens=256, seed=1,
    spread=0.30, step_noise=0.10, drift=0.0030, ou_theta=0.0005,
    noise_amp=3.0, tau_noise=400.0, drift_amp=10.0, tau_drift=400.0, init_ramp=300,
    switch_rate=1.0 / 15000, switch_frac=0.25, switch_ramp=200,
    burst_rate=1.0 / 4000, burst_size=1.5, burst_len=30.0,
    dead=1, dead_logit=-4.0, dead_ramp=300, dead_window=(0.02, 0.5), revive_prob=0.5,
)
FIT_ORIGIN = {}


# ----------------------------------------------------------------------------- I/O

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
        self.o = np.zeros((L, M))
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
        # drift (OU with transient amplitude)
        gd = 1.0 + p["drift_amp"] * math.exp(-t / p["tau_drift"]) if p["tau_drift"] > 0 else 1.0
        self.o += -p["ou_theta"] * self.o + p["drift"] * gd * rd.standard_normal((L, M))
        # step noise (batch heterogeneity, transient amplitude)
        gn = 1.0 + p["noise_amp"] * math.exp(-t / p["tau_noise"]) if p["tau_noise"] > 0 else 1.0
        u = self.mu + self.o + self.burst + p["step_noise"] * gn * rd.standard_normal((L, M))
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
    cf = gzip.open(base + ".counts.csv.gz.part", "wt", compresslevel=gzip_level, newline="\n")
    cf.write(",".join(["step", "layer", "tokens"] + ["c%d" % e for e in range(M)]) + "\n")
    rf = None
    if router:
        rf = gzip.open(base + ".router.csv.gz.part", "wt", compresslevel=gzip_level, newline="\n")
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
    cf.close()
    os.replace(base + ".counts.csv.gz.part", base + ".counts.csv.gz")
    if rf is not None:
        rf.close()
        os.replace(base + ".router.csv.gz.part", base + ".router.csv.gz")
    wall = time.time() - t0
    meta = {
        "name": name, "kind": "synthetic",
        "note": "SYNTHETIC trace from bench/traces/synth_trace.py, not a training run",
        "generator": "bench/traces/synth_trace.py",
        "command": "python3 bench/traces/synth_trace.py " + " ".join(sys.argv[1:]),
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
        "param_origin": FIT_ORIGIN,
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
    base.update(drift=0.0, step_noise=0.0)

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

    # 3. drift: variogram of 100-step window-mean log-shares at lags 1 and h2 windows, in
    #    excess of what the fitted step noise alone gives (simulated), matched to an OU process.
    nws = stable.shape[0] // W
    h2 = max(2, min(10, nws // 4))
    V = variogram(stable, W, [1, h2])
    V0 = variogram(_simulate(base, max(sim_steps, 60 * W)), W, [1, h2])
    Vx = np.maximum(V - V0.mean(), 0.0)
    if Vx[0] <= 0:
        est["drift"], est["ou_theta"] = 0.0, DEFAULTS["ou_theta"]
        log("  window variogram %s <= no-drift simulation %s -> drift 0" % (V, V0))
    else:
        R = Vx[1] / Vx[0]

        def ratio(th):
            return ou_window_variogram(th, W, h2) / ou_window_variogram(th, W, 1)
        lo_th, hi_th = 1e-6, 0.5
        if R >= ratio(lo_th):
            theta = lo_th
        elif R <= ratio(hi_th):
            theta = hi_th
        else:
            theta = _bisect(ratio, R, lo_th, hi_th, iters=30, increasing=False)
        s2 = Vx[0] / ou_window_variogram(theta, W, 1)
        est["ou_theta"] = theta
        est["drift"] = math.sqrt(s2 * (2 * theta - theta * theta))
        log("  window-mean log-share variogram lag 1, %d windows of %d steps: %.3e, %.3e "
            "(no-drift simulation %.3e, %.3e)" % (h2, W, V[0], V[1], V0[0], V0[1]))
        log("    -> OU: ou_theta %.3g/step (time scale %.0f steps), stationary sd %.4f, drift %.5f/step"
            % (theta, 1 / theta, math.sqrt(s2), est["drift"]))
    base.update(drift=est["drift"], ou_theta=est["ou_theta"])

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
    simn = _simulate(dict(base, drift=0.0), 20 * W)
    LSn = window_logshares(simn, W)
    j_nodrift = float(np.mean(np.abs(np.diff(LSn, axis=0))))
    tn = np.arange((nfit + 1) * W, dtype=float)
    hmult = ((1 + est["noise_amp"] * np.exp(-tn / max(est["tau_noise"], 1e-9))) ** 2
             ).reshape(nfit + 1, W).mean(axis=1)
    hm = 0.5 * (hmult[:-1] + hmult[1:])          # a jump spans windows w and w+1
    jd2 = max(j_late ** 2 - j_nodrift ** 2, 1e-12)
    est["drift_amp"], est["tau_drift"] = fit_decay(
        np.maximum(jump, 1e-9) ** 2, lambda g2: j_nodrift ** 2 * hm + jd2 * g2)
    # initial ramp from uniform loads: spread over experts of 25-step window log-shares,
    # time to first reach 80% of its stable level (0 when already there in the first window)
    LS25 = window_logshares(C, 25)
    sd25 = np.array([float(np.mean([LS25[w, l][live[l]].std() for l in range(L)]))
                     for w in range(LS25.shape[0])])
    sd_late = float(np.median(sd25[len(sd25) // 2:]))
    reach = np.flatnonzero(sd25 >= 0.8 * sd_late)
    est["init_ramp"] = int(reach[0] * 25) if reach.size else 0
    dist = sd25
    d_late = sd_late
    jamp = est["drift_amp"]
    settle_f = first_below(fr_w / fr_late - 1, 1.0) * W
    settle_j = first_below(jump / j_late - 1, 1.0) * W
    log("  fluctuation ratio per %d-step window: first %.2f, stable median %.2f -> noise_amp %.3f (sd), tau_noise %.0f"
        % (W, fr_w[0], fr_late, est["noise_amp"], est["tau_noise"]))
    log("  mean |change| of window log-shares: first %.4f, stable median %.4f (model without drift %.4f, with %.4f)"
        " -> drift_amp %.2f, tau_drift %.0f" % (jump[0], j_late, j_nodrift, j_noise, jamp, est["tau_drift"]))
    log("  sd over experts of 25-step window log-shares: first %.3f, stable %.3f -> init_ramp %d"
        % (dist[0], d_late, est["init_ramp"]))
    log("  transient settles (within 2x of stable) after ~%d steps (fluctuation) / ~%d steps (window moves)"
        % (settle_f, settle_j))
    dead = dead_at_end(C)
    log("  dead experts at the end per layer (not applied): %s" % dead.tolist())
    est["_diag"] = {"fluct_stable": target_fr, "fluct_pure_sampling_sim": fr0,
                    "fluct_first_window": float(fr_w[0]), "window_jump_first": float(jump[0]),
                    "window_jump_stable": j_late, "window_jump_model": j_noise,
                    "window_jump_model_no_drift": j_nodrift,
                    "settle_fluct_steps": int(settle_f), "settle_jump_steps": int(settle_j),
                    "logshare_sd": target_sd, "dead_per_layer_at_end": dead.tolist()}
    log("  flags: " + " ".join("--%s %.4g" % (k.replace("_", "-"), est[k]) for k in FIT_KEYS))
    return est


FIT_KEYS = ("spread", "step_noise", "drift", "ou_theta", "noise_amp", "tau_noise",
            "drift_amp", "tau_drift", "init_ramp")


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
