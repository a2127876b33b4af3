#!/usr/bin/python3
"""Train moecast's `lstm` predictor on ONE trace, write its weights file and a golden file;
or, with --per-expert, the `lstm_e` predictor (one LSTM shared by all experts, any M) on
several traces (see pe_main and bench/lstm/README.md, section "lstm_e").

The model (identical to the C++ inference in engine/predict/lstm/lstm.cc; the weights file
format is documented in engine/predict/lstm/lstm.h and bench/lstm/README.md):

  window   the last min(n, lookback*block) observed proportion vectors p(t) of one layer (M each)
  pooling  split the window, newest step last, into blocks of `block` steps aligned to the
           newest step (the oldest block may be partial when n is short); x_j = block mean
  anchor   a = mean of the last min(n, anchor_window) steps
  inputs   u_j = (x_j - a) / input_scale   (anchor-relative; input_scale from the file)
  LSTM     nn.LSTM(M, H, num_layers), zero initial state, run over the blocks oldest first
  heads    for each trained horizon h_k: y_k = a + output_scale * (W_k h_last + b_k)
           y_k forecasts the (token-weighted) mean proportion over the next h_k steps

Training: all layers of the trace are separate sequences sharing the weights (same M);
every training window gets a random permutation of its experts (inputs and targets alike),
so the model cannot learn expert identities, which mean nothing on another layer or trace.
Loss: per horizon, the L1 error summed over experts (the design's L1_h), divided by the
anchor-only L1 of that horizon on the training set, averaged over horizons (masking
horizons whose target runs past the training part). The heads start at zero, i.e. at the
anchor forecast. Adam, batch 256, lr 3e-3 with cosine decay to 1.5e-4, 40 epochs, gradient
norm clipped at 1; seeded and single-threaded, so a rerun writes the same bytes.
Split: steps [0, split) train; forecast origins t >= split (targets after split, inputs may
reach back) validate; the epoch with the best validation loss is kept (so the validation
numbers are slightly optimistic; the other trace is the honest test).

Evaluation (--eval traces, e.g. the other trace of the pair: "trained on one trace,
evaluated on another"): L1_h per horizon of lstm vs last_value, the anchor alone and the
mean of the last 100 steps, on the same forecast origins (every --eval-stride-th origin with
a full window and a complete target), averaged over origins and layers, next to the design's
empirical floor (section 2; sigma from the whole evaluated segment, so only indicative).

Writes OUT (weights), OUT-without-.lstm + .golden.txt (PyTorch outputs for a few windows,
read by engine/predict/lstm/lstm_test.cc) and + .train.log (everything printed).

Usage (see README.md):
  nice -n 10 /usr/bin/python3 bench/lstm/train_lstm.py \\
      --train bench/traces/data/tiny_moe_noaux.counts.csv.gz \\
      --eval bench/traces/data/tiny_moe_aux.counts.csv.gz \\
      --out bench/lstm/tiny_moe_m16.lstm
  /usr/bin/python3 bench/lstm/train_lstm.py --test-fixture engine/predict/lstm/testdata/tiny
"""

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
from torch import nn

MAGIC = b"MOECLSTM"
VERSION = 1


# ----------------------------------------------------------------------------- traces

