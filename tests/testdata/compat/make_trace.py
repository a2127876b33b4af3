#!/usr/bin/env python3
"""Deterministic synthetic MoE trace for the moecastd data-directory fixture.

Writes NAME.counts.csv (step,layer,tokens,c0..c{M-1}) and NAME.router.csv
(step,layer,z0..z{M-1}) in the trace format of README.md "Trace files" /
engine/trace/trace_reader.h, for steps [--first, --first + --steps).

Each token draws per-expert router logits z = bias_e(layer, step) + N(0, 1),
and is routed to its top-K experts; c_e counts the (token, slot) assignments
and z_e is the mean logit over all the step's tokens (the mean-logit quality
estimator). The biases give a skewed but balanced-ish load, a load shift at
step 150 in layer 0 (so the state classifier sees a change), and expert 7 of
layer 1 pushed far down (share well under 0.16/M, so the dead-expert tracker
declares it dead after 3 windows of 100 steps, at step 299).

Pure standard library (random.Random with a fixed seed), so it runs with any
python3; output is a pure function of the arguments.
"""
import argparse
import random

p = argparse.ArgumentParser()
p.add_argument("--out", required=True, help="output prefix: OUT.counts.csv, OUT.router.csv")
p.add_argument("--first", type=int, default=0)
p.add_argument("--steps", type=int, default=300)
p.add_argument("--layers", type=int, default=2)
p.add_argument("--experts", type=int, default=8)
p.add_argument("--top_k", type=int, default=2)
p.add_argument("--tokens", type=int, default=256)
p.add_argument("--seed", type=int, default=20240601)
a = p.parse_args()

L, M, K, N = a.layers, a.experts, a.top_k, a.tokens


def bias(layer, step, e):
    b = 0.4 * ((e * 37 + layer * 11) % M) / M          # fixed skew
    if layer == 0 and step >= 150:
        b += 0.8 if e in (1, 4) else 0.0                # load shift at 150
    if layer == 1 and e == M - 1:
        b -= 4.0                                        # a (nearly) dead expert
    return b


with open(a.out + ".counts.csv", "w") as fc, open(a.out + ".router.csv", "w") as fr:
    fc.write("step,layer,tokens," + ",".join(f"c{e}" for e in range(M)) + "\n")
    fr.write("step,layer," + ",".join(f"z{e}" for e in range(M)) + "\n")
    for step in range(a.first, a.first + a.steps):
        # One generator per (seed, step): any step range reproduces the same rows.
        rng = random.Random(a.seed * 1000003 + step)
        for layer in range(L):
            b = [bias(layer, step, e) for e in range(M)]
            counts = [0] * M
            zsum = [0.0] * M
            for _ in range(N):
                z = [b[e] + rng.gauss(0.0, 1.0) for e in range(M)]
                for e in range(M):
                    zsum[e] += z[e]
                for e in sorted(range(M), key=lambda i: -z[i])[:K]:
                    counts[e] += 1
            fc.write(f"{step},{layer},{N}," + ",".join(map(str, counts)) + "\n")
            fr.write(f"{step},{layer}," + ",".join(f"{s / N:.6f}" for s in zsum) + "\n")
