"""Streams an expert-load trace into moecastd, then prints forecasts, the
load state and a recommended placement (the console script
`moecast-stream-trace`).

    bazel-bin/integrations/grpc/moecastd --listen 127.0.0.1:50051 &
    moecast-stream-trace --trace bench/traces/data/tiny_moe_aux --steps 2000

The trace is a NAME prefix (or NAME.counts.csv[.gz] file) in the moecast
trace format (bench/traces/README.md); the router file NAME.router.csv.gz is
sent along (mean router logits) with --router. top-k comes from NAME.meta.json
unless --top-k is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import Client, MoecastError, read_trace, trace_files

if TYPE_CHECKING:
    from .types import Step


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (None: sys.argv[1:]); args.horizons becomes a list of
    ints. Raises SystemExit (status 2, usage on stderr) for a bad command line,
    a --horizons that is not a comma-separated list of integers, or
    --steps < 0; SystemExit(0) for --help."""
    p = argparse.ArgumentParser(prog="moecast-stream-trace", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="127.0.0.1:50051", help="moecastd host:port")
    p.add_argument("--trace", required=True,
                   help="trace NAME prefix or counts file (e.g. bench/traces/data/tiny_moe_aux)")
    p.add_argument("--steps", type=int, default=2000, help="steps to stream (0: all)")
    p.add_argument("--job-id", default=None, help="job id (default: the trace's name)")
    p.add_argument("--top-k", type=int, default=None, help="experts per token (default: from meta.json)")
    p.add_argument("--router", action="store_true", help="also send the router file's mean logits")
    p.add_argument("--batch-size", type=int, default=128, help="steps per streamed message")
    p.add_argument("--horizons", default="1,10,100", help="forecast horizons, comma separated")
    p.add_argument("--gpus", type=int, default=4, help="GPUs for the placement (slots = experts)")
    p.add_argument("--token", default=os.environ.get("MOECAST_TOKEN"), help="bearer token ($MOECAST_TOKEN)")
    p.add_argument("--root-ca", default=None, help="CA certificate (PEM file): use TLS")
    p.add_argument("--replace", action="store_true", help="delete the job first if it exists")
    args = p.parse_args(argv)
    try:
        args.horizons = [int(h) for h in args.horizons.split(",") if h]
    except ValueError:
        p.error("--horizons: not a comma-separated list of integers: %r" % args.horizons)
    if args.steps < 0:
        p.error("--steps must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns 0.

    Raises:
      SystemExit: a bad command line (see parse_args); no top-k in the
        trace's meta.json and no --top-k; experts that do not split over
        --gpus.
      MoecastError: moecastd failed (not ready within 10 s, RegisterJob,
        streaming, Forecast or RecommendPlacement errors; GetHealth errors
        are printed instead).
      TraceFormatError / OSError: the trace cannot be found or read.
      StopIteration: the trace has no steps.
    """
    args = parse_args(argv)
    counts_path, router_path, meta = trace_files(args.trace)
    top_k = args.top_k or meta.get("top_k") or meta.get("config", {}).get("top_k")
    if not top_k:
        sys.exit("moecast-stream-trace: no top-k in %s.meta.json; pass --top-k" % args.trace)
    job_id = args.job_id or os.path.basename(counts_path).split(".")[0]

    steps = read_trace(counts_path, router_path if args.router else None,
                       max_steps=args.steps or None)
    first = next(steps)
    num_layers, num_experts = first.counts.shape

    def all_steps() -> Iterator[Step]:
        yield first
        yield from steps

    with Client(args.target, token=args.token, root_ca=args.root_ca) as client:
        client.wait_for_ready(10)
        if args.replace and job_id in client.list_jobs():
            client.delete_job(job_id)
        client.register_job(job_id, num_layers=num_layers, num_experts=num_experts, top_k=int(top_k),
                            horizons=args.horizons,
                            aux_loss_coef=meta.get("alpha", meta.get("config", {}).get("alpha")))
        print("registered job %s: %d layers x %d experts, top-%d, from %s"
              % (job_id, num_layers, num_experts, top_k, counts_path))
        t0 = time.monotonic()
        summary = client.ingest_stream(job_id, all_steps(), batch_size=args.batch_size)
        dt = time.monotonic() - t0
        print("streamed %d steps in %d batches (%.2f s, %.0f steps/s): %d committed, %d rejected"
              % (summary.steps, summary.batches, dt, summary.steps / max(dt, 1e-9),
                 summary.committed, summary.rejected))
        for r in summary.first_rejections:
            print("  rejected step %d: %s %s" % (r.step, r.error_code, r.error_message))

        forecast = client.forecast(job_id, horizons=args.horizons)
        print("forecast as of step %d, job state %s" % (forecast.as_of_step, forecast.job_state))
        np.set_printoptions(precision=3, suppress=True, linewidth=160)
        for layer, lf in forecast.layers.items():
            ratio = "n/a" if lf.drift_ratio is None else "%.2f" % lf.drift_ratio
            print("layer %d: %s (drift ratio %s)" % (layer, lf.state, ratio))
            for h, hf in lf.horizons.items():
                print("  h=%-4d %-12s max share %.3f (expert %d)  means %s"
                      % (h, hf.predictor, hf.means.max(), int(hf.means.argmax()), hf.means))

        try:
            health = client.get_health(job_id)
            for lh in health.layers:
                print("health layer %d: max/mean %.2f, entropy %.3f, dead %s, phase %s"
                      % (lh.layer, lh.max_over_mean, lh.normalized_entropy, lh.dead_experts, lh.phase))
        except MoecastError as e:
            print("health: %s" % e)

        if num_experts % args.gpus:
            sys.exit("moecast-stream-trace: %d experts do not split over %d GPUs; pass --gpus" % (num_experts, args.gpus))
        placement = client.recommend_placement(job_id, num_slots=num_experts, num_gpus=args.gpus,
                                               horizon=args.horizons[-1])
        plan = placement.plan
        per_gpu = num_experts // args.gpus
        print("placement (%s, horizon %d): balancedness %.3f, max/mean GPU load %.3f"
              % (plan.mode, placement.horizon, plan.balancedness, plan.max_over_mean))
        for layer in range(plan.num_layers):
            gpus = [plan.phy2log[layer, g * per_gpu:(g + 1) * per_gpu].tolist() for g in range(args.gpus)]
            print("  layer %d: experts per GPU %s, GPU loads %s" % (layer, gpus, plan.gpu_loads[layer]))
    return 0


def console_main() -> int:
    """Entry point of `moecast-stream-trace`: exit status 1 with the message on a MoecastError."""
    try:
        return main()
    except MoecastError as e:
        sys.exit("moecast-stream-trace: %s" % e)


if __name__ == "__main__":
    sys.exit(console_main())