def read_counts(path):
    """Counts trace (design section 7) -> float64 counts [T, L, M] (layers 0..L-1 every step)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as fh:
        header = fh.readline().strip().split(",")
        col = {n: i for i, n in enumerate(header)}
        cc = sorted((int(n[1:]), i) for n, i in col.items() if n[:1] == "c" and n[1:].isdigit())
        if [e for e, _ in cc] != list(range(len(cc))):
            raise ValueError("%s: count columns are not c0..c{M-1}" % path)
        cidx = [i for _, i in cc]
        li = col["layer"]
        layers, rows = [], []
        for line in fh:
            f = line.rstrip("\n").split(",")
            layers.append(int(f[li]))
            rows.append([int(f[i]) for i in cidx])
    layers = np.asarray(layers)
    L = int(layers.max()) + 1
    T = len(layers) // L
    if T * L != len(layers) or not (layers.reshape(T, L) == np.arange(L)).all():
        raise ValueError("%s: layers are not 0..L-1 in order for every step" % path)
    return np.asarray(rows, dtype=np.float64).reshape(T, L, len(cidx))


class Series:
    """One layer of one trace: proportions and prefix sums for block means and targets."""

    def __init__(self, counts):  # counts [T, M]
        self.T, self.M = counts.shape
        n = counts.sum(axis=1)
        if (n <= 0).any():
            raise ValueError("a step without assignments")  # predictors never see those
        self.P = counts / n[:, None]
        self.cumP = np.concatenate([np.zeros((1, self.M)), np.cumsum(self.P, axis=0)])
        self.cumC = np.concatenate([np.zeros((1, self.M)), np.cumsum(counts, axis=0)])
        self.cumN = np.concatenate([[0.0], np.cumsum(n)])

    def mean_p(self, lo, hi):
        """Mean of P over steps [lo, hi) (arrays of equal shape)."""
        return (self.cumP[hi] - self.cumP[lo]) / (hi - lo)[..., None]

    def target(self, t, h):
        """Token-weighted mean proportion over steps t+1..t+h (design section 2)."""
        return (self.cumC[t + 1 + h] - self.cumC[t + 1]) / (self.cumN[t + 1 + h] - self.cumN[t + 1])[..., None]


# ----------------------------------------------------------------------------- model

class Config:
    def __init__(self, M, H, num_layers, lookback, block, anchor_window, horizons,
                 input_scale, output_scale):
        self.M, self.H, self.num_layers = M, H, num_layers
        self.lookback, self.block, self.anchor_window = lookback, block, anchor_window
        self.horizons = list(horizons)
        self.input_scale, self.output_scale = input_scale, output_scale

    @property
    def window(self):
        return self.lookback * self.block


class LstmForecaster(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.M, cfg.H, num_layers=cfg.num_layers, batch_first=True)
        self.head = nn.Linear(cfg.H, len(cfg.horizons) * cfg.M)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, u, anchor):
        """u [N, blocks, M] normalised block means, anchor [N, M] -> [N, K, M] horizon means."""
        out, _ = self.lstm(u)
        z = self.head(out[:, -1]).view(u.shape[0], len(self.cfg.horizons), self.cfg.M)
        return anchor[:, None, :] + self.cfg.output_scale * z


def features(series, t, cfg):
    """Full-window inputs for origins t (array): u [N, lookback, M] and anchor [N, M], float64."""
    B, Lb = cfg.block, cfg.lookback
    ends = t[:, None] - (Lb - 1 - np.arange(Lb))[None, :] * B  # newest step of each block
    x = series.mean_p(ends - B + 1, ends + 1)
    a = series.mean_p(t - cfg.anchor_window + 1, t + 1)
    u = (x - a[:, None, :]) / cfg.input_scale
    return u, a


def window_inputs(window, cfg):
    """The C++ semantics for any window [n, M] (oldest first, n >= 1): pooled, possibly
    partial-oldest-block inputs u [blocks, M] and the anchor [M] (float64)."""
    window = np.asarray(window, dtype=np.float64)
    n = min(len(window), cfg.window)
    w = window[len(window) - n:]
    nb = -(-n // cfg.block)
    a = w[n - min(n, cfg.anchor_window):].mean(axis=0)
    u = np.zeros((nb, cfg.M))
    for j in range(nb):  # j = 0 oldest
        end = n - (nb - 1 - j) * cfg.block  # exclusive
        start = max(0, end - cfg.block)
        u[j] = (w[start:end].mean(axis=0) - a) / cfg.input_scale
    return u, a


def interpolate(horizons, means, h):
    """Forecast(h) from the head means [K, M]: the mean over steps 1..h of the per-step path
    that is constant on (h_{k-1}, h_k] (h_0 = 0) with the value that makes its mean over
    1..h_k equal to the head's, and equal to the last head's mean after h_K."""
    S_prev, h_prev = np.zeros(means.shape[1]), 0
    for hk, yk in zip(horizons, means):
        v = (hk * yk - S_prev) / (hk - h_prev)
        if h <= hk:
            return (S_prev + (h - h_prev) * v) / h
        S_prev, h_prev = hk * yk, hk
    return means[-1].copy()


# ----------------------------------------------------------------------------- weights file

def write_weights(path, model, description):
    cfg = model.cfg
    sd = {k: v.detach().to(torch.float32).contiguous().numpy() for k, v in model.state_dict().items()}
    desc = description.encode("utf-8")
    out = bytearray()
    out += MAGIC
    out += struct.pack("<9I", VERSION, cfg.M, cfg.H, cfg.num_layers, cfg.lookback, cfg.block,
                       cfg.anchor_window, len(cfg.horizons), len(desc))
    out += struct.pack("<%dI" % len(cfg.horizons), *cfg.horizons)
    out += struct.pack("<2f", cfg.input_scale, cfg.output_scale)
    out += desc
    tensors = []
    for l in range(cfg.num_layers):
        tensors += ["lstm.weight_ih_l%d" % l, "lstm.weight_hh_l%d" % l,
                    "lstm.bias_ih_l%d" % l, "lstm.bias_hh_l%d" % l]
    tensors += ["head.weight", "head.bias"]
    for name in tensors:
        out += sd[name].astype("<f4").tobytes(order="C")  # row-major
    with open(path, "wb") as fh:
        fh.write(bytes(out))
    return len(out)


def read_weights(path):
    """Python reader (for checks): -> (Config, model in float64 with the float32 values)."""
    data = open(path, "rb").read()
    assert data[:8] == MAGIC, "bad magic"
    ver, M, H, nl, lb, blk, aw, K, dl = struct.unpack_from("<9I", data, 8)
    assert ver == VERSION
    off = 8 + 36
    hz = list(struct.unpack_from("<%dI" % K, data, off)); off += 4 * K
    isc, osc = struct.unpack_from("<2f", data, off); off += 8
    off += dl
    cfg = Config(M, H, nl, lb, blk, aw, hz, isc, osc)
    model = LstmForecaster(cfg)
    sd = model.state_dict()
    names = []
    for l in range(nl):
        names += ["lstm.weight_ih_l%d" % l, "lstm.weight_hh_l%d" % l, "lstm.bias_ih_l%d" % l, "lstm.bias_hh_l%d" % l]
    names += ["head.weight", "head.bias"]
    for n in names:
        cnt = sd[n].numel()
        sd[n] = torch.from_numpy(np.frombuffer(data, "<f4", cnt, off).copy()).view(sd[n].shape)
        off += 4 * cnt
    assert off == len(data), "trailing bytes"
    model.load_state_dict(sd)
    return cfg, model


# ----------------------------------------------------------------------------- golden file

def reference_forecast(model64, cfg, window, hs):
    """Float64 PyTorch reference for one window: head means [K, M] and Forecast(h) for hs."""
    u, a = window_inputs(window, cfg)
    with torch.no_grad():
        means = model64(torch.from_numpy(u)[None], torch.from_numpy(a)[None])[0].numpy()
    return means, [interpolate(cfg.horizons, means, h) for h in hs]


def write_golden(path, weights_path, cases, hs):
    """Text golden file read by engine/predict/lstm/lstm_test.cc (format in README.md)."""
    cfg, model = read_weights(weights_path)
    model64 = model.double().eval()
    model32 = read_weights(weights_path)[1].eval()
    worst32 = 0.0
    lines = ["moecast-lstm-golden 1", "experts %d" % cfg.M, "horizons %d %s" % (len(hs), " ".join(map(str, hs))),
             "cases %d" % len(cases)]
    for window in cases:
        # Inputs rounded to 8 significant digits, so the file is small and both sides
        # read the very same numbers.
        window = np.array([[float("%.8g" % v) for v in row] for row in window], dtype=np.float64)
        means, fc = reference_forecast(model64, cfg, window, hs)
        u, a = window_inputs(window, cfg)
        with torch.no_grad():
            m32 = model32(torch.from_numpy(u).float()[None], torch.from_numpy(a).float()[None])[0].double().numpy()
        worst32 = max(worst32, float(np.abs(m32 - means).max()))
        lines.append("window %d" % len(window))
        lines += [" ".join("%.8g" % v for v in row) for row in window]
        lines.append("forecast")
        lines += [" ".join("%.17g" % v for v in row) for row in fc]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return worst32


def golden_cases(serieses, cfg, rng):
    """Windows for the golden file: a full window from each series but the first, a short window
    (partial oldest block), a single step, and a window longer than the model's from the
    first series (the ring wraps; it keeps the last W steps)."""
    cases = []
    W = cfg.window
    for s in serieses[1:]:
        t = int(rng.integers(W - 1, s.T))
        cases.append(s.P[t - W + 1:t + 1])
    s = serieses[0]
    short = min(W - 1, cfg.block * 2 + max(1, cfg.block // 2))
    cases.append(s.P[100:100 + short])
    cases.append(s.P[7:8])
    cases.append(s.P[200:200 + W + 3])
    return cases


# ----------------------------------------------------------------------------- training

def build_set(serieses, cfg, t_lo, t_hi, target_end, stride=1):
    """Stack features/targets of all layers for origins t in [t_lo, t_hi) (step `stride`);
    a horizon's target counts only when it ends before target_end (mask)."""
    U, A, Y, MASK = [], [], [], []
    for s in serieses:
        hi = min(t_hi, s.T - 1)
        t = np.arange(max(t_lo, cfg.window - 1), hi, stride)
        if len(t) == 0:
            continue
        u, a = features(s, t, cfg)
        y = np.zeros((len(t), len(cfg.horizons), cfg.M))
        m = np.zeros((len(t), len(cfg.horizons)))
        for k, h in enumerate(cfg.horizons):
            ok = t + h < min(target_end, s.T)
            y[ok, k] = s.target(t[ok], h)
            m[ok, k] = 1.0
        U.append(u); A.append(a); Y.append(y); MASK.append(m)
    return (np.concatenate(U), np.concatenate(A), np.concatenate(Y), np.concatenate(MASK))


def l1_per_horizon(pred, y, mask):
    """Mean over valid origins of sum_e |pred - y| per horizon -> [K] (nan when no origin)."""
    err = np.abs(pred - y).sum(axis=2)
    cnt = mask.sum(axis=0)
    return np.where(cnt > 0, (err * mask).sum(axis=0) / np.maximum(cnt, 1), np.nan), cnt


def predict(model, U, A, batch=4096):
    out = []
    with torch.no_grad():
        for i in range(0, len(U), batch):
            out.append(model(torch.from_numpy(U[i:i + batch]).float(),
                             torch.from_numpy(A[i:i + batch]).float()).double().numpy())
    return np.concatenate(out)


def evaluate(model, serieses, cfg, t_lo, t_hi, stride):
    """L1_h for lstm and baselines on origins in [t_lo, t_hi) with full windows and complete targets."""
    rows = {"last_value": [], "window_mean(100)": [], "anchor(%d)" % cfg.anchor_window: [], "lstm": []}
    counts, floor = [], []
    for k, h in enumerate(cfg.horizons):
        preds = {n: [] for n in rows}
        ys = []
        for s in serieses:
            start = max(t_lo, cfg.window - 1, 99)
            t = np.arange(start, min(t_hi, s.T - h), stride)
            if len(t) == 0:
                continue
            u, a = features(s, t, cfg)
            y = s.target(t, h)
            ys.append(y)
            preds["last_value"].append(s.P[t])
            preds["window_mean(100)"].append(s.mean_p(t - 99, t + 1))
            preds["anchor(%d)" % cfg.anchor_window].append(a)
            preds["lstm"].append(predict(model, u, a)[:, k])
        if not ys:
            for n in rows:
                rows[n].append(float("nan"))
            counts.append(0)
            floor.append(float("nan"))
            continue
        y = np.concatenate(ys)
        counts.append(len(y))
        # Empirical floor (design section 2), with each layer's sigma_e^2 = var(p_e(t) - p_e(t-1)) / 2
        # over the whole evaluated segment: sum_e sqrt(2/pi) sqrt(sigma_e^2 / h), mean over layers.
        fl = [np.sqrt(2 / np.pi) * np.sqrt(np.diff(s.P[max(t_lo, 0):min(t_hi, s.T)], axis=0).var(axis=0) / 2 / h).sum()
              for s in serieses]
        floor.append(float(np.mean(fl)))
        for n in rows:
            rows[n].append(float(np.abs(np.concatenate(preds[n]) - y).sum(axis=1).mean()))
    rows["(empirical floor)"] = floor
    return rows, counts


def print_table(title, horizons, rows, counts, log):
    log("%s" % title)
    log("  %-18s %s" % ("L1_h", "".join("%11s" % ("h=%d" % h) for h in horizons)))
    for n, v in rows.items():
        log("  %-18s %s" % (n, "".join("%11.5f" % x for x in v)))
    log("  %-18s %s" % ("lstm/last_value", "".join("%11.3f" % (a / b) for a, b in zip(rows["lstm"], rows["last_value"]))))
    log("  %-18s %s" % ("lstm/window_mean", "".join("%11.3f" % (a / b) for a, b in zip(rows["lstm"], rows["window_mean(100)"]))))
    log("  %-18s %s" % ("origins", "".join("%11d" % c for c in counts)))


def fit(model, args, n, rng, batch_loss, val_loss, describe, log):
    """Adam with a cosine decay to lr/20 over args.epochs, shuffled batches of
    args.batch of the n training rows (batch_loss(idx) -> loss), gradients
    clipped at 1, the best epoch by val_loss(model) -> (loss, detail) kept
    and loaded, stopping after args.max_seconds. describe(detail) formats
    the epoch's log line tail. Returns (best loss, best epoch, start time)."""
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    best = (float("inf"), None, -1)
    t0 = time.time()
    for epoch in range(args.epochs):
        for g in opt.param_groups:  # cosine decay to lr/20 over the epochs
            g["lr"] = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / args.epochs)))
        perm = torch.from_numpy(rng.permutation(n))
        tot, nb = 0.0, 0
        model.train()
        for i in range(0, n, args.batch):
            loss = batch_loss(perm[i:i + args.batch])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tot += float(loss); nb += 1
        model.eval()
        vl, detail = val_loss(model)
        log("epoch %2d  train loss %.4f  %s  %.0fs"
            % (epoch, tot / nb, describe(vl, detail), time.time() - t0))
        if vl < best[0]:
            best = (vl, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
        if time.time() - t0 > args.max_seconds:
            log("time budget reached")
            break
    model.load_state_dict(best[1])
    model.eval()
    return best[0], best[2], t0


def train(args, log):
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    C = read_counts(args.train)
    T, Lyr, M = C.shape
    serieses = [Series(C[:, l]) for l in range(Lyr)]
    split = int(round(T * args.train_frac))
    horizons = [int(h) for h in args.horizons.split(",")]
    log("train trace %s: %d steps x %d layers x %d experts; train steps [0,%d), validation origins [%d,%d)"
        % (args.train, T, Lyr, M, split, split, T))

    # Normalisation from the training part: input_scale = RMS of (block mean - anchor),
    # output_scale = RMS of (target - anchor) over all horizons; stored as float32.
    cfg = Config(M, args.hidden, args.layers, args.lookback, args.block, args.anchor, horizons, 1.0, 1.0)
    u0 = np.concatenate([features(s, np.arange(cfg.window - 1, split), cfg)[0] for s in serieses])
    cfg.input_scale = float(np.float32(np.sqrt((u0 ** 2).mean())))
    del u0
    Utr, Atr, Ytr, Mtr = build_set(serieses, cfg, 0, split, split)
    resid = (Ytr - Atr[:, None, :])[Mtr > 0]
    cfg.output_scale = float(np.float32(np.sqrt((resid ** 2).mean())))
    Uva, Ava, Yva, Mva = build_set(serieses, cfg, split, T, T)
    log("config: M=%d H=%d layers=%d lookback=%d blocks x block=%d steps (window %d), anchor=%d, horizons=%s"
        % (M, cfg.H, cfg.num_layers, cfg.lookback, cfg.block, cfg.window, cfg.anchor_window, horizons))
    log("normalisation: input_scale=%.6g output_scale=%.6g" % (cfg.input_scale, cfg.output_scale))
    log("samples: train %d windows, validation %d windows" % (len(Utr), len(Uva)))

    base_tr, _ = l1_per_horizon(np.repeat(Atr[:, None, :], len(horizons), 1), Ytr, Mtr)
    base_va, _ = l1_per_horizon(np.repeat(Ava[:, None, :], len(horizons), 1), Yva, Mva)
    w = torch.tensor(1.0 / base_tr, dtype=torch.float32)

    model = LstmForecaster(cfg)
    Ut, At, Yt, Mt = (torch.from_numpy(x).float() for x in (Utr, Atr, Ytr, Mtr))

    def loss_fn(pred, y, m):
        err = (pred - y).abs().sum(dim=2)  # [N, K]
        per_h = (err * m).sum(0) / m.sum(0).clamp(min=1)
        return (per_h * w).mean()

    def val_loss(mdl):
        pred = predict(mdl, Uva, Ava)
        l1, _ = l1_per_horizon(pred, Yva, Mva)
        return float(np.nanmean(l1 / base_tr)), l1

    def batch_loss(idx):
        ep = torch.from_numpy(rng.permutation(M))  # expert permutation (augmentation)
        u, a, y, m = Ut[idx][:, :, ep], At[idx][:, ep], Yt[idx][:, :, ep], Mt[idx]
        return loss_fn(model(u, a), y, m)

    best_loss, best_epoch, t0 = fit(
        model, args, len(Ut), rng, batch_loss, val_loss,
        lambda vl, vl1: "val loss %.4f  (1 = anchor)  val L1 %s"
        % (vl, " ".join("%.4f" % x for x in vl1)), log)
    train_time = time.time() - t0
    log("kept epoch %d (val loss %.4f); training time %.0fs on 1 thread" % (best_epoch, best_loss, train_time))
    return cfg, model, serieses, split, train_time


# ============================================================================= per-expert model
#
# `lstm_e` (engine/predict/lstm/lstm_e.h): ONE small LSTM, shared by every expert, run on each
# expert's own series, so the same weights serve any number of experts M. For one expert e with
# n >= 1 steps observed, n' = min(n, lookback*block):
#   x_j    block means of p_e over the last n' steps (blocks aligned to the newest step)
#   a      anchor: mean of the last min(n', anchor_window) steps of p_e
#   s      noise: sqrt(sum of (p_e(t) - p_e(t-1))^2 over the n'-1 consecutive pairs of the
#          window / (2 (n'-1))), 0 when n' = 1; d = max(s, 1e-6)
#   inputs per block j (3 features):
#          clip((x_j - a) / d, -input_clip, input_clip),
#          ln(max(M a, 1e-4)),  ln(d / max(a, 1e-9))   (scale-free context, same for every block)
#   heads  y_k = a + output_scale * d * (w_k . h + b_k)  (K horizons)
# The engine then clips and renormalises across experts.

PE_MAGIC = b"MOECLSTE"
PE_VERSION = 1
PE_FEATURES = 3
PE_NOISE_FLOOR = 1e-6
PE_LEVEL_FLOOR = 1e-4
PE_A_FLOOR = 1e-9


class PeConfig:
    def __init__(self, H, num_layers, lookback, block, anchor_window, horizons, input_clip, output_scale):
        self.H, self.num_layers = H, num_layers
        self.lookback, self.block, self.anchor_window = lookback, block, anchor_window
        self.horizons = list(horizons)
        self.input_clip, self.output_scale = input_clip, output_scale

    @property
    def window(self):
        return self.lookback * self.block


class PeLstm(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(PE_FEATURES, cfg.H, num_layers=cfg.num_layers, batch_first=True)
        self.head = nn.Linear(cfg.H, len(cfg.horizons))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, u, a, d):
        """u [N, blocks, 3] features, a [N] anchors, d [N] noise scales -> [N, K] horizon means."""
        out, _ = self.lstm(u)
        return a[:, None] + self.cfg.output_scale * d[:, None] * self.head(out[:, -1])


def pe_context(a, d, M):
    c1 = np.log(np.maximum(M * a, PE_LEVEL_FLOOR))
    c2 = np.log(d / np.maximum(a, PE_A_FLOOR))
    return c1, c2


def pe_assemble(x, a, d, M, cfg):
    """x [..., blocks], a [...], d [...] -> features [..., blocks, 3] (float64)."""
    c1, c2 = pe_context(a, d, M)
    u = np.clip((x - a[..., None]) / d[..., None], -cfg.input_clip, cfg.input_clip)
    f = np.empty(x.shape + (PE_FEATURES,))
    f[..., 0] = u
    f[..., 1] = c1[..., None]
    f[..., 2] = c2[..., None]
    return f


class PeSeries(Series):
    def __init__(self, counts):
        super().__init__(counts)
        d2 = np.diff(self.P, axis=0) ** 2  # d2[i] = (P[i+1] - P[i])^2
        self.cumD2 = np.concatenate([np.zeros((1, self.M)), np.cumsum(d2, axis=0)])


def pe_features(s, t, cfg):
    """Full-window features for origins t (array): f [N, M, blocks, 3], a [N, M], d [N, M]."""
    B, Lb, W = cfg.block, cfg.lookback, cfg.window
    ends = t[:, None] - (Lb - 1 - np.arange(Lb))[None, :] * B
    x = s.mean_p(ends - B + 1, ends + 1)  # [N, Lb, M]
    a = s.mean_p(t - cfg.anchor_window + 1, t + 1)
    # pairs (t-W+1, t-W+2) .. (t-1, t): d2 indices t-W+1 .. t-1
    ss = (s.cumD2[t] - s.cumD2[t - W + 1]) / (2.0 * (W - 1))
    d = np.maximum(np.sqrt(ss), PE_NOISE_FLOOR)
    f = pe_assemble(np.transpose(x, (0, 2, 1)), a, d, s.M, cfg)
    return f, a, d


def pe_window_inputs(window, cfg):
    """The C++ semantics for any window [n, M]: features [M, blocks, 3], a [M], d [M]."""
    window = np.asarray(window, dtype=np.float64)
    M = window.shape[1]
    n = min(len(window), cfg.window)
    w = window[len(window) - n:]
    nb = -(-n // cfg.block)
    a = w[n - min(n, cfg.anchor_window):].mean(axis=0)
    if n >= 2:
        ss = (np.diff(w, axis=0) ** 2).sum(axis=0) / (2.0 * (n - 1))
    else:
        ss = np.zeros(M)
    d = np.maximum(np.sqrt(ss), PE_NOISE_FLOOR)
    x = np.zeros((M, nb))
    for j in range(nb):
        end = n - (nb - 1 - j) * cfg.block
        start = max(0, end - cfg.block)
        x[:, j] = w[start:end].mean(axis=0)
    return pe_assemble(x, a, d, M, cfg), a, d


def pe_write_weights(path, model, description):
    cfg = model.cfg
    sd = {k: v.detach().to(torch.float32).contiguous().numpy() for k, v in model.state_dict().items()}
    desc = description.encode("utf-8")
    out = bytearray(PE_MAGIC)
    out += struct.pack("<9I", PE_VERSION, PE_FEATURES, cfg.H, cfg.num_layers, cfg.lookback, cfg.block,
                       cfg.anchor_window, len(cfg.horizons), len(desc))
    out += struct.pack("<%dI" % len(cfg.horizons), *cfg.horizons)
    out += struct.pack("<2f", cfg.input_clip, cfg.output_scale)
    out += desc
    for name in pe_tensor_names(cfg):
        out += sd[name].astype("<f4").tobytes(order="C")
    with open(path, "wb") as fh:
        fh.write(bytes(out))
    return len(out)


def pe_tensor_names(cfg):
    names = []
    for l in range(cfg.num_layers):
        names += ["lstm.weight_ih_l%d" % l, "lstm.weight_hh_l%d" % l, "lstm.bias_ih_l%d" % l, "lstm.bias_hh_l%d" % l]
    return names + ["head.weight", "head.bias"]


def pe_read_weights(path):
    data = open(path, "rb").read()
    assert data[:8] == PE_MAGIC, "bad magic"
    ver, F, H, nl, lb, blk, aw, K, dl = struct.unpack_from("<9I", data, 8)
    assert ver == PE_VERSION and F == PE_FEATURES
    off = 8 + 36
    hz = list(struct.unpack_from("<%dI" % K, data, off)); off += 4 * K
    clip, osc = struct.unpack_from("<2f", data, off); off += 8
    desc = data[off:off + dl].decode("utf-8"); off += dl
    cfg = PeConfig(H, nl, lb, blk, aw, hz, clip, osc)
    model = PeLstm(cfg)
    sd = model.state_dict()
    for n in pe_tensor_names(cfg):
        cnt = sd[n].numel()
        sd[n] = torch.from_numpy(np.frombuffer(data, "<f4", cnt, off).copy()).view(sd[n].shape)
        off += 4 * cnt
    assert off == len(data), "trailing bytes"
    model.load_state_dict(sd)
    return cfg, model, desc


def pe_predict(model, f, a, d, batch=65536):
    """Raw head means for flattened samples f [N, blocks, 3], a [N], d [N] -> [N, K]."""
    out = []
    with torch.no_grad():
        for i in range(0, len(f), batch):
            out.append(model(torch.from_numpy(f[i:i + batch]).float(), torch.from_numpy(a[i:i + batch]).float(),
                             torch.from_numpy(d[i:i + batch]).float()).double().numpy())
    return np.concatenate(out)


def pe_forecast_layer(model, f, a, d):
    """f [N, M, blocks, 3] -> raw forecasts [N, K, M]."""
    N, M = a.shape
    y = pe_predict(model, f.reshape(N * M, f.shape[2], PE_FEATURES), a.reshape(-1), d.reshape(-1))
    return np.transpose(y.reshape(N, M, -1), (0, 2, 1))


def normalise(p):
    """The engine's NormalizeForecast: clip at 0 and rescale to sum 1 (uniform if all 0)."""
    p = np.maximum(p, 0.0)
    s = p.sum(axis=-1, keepdims=True)
    return np.where(s > 0, p / np.where(s > 0, s, 1), 1.0 / p.shape[-1])


def pe_build_set(serieses, cfg, t_lo, t_hi, target_end, stride, offset=0):
    F, A, D, Y, MASK, TR = [], [], [], [], [], []
    for s in serieses:
        hi = min(t_hi, s.T - 1)
        t = np.arange(max(t_lo, cfg.window - 1) + offset, hi, stride)
        if len(t) == 0:
            continue
        f, a, d = pe_features(s, t, cfg)
        y = np.zeros((len(t), s.M, len(cfg.horizons)))
        m = np.zeros((len(t), s.M, len(cfg.horizons)))
        for k, h in enumerate(cfg.horizons):
            ok = t + h < min(target_end, s.T)
            y[ok, :, k] = s.target(t[ok], h)
            m[ok, :, k] = 1.0
        F.append(f.reshape(-1, cfg.lookback, PE_FEATURES)); A.append(a.reshape(-1)); D.append(d.reshape(-1))
        Y.append(y.reshape(-1, len(cfg.horizons))); MASK.append(m.reshape(-1, len(cfg.horizons)))
    return [np.concatenate(x) for x in (F, A, D, Y, MASK)]


def pe_evaluate(model, serieses, cfg, t_lo, t_hi, stride):
    """L1_h (sum over experts of |normalised forecast - realised mean|, mean over origins and
    layers) for lstm_e and baselines on origins in [t_lo, t_hi) with complete targets."""
    names = ["last_value", "sw_avg(100)", "anchor(%d)" % cfg.anchor_window, "lstm_e"]
    rows = {n: [] for n in names}
    counts = []
    for k, h in enumerate(cfg.horizons):
        err = {n: 0.0 for n in names}
        cnt = 0
        for s in serieses:
            t = np.arange(max(t_lo, cfg.window - 1), min(t_hi, s.T - h), stride)
            if len(t) == 0:
                continue
            f, a, d = pe_features(s, t, cfg)
            y = s.target(t, h)
            preds = {"last_value": s.P[t], "sw_avg(100)": s.mean_p(t - 99, t + 1),
                     names[2]: a, "lstm_e": pe_forecast_layer(model, f, a, d)[:, k]}
            for n in names:
                err[n] += float(np.abs(normalise(preds[n]) - y).sum(axis=1).sum())
            cnt += len(t)
        for n in names:
            rows[n].append(err[n] / cnt if cnt else float("nan"))
        counts.append(cnt)
    return rows, counts


def pe_print_table(title, horizons, rows, counts, log):
    log(title)
    log("  %-18s %s" % ("L1_h", "".join("%11s" % ("h=%d" % h) for h in horizons)))
    for n, v in rows.items():
        log("  %-18s %s" % (n, "".join("%11.5f" % x for x in v)))
    log("  %-18s %s" % ("lstm_e/sw_avg(100)", "".join("%11.3f" % (a / b) for a, b in zip(rows["lstm_e"], rows["sw_avg(100)"]))))
    log("  %-18s %s" % ("origins x layers", "".join("%11d" % c for c in counts)))


def pe_golden(path, weights_path, cases, hs):
    """Golden file (same text format as the M-specific model's, one M per file)."""
    cfg, model, _ = pe_read_weights(weights_path)
    model64 = model.double().eval()
    M = cases[0].shape[1]
    lines = ["moecast-lstm-golden 1", "experts %d" % M, "horizons %d %s" % (len(hs), " ".join(map(str, hs))),
             "cases %d" % len(cases)]
    for window in cases:
        window = np.array([[float("%.8g" % v) for v in row] for row in window], dtype=np.float64)
        f, a, d = pe_window_inputs(window, cfg)
        with torch.no_grad():
            means = model64(torch.from_numpy(f), torch.from_numpy(a), torch.from_numpy(d)).numpy().T  # [K, M]
        lines.append("window %d" % len(window))
        lines += [" ".join("%.8g" % v for v in row) for row in window]
        lines.append("forecast")
        lines += [" ".join("%.17g" % v for v in interpolate(cfg.horizons, means, h)) for h in hs]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def pe_main(args, log):
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    horizons = [int(h) for h in args.horizons.split(",")]
    cfg = PeConfig(args.hidden, args.layers, args.lookback, args.block, args.anchor, horizons,
                   args.input_clip, 1.0)
    strides = [int(x) for x in args.train_stride.split(",")] if args.train_stride else [1] * len(args.train)
    if len(strides) != len(args.train):
        raise SystemExit("--train-stride needs one stride per --train trace")
    traces = []
    for path, stride in zip(args.train, strides):
        C = read_counts(path)
        T, L, M = C.shape
        split = int(round(T * args.train_frac))
        traces.append((path, [PeSeries(C[:, l]) for l in range(L)], split, stride))
        log("train trace %s: %d steps x %d layers x %d experts; train steps [0,%d), held-out origins [%d,%d), "
            "training origins every %d-th" % (path, T, L, M, split, split, T, stride))
    log("config: H=%d layers=%d lookback=%d blocks x block=%d steps (window %d), anchor=%d, horizons=%s, clip=%g"
        % (cfg.H, cfg.num_layers, cfg.lookback, cfg.block, cfg.window, cfg.anchor_window, horizons, cfg.input_clip))

    # Training samples (one per origin and expert), and per trace and horizon the anchor's
    # mean per-expert L1, which normalises the loss so every trace and horizon weighs alike.
    sets, resid = [], []
    for path, ss, split, stride in traces:
        f, a, d, y, m = pe_build_set(ss, cfg, 0, split, split, stride)
        base = (np.abs(y - a[:, None]) * m).sum(0) / m.sum(0)
        sets.append((f, a, d, y, m, np.broadcast_to(1.0 / base, m.shape) * m))
        resid.append((((y - a[:, None]) / d[:, None]) * m)[m > 0])
        log("  %s: %d training samples (origin x layer x expert); anchor per-expert L1 %s"
            % (os.path.basename(path), len(a), " ".join("%.5f" % b for b in base)))
    r = np.concatenate(resid)
    cfg.output_scale = float(np.float32(np.sqrt(np.mean(r ** 2))))
    log("output_scale (RMS of (target - anchor) / d) = %.6g" % cfg.output_scale)
    Ft, At, Dt, Yt, Mt, Wt = (torch.from_numpy(np.concatenate([s[i] for s in sets])).float() for i in range(6))
    n = len(At)
    # Held-out sets: origins >= split of each training trace (every 4th origin).
    val = []
    for path, ss, split, stride in traces:
        f, a, d, y, m = pe_build_set(ss, cfg, split, ss[0].T, ss[0].T, 4)
        base = (np.abs(y - a[:, None]) * m).sum(0) / np.maximum(m.sum(0), 1)
        val.append((f, a, d, y, m, base))

    def val_loss(mdl):
        tot = []
        for f, a, d, y, m, base in val:
            p = pe_predict(mdl, f, a, d)
            ok = m.sum(0) > 0  # horizons with a complete target in the held-out part
            tot.append(((np.abs(p - y) * m).sum(0)[ok] / m.sum(0)[ok] / base[ok]).mean())
        return float(np.mean(tot)), tot

    model = PeLstm(cfg)
    best_loss, best_epoch, t0 = fit(
        model, args, n, rng,
        lambda idx: ((model(Ft[idx], At[idx], Dt[idx]) - Yt[idx]).abs() * Wt[idx]).sum()
        / Mt[idx].sum().clamp(min=1),
        val_loss,
        lambda vl, per: "held-out loss %.4f (1 = anchor; per trace %s)"
        % (vl, " ".join("%.4f" % x for x in per)), log)
    log("kept epoch %d (held-out loss %.4f); training time %.0fs on 1 thread"
        % (best_epoch, best_loss, time.time() - t0))
    desc = json.dumps({"trained_on": {os.path.basename(p): [0, sp] for p, _, sp, _ in traces},
                       "seed": args.seed, "script": "bench/lstm/train_lstm.py --per-expert"}, sort_keys=True)
    size = pe_write_weights(args.out, model, desc)
    log("wrote %s (%d bytes)" % (args.out, size))

    cfg, model, _ = pe_read_weights(args.out)
    model.eval()
    for path, ss, split, stride in traces:
        rows, counts = pe_evaluate(model, ss, cfg, split, ss[0].T, 1)
        pe_print_table("held out: %s, origins >= %d (all layers; forecasts clipped and renormalised)"
                       % (os.path.basename(path), split), cfg.horizons, rows, counts, log)
    for path in args.eval:
        C = read_counts(path)
        ss = [PeSeries(C[:, l]) for l in range(C.shape[1])]
        rows, counts = pe_evaluate(model, ss, cfg, 0, C.shape[0], args.eval_stride)
        pe_print_table("never seen: %s (%d steps x %d layers x %d experts; every %d-th origin)"
                       % (os.path.basename(path), C.shape[0], C.shape[1], C.shape[2], args.eval_stride),
                       cfg.horizons, rows, counts, log)

    # Golden files: M = 16 (tiny_moe windows) and M = 256 (random shares), same weights.
    base = os.path.splitext(args.out)[0]
    hs = [1, 2, 5, 10, 50, 100, 300, 1000, 2000]
    W = cfg.window
    s0 = traces[0][1][0]
    g16 = [s0.P[1000 - W + 1:1001], s0.P[2000:2000 + W + 5], s0.P[50:50 + cfg.block * 2 + 3], s0.P[7:8]]
    pe_golden(base + ".m16.golden.txt", args.out, g16, hs)
    grng = np.random.default_rng(args.seed + 7)
    conc = np.exp(grng.normal(0, 1.5, 256))
    P = grng.dirichlet(conc * 20, size=W + 40)
    P[:, :3] = 0.0  # dead experts
    P /= P.sum(axis=1, keepdims=True)
    g256 = [P[:40], P[5:5 + cfg.block + 1], P[:1]]
    pe_golden(base + ".m256.golden.txt", args.out, g256, hs)
    log("wrote %s.m16.golden.txt and %s.m256.golden.txt" % (base, base))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="append", default=[],
                    help="counts trace to train on (repeat with --per-expert for several traces)")
    ap.add_argument("--per-expert", action="store_true",
                    help="train the per-expert model (lstm_e: one LSTM shared by all experts, any M)")
    ap.add_argument("--train-stride", default="",
                    help="--per-expert: comma-separated origin stride per --train trace (default 1)")
    ap.add_argument("--input-clip", type=float, default=8.0, help="--per-expert: |input| clip")
    ap.add_argument("--eval", action="append", default=[], help="other counts traces to evaluate on")
    ap.add_argument("--out", help="weights file to write (a .golden.txt and .log are written next to it)")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--lookback", type=int, default=32, help="LSTM steps (blocks)")
    ap.add_argument("--block", type=int, default=8, help="steps per block (pooled input)")
    ap.add_argument("--anchor", type=int, default=16, help="anchor window (steps)")
    ap.add_argument("--horizons", default="1,10,100,1000")
    ap.add_argument("--train-frac", type=float, default=0.75)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=600)
    ap.add_argument("--eval-stride", type=int, default=5)
    ap.add_argument("--test-fixture", help="write a small random 2-layer model PREFIX.lstm and "
                    "PREFIX.golden.txt for the C++ tests, then exit")
    ap.add_argument("--test-fixture-e", help="write a small random 2-layer per-expert model PREFIX.lstm "
                    "and PREFIX.golden.txt (M = 5) for the C++ tests, then exit")
    args = ap.parse_args()
    torch.set_num_threads(1)

    if args.test_fixture_e:
        torch.manual_seed(args.seed)
        rng = np.random.default_rng(args.seed)
        cfg = PeConfig(3, 2, 4, 3, 5, [1, 4, 20], 1.5, 0.5)
        model = PeLstm(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.uniform_(-0.8, 0.8)
        pe_write_weights(args.test_fixture_e + ".lstm", model, "test fixture: random weights, 2 layers")
        props = rng.dirichlet(np.ones(5) * 2, size=40)
        props[:, 4] = 0.0  # a dead expert
        props /= props.sum(axis=1, keepdims=True)
        cases = [props[:12], props[3:4], props[:5], props[10:40], props[:14]]
        pe_golden(args.test_fixture_e + ".golden.txt", args.test_fixture_e + ".lstm", cases,
                  [1, 2, 4, 7, 20, 21, 100])
        print("wrote %s.lstm and .golden.txt" % args.test_fixture_e)
        return

    if args.test_fixture:
        torch.manual_seed(args.seed)
        rng = np.random.default_rng(args.seed)
        cfg = Config(5, 3, 2, 4, 3, 5, [1, 4, 20], 0.1, 0.05)
        model = LstmForecaster(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.uniform_(-0.8, 0.8)
        write_weights(args.test_fixture + ".lstm", model, "test fixture: random weights, 2 layers")
        props = rng.dirichlet(np.ones(cfg.M) * 2, size=40)
        cases = [props[:12], props[3:4], props[:5], props[10:40], props[:14]]
        worst = write_golden(args.test_fixture + ".golden.txt", args.test_fixture + ".lstm", cases,
                             [1, 2, 4, 7, 20, 21, 100])
        print("wrote %s.lstm and .golden.txt (float32 torch vs float64 reference: max %.2e)"
              % (args.test_fixture, worst))
        return

    if not (args.train and args.out):
        ap.error("--train and --out are required")
    if not args.per_expert and len(args.train) != 1:
        ap.error("the M-specific model trains on one --train trace (use --per-expert for several)")
    logf = open(os.path.splitext(args.out)[0] + ".train.log", "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")

    log("command: %s" % " ".join(sys.argv))
    log("torch %s, numpy %s, seed %d, 1 thread" % (torch.__version__, np.__version__, args.seed))
    if args.per_expert:
        pe_main(args, log)
        log("total %.0fs" % (time.time() - T_START))
        return
    args.train = args.train[0]
    cfg, model, serieses, split, train_time = train(args, log)

    desc = json.dumps({"trained_on": os.path.basename(args.train), "steps": [0, split],
                       "seed": args.seed, "script": "bench/lstm/train_lstm.py"}, sort_keys=True)
    size = write_weights(args.out, model, desc)
    log("wrote %s (%d bytes)" % (args.out, size))

    # Reports (the weights as stored, float32).
    _, model = read_weights(args.out)
    model.eval()
    rows, counts = evaluate(model, serieses, cfg, split, serieses[0].T, 1)
    print_table("validation (trace %s, origins >= %d, all layers)" % (os.path.basename(args.train), split),
                cfg.horizons, rows, counts, log)
    rows, counts = evaluate(model, serieses, cfg, 0, split, args.eval_stride)
    print_table("training part (origins < %d, every %d-th; targets may run past the split)"
                % (split, args.eval_stride), cfg.horizons, rows, counts, log)
    eval_series = []
    for path in args.eval:
        Ce = read_counts(path)
        if Ce.shape[2] != cfg.M:
            log("skip %s: %d experts, the model has %d" % (path, Ce.shape[2], cfg.M))
            continue
        se = [Series(Ce[:, l]) for l in range(Ce.shape[1])]
        eval_series += se
        rows, counts = evaluate(model, se, cfg, 0, Ce.shape[0], args.eval_stride)
        print_table("other trace %s (%d steps x %d layers; never seen in training; every %d-th origin)"
                    % (os.path.basename(path), Ce.shape[0], Ce.shape[1], args.eval_stride),
                    cfg.horizons, rows, counts, log)

    golden = os.path.splitext(args.out)[0] + ".golden.txt"
    rng = np.random.default_rng(args.seed + 1)
    worst = write_golden(golden, args.out, golden_cases(serieses[:1] + eval_series[:1], cfg, rng),
                         [1, 2, 5, 10, 50, 100, 300, 1000, 2000])
    log("wrote %s (float32 torch vs float64 reference on its windows: max |diff| %.2e)" % (golden, worst))
    log("total %.0fs" % (time.time() - T_START))


T_START = time.time()

if __name__ == "__main__":
    main()
